"""Cron expressions for KFP recurring runs (pipelines/schedule.py), checked against the real counterparts:
croniter (standard five-field cron, as the user means it) and robfig/cron in KFP's parser configuration (a small
Go program, tests/cli/robfig/main.go, built against Debian's golang-github-robfig-cron-dev)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.schedule import describe, kfp_cron

HERE = Path(__file__).parent
ROBFIG_SRC = Path("/usr/share/gocode/src/github.com/robfig/cron")
START = int(dt.datetime(2026, 3, 1, 0, 0, 30, tzinfo=dt.timezone.utc).timestamp())  # a Sunday, 30 s past midnight


@pytest.mark.parametrize(
    "given, kfp",
    [
        ("0 3 * * *", "0 0 3 * * *"),  # the README's daily 03:00: seconds field added, not read as minute 3 hourly
        ("17 * * * *", "0 17 * * * *"),  # hourly at :17 (the re-diagnosis CronJob's schedule)
        ("*/15 9-17 * * mon-fri", "0 */15 9-17 * * mon-fri"),  # steps, ranges and day names are kept as written
        ("0 6 1,15 * *", "0 0 6 1,15 * *"),  # lists
        ("30 2 * jan,jul 0", "0 30 2 * jan,jul 0"),  # month names, Sunday as 0
        ("  0   3 * *  * ", "0 0 3 * * *"),  # extra blanks are not fields
        ("0 0 3 * * *", "0 0 3 * * *"),  # six fields: KFP's own form, passed through
        ("30 0 3 ? * 1-5", "30 0 3 ? * 1-5"),  # '?' (robfig's "no specific value") passes through
        ("@daily", "@daily"),  # descriptors mean the same in both forms
        ("@every 6h", "@every 6h"),  # robfig's fixed interval
    ],
)
def test_conversions(given, kfp):
    assert kfp_cron(given) == kfp


@pytest.mark.parametrize(
    "given, message",
    [
        ("0 3 * *", "has 4 field"),  # too few: neither form
        ("0 0 0 3 * * *", "has 7 field"),  # a seconds field plus a year field (Quartz) is not robfig's
        ("", "empty cron expression"),
        ("60 3 * * *", "minute 60 is outside 0-59"),
        ("0 24 * * *", "hour 24 is outside 0-23"),
        ("0 3 0 * *", "day-of-month 0 is outside 1-31"),
        ("0 3 * 13 *", "month 13 is outside 1-12"),
        ("0 3 * * 7", "never 7"),  # standard cron's Sunday-as-7 does not exist in robfig
        ("0 3 * * funday", "is not a number or a name"),
        ("*/0 3 * * *", "step '0'"),  # a zero step never fires
        ("0 5-3 * * *", "runs backwards"),
        ("@fortnightly", "unknown descriptor"),
        ("@every soon", "unknown descriptor"),
        ("0 3 * * * * extra", "has 7 field"),
    ],
)
def test_malformed_expressions_are_refused_naming_the_forms(given, message):
    with pytest.raises(ValueError, match=message) as err:
        kfp_cron(given)
    if message.startswith(("has ", "empty", "is not a", "unknown")):  # the shape is wrong: show both forms
        assert "expected five fields" in str(err.value) and "six fields" in str(err.value)


def test_describe_says_what_kfp_receives():
    assert describe("0 3 * * *") == "cron '0 3 * * *' (standard five-field) sent to KFP as '0 0 3 * * *' (seconds first)"
    assert "KFP's six-field form" in describe("0 0 3 * * *")


# ---- against the real libraries ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def robfig(tmp_path_factory):
    """A function expr -> next fire times (unix seconds) as KFP's scheduler computes them, or the parse error."""
    go = shutil.which("go")
    if go is None or not ROBFIG_SRC.is_dir():
        pytest.skip("needs Go and robfig/cron: apt-get install golang-go golang-github-robfig-cron-dev (.ci/run does)")
    src = HERE / "robfig" / "main.go"
    cache = Path(os.environ.get("MEDBRIDGE_CACHE") or Path.home() / ".cache" / "medbridge") / "test-tools"
    binary = cache / f"robfig-next-{hashlib.sha256(src.read_bytes()).hexdigest()[:12]}"
    if not binary.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        build = tmp_path_factory.mktemp("robfig")
        shutil.copy(src, build / "main.go")
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "GOCACHE": str(build / "gocache"),
               "GOFLAGS": ""}
        proc = subprocess.run([go, "build", "-o", str(build / "robfig-next"), "main.go"], cwd=build, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        os.replace(build / "robfig-next", binary)  # atomic: a concurrent worker sees a whole binary or none

    def next_times(expr: str, n: int = 4) -> list[int] | str:
        out = subprocess.run([str(binary)], input=f"{expr}\t{START}\t{n}\n", capture_output=True, text=True,
                             env={**os.environ, "TZ": "UTC"}, timeout=30, check=True).stdout.strip()
        return [int(t) for t in out.split()[1:]] if out.startswith("OK") else out

    return next_times


def _croniter_times(expr: str, n: int = 4) -> list[int]:
    from croniter import croniter

    it = croniter(expr, dt.datetime.fromtimestamp(START, dt.timezone.utc))
    return [int(it.get_next(dt.datetime).timestamp()) for _ in range(n)]


def test_kfp_reads_a_raw_five_field_expression_shifted(robfig):
    """Why the conversion exists: KFP's parser reads "0 3 * * *" as second 0, minute 3, every hour."""
    fires = robfig("0 3 * * *")
    assert [dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M:%S") for t in fires] == [
        "00:03:00", "01:03:00", "02:03:00", "03:03:00",
    ]


@pytest.mark.parametrize(
    "five",
    [
        "0 3 * * *",  # daily at 03:00
        "17 * * * *",  # hourly at :17
        "*/15 9-17 * * 1-5",  # quarter-hours in working hours on weekdays (the start is a Sunday)
        "0 6 1,15 * *",  # twice a month
        "30 2 * jan,jul sun",  # names for months and days
        "0 0 13 * 5",  # day of month AND day of week restricted: both libraries fire on either (cron's OR rule)
    ],
)
def test_converted_schedule_fires_when_standard_cron_would(robfig, five):
    assert robfig(kfp_cron(five)) == _croniter_times(five)


@pytest.mark.parametrize("six", ["0 0 3 * * *", "30 0 3 ? * 1-5", "@daily", "@every 6h"])
def test_passed_through_expressions_parse_in_kfp(robfig, six):
    assert isinstance(robfig(kfp_cron(six)), list)


@pytest.mark.parametrize("bad", ["0 3 * *", "0 0 0 3 * * *", "0 3 * * 7", "60 3 * * *", "0 5-3 * * *", "@fortnightly"])
def test_what_is_refused_here_kfp_would_refuse_too(robfig, bad):
    """Refusing early never rejects an expression KFP would have run (the checks are not stricter than KFP's)."""
    with pytest.raises(ValueError):
        kfp_cron(bad)
    shifted = bad if bad.startswith("@") or len(bad.split()) != 5 else f"0 {bad}"
    assert str(robfig(shifted)).startswith("ERR")
