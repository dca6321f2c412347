"""`medbridge watch`: re-diagnose every new checkpoint content under an S3 prefix, once.

    medbridge watch s3://models/medbridge/checkpoints --state s3://medbridge/state --host https://kfp.example.org
    medbridge watch … --once --limit 2 --json          # what the re-diagnosis CronJob runs each hour

A checkpoint is a sub-prefix of the watched prefix holding `config.json` (uploads put it last). Each poll:

1. hashes every checkpoint's content: the sha256 manifest of its objects (streamed; an object whose ETag and size
   are unchanged keeps the hash recorded at the last poll), so a checkpoint is keyed by what it holds, not by name;
2. keeps, per checkpoint URI, the content it last held (`index/`): a checkpoint overwritten in place has new content
   and is re-diagnosed, and the row says so;
3. looks the content up in the registry (`registry/<sha256>.json`): content already registered (the same weights
   under another name, or seen before) is never submitted again;
4. claims new content atomically (`claims/<sha256>/attempt-<n>`: an S3 conditional put, `If-None-Match: *`; with a
   server that does not enforce it, a write-then-list lock) and submits the diagnose-only pipeline
   (pipelines/rediagnose.py) under a run name derived from the content and the attempt;
5. records the run id in the entry, and on later polls asks Kubeflow about it: the entry is done only when the run
   SUCCEEDED; a failed run is submitted again up to --max-attempts, then marked failed (webhook: run_failed).

A watcher that crashed between submitting and recording leaves an entry claimed without a run id; once the claim
is older than --lease, the next poll finds the run by its name in Kubeflow and records it, or (when none was
submitted) claims the next attempt. Every state object is written whole with one PUT; nothing is half-written.
Watchers started together (two CronJob pods) also share the Kubeflow experiment: the one whose create the API
server refuses as a duplicate name uses the experiment the other made (pipelines/kfp_objects.py).

The pipeline's own published outputs (a model directory whose lineage.json names a training step) are skipped
unless --include-published. Objects that are not model directories are reported as skipped rows. Training never
starts here: a person approves a checkpoint with `medbridge submit --train --registry STATE …`, recorded in its entry.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

HELP = "re-diagnose each new checkpoint content under an S3 prefix (a content-keyed registry; diagnose-only runs)"
READY_FILE = "config.json"
TRAINING_STEPS = ("sft", "grpo")  # a directory whose lineage names one of these is a MedBridge output
DONE, FAILED = "succeeded", "failed"
KFP_OK = ("SUCCEEDED",)
KFP_BAD = ("FAILED", "CANCELED", "CANCELLED", "SKIPPED")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _age(iso: str | None) -> float:
    if not iso:
        return float("inf")
    try:
        return (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(iso)).total_seconds()
    except ValueError:
        return float("inf")


def run_name(sha: str, attempt: int) -> str:
    """The Kubeflow run name of one attempt: derived from the content, so a crashed watcher's run can be found."""
    return f"medbridge-rediagnose-{sha[:16]}-a{attempt}"


# ---- the state on S3 ----------------------------------------------------------------------------------------------


