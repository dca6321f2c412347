"""An append-only, content-keyed cache of JSON rows in a directory, safe to interrupt and to share between processes.

    cache = JsonlCache("~/.cache/medbridge/sft/rationales")
    cache.get(key)                          # the row stored under key, or None
    cache.append([{"key": k, ...}, ...])    # appended and fsync'd before it returns

Every writing process appends to its own file (`<host>-<pid>.jsonl`), so the processes of a multi-GPU run (or two
runs sharing a cache volume) never interleave lines; a reader merges every `*.jsonl` in the directory. A line cut
short by an interruption is ignored, so an interrupted run loses at most the batch it was writing and a rerun
computes only what is missing. Rows are dicts with a "key" field.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any


class JsonlCache:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory).expanduser()
        self.rows: dict[str, dict[str, Any]] = {}
        self.reload()

    @property
    def own_file(self) -> Path:
        return self.dir / f"{socket.gethostname()}-{os.getpid()}.jsonl"

    def reload(self) -> None:
        """Read every writer's file again (e.g. after other processes appended)."""
        self.rows = {}
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("*.jsonl")):
            with path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self.rows[str(row["key"])] = row
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by an interruption: that item is computed again

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, rows: list[dict[str, Any]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.own_file.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for row in rows:
            self.rows[str(row["key"])] = row
