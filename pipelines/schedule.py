"""Cron expressions for KFP recurring runs (`medbridge submit --schedule CRON`).

    kfp_cron("0 3 * * *")      -> "0 0 3 * * *"    # five fields (standard cron): daily at 03:00, seconds added
    kfp_cron("0 0 3 * * *")    -> "0 0 3 * * *"    # six fields (KFP's own form): passed through
    kfp_cron("@daily")         -> "@daily"         # descriptors mean the same in both
    kfp_cron("0 3 * *")        -> ValueError naming the expected forms

KFP's scheduler parses a recurring run's cron with robfig/cron v1 `cron.Parse`: SIX fields, seconds first
(SECOND MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK), with the day of week optional. So a standard five-field
expression handed to KFP unchanged is read shifted by one field: "0 3 * * *" becomes second 0, minute 3, every
hour. `kfp_cron` reads five fields as standard cron (MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK) and prepends
second 0; six fields are KFP's form and are passed through. Every field is checked against robfig's grammar
(`*`, `?`, numbers, names, ranges `a-b`, steps `/n`, lists `,`) and ranges, so a malformed expression is refused
here, before KFP accepts it and never fires. Times are the scheduler's clock (UTC in KFP's deployments).
"""

from __future__ import annotations

import re

FIVE = "MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK"
SIX = "SECOND MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK"
EXPECTED = (
    f'expected five fields "{FIVE}" (standard cron, e.g. "0 3 * * *" = daily at 03:00) or KFP\'s six fields '
    f'"{SIX}" (e.g. "0 0 3 * * *"), or a descriptor such as "@daily" or "@every 6h"'
)

# (name, low, high, names) in KFP's six-field order; robfig/cron's bounds.
_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
_FIELDS = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _DAYS),
)
_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")  # Go's time.ParseDuration units


def _value(text: str, field: tuple, expr: str) -> int:
    name, low, high, names = field
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"cron {expr!r}: {name} {text!r} is not a number{' or a name' if names else ''}; {EXPECTED}")
    value = int(text)
    if not low <= value <= high:
        hint = " (KFP's cron reads Sunday as 0, never 7)" if name == "day-of-week" and value == 7 else ""
        raise ValueError(f"cron {expr!r}: {name} {value} is outside {low}-{high}{hint}")
    return value


def _check_field(text: str, field: tuple, expr: str) -> None:
    """One field in robfig/cron's grammar: a comma list of `*`/`?`, `a`, `a-b`, each with an optional `/step`."""
    name = field[0]
    for part in text.split(","):
        base, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            raise ValueError(f"cron {expr!r}: {name} step {step!r} in {part!r} must be a positive number")
        if base in ("*", "?"):
            continue
        lo_text, dash, hi_text = base.partition("-")
        lo = _value(lo_text, field, expr)
        if dash:
            hi = _value(hi_text, field, expr)
            if hi < lo:
                raise ValueError(f"cron {expr!r}: {name} range {base!r} runs backwards")


def kfp_cron(expr: str) -> str:
    """The six-field (seconds first) cron expression KFP needs for `expr` (see the module docstring); ValueError
    naming the expected forms for anything malformed."""
    text = " ".join(str(expr).split())
    if not text:
        raise ValueError(f"empty cron expression; {EXPECTED}")
    if text.startswith("@"):
        if text.lower() in _DESCRIPTORS:
            return text
        word, _, duration = text.partition(" ")
        if word.lower() == "@every" and _DURATION.match(duration):
            return text
        raise ValueError(f"cron {expr!r}: unknown descriptor; {EXPECTED}")
    fields = text.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]  # standard cron: add KFP's seconds field
    elif len(fields) != 6:
        raise ValueError(f"cron {expr!r} has {len(fields)} field(s); {EXPECTED}")
    for value, field in zip(fields, _FIELDS, strict=True):
        _check_field(value, field, expr)
    return " ".join(fields)


def describe(expr: str) -> str:
    """One line for the user: what was given and what KFP receives."""
    converted = kfp_cron(expr)
    given = " ".join(str(expr).split())
    if converted == given:
        return f"cron {converted!r} (KFP's six-field form, seconds first)"
    return f"cron {given!r} (standard five-field) sent to KFP as {converted!r} (seconds first)"
