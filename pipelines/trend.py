"""`medbridge trend PREFIX`: every diagnosed checkpoint under PREFIX on one HTML page.

    medbridge trend s3://medbridge/state/diagnoses --out trend.html     # what re-diagnosis runs publish
    medbridge trend runs/kfp --out trend.html                           # local runs
    medbridge trend … --json                                            # the same data for machines
    medbridge trend … --notify                                          # webhook for the newest checkpoint's events

Gathers each `diagnosis.json` under PREFIX (reading each schema version it knows, refusing others by name, as a
row of the page), orders them by when they were diagnosed, and shows per modality group: support (Pass@K, chance-
corrected when the diagnosis records the option counts) and Acc@1 over checkpoints with their 95% intervals, the
branch decision of each checkpoint, and flags: a support collapse (Pass@K's interval entirely below the previous
checkpoint's), a branch change, and the transfer flags of an evaluation beside the diagnosis (results.json).
With --notify (URL from MEDBRIDGE_WEBHOOK_URL, a Secret), the newest checkpoint's branch change and flags are sent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "one HTML page of every diagnosed checkpoint under a prefix: support and Acc@1 over checkpoints, branches, flags"
TEMPLATE = Path(__file__).resolve().parent / "templates" / "trend.html.jinja"
DIAGNOSIS_FILE = "diagnosis.json"


# ---- gathering ------------------------------------------------------------------------------------------------------


def _local_sources(root: Path) -> list[tuple[str, str | None, str | None, str | None]]:
    """(where, diagnosis text, lineage text, results text) of every diagnosis.json under a local directory."""
    if root.is_file() and root.name == DIAGNOSIS_FILE:
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob(DIAGNOSIS_FILE)
                       if not any(part.startswith(".") for part in p.relative_to(root).parts[:-1]))
    else:
        raise FileNotFoundError(f"{root}: no such directory")

    def text(p: Path) -> str | None:
        return p.read_text(errors="replace") if p.is_file() else None

    out = []
    for f in files:
        results = next(iter(sorted(f.parent.parent.parent.glob("evaluate*/results/results.json"))), None)
        out.append((str(f), text(f), text(f.parent / "lineage.json"), text(results) if results else None))
    return out


def _s3_sources(uri: str) -> list[tuple[str, str | None, str | None, str | None]]:
    from botocore.exceptions import ClientError

    from components.common.storage import list_objects, parse_s3_uri, s3_client

    client = s3_client()
    bucket, _ = parse_s3_uri(uri)
    keys = {o["Key"] for o in list_objects(uri, client=client)}

    def text(key: str) -> str | None:
        if key not in keys:
            return None
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", errors="replace")
        except ClientError:
            return None

    out = []
    for key in sorted(k for k in keys if k.rsplit("/", 1)[-1] == DIAGNOSIS_FILE):
        folder = key.rsplit("/", 1)[0]
        out.append((f"s3://{bucket}/{key}", text(key), text(f"{folder}/lineage.json"), None))
    return out


def _passk(m: dict) -> Any:
    curve = m.get("pass_at_k") if isinstance(m.get("pass_at_k"), dict) else {}
    keys = [k for k in curve if str(k).isdigit()]
    return curve[max(keys, key=int)] if keys else None


def _support(m: dict, k: int) -> dict[str, Any]:
    """Pass@K of one metrics block, chance-corrected when the block says how (a `corrected` entry, or `n_options`)."""
    from components.common.stats import chance_pass_at_k, corrected

    ci = (m.get("ci") or {}).get("pass_at_k")
    c = m.get("corrected")
    if isinstance(c, dict) and isinstance(c.get("pass_at_k"), (int, float)):
        return {"value": c["pass_at_k"], "ci": (c.get("ci") or {}).get("pass_at_k") if isinstance(c.get("ci"), dict) else c.get("ci"), "corrected": True}
    value = _passk(m)
    n_opt = m.get("n_options")
    if isinstance(value, (int, float)) and isinstance(n_opt, (int, float)) and n_opt >= 2:
        chance = chance_pass_at_k(round(n_opt), k)
        if chance < 1.0:
            fix = lambda v: corrected(v, chance)  # noqa: E731
            return {"value": fix(value), "ci": [fix(x) for x in ci] if _pair(ci) else None, "corrected": True}
    return {"value": value, "ci": ci if _pair(ci) else None, "corrected": False}


def _pair(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(v, (int, float)) for v in x)


def read_point(where: str, diag_text: str | None, lineage_text: str | None, results_text: str | None) -> dict[str, Any]:
    """One checkpoint's diagnosis as a trend point; ValueError naming `where` for what cannot be read."""
    from components.common.schema import check

    try:
        diag = json.loads(diag_text or "")
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(diag, dict):
        raise ValueError(f"{where}: expected a JSON object")
    check(diag, "diagnosis", where)
    lineage: dict[str, Any] = {}
    if lineage_text:
        try:
            lineage = json.loads(lineage_text)
        except ValueError:
            lineage = {}
    k = int(diag.get("k") or 0)
    dec = diag.get("decision") if isinstance(diag.get("decision"), dict) else {}
    groups = {}
    for g, m in (diag.get("per_modality") or {}).items():
        if not isinstance(m, dict):
            continue
        groups[g] = {
            "acc": m.get("acc_at_1"),
            "acc_ci": (m.get("ci") or {}).get("acc_at_1") if _pair((m.get("ci") or {}).get("acc_at_1")) else None,
            "support": _support(m, k),
            "branch": ((dec.get("per_modality") or {}).get(g) or {}).get("branch"),
        }
    flags = [str(f) for f in diag.get("flags") or [] if f]
    if results_text:
        try:
            results = json.loads(results_text)
            flags += [f"{f.get('metric', '')}: {f.get('message') or f.get('rule') or 'wins its benchmark, loses transfer'}"
                      for f in (results.get("overfit") or {}).get("flags") or [] if isinstance(f, dict)]
        except (ValueError, AttributeError):
            pass
    model = ((lineage.get("inputs") or {}).get("model") or {}) if isinstance(lineage.get("inputs"), dict) else {}
    return {
        "source": where,
        "checkpoint": diag.get("model_ref") or model.get("ref") or "?",
        "model_sha256": model.get("sha256"),
        "created_at": lineage.get("created_at") or "",
        "k": k,
        "tau": diag.get("tau"),
        "branch": dec.get("branch"),
        "forced": bool(dec.get("forced")),
        "synthetic": bool(diag.get("synthetic") or lineage.get("synthetic")),
        "groups": groups,
        "flags": flags,
    }