class State:
    """The watcher's objects under `state_uri` (s3://bucket/prefix): registry/, index/, claims/."""

    def __init__(self, state_uri: str, *, client=None, claim_mode: str = "auto", lease: float = 900.0):
        from components.common.storage import parse_s3_uri, s3_client

        if not str(state_uri).startswith("s3://"):
            raise ValueError(f"--state {state_uri!r}: the registry lives on S3; pass an s3://bucket/prefix URI")
        self.uri = state_uri.rstrip("/")
        self.bucket, self.prefix = parse_s3_uri(self.uri)
        self.client = client or s3_client()
        self.lease = lease
        if claim_mode not in ("auto", "conditional", "lock"):
            raise ValueError(f"--claim-mode {claim_mode!r}: choose auto, conditional or lock")
        self.claim_mode = self.probe_conditional() if claim_mode == "auto" else claim_mode
        self.token = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.changed = False  # whether the last `update` wrote the entry

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    # -- plain objects

    def get(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """(JSON object, ETag) or (None, None) when absent; an object that is not JSON is an error naming it."""
        from botocore.exceptions import BotoCoreError, ClientError

        from components.common.storage import _client_error, _unreachable

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise _client_error(e, f"s3://{self.bucket}/{key}", self.client) from None
        except BotoCoreError as e:
            raise _unreachable(e, f"s3://{self.bucket}/{key}", self.client) from None
        try:
            data = json.loads(obj["Body"].read())
        except ValueError:
            raise ValueError(f"s3://{self.bucket}/{key}: not valid JSON; a watcher state object was edited by hand") from None
        return data, obj.get("ETag")

    def put(self, key: str, doc: dict[str, Any], *, if_match: str | None = None, if_none_match: bool = False) -> bool:
        """Write one object whole; False when a condition the server enforces did not hold."""
        from botocore.exceptions import BotoCoreError, ClientError

        from components.common.storage import _client_error, _unreachable

        kw: dict[str, Any] = {}
        if self.claim_mode == "conditional":
            if if_match:
                kw["IfMatch"] = if_match
            if if_none_match:
                kw["IfNoneMatch"] = "*"
        body = json.dumps(doc, indent=2, sort_keys=True, default=str).encode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **kw)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise _client_error(e, f"s3://{self.bucket}/{key}", self.client) from None
        except BotoCoreError as e:
            raise _unreachable(e, f"s3://{self.bucket}/{key}", self.client) from None
        return True

    # -- claims

    def probe_conditional(self) -> str:
        """"conditional" when the server refuses a second `If-None-Match: *` PUT of one key, else "lock"."""
        from botocore.exceptions import BotoCoreError, ClientError

        from components.common.storage import _unreachable

        key = self.key(".probe", f"{secrets.token_hex(8)}.json")
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except BotoCoreError as e:
            raise _unreachable(e, self.uri, self.client) from None
        except ClientError as e:
            from components.common.storage import _client_error

            raise _client_error(e, self.uri, self.client) from None
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"1", IfNoneMatch="*")
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"2", IfNoneMatch="*")
                return "lock"  # the second create succeeded: the header is ignored
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                return "conditional" if code in ("PreconditionFailed", "412", "ConditionalRequestConflict") else "lock"
        except ClientError:
            return "lock"  # the header itself is refused (NotImplemented)
        finally:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except ClientError:
                pass

    def claim(self, sha: str, attempt: int) -> bool:
        """True for exactly one caller per (content, attempt), whoever else races for it."""
        from botocore.exceptions import ClientError

        base = self.key("claims", sha, f"attempt-{attempt}")
        doc = {"token": self.token, "at": _now(), "attempt": attempt}
        if self.claim_mode == "conditional":
            if not self.put(f"{base}.json", doc, if_none_match=True):
                return False
            mine, _ = self.get(f"{base}.json")  # a server that checks and writes non-atomically: the last writer wins
            return bool(mine and mine.get("token") == self.token)
        # Fallback: write my claim, then list; I hold it only when mine is the only one. Two racers cannot both see
        # only their own (each lists after writing), so at most one wins; a loser withdraws and tries next poll.
        own = f"{base}/{self.token}.json"
        self.put(own, doc)
        from components.common.storage import list_objects

        others = [o["Key"] for o in list_objects(f"s3://{self.bucket}/{base}", client=self.client) if o["Key"] != own]
        if others:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=own)
            except ClientError:
                pass
            return False
        return True

    # -- registry entries

    def entry(self, sha: str) -> tuple[dict[str, Any] | None, str | None]:
        doc, etag = self.get(self.key("registry", f"{sha}.json"))
        if doc is not None:
            from components.common.schema import check

            check(doc, "registry", f"s3://{self.bucket}/{self.key('registry', f'{sha}.json')}")
        return doc, etag

    def update(self, sha: str, change: Callable[[dict[str, Any]], dict[str, Any] | None], tries: int = 5) -> dict[str, Any]:
        """Read-modify-write of one entry, retried when another watcher wrote it in between (ETag condition).
        `change` returns None to leave the entry as it is; `self.changed` then says False."""
        for _ in range(tries):
            doc, etag = self.entry(sha)
            new = change(dict(doc or {}))
            if new is None:
                self.changed = False
                return doc or {}
            from components.common.schema import stamp

            new = stamp({**new, "updated_at": _now()}, "registry")
            if self.put(self.key("registry", f"{sha}.json"), new, if_match=etag, if_none_match=etag is None):
                self.changed = True
                return new
            time.sleep(0.05 + secrets.randbelow(100) / 1000)
        raise RuntimeError(f"{self.uri}: registry entry {sha[:16]}… kept changing under this watcher; try again")

    def index(self, uri: str) -> tuple[dict[str, Any] | None, str | None]:
        from components.common.storage import parse_s3_uri

        bucket, prefix = parse_s3_uri(uri)
        return self.get(self.key("index", bucket, f"{prefix}.json"))

    def put_index(self, uri: str, doc: dict[str, Any]) -> None:
        from components.common.storage import parse_s3_uri

        bucket, prefix = parse_s3_uri(uri)
        self.put(self.key("index", bucket, f"{prefix}.json"), doc)


