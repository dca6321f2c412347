"""Training checkpoints on the cache volume: where they live, when one is complete, which one to resume from.

    root = checkpoint_root("grpo", fingerprint)        # $MEDBRIDGE_CACHE/checkpoints/grpo-<fingerprint[:16]>
    mark_complete(root / "checkpoint-200", step=200)   # written last: the checkpoint is whole
    found = newest_complete(root)                      # Path of the newest whole checkpoint, or None

A checkpoint is the Hugging Face Trainer's `checkpoint-<step>` directory (policy weights, optimizer, scheduler, RNG
states, trainer state; DeepSpeed's shards under ZeRO-3) plus what MedBridge adds to it (the GRPO-CARE EMA reference,
the support guard's watch history). It counts as complete only once `COMPLETE_FILE` exists in it, written last with
the size of every file and the sha256 of every file up to `HASH_LIMIT` bytes. A checkpoint whose marker is missing
(the process died while saving), unreadable, or disagrees with the files (a file missing, truncated or changed) is
skipped with a warning and never loaded. Large tensor files are checked by size, not hashed: truncation is how a
preempted save fails, and hashing 100 GB of optimizer state at every save would cost minutes.

The key is `components.common.fingerprint.task_fingerprint` of the step's inputs and parameters, so a retried task
(same inputs, same parameters) finds its own checkpoints and a changed one never resumes from a stale run.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from components.common.io import sha256_file, write_json

log = logging.getLogger(__name__)

COMPLETE_FILE = "medbridge-checkpoint.json"
HASH_LIMIT = 256 << 20
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_root(step: str, fingerprint: str, cache: str | Path | None = None) -> Path:
    """<cache volume>/checkpoints/<step>-<first 16 hex digits of the task fingerprint>."""
    from components.common.storage import cache_root

    return Path(cache or cache_root()) / "checkpoints" / f"{step}-{fingerprint[:16]}"


def checkpoint_step(path: str | Path) -> int | None:
    m = _CKPT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def _manifest(ckpt: Path) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and p.name != COMPLETE_FILE:
            rel = p.relative_to(ckpt).as_posix()
            size = p.stat().st_size
            files[rel] = {"size": size, **({"sha256": sha256_file(p)} if size <= HASH_LIMIT else {})}
    return files


def mark_complete(ckpt: str | Path, step: int, extra: dict[str, Any] | None = None) -> Path:
    """Write the completeness marker of `ckpt` (after everything else in it is written)."""
    ckpt = Path(ckpt)
    doc = {
        "step": step,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": _manifest(ckpt),
        **(extra or {}),
    }
    return write_json(ckpt / COMPLETE_FILE, doc)


def check_complete(ckpt: str | Path) -> str | None:
    """None when `ckpt` is a whole checkpoint, else the reason it is not."""
    ckpt = Path(ckpt)
    marker = ckpt / COMPLETE_FILE
    if not marker.is_file():
        return f"no {COMPLETE_FILE} (the save did not finish)"
    try:
        doc = json.loads(marker.read_text())
        files = doc["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{COMPLETE_FILE} is unreadable ({e.__class__.__name__})"
    if not files:
        return f"{COMPLETE_FILE} lists no file"
    for rel, meta in files.items():
        p = ckpt / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != meta.get("size"):
            return f"{rel} has {p.stat().st_size} bytes, {meta.get('size')} were written"
        if "sha256" in meta and sha256_file(p) != meta["sha256"]:
            return f"{rel} changed after it was written (sha256 differs)"
    return None


def list_checkpoints(root: str | Path) -> list[Path]:
    """`checkpoint-<step>` directories under `root`, newest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p), reverse=True)


def newest_complete(root: str | Path) -> Path | None:
    """The newest whole checkpoint under `root`; each newer, broken one is skipped with a warning."""
    for ckpt in list_checkpoints(root):
        reason = check_complete(ckpt)
        if reason is None:
            return ckpt
        log.warning("skipping checkpoint %s: %s", ckpt, reason)
    return None


def discard_incomplete(root: str | Path) -> list[Path]:
    """Delete the checkpoints under `root` that are not whole (so a later save never mixes with their leftovers)."""
    gone = []
    for ckpt in list_checkpoints(root):
        reason = check_complete(ckpt)
        if reason is not None:
            log.warning("removing incomplete checkpoint %s: %s", ckpt, reason)
            shutil.rmtree(ckpt, ignore_errors=True)
            gone.append(ckpt)
    return gone


def prune(root: str | Path, keep_steps: set[int]) -> list[Path]:
    """Delete every `checkpoint-<step>` under `root` whose step is not in `keep_steps`; returns what was deleted."""
    gone = []
    for ckpt in list_checkpoints(root):
        if checkpoint_step(ckpt) not in keep_steps:
            shutil.rmtree(ckpt, ignore_errors=True)
            gone.append(ckpt)
    return gone


def read_json_in(ckpt: str | Path, name: str) -> Any:
    """A JSON file MedBridge stored in a (complete) checkpoint."""
    return json.loads((Path(ckpt) / name).read_text())


class StopRequest:
    """Remembers SIGTERM (a pod being preempted or deleted) so training can save and stop at the end of the step.

    Use as a context manager around `trainer.train()`; outside it the previous handler is back."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.signals = signals
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum, _frame):
        log.warning("signal %d received: saving a checkpoint at the end of this step, then stopping", signum)
        self.requested = True

    def __enter__(self) -> StopRequest:
        self._old = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def checkpoint_callbacks(root: str | Path, stop: StopRequest, *, extra=None, keep=None) -> tuple[Any, Any]:
    """(preemption, completion): the two TrainerCallbacks that make a Trainer's checkpoints resumable.

    preemption: after SIGTERM reached any process, save at the end of the step on all of them and stop (its
      `preempted` says so afterwards); it also drops the Trainer's save of the last step (the model is written right
      after it, and resuming from it would train one step too many).
    completion: on every save, `extra(ckpt_dir)` (on every process: MedBridge's own state; collective where it
      gathers weights), then rank 0 writes the completeness marker and deletes the checkpoints whose step is not in
      `keep(step)` (default: only the newest is kept)."""
    from transformers import TrainerCallback

    from components.common.training import any_process, barrier, is_main_process

    root = Path(root)

    class Preemption(TrainerCallback):
        def __init__(self):
            self.preempted = False

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False
                return control
            if any_process(stop.requested):
                control.should_save = True
                control.should_training_stop = True
                self.preempted = True
            return control

    class Completion(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            step = state.global_step
            ckpt = root / f"checkpoint-{step}"
            if extra is not None:
                extra(ckpt)
            barrier()  # every rank's shards and RNG state are on disk
            if is_main_process():
                mark_complete(ckpt, step)
                prune(root, set(keep(step)) if keep is not None else {step})
            barrier()
            return control

    return Preemption(), Completion()


def resume_point(root: str | Path, max_steps: int) -> str | None:
    """The checkpoint to resume from, the same on every process: rank 0 removes incomplete checkpoints and picks the
    newest complete one below `max_steps` (a checkpoint at the last step is never written; one found is ignored)."""
    from components.common.training import broadcast_object, is_main_process

    root = Path(root)
    found = None
    if is_main_process() and root.is_dir():
        discard_incomplete(root)
        found = newest_complete(root)
        if found is not None and checkpoint_step(found) >= max_steps:
            log.warning("ignoring %s: at or past the last step %d", found, max_steps)
            found = None
    resume = broadcast_object(str(found) if found else None)
    if resume:
        log.warning("resuming from %s", resume)
    return resume