def gather(prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(points ordered by diagnosis time, refused [{source, reason}]) for every diagnosis.json under `prefix`."""
    sources = _s3_sources(prefix) if str(prefix).startswith("s3://") else _local_sources(Path(prefix))
    points, refused = [], []
    for where, diag, lin, res in sources:
        try:
            points.append(read_point(where, diag, lin, res))
        except ValueError as e:
            refused.append({"source": where, "reason": str(e)})
    points.sort(key=lambda p: (p["created_at"], p["source"]))
    return points, refused


def add_events(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark branch changes and support collapses on the points (in place); every event, oldest first."""
    events = []
    for prev, cur in zip(points, points[1:]):
        cur.setdefault("events", [])
        if prev.get("branch") and cur.get("branch") and prev["branch"] != cur["branch"]:
            cur["events"].append({"event": "branch_changed", "from": prev["branch"], "to": cur["branch"]})
        for g, m in cur["groups"].items():
            before = (prev["groups"].get(g) or {}).get("support") or {}
            now = m["support"]
            if _pair(before.get("ci")) and _pair(now.get("ci")) and now["ci"][1] < before["ci"][0]:
                cur["events"].append({"event": "flag_raised", "flag": "support collapse", "detail":
                                      f"{g}: Pass@K interval now entirely below the previous checkpoint's"})
    for p in points:
        p.setdefault("events", [])
        p["events"] += [{"event": "flag_raised", "flag": "flag", "detail": f} for f in p["flags"]]
        events += [{**e, "checkpoint": p["checkpoint"], "sha256": p.get("model_sha256")} for e in p["events"]]
    return events


# ---- the page -----------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def _ci(v: Any) -> str:
    return f"[{100 * v[0]:.1f}, {100 * v[1]:.1f}]" if _pair(v) else ""


def _chart(points: list[dict[str, Any]], group: str, w: int = 640, h: int = 220) -> dict[str, Any]:
    """SVG geometry of one group's support and Acc@1 over checkpoints, with interval bars."""
    n = len(points)
    pad = 36
    xs = [pad + (w - 2 * pad) * (i / (n - 1) if n > 1 else 0.5) for i in range(n)]

    def y(v: float) -> float:
        v = min(1.0, max(-0.2, v))
        return pad / 2 + (h - pad) * (1 - (v + 0.2) / 1.2)

    series = []
    for key, ci_key, cls in (("support", None, "support"), ("acc", "acc_ci", "acc")):
        pts, bars = [], []
        for x, p in zip(xs, points):
            m = p["groups"].get(group) or {}
            value = (m.get("support") or {}).get("value") if key == "support" else m.get("acc")
            ci = (m.get("support") or {}).get("ci") if key == "support" else m.get(ci_key)
            if isinstance(value, (int, float)):
                pts.append(f"{x:.1f},{y(value):.1f}")
                if _pair(ci):
                    bars.append({"x": round(x, 1), "y1": round(y(ci[0]), 1), "y2": round(y(ci[1]), 1)})
        series.append({"cls": cls, "points": " ".join(pts), "bars": bars,
                       "dots": [dict(zip(("x", "y"), map(float, q.split(",")))) for q in pts]})
    grid = [{"y": round(y(v), 1), "label": f"{int(v * 100)}%"} for v in (0.0, 0.5, 1.0)]
    return {"w": w, "h": h, "series": series, "grid": grid,
            "labels": [{"x": round(x, 1), "text": str(i + 1)} for i, x in enumerate(xs)]}


def context(points: list[dict[str, Any]], refused: list[dict[str, str]], prefix: str) -> dict[str, Any]:
    groups = list(dict.fromkeys(g for p in points for g in p["groups"]))
    rows = []
    for i, p in enumerate(points, start=1):
        rows.append({
            "n": i, "checkpoint": p["checkpoint"], "sha": (p.get("model_sha256") or "")[:12], "created": p["created_at"],
            "branch": f"{p['branch'] or 'n/a'}{' (forced)' if p['forced'] else ''}",
            "events": "; ".join(e.get("detail") or f"branch {e['from']} → {e['to']}" for e in p.get("events") or []),
            "synthetic": p["synthetic"],
        })
    tables = []
    for g in groups:
        corrected = any(((p["groups"].get(g) or {}).get("support") or {}).get("corrected") for p in points)
        tables.append({
            "group": g,
            "corrected": corrected,
            "chart": _chart(points, g),
            "rows": [{
                "n": i,
                "checkpoint": p["checkpoint"],
                "support": f"{_fmt(((p['groups'].get(g) or {}).get('support') or {}).get('value'))} "
                           f"{_ci(((p['groups'].get(g) or {}).get('support') or {}).get('ci'))}".strip(),
                "acc": f"{_fmt((p['groups'].get(g) or {}).get('acc'))} {_ci((p['groups'].get(g) or {}).get('acc_ci'))}".strip(),
                "branch": (p["groups"].get(g) or {}).get("branch") or "n/a",
            } for i, p in enumerate(points, start=1)],
        })
    return {"prefix": prefix, "rows": rows, "tables": tables, "refused": refused,
            "synthetic": any(p["synthetic"] for p in points)}


def render(ctx: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE.name).render(**ctx)


def notify_latest(points: list[dict[str, Any]], send=None) -> int:
    """Send the newest point's events to the webhook; the number sent."""
    from pipelines.notify import notify

    send = send or notify
    if not points:
        return 0
    last = points[-1]
    sent = 0
    for e in last.get("events") or []:
        payload = {k: v for k, v in e.items() if k != "event"}
        sent += bool(send(e["event"], {"checkpoint": last["checkpoint"], "sha256": last.get("model_sha256"), **payload}))
    return sent


# ---- command line ----------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", help="a local directory or an s3:// prefix holding diagnosis.json files (any depth)")
    p.add_argument("--out", default="trend.html", help="HTML page to write (default: trend.html)")
    p.add_argument("--json", action="store_true", help="print the points, refusals and events as JSON")
    p.add_argument("--notify", action="store_true", help="send the newest checkpoint's events to the webhook")


def run(args: argparse.Namespace) -> int:
    from components.common.io import atomic_write_text
    from components.common.redact import redact_text
    from components.common.schema import stamp

    try:
        points, refused = gather(args.prefix)
        if not points and not refused:
            raise FileNotFoundError(f"{args.prefix}: no {DIAGNOSIS_FILE} under it")
        events = add_events(points)
        atomic_write_text(args.out, redact_text(render(context(points, refused, args.prefix))))
        if args.notify:
            notify_latest(points)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"medbridge trend: error: {redact_text(str(e))}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(stamp({"points": points, "refused": refused, "events": events}, "trend"), indent=2, default=str))
    else:
        for r in refused:
            print(f"[medbridge] refused {r['source']}: {r['reason']}", file=sys.stderr)
        print(f"[medbridge] {len(points)} diagnosed checkpoint(s), {len(refused)} refused, {len(events)} event(s): {args.out}")
    return 0