# ---- Kubeflow ------------------------------------------------------------------------------------------------------


class Kfp:
    """What the watcher asks Kubeflow Pipelines (v2beta1 API, through kfp.Client): submit, find by name, state."""

    def __init__(self, host: str, *, experiment: str = "medbridge-rediagnose", profile: str = "cluster",
                 overrides: list[str] | None = None, private: bool = False, no_gpu: bool = False):
        import kfp

        self.client = kfp.Client(host=host)
        self.experiment = experiment
        self.profile, self.overrides, self.private, self.no_gpu = profile, list(overrides or []), private, no_gpu
        self._experiment_id: str | None = None

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            with contextlib.redirect_stdout(sys.stderr):  # kfp prints links; stdout carries the rows (--json)
                from pipelines.kfp_objects import experiment

                self._experiment_id = experiment(self.client, self.experiment).experiment_id
        return self._experiment_id

    def submit(self, name: str, model_ref: str, publish_uri: str) -> str:
        import tempfile
        from pathlib import Path

        from pipelines.params import load_profile, parse_overrides
        from pipelines.rediagnose import arguments, compile_rediagnose

        overrides = parse_overrides(self.overrides)
        overrides["model_ref"] = model_ref
        params = load_profile(self.profile, overrides)
        with tempfile.TemporaryDirectory() as tmp:
            spec = compile_rediagnose(str(Path(tmp) / "rediagnose.yaml"), params, private=self.private,
                                      gpu=not self.no_gpu)
            args = arguments(params, publish_uri)
            experiment_id = self.experiment_id()
            with contextlib.redirect_stdout(sys.stderr):
                run = self.client.create_run_from_pipeline_package(
                    spec, arguments=args, run_name=name, experiment_id=experiment_id
                )
        return run.run_id

    def find(self, name: str) -> str | None:
        flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
        runs = self.client.list_runs(experiment_id=self.experiment_id(), filter=flt).runs or []
        return runs[0].run_id if runs else None

    def state(self, run_id: str) -> str:
        return str(self.client.get_run(run_id).state or "UNKNOWN").upper()


# ---- one poll ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    checkpoint: str
    action: str  # submitted | running | succeeded | failed | retried | recorded | duplicate | claimed-elsewhere | skipped | error
    detail: str = ""
    sha256: str | None = None
    run_id: str | None = None


@dataclass
class Options:
    max_attempts: int = 3
    limit: int = 0  # submissions per poll (0 = no limit)
    include_published: bool = False
    ready_file: str = READY_FILE
    diagnoses_uri: str = ""  # where runs publish their diagnosis (default: <state>/diagnoses)


@dataclass
class Poll:
    rows: list[Row] = field(default_factory=list)
    submitted: int = 0

    def add(self, *a, **kw) -> Row:
        row = Row(*a, **kw)
        self.rows.append(row)
        return row


