"""Credentials never leave a run: what lineage records, reports and log lines keep of a value that may hold one.

    record = redact(record)          # any JSON-like value: dicts, lists, strings
    line = redact_text(line)         # one string

Three rules, applied together:
- the value of any credential the process holds in its environment (SECRET_ENV: the S3 keys, the Hugging Face token,
  the lineage signing key, the webhook URL, the KFP token) is replaced wherever it appears in a string;
- a URL's user-info (`https://user:password@host`) and the values of signing / token query parameters
  (`X-Amz-Signature=…`, `token=…`) are replaced;
- the value under a key that names a credential (`hf_token`, `password`, `secret_access_key`, …) is replaced.

A replaced value reads "[redacted]". Nothing else changes, so a record stays readable and its other fields auditable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

REDACTED = "[redacted]"
# Environment variables that hold credentials on a MedBridge pod or a developer's machine.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "MEDBRIDGE_LINEAGE_KEY",
    "MEDBRIDGE_WEBHOOK_URL",
    "KF_PIPELINES_SA_TOKEN",
    "KFP_TOKEN",
)
# Files whose content is a credential (a mounted Secret named by these variables).
SECRET_FILE_ENV = ("MEDBRIDGE_LINEAGE_KEY_FILE", "MEDBRIDGE_WEBHOOK_URL_FILE", "KF_PIPELINES_SA_TOKEN_PATH")
_MIN_SECRET = 6  # shorter values (e.g. "1", "true") would redact ordinary text
_KEY = re.compile(
    r"(^|[_\-.])(secret|secrets|password|passwd|token|api[_\-]?key|access[_\-]?key|secret[_\-]?key|private[_\-]?key"
    r"|credential|credentials|hmac[_\-]?key|signing[_\-]?key|webhook[_\-]?url)($|[_\-.])",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<info>[^/@\s:]+(?::[^/@\s]*)?)@")
_QUERY = re.compile(
    r"(?P<name>[?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig|token|access_token"
    r"|api_key|apikey|key|password)=)(?P<value>[^&#\s\"']+)",
    re.IGNORECASE,
)


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """The credentials this process holds (SECRET_ENV values and SECRET_FILE_ENV files), longest first."""
    env = os.environ if environ is None else environ
    values = {env[name].strip() for name in SECRET_ENV if env.get(name, "").strip()}
    for name in SECRET_FILE_ENV:
        path = env.get(name)
        if path:
            try:
                values.add(Path(path).read_text().strip())
            except (OSError, UnicodeDecodeError):
                pass
    return sorted((v for v in values if len(v) >= _MIN_SECRET), key=len, reverse=True)


def is_secret_key(name: str) -> bool:
    """True when a field / key name says its value is a credential (`hf_token`, `password`; not `max_new_tokens`)."""
    return bool(_KEY.search(str(name)))


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """`text` with credential values, URL user-info and signing query parameters replaced."""
    if not isinstance(text, str) or not text:
        return text
    for value in secret_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _QUERY.sub(lambda m: f"{m['name']}{REDACTED}", text)


def redact(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a JSON-like `value` with every credential replaced (see the module docstring)."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_key(k) and v not in (None, "", False) else redact(v, secrets))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value
