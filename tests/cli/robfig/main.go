// Next fire times of cron expressions as KFP's scheduler computes them: the robfig/cron parser configured as
// robfig/cron v1's cron.Parse (SECOND MINUTE HOUR DOM MONTH [DOW], descriptors), which KFP's ScheduledWorkflow
// controller calls (backend/src/crd/controller/scheduledworkflow/util/cron_schedule.go), evaluated in UTC.
//
// Reads lines "EXPR<TAB>START_UNIX<TAB>N" on stdin; prints "OK t1 t2 ... tN" (unix seconds) or "ERR message".
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron"
)

var kfpParser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.DowOptional | cron.Descriptor)

func main() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		parts := strings.Split(in.Text(), "\t")
		start, _ := strconv.ParseInt(parts[1], 10, 64)
		n, _ := strconv.Atoi(parts[2])
		schedule, err := kfpParser.Parse(parts[0])
		if err != nil {
			fmt.Println("ERR", err)
			continue
		}
		t := time.Unix(start, 0).UTC()
		out := []string{"OK"}
		for i := 0; i < n; i++ {
			t = schedule.Next(t)
			out = append(out, strconv.FormatInt(t.Unix(), 10))
		}
		fmt.Println(strings.Join(out, " "))
	}
}
