"""The optional webhook: one JSON POST when a re-diagnosis run fails, a checkpoint changes branch, or a flag is raised.

    notify("branch_changed", {"checkpoint": "s3://…/step-300", "from": "sharpen", "to": "bridge"})

The URL comes from a Kubernetes Secret, as MEDBRIDGE_WEBHOOK_URL or a file named by MEDBRIDGE_WEBHOOK_URL_FILE (a
mounted Secret); without one, nothing is sent. The body is {"source": "medbridge", "event", "text", ...payload}
("text" is one line a chat webhook shows as is). A webhook that fails is reported as one warning line and never
stops the watcher or the trend report; the URL (it usually embeds a token) is never printed.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

URL_ENV = "MEDBRIDGE_WEBHOOK_URL"
URL_FILE_ENV = "MEDBRIDGE_WEBHOOK_URL_FILE"
EVENTS = ("run_failed", "branch_changed", "flag_raised")


def webhook_url(environ: dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    if env.get(URL_ENV, "").strip():
        return env[URL_ENV].strip()
    path = env.get(URL_FILE_ENV)
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError:
            print(f"[medbridge] warning: {URL_FILE_ENV} names an unreadable file; no webhook sent", file=sys.stderr)
    return None


def notify(event: str, payload: dict[str, Any], *, url: str | None = None, timeout: float = 10.0) -> bool:
    """POST one event to the webhook; True when it answered 2xx, False when none is set or it failed."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}; one of {', '.join(EVENTS)}")
    url = url or webhook_url()
    if not url:
        return False
    from components.common.redact import redact

    body = redact({"source": "medbridge", "event": event, "text": _text(event, payload), **payload})
    req = urllib.request.Request(
        url, data=json.dumps(body, default=str).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            ok = 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "code", None) or getattr(e, "reason", None) or type(e).__name__
        print(f"[medbridge] warning: webhook for {event} failed ({reason}); continuing", file=sys.stderr)
        return False
    if not ok:
        print(f"[medbridge] warning: webhook for {event} answered {resp.status}; continuing", file=sys.stderr)
    return ok


def _text(event: str, p: dict[str, Any]) -> str:
    ckpt = p.get("checkpoint", "?")
    if event == "run_failed":
        return f"MedBridge re-diagnosis of {ckpt} failed ({p.get('state', '?')}) after {p.get('attempts', '?')} attempt(s)"
    if event == "branch_changed":
        return f"MedBridge: {ckpt} changed branch {p.get('from', '?')} -> {p.get('to', '?')}"
    return f"MedBridge: {ckpt} raised {p.get('flag', 'a flag')}: {p.get('detail', '')}".strip()