def find_checkpoints(prefix: str, objects: list[dict[str, Any]], ready_file: str = READY_FILE
                     ) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[str, str]]]:
    """({checkpoint URI: its objects}, [(URI, why skipped)]) from one listing of `prefix`: direct sub-prefixes that
    hold `ready_file` are checkpoints (or the prefix itself, when it holds one); everything else is skipped."""
    from components.common.storage import parse_s3_uri

    bucket, p = parse_s3_uri(prefix)
    base = f"{p}/" if p else ""
    if any(o["Key"] == base + ready_file for o in objects):
        return {prefix.rstrip("/"): objects}, []
    groups: dict[str, list[dict[str, Any]]] = {}
    loose: list[tuple[str, str]] = []
    for o in objects:
        rel = o["Key"][len(base):]
        if "/" not in rel:
            loose.append((f"s3://{bucket}/{o['Key']}", "a loose object, not a model directory"))
            continue
        groups.setdefault(rel.split("/", 1)[0], []).append(o)
    found, skipped = {}, loose
    for name, objs in sorted(groups.items()):
        uri = f"s3://{bucket}/{base}{name}"
        if any(o["Key"] == f"{base}{name}/{ready_file}" for o in objs):
            found[uri] = objs
        else:
            skipped.append((uri, f"not a model directory (no {ready_file}; still uploading, or not a checkpoint)"))
    return found, skipped


def _published(state: State, uri: str, objects: list[dict[str, Any]]) -> str | None:
    """The training step a MedBridge output's lineage.json names, or None for any other checkpoint."""
    from components.common.lineage import parse_lineage
    from components.common.storage import parse_s3_uri

    bucket, prefix = parse_s3_uri(uri)
    key = f"{prefix}/lineage.json"
    if not any(o["Key"] == key for o in objects):
        return None
    try:
        text = state.client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", errors="replace")
        step = parse_lineage(text, f"{uri}/lineage.json").get("step")
    except Exception:
        return None
    return step if step in TRAINING_STEPS else None


def content_of(state: State, uri: str, objects: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """(content sha256, the URI's previous index entry): hashes reuse the last poll's where ETag and size match."""
    from components.common.io import manifest_digest
    from components.common.storage import remote_manifest

    old, _ = state.index(uri)
    files = remote_manifest(uri, client=state.client, objects=objects, known=(old or {}).get("files"))
    sha = manifest_digest({rel: m["sha256"] for rel, m in files.items()})
    history = list((old or {}).get("history") or [])
    if not old or old.get("sha256") != sha:
        history.append({"sha256": sha, "seen_at": _now()})
        state.put_index(uri, {"uri": uri, "sha256": sha, "files": files, "history": history[-50:], "seen_at": _now()})
    return sha, old


def poll(prefix: str, state: State, kfp: Kfp, opts: Options, *, notify: Callable[..., Any] | None = None) -> Poll:
    """One pass over `prefix` (see the module docstring)."""
    from components.common.storage import list_objects

    out = Poll()
    notify = notify or _notify
    objects = [o for o in list_objects(prefix, client=state.client) if not o["Key"].endswith("/")]
    checkpoints, skipped = find_checkpoints(prefix, objects, opts.ready_file)
    for uri, why in skipped:
        out.add(uri, "skipped", why)
    by_content: dict[str, list[tuple[str, dict[str, Any] | None]]] = {}
    for uri, objs in checkpoints.items():
        try:
            step = _published(state, uri, objs)
            if step and not opts.include_published:
                out.add(uri, "skipped", f"a MedBridge output (lineage: {step}); pass --include-published to diagnose it")
                continue
            sha, old = content_of(state, uri, objs)
            by_content.setdefault(sha, []).append((uri, old))
        except (OSError, ValueError, RuntimeError) as e:
            out.add(uri, "error", str(e))
    for sha, seen in by_content.items():
        try:
            _content(sha, seen, state, kfp, opts, out, notify)
        except (OSError, ValueError, RuntimeError) as e:
            out.add(seen[0][0], "error", str(e), sha)
    return out


def _publish_uri(state: State, opts: Options, sha: str) -> str:
    return f"{(opts.diagnoses_uri or state.uri + '/diagnoses').rstrip('/')}/{sha}"


def _submit(uri: str, sha: str, attempt: int, state: State, kfp: Kfp, opts: Options, out: Poll, note: str,
            also: list[str] | None = None) -> None:
    if opts.limit and out.submitted >= opts.limit:
        out.add(uri, "deferred", f"--limit {opts.limit} reached this poll; submitted next time", sha)
        return
    if not state.claim(sha, attempt):
        out.add(uri, "claimed-elsewhere", f"another watcher holds attempt {attempt}", sha)
        return
    name = run_name(sha, attempt)
    state.update(sha, lambda e: {
        **e, "sha256": sha, "checkpoints": list(dict.fromkeys([*(e.get("checkpoints") or []), uri, *(also or [])])),
        "status": "claimed", "claimed_by": state.token, "claimed_at": _now(),
        "attempts": [*(e.get("attempts") or []), {"attempt": attempt, "run_name": name, "run_id": None}],
    })
    try:
        run_id = kfp.submit(name, uri, _publish_uri(state, opts, sha))
    except Exception as e:  # Kubeflow down or refusing: the claim stands; after --lease the next poll looks again
        out.add(uri, "error", f"submitting {name} failed ({type(e).__name__}: {e}); retried after the lease", sha)
        return
    out.submitted += 1
    _record_run(state, sha, attempt, run_id)
    out.add(uri, "submitted", f"{note}; run {name}", sha, run_id)


def _record_run(state: State, sha: str, attempt: int, run_id: str) -> None:
    def change(e):
        attempts = [dict(a) for a in e.get("attempts") or []]
        for a in attempts:
            if a.get("attempt") == attempt:
                a.update(run_id=run_id, submitted_at=a.get("submitted_at") or _now())
        return {**e, "status": "submitted", "attempts": attempts}

    state.update(sha, change)


def _content(sha: str, seen: list[tuple[str, dict[str, Any] | None]], state: State, kfp: Kfp, opts: Options,
             out: Poll, notify: Callable[..., Any]) -> None:
    """Advance one content's registry entry; `seen`: the (URI, previous index entry) pairs holding it now."""
    entry, _ = state.entry(sha)
    known = list((entry or {}).get("checkpoints") or [])
    uri, old = next(((u, o) for u, o in seen if u in known), seen[0])  # the row that speaks for this content
    for other, _ in seen:
        if other != uri:
            first = known[0] if known else uri
            out.add(other, "duplicate", f"same content as {first}: not submitted again", sha)
    if entry is None:
        overwritten = bool(old and old.get("sha256") and old["sha256"] != sha)
        note = f"overwritten in place (was {old['sha256'][:12]}…): new content" if overwritten else "new content"
        _submit(uri, sha, 1, state, kfp, opts, out, note, also=[u for u, _ in seen])
        return
    new_uris = [u for u, _ in seen if u not in known]
    if new_uris:
        state.update(sha, lambda e: {**e, "checkpoints": list(dict.fromkeys([*(e.get("checkpoints") or []), *new_uris]))})
        if uri in new_uris:
            out.add(uri, "duplicate", f"same content as {known[0] if known else '?'}: not submitted again", sha)
    attempts = entry.get("attempts") or []
    last = attempts[-1] if attempts else {"attempt": 0}
    status = entry.get("status")
    if status == DONE:
        out.add(uri, "succeeded", f"diagnosed by run {last.get('run_id')}", sha, last.get("run_id"))
        return
    if status == FAILED:
        out.add(uri, "failed", f"gave up after {len(attempts)} attempt(s); fix and re-upload, or diagnose by hand", sha)
        return
    run_id = last.get("run_id")
    if not run_id:  # claimed, no run recorded: in progress elsewhere, or a watcher crashed in between
        if _age(entry.get("claimed_at")) < state.lease:
            out.add(uri, "claimed-elsewhere", f"attempt {last.get('attempt')} being submitted by {entry.get('claimed_by')}", sha)
            return
        found = kfp.find(last.get("run_name") or run_name(sha, last.get("attempt", 1)))
        if found:
            _record_run(state, sha, last["attempt"], found)
            out.add(uri, "recorded", f"found run {found} a crashed watcher had submitted", sha, found)
            return
        _submit(uri, sha, int(last.get("attempt", 0)) + 1, state, kfp, opts, out, "the previous claim never submitted")
        return
    kstate = kfp.state(run_id)

    def with_state(e):
        return [{**a, "state": kstate} if a.get("run_id") == run_id else a for a in e.get("attempts") or []]

    if kstate in KFP_OK:
        state.update(sha, lambda e: None if e.get("status") == DONE else
                     {**e, "status": DONE, "finished_at": _now(), "attempts": with_state(e)})
        out.add(uri, "succeeded", f"run {run_id} succeeded", sha, run_id)
        if state.changed:  # this watcher recorded the success: it alone reports what the diagnosis changed
            _notify_diagnosis(_publish_uri(state, opts, sha), notify)
    elif kstate in KFP_BAD:
        if len(attempts) < opts.max_attempts:
            state.update(sha, lambda e: {**e, "attempts": with_state(e)})
            _submit(uri, sha, int(last["attempt"]) + 1, state, kfp, opts, out,
                    f"run {run_id} {kstate.lower()}; retry {len(attempts) + 1}/{opts.max_attempts}")
        else:
            state.update(sha, lambda e: None if e.get("status") == FAILED else
                         {**e, "status": FAILED, "finished_at": _now(), "attempts": with_state(e)})
            out.add(uri, "failed", f"run {run_id} {kstate.lower()}; gave up after {len(attempts)} attempt(s)", sha, run_id)
            if state.changed:
                notify("run_failed", {"checkpoint": uri, "sha256": sha, "run_id": run_id, "state": kstate,
                                      "attempts": len(attempts)})
    else:
        out.add(uri, "running", f"run {run_id}: {kstate}", sha, run_id)


def _notify_diagnosis(published: str, notify: Callable[..., Any]) -> None:
    """Send the events (branch change, flags) of the diagnosis a successful run published under `published`,
    against the diagnoses published before it (pipelines/trend.py). A diagnosis not published: nothing to send."""
    from pipelines.trend import add_events, gather

    try:
        points, _ = gather(published.rsplit("/", 1)[0])
    except (OSError, ValueError, RuntimeError) as e:
        print(f"[medbridge] warning: could not read the published diagnoses ({e}); no diagnosis events sent",
              file=sys.stderr)
        return
    add_events(points)
    for p in points:
        if f"{published}/" in p["source"]:
            for e in p.get("events") or []:
                notify(e["event"], {"checkpoint": p["checkpoint"], "sha256": p.get("model_sha256"),
                                    **{k: v for k, v in e.items() if k != "event"}})


def _notify(event: str, payload: dict[str, Any]) -> None:
    from pipelines.notify import notify

    notify(event, payload)


# ---- approving training ------------------------------------------------------------------------------------------


def _find_entry(registry: str, model_ref: str, client=None) -> tuple[State, str, dict[str, Any]]:
    state = State(registry, client=client)
    idx, _ = state.index(model_ref) if model_ref.startswith("s3://") else (None, None)
    sha = (idx or {}).get("sha256")
    entry = state.entry(sha)[0] if sha else None
    if entry is None:
        raise ValueError(
            f"{model_ref}: not in the checkpoint registry {registry}; `medbridge watch` diagnoses a checkpoint "
            "before a person approves training it"
        )
    return state, sha, entry


def entry_for_training(registry: str | None, model_ref: str, schedule: str | None = None, client=None) -> dict[str, Any]:
    """The registry entry of the checkpoint a person approves for training (ValueError, one line, when there is none)."""
    if not registry:
        raise ValueError("--train records the approval in the checkpoint registry: pass --registry s3://…/state")
    if schedule:
        raise ValueError("--train approves one checkpoint once; it cannot be combined with --schedule")
    try:
        return _find_entry(registry, model_ref, client)[2]
    except (OSError, RuntimeError) as e:  # S3 unreachable or refusing: one line from the CLI, like bad input
        raise ValueError(str(e)) from None


def record_training(registry: str, model_ref: str, run_id: str, client=None) -> str:
    """Record in the checkpoint's registry entry that a person submitted training run `run_id`; returns a line."""
    who = os.environ.get("MEDBRIDGE_APPROVED_BY") or os.environ.get("USER") or socket.gethostname()
    try:
        state, sha, _ = _find_entry(registry, model_ref, client)
        state.update(sha, lambda e: {**e, "training": [*(e.get("training") or []),
                                                      {"run_id": run_id, "approved_by": who, "at": _now(),
                                                       "checkpoint": model_ref}]})
    except (OSError, RuntimeError) as e:
        raise ValueError(f"training run {run_id} was submitted, but recording it in {registry} failed: {e}") from None
    return f"[medbridge] training run {run_id} recorded in the registry entry of {model_ref} ({sha[:12]}…)"


# ---- command line --------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", help="s3:// prefix whose sub-prefixes are checkpoints (each with config.json)")
    p.add_argument("--state", required=True, help="s3:// prefix of the registry (registry/, index/, claims/)")
    p.add_argument("--host", required=True, help="Kubeflow Pipelines API endpoint, e.g. https://kfp.example.org/pipeline")
    p.add_argument("--experiment", default="medbridge-rediagnose", help="Kubeflow experiment of the re-diagnosis runs")
    p.add_argument("--profile", default="cluster", help="pipeline profile of the re-diagnosis runs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one pipeline parameter of the re-diagnosis runs (repeatable)")
    p.add_argument("--private", action="store_true",
                   help="runs keep images and question/answer texts out of their reports and sample dumps")
    p.add_argument("--no-gpu", action="store_true", help="submit without GPU requests, secrets and cache volume")
    p.add_argument("--max-attempts", type=int, default=3, help="runs submitted per content before it is marked failed")
    p.add_argument("--limit", type=int, default=0, help="submit at most this many runs per poll (0 = no limit)")
    p.add_argument("--include-published", action="store_true",
                   help="also diagnose the pipeline's own published outputs (lineage names sft/grpo)")
    p.add_argument("--diagnoses", default="", help="where runs publish their diagnosis (default: <state>/diagnoses)")
    p.add_argument("--lease", type=float, default=900.0,
                   help="seconds after which a claim without a recorded run counts as abandoned")
    p.add_argument("--claim-mode", default="auto", choices=("auto", "conditional", "lock"),
                   help="auto: use S3 conditional writes when the server enforces them, else a write-then-list lock")
    p.add_argument("--once", action="store_true", help="poll once and exit (the CronJob); default: poll forever")
    p.add_argument("--interval", type=float, default=300.0, help="seconds between polls without --once")
    p.add_argument("--json", action="store_true", help="print each poll's rows as JSON")


def _print(result: Poll, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"rows": [asdict(r) for r in result.rows], "submitted": result.submitted}, indent=2))
        return
    if not result.rows:
        print("[medbridge] no checkpoint under the prefix")
    for r in result.rows:
        sha = f"{r.sha256[:12]}…" if r.sha256 else "-"
        print(f"{r.action:18} {sha:14} {r.checkpoint}  {r.detail}")


def run(args: argparse.Namespace) -> int:
    from components.common.redact import redact_text

    try:
        if args.max_attempts < 1:
            raise ValueError(f"--max-attempts {args.max_attempts}: must be >= 1")
        if not str(args.prefix).startswith("s3://"):
            raise ValueError(f"{args.prefix!r}: the watched prefix must be an s3://bucket/prefix URI")
        state = State(args.state, claim_mode=args.claim_mode, lease=args.lease)
        kfp = Kfp(args.host, experiment=args.experiment, profile=args.profile, overrides=args.overrides,
                  private=args.private, no_gpu=args.no_gpu)
        opts = Options(max_attempts=args.max_attempts, limit=args.limit, include_published=args.include_published,
                       diagnoses_uri=args.diagnoses)
        while True:
            result = poll(args.prefix, state, kfp, opts)
            _print(result, args.json)
            if args.once:
                return 1 if any(r.action == "error" for r in result.rows) else 0
            time.sleep(args.interval)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"medbridge watch: error: {redact_text(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
