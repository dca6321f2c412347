"""The run's final report: one self-contained HTML file (images embedded) plus the same content as Markdown.

    ctx = build_context(results, diagnosis_dir=..., probe_dir=..., curation_dir=..., input_dirs={...})
    html, md = render_html(ctx), render_markdown(ctx)

Sections: SYNTHETIC banner (when any input says synthetic), decision (branch, rule, Pass@K / Acc@1 / gap with
intervals, per-modality decisions, Pass@k curves), vision probe table, curation summary, benchmark table (base vs
trained), transfer table, the overfit flag, evaluation settings, and one line per pipeline step from the lineage
history of the inputs (curate -> probe -> diagnose -> sft -> grpo -> evaluate) so an auditor sees the whole chain.
Every reader is tolerant: a missing file or field shows as "not available", never as a crash.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import re
from pathlib import Path
from typing import Any

from components.common.lineage import read_lineage

STEP_ORDER = ("curate", "probe", "diagnose", "sft", "grpo", "evaluate")
BANNER = "SYNTHETIC RUN: numbers are plumbing checks, not medical results"
NA = "n/a"


# --- reading inputs ----------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect_steps(input_dirs: dict[str, str | Path | None], own: dict | None = None) -> list[dict]:
    """Lineage records of the inputs and of everything upstream of them, deduplicated, in pipeline order."""
    seen: set[tuple] = set()
    steps: list[dict] = []
    for ref in input_dirs.values():
        if not ref or not Path(ref).is_dir():
            continue
        lin = read_lineage(ref)
        if lin is None:
            continue
        for rec in [*lin.get("history", []), {k: v for k, v in lin.items() if k != "history"}]:
            key = (rec.get("sha256"), rec.get("artifact"), rec.get("step"))
            if key not in seen:
                seen.add(key)
                steps.append(rec)
    if own is not None:
        steps.append(own)
    # Steps outside the pipeline (e.g. how the input checkpoint was made) come first: they happened before curate.
    order = {s: i for i, s in enumerate(STEP_ORDER)}
    return sorted(
        steps, key=lambda r: (order.get(r.get("step"), -1), r.get("created_at") or "", r.get("artifact") or "")
    )


def synthetic_reasons(
    results: dict, steps: list[dict], diagnosis: dict | None, probe: dict | None, base_model_ref: str | None
) -> list[str]:
    """Why this run counts as synthetic (empty: it does not)."""
    reasons = []
    syn_steps = sorted({f"{s.get('step')}/{s.get('artifact')}" for s in steps if s.get("synthetic")})
    if syn_steps:
        reasons.append("lineage marks synthetic: " + ", ".join(syn_steps))
    if diagnosis and diagnosis.get("synthetic"):
        reasons.append("diagnosis.json says synthetic")
    if probe and probe.get("synthetic"):
        reasons.append("probe.json says synthetic")
    syn_in = results.get("synthetic_inputs", {})
    if syn_in.get("benchmarks"):
        reasons.append("the benchmark files are synthetic copies (SYNTHETIC.md)")
    if syn_in.get("eval_set"):
        reasons.append("the eval set's records are synthetic")
    if base_model_ref and Path(base_model_ref).is_dir():
        readme = Path(base_model_ref) / "README.md"
        if readme.is_file() and "random weights" in readme.read_text(errors="ignore"):
            reasons.append("the base model has random weights")
    return reasons


def _curation_summary(curation_dir: Path | None) -> dict:
    """Whatever the curation report holds: tables from its JSON files, images, cards, the file list."""
    out: dict[str, Any] = {"tables": [], "images": [], "cards": {}, "files": []}
    if curation_dir is None or not curation_dir.is_dir():
        return out
    shown: set[str] = set()
    nested: dict[str, dict[str, dict]] = {}
    for p in sorted(curation_dir.rglob("*")):
        if not p.is_file() or p.name == "lineage.json":
            continue
        rel = p.relative_to(curation_dir).as_posix()
        out["files"].append((rel, p.stat().st_size))
        if p.suffix == ".json" and p.stat().st_size < 2_000_000:
            data = _read_json(p)
            if isinstance(data, dict) and "/" not in rel:
                out["tables"] += _json_tables(data, rel, shown)[:8]
            elif isinstance(data, dict):  # e.g. validation/<dataset>.json: one row of its top-level fields
                nested.setdefault(rel.rsplit("/", 1)[0], {})[rel] = {k: v for k, v in data.items() if _scalar(v)}
        elif p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.stat().st_size < 3_000_000:
            out["images"].append(p)
        elif p.suffix == ".md" and len(out["cards"]) < 8:
            out["cards"][rel] = p.read_text(errors="ignore")[:3000]
    for folder, files in nested.items():
        cols = list(dict.fromkeys(c for x in files.values() for c in x))[:10]
        out["tables"].append(
            (
                f"{folder}/",
                ["file", *cols],
                [[f, *(str(x.get(c, "")) for c in cols)] for f, x in list(files.items())[:40]],
            )
        )
    return out


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) <= 120)


def _json_tables(data: dict, title: str, shown: set[str]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) tables for a JSON object: its scalars as key/value rows, each dict-of-dicts of scalars
    as a matrix (rows = keys, columns = fields), other nested objects recursively. A block already shown (e.g. the
    same counts in two files) is shown once."""
    key = json.dumps(data, sort_keys=True, default=str)
    if key in shown:
        return []
    shown.add(key)
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    scalars = [
        [k, str(v)]
        for k, v in data.items()
        if _scalar(v) or (isinstance(v, list) and len(v) <= 20 and all(_scalar(x) for x in v))
    ]
    scalars = [[k, ", ".join(map(str, data[k])) if isinstance(data[k], list) else v] for k, v in scalars]
    if scalars:
        tables.append((title, ["key", "value"], scalars[:40]))
    for k, v in data.items():
        if not isinstance(v, dict) or not v:
            continue
        sub = f"{title} › {k}"
        if all(isinstance(x, dict) and all(_scalar(y) for y in x.values()) for x in v.values()):
            sub_key = json.dumps(v, sort_keys=True, default=str)
            if sub_key in shown:
                continue
            shown.add(sub_key)
            cols = list(dict.fromkeys(c for x in v.values() for c in x))[:12]
            tables.append(
                (sub, [k, *cols], [[name, *(str(x.get(c, "")) for c in cols)] for name, x in list(v.items())[:40]])
            )
        else:
            tables += _json_tables(v, sub, shown)
    return tables


def build_context(
    results: dict,
    *,
    diagnosis_dir: str | Path | None = None,
    probe_dir: str | Path | None = None,
    curation_dir: str | Path | None = None,
    input_dirs: dict[str, str | Path | None] | None = None,
    own_lineage: dict | None = None,
    base_model_ref: str | None = None,
) -> dict:
    dd = Path(diagnosis_dir) if diagnosis_dir else None
    pd_ = Path(probe_dir) if probe_dir else None
    cd = Path(curation_dir) if curation_dir else None
    diagnosis = _read_json(dd / "diagnosis.json") if dd else None
    probe = _read_json(pd_ / "probe.json") if pd_ else None
    probe_table = (pd_ / "table.md").read_text() if pd_ and (pd_ / "table.md").is_file() else None
    if probe_table and probe_table.startswith("# "):  # the report gives the section its own heading
        probe_table = probe_table.split("\n", 1)[1].lstrip("\n")
    curves = []
    if dd and dd.is_dir():
        main = dd / "passk_curves.png"
        curves = ([main] if main.is_file() else []) + sorted(dd.glob("passk_*.png") if not main.is_file() else [])
    steps = collect_steps(input_dirs or {}, own_lineage)
    reasons = synthetic_reasons(results, steps, diagnosis, probe, base_model_ref)
    return {
        "results": results,
        "diagnosis": diagnosis,
        "diagnosis_lineage": read_lineage(dd) if dd and dd.is_dir() else None,
        "probe": probe,
        "probe_table": probe_table,
        "probe_lineage": read_lineage(pd_) if pd_ and pd_.is_dir() else None,
        "curation": _curation_summary(cd),
        "curation_lineage": read_lineage(cd) if cd and cd.is_dir() else None,
        "curves": curves,
        "steps": steps,
        "synthetic": bool(reasons),
        "synthetic_reasons": reasons,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# --- formatting ----------------------------------------------------------------------------------------------------


def pct(x: Any) -> str:
    return NA if not isinstance(x, (int, float)) or x != x else f"{100 * x:.1f}"


def signed(x: Any) -> str:
    return NA if not isinstance(x, (int, float)) or x != x else f"{100 * x:+.1f}"


def ci(pair: Any) -> str:
    if (
        not isinstance(pair, (list, tuple))
        or len(pair) != 2
        or any(not isinstance(v, (int, float)) or v != v for v in pair)
    ):
        return ""
    return f"[{100 * pair[0]:.1f}, {100 * pair[1]:.1f}]"


def _passk(m: dict | None) -> Any:
    if not m or not m.get("pass_at_k"):
        return None
    curve = m["pass_at_k"]
    return curve[max(curve, key=int)]


def _with_ci(value: str, interval: str) -> str:
    return f"{value} {interval}".strip()


def _metric_rows(m: dict | None, k: Any = "K") -> list[list[str]]:
    m = m or {}
    c = m.get("ci", {})
    return [
        ["Acc@1 (greedy)", _with_ci(pct(m.get("acc_at_1")), ci(c.get("acc_at_1")))],
        [f"Pass@{k}", _with_ci(pct(_passk(m)), ci(c.get("pass_at_k")))],
        [f"gap = Pass@{k} - Acc@1", _with_ci(pct(m.get("gap")), ci(c.get("gap")))],
        ["format failures", pct(m.get("format_failure_rate"))],
        [
            "distinct answers among K",
            NA if m.get("mean_distinct_answers") is None else f"{m['mean_distinct_answers']:.2f}",
        ],
        ["questions", str(m.get("n", NA))],
    ]


def benchmark_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    k = results.get("k", "K")
    head = [
        "benchmark",
        "questions",
        "Acc@1 base",
        "Acc@1 trained",
        "Δ Acc@1 [95% CI]",
        f"Pass@{k} base",
        f"Pass@{k} trained",
        f"Δ Pass@{k} [95% CI]",
    ]
    rows = []
    for name, e in results.get("benchmarks", {}).items():
        d = e.get("delta", {})
        rows.append(
            [
                name,
                f"{e.get('used', e.get('base', {}).get('n', NA))} of {e.get('kept', NA)} closed ({e.get('rows', NA)} rows)",
                pct(e["base"].get("acc_at_1")),
                pct(e["trained"].get("acc_at_1")),
                _with_ci(signed(d.get("acc_at_1", {}).get("value")), ci(d.get("acc_at_1", {}).get("ci"))),
                pct(_passk(e["base"])),
                pct(_passk(e["trained"])),
                _with_ci(signed(d.get("pass_at_k", {}).get("value")), ci(d.get("pass_at_k", {}).get("ci"))),
            ]
        )
    if rows:
        avg = lambda m, key: sum(e[m].get(key) or 0 for e in results["benchmarks"].values()) / len(rows)  # noqa: E731
        rows.append(
            [
                "average",
                "",
                pct(avg("base", "acc_at_1")),
                pct(avg("trained", "acc_at_1")),
                signed(avg("trained", "acc_at_1") - avg("base", "acc_at_1")),
                "",
                "",
                "",
            ]
        )
    return head, rows


def transfer_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    k = results.get("k", "K")
    tr = results.get("transfer", {})
    head = [
        "regime / task",
        "shift",
        "questions",
        "Acc@1 base",
        "Acc@1 trained",
        "Δ Acc@1 [95% CI]",
        f"Pass@{k} base",
        f"Pass@{k} trained",
        f"Δ Pass@{k} [95% CI]",
    ]
    rows = []

    def row(label, shift, e):
        d = e.get("delta", {})
        return [
            label,
            shift,
            str(e["base"].get("n", NA)),
            pct(e["base"].get("acc_at_1")),
            pct(e["trained"].get("acc_at_1")),
            _with_ci(signed(d.get("acc_at_1", {}).get("value")), ci(d.get("acc_at_1", {}).get("ci"))),
            pct(_passk(e["base"])),
            pct(_passk(e["trained"])),
            _with_ci(signed(d.get("pass_at_k", {}).get("value")), ci(d.get("pass_at_k", {}).get("ci"))),
        ]

    for regime, e in tr.get("regimes", {}).items():
        rows.append(row(f"**{regime}**", f"{len(e.get('tasks', []))} task(s)", e))
        for task in e.get("tasks", []):
            t = tr["tasks"][task]
            rows.append(row(f"  {t.get('name', task)} ({task})", t.get("shift", ""), t))
    return head, rows


def flag_lines(results: dict) -> list[str]:
    ov = results.get("overfit", {})
    if not ov.get("checked", True):
        return [f"not checked: {ov.get('note', '')}"]
    return [f["message"] for f in ov.get("flags", [])]


def step_rows(steps: list[dict]) -> list[list[str]]:
    return [
        [
            s.get("step") or "?",
            s.get("artifact") or "?",
            s["sha256"][:12] if s.get("sha256") else "in lineage.json",
            s.get("summary") or "",
            s.get("code_version") or "",
            s.get("created_at") or "",
            "yes" if s.get("synthetic") else "no",
        ]
        for s in steps
    ]


STEP_HEAD = ["step", "artifact", "sha256", "summary", "code", "created", "synthetic"]


# --- Markdown --------------------------------------------------------------------------------------------------------


def md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _decision(ctx: dict) -> dict:
    return (ctx.get("diagnosis") or {}).get("decision") or {}


def render_markdown(ctx: dict) -> str:
    r, dg, dec = ctx["results"], ctx.get("diagnosis") or {}, _decision(ctx)
    out = ["# MedBridge run report", ""]
    if ctx["synthetic"]:
        out += [f"> **{BANNER}.** " + "; ".join(ctx["synthetic_reasons"]), ""]
    out += [
        f"Trained model: `{r.get('models', {}).get('trained', NA)}`  ",
        f"Base model: `{r.get('models', {}).get('base', NA)}`  ",
        f"Created: {ctx['created_at']}",
        "",
    ]
    out += ["## Decision", ""]
    if dg:
        forced = " (forced by the operator)" if dec.get("forced") else ""
        out += [
            f"**Branch: {str(dec.get('branch', NA)).upper()}**{forced}",
            "",
            f"Rule: {dec.get('rule', NA)}",
            "",
            f"K = {dg.get('k', NA)}, tau = {dg.get('tau', NA)}, prompt format `{dg.get('prompt_format', NA)}`",
            "",
            md_table(["overall", "value [95% CI]"], _metric_rows(dg.get("overall"), dg.get("k", "K"))),
            "",
        ]
        pm = dec.get("per_modality") or {}
        if pm:
            rows = [
                [
                    g,
                    str(d.get("branch", NA)),
                    pct(_passk((dg.get("per_modality") or {}).get(g))),
                    pct(((dg.get("per_modality") or {}).get(g) or {}).get("acc_at_1")),
                    d.get("rule", ""),
                ]
                for g, d in pm.items()
            ]
            out += ["Per modality:", "", md_table(["group", "branch", "Pass@K", "Acc@1", "rule"], rows), ""]
        out += [
            f"Weak tasks: {', '.join(dec.get('weak_tasks') or []) or 'none'}; weak modalities: {', '.join(dec.get('weak_modalities') or []) or 'none'}; "
            f"perception-limited (probe): {', '.join(dg.get('perception_limited') or []) or 'none'}",
            "",
        ]
        out += [
            f"Pass@k curves: {', '.join(p.name for p in ctx['curves'])} (in the diagnosis artifact)"
            if ctx["curves"]
            else "",
            "",
        ]
    else:
        out += ["diagnosis.json not available", ""]
    probe_md = (
        re.sub(r"^(#+)", r"##\1", ctx["probe_table"], flags=re.M)
        if ctx.get("probe_table")
        else _probe_md(ctx.get("probe"))
    )
    out += ["## Vision probe", "", probe_md, ""]
    out += ["## Curation", "", *_curation_md(ctx), ""]
    head, rows = benchmark_rows(r)
    out += ["## Benchmarks (base vs trained, percent)", "", md_table(head, rows) if rows else "no benchmark scored", ""]
    head, rows = transfer_rows(r)
    out += [
        f"## Transfer on MedMNIST (trained on {r.get('train_task', NA)})",
        "",
        md_table(head, rows) if rows else "no eval set scored",
        "",
    ]
    lines = flag_lines(r)
    out += [
        "## Benchmark-overfit flag",
        "",
        f"margin {pct(r.get('overfit', {}).get('margin'))} points: "
        + (
            "**FLAGGED**: " + "; ".join(lines)
            if r.get("overfit", {}).get("flags")
            else (lines[0] if lines else "clean: no benchmark won at the cost of transfer")
        ),
        "",
    ]
    s = r.get("sampling", {})
    out += [
        "## Evaluation settings",
        "",
        f"K = {r.get('k')}, prompt format `{r.get('prompt_format')}` (v{r.get('prompt_version')}), "
        f"temperature {s.get('temperature')}, top_p {s.get('top_p')}, max_new_tokens {s.get('max_new_tokens')}, backend {s.get('backend')}, seed {s.get('seed')}; "
        "closed-form questions scored by option letter (components.common.answers.parse_answer).",
        "",
    ]
    out += [
        "## Steps (lineage)",
        "",
        md_table(STEP_HEAD, step_rows(ctx["steps"])) if ctx["steps"] else "no lineage found on the inputs",
        "",
    ]
    return "\n".join(out)


def _probe_md(probe: dict | None) -> str:
    if not probe or not probe.get("tasks"):
        return "probe report not available"
    rows = [
        [
            t.get("name", f),
            t.get("group", ""),
            pct((t.get("accuracy") or 0) / 100) if t.get("accuracy") is not None else NA,
            str(t.get("qwen25vl_7b_probe", "")),
            str(t.get("medvit_v2", "")),
            "yes" if t.get("perception_limited") else "no",
        ]
        for f, t in probe["tasks"].items()
    ]
    return md_table(
        ["task", "group", "probe acc", "paper Qwen2.5-VL-7B", "paper MedViT-V2", "perception-limited"], rows
    )


def _curation_md(ctx: dict) -> list[str]:
    cur, lin = ctx["curation"], ctx.get("curation_lineage")
    lines = [lin["summary"]] if lin and lin.get("summary") else []
    for title, head, rows in cur["tables"]:
        lines += ["", f"`{title}`:", "", md_table(head, rows)]
    if cur["files"]:
        lines += ["", "Files: " + ", ".join(f"`{f}`" for f, _ in cur["files"][:40])]
    return lines or ["curation report not available"]


# --- HTML ------------------------------------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:34px 0 10px;border-bottom:2px solid #dfe3ea;padding-bottom:4px}
.meta{color:#5a6475;font-size:13px}.meta code{font-size:12px}
.banner{background:#b3261e;color:#fff;padding:14px 20px;font-weight:700;font-size:18px;letter-spacing:.3px}
.banner small{display:block;font-weight:400;font-size:13px;margin-top:4px;opacity:.95}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:18px 0}
.card{background:#fff;border:1px solid #dfe3ea;border-radius:8px;padding:12px 16px;min-width:200px;flex:1}
.card .label{font-size:12px;color:#5a6475;text-transform:uppercase;letter-spacing:.5px}
.card .value{font-size:24px;font-weight:700;margin-top:2px}
.bridge{color:#8a5a00}.sharpen{color:#0b6e4f}.bad{color:#b3261e}.good{color:#0b6e4f}
.rule{background:#fff;border-left:4px solid #4a6fa5;padding:10px 14px;margin:10px 0;font-size:14px}
table{border-collapse:collapse;background:#fff;margin:8px 0 14px;font-size:13.5px;width:100%}
th,td{border:1px solid #dfe3ea;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#eef1f6;font-weight:600}tr.group td{background:#f7f8fb;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
img.curve{max-width:100%;background:#fff;border:1px solid #dfe3ea;border-radius:6px;margin:6px 0}
details{margin:4px 0}summary{cursor:pointer;color:#4a6fa5}pre{white-space:pre-wrap;font-size:12px;background:#fff;border:1px solid #dfe3ea;padding:8px}
.small{font-size:12.5px;color:#5a6475}
"""

_NUM = re.compile(r"^[+\-]?\d+(\.\d+)?( \[[^\]]*\])?$")


def _inline_md(escaped: str) -> str:
    """**bold** and `code` in already-escaped text."""
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def h_table(head: list[str], rows: list[list[str]], group_prefix: str = "**", inline_md: bool = False) -> str:
    e = (lambda x: _inline_md(html.escape(x))) if inline_md else html.escape
    out = ["<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        is_group = str(r[0]).startswith(group_prefix)
        cells = []
        for i, c in enumerate(r):
            c = str(c).strip("*") if i == 0 and is_group else str(c)
            cls = ' class="num"' if _NUM.match(c) else ""
            cells.append(f"<td{cls}>{e(c)}</td>")
        tr = '<tr class="group">' if is_group else "<tr>"
        out.append(tr + "".join(cells) + "</tr>")
    return "\n".join(out + ["</tbody></table>"])


def md_to_html(md: str) -> str:
    """Enough Markdown for the probe and diagnosis tables: headings, pipe tables, paragraphs."""
    e = html.escape
    out, table = [], []

    def flush():
        if table:
            rows = [
                [c.strip() for c in line.strip().strip("|").split("|")]
                for line in table
                if not re.match(r"^\s*\|?\s*:?-{2,}", line)
            ]
            out.append(h_table(rows[0], rows[1:], group_prefix="\0", inline_md=True) if rows else "")
            table.clear()

    for line in md.splitlines():
        if line.strip().startswith("|"):
            table.append(line)
            continue
        flush()
        if m := re.match(r"^(#{1,6})\s+(.*)", line):
            out.append(f"<h3>{e(m.group(2))}</h3>")
        elif line.strip():
            out.append(f"<p class='small'>{_inline_md(e(line.lstrip('> ')))}</p>")
    flush()
    return "\n".join(out)


def _img(path: Path, cls: str = "curve") -> str:
    mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="{cls}" alt="{html.escape(path.name)}" src="data:{mime};base64,{data}">'


def render_html(ctx: dict) -> str:
    e = html.escape
    r, dg, dec = ctx["results"], ctx.get("diagnosis") or {}, _decision(ctx)
    branch = str(dec.get("branch", NA))
    flags = r.get("overfit", {}).get("flags", [])
    b = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>MedBridge run report</title><style>{CSS}</style></head><body>"
    ]
    if ctx["synthetic"]:
        b.append(f"<div class='banner'>{e(BANNER)}<small>{e('; '.join(ctx['synthetic_reasons']))}</small></div>")
    b.append("<main><h1>MedBridge run report</h1>")
    models = r.get("models", {})
    b.append(
        f"<div class='meta'>trained model <code>{e(str(models.get('trained', NA)))}</code> · base model <code>{e(str(models.get('base', NA)))}</code>"
        f" · trained on <code>{e(str(r.get('train_task', NA)))}</code> · {e(ctx['created_at'])}</div>"
    )
    bench = r.get("benchmarks", {})
    avg = lambda m: sum(x[m].get("acc_at_1") or 0 for x in bench.values()) / len(bench) if bench else None  # noqa: E731
    b.append("<div class='cards'>")
    b.append(
        f"<div class='card'><div class='label'>decision</div><div class='value {e(branch)}'>{e(branch.upper())}</div>"
        f"<div class='small'>{'forced by operator' if dec.get('forced') else 'from the diagnosis rule'}</div></div>"
    )
    ov = dg.get("overall") or {}
    b.append(
        f"<div class='card'><div class='label'>support (diagnosis)</div><div class='value'>Pass@{e(str(dg.get('k', 'K')))} {pct(_passk(ov))}</div>"
        f"<div class='small'>Acc@1 {pct(ov.get('acc_at_1'))} · gap {pct(ov.get('gap'))}</div></div>"
    )
    if bench:
        b.append(
            f"<div class='card'><div class='label'>benchmark avg Acc@1</div><div class='value'>{pct(avg('trained'))}</div>"
            f"<div class='small'>base {pct(avg('base'))} · Δ {signed(avg('trained') - avg('base'))}</div></div>"
        )
    flag_cls, flag_txt = ("bad", f"FLAGGED ({len(flags)})") if flags else ("good", "clean")
    if not r.get("overfit", {}).get("checked", True):
        flag_cls, flag_txt = "", "not checked"
    b.append(
        f"<div class='card'><div class='label'>wins benchmark, loses transfer</div><div class='value {flag_cls}'>{flag_txt}</div>"
        f"<div class='small'>margin {pct(r.get('overfit', {}).get('margin'))} points</div></div></div>"
    )

    b.append("<h2>Decision: bridge (SFT) or sharpen (GRPO)</h2>")
    if dg:
        b.append(
            f"<div class='rule'><b>{e(branch.upper())}</b>{' (forced by the operator)' if dec.get('forced') else ''}: {e(str(dec.get('rule', NA)))}</div>"
        )
        b.append(
            f"<p class='small'>K = {e(str(dg.get('k', NA)))}, τ = {e(str(dg.get('tau', NA)))}, prompt format <code>{e(str(dg.get('prompt_format', NA)))}</code>, "
            f"sampling {e(json.dumps(dg.get('sampling', {})))}</p>"
        )
        b.append(h_table(["overall (diagnosis set)", "value [95% CI]"], _metric_rows(ov, dg.get("k", "K"))))
        pm = dec.get("per_modality") or {}
        if pm:
            pmm = dg.get("per_modality") or {}
            rows = [
                [
                    g,
                    str(d.get("branch", NA)),
                    pct(_passk(pmm.get(g))),
                    pct((pmm.get(g) or {}).get("acc_at_1")),
                    pct((pmm.get(g) or {}).get("gap")),
                    d.get("rule", ""),
                ]
                for g, d in pm.items()
            ]
            b.append(h_table(["modality group", "branch", "Pass@K", "Acc@1", "gap", "rule"], rows))
        pt = dg.get("per_task") or {}
        if pt:
            rows = [
                [
                    t,
                    str(m.get("n", NA)),
                    _with_ci(pct(m.get("acc_at_1")), ci((m.get("ci") or {}).get("acc_at_1"))),
                    _with_ci(pct(_passk(m)), ci((m.get("ci") or {}).get("pass_at_k"))),
                    pct(m.get("gap")),
                ]
                for t, m in pt.items()
            ]
            b.append(
                "<details><summary>per task</summary>"
                + h_table(["task", "n", "Acc@1", "Pass@K", "gap"], rows)
                + "</details>"
            )
        b.append(
            f"<p class='small'>Weak tasks: {e(', '.join(dec.get('weak_tasks') or []) or 'none')} · weak modalities: "
            f"{e(', '.join(dec.get('weak_modalities') or []) or 'none')} · perception-limited (probe): {e(', '.join(dg.get('perception_limited') or []) or 'none')}</p>"
        )
        for p in ctx["curves"]:
            b.append(_img(p))
    else:
        b.append("<p>diagnosis.json not available</p>")

    b.append("<h2>Vision probe (frozen tower, linear head)</h2>")
    if ctx.get("probe_table"):
        b.append(md_to_html(ctx["probe_table"]))
    else:
        b.append(md_to_html(_probe_md(ctx.get("probe"))))
    if ctx.get("probe") and ctx["probe"].get("rule"):
        b.append(f"<p class='small'>Rule: {e(str(ctx['probe']['rule']))}</p>")

    b.append("<h2>Curation</h2>")
    cur, lin = ctx["curation"], ctx.get("curation_lineage")
    if lin and lin.get("summary"):
        b.append(f"<p>{e(lin['summary'])}</p>")
    for title, head, rows in cur["tables"]:
        b.append(
            f"<details open><summary><code>{e(title)}</code></summary>"
            + h_table(head, rows, group_prefix="\0")
            + "</details>"
        )
    for p in cur["images"][:6]:
        b.append(_img(p))
    for rel, text in cur["cards"].items():
        b.append(f"<details><summary>{e(rel)}</summary><pre>{e(text)}</pre></details>")
    if cur["files"]:
        b.append(
            "<p class='small'>Files: "
            + ", ".join(f"<code>{e(f)}</code> ({s:,} B)" for f, s in cur["files"][:40])
            + "</p>"
        )
    if not (lin or cur["files"]):
        b.append("<p>curation report not available</p>")

    head, rows = benchmark_rows(r)
    b.append("<h2>Benchmarks: base vs trained (percent; Δ = trained − base, paired bootstrap 95% CI)</h2>")
    b.append(h_table(head, rows) if rows else "<p>no benchmark scored</p>")
    excl = {n: x.get("excluded") for n, x in bench.items() if x.get("excluded")}
    if excl:
        b.append(
            "<details><summary>questions left out by the closed-form filter</summary><ul>"
            + "".join(
                f"<li><b>{e(n)}</b>: " + ", ".join(f"{e(k)}: {v}" for k, v in x.items()) + "</li>"
                for n, x in excl.items()
            )
            + "</ul></details>"
        )

    head, rows = transfer_rows(r)
    b.append(f"<h2>Transfer on MedMNIST (trained on {e(str(r.get('train_task', NA)))})</h2>")
    b.append(h_table(head, rows) if rows else "<p>no eval set scored</p>")
    b.append(
        "<p class='small'>in-domain: the trained task · within-modality: same group (OrganA → OrganC/OrganS same modality; "
        "OrganA → Pneumonia a larger shift) · cross-modality: another group (OCT → Path, OrganA → Path, OrganA → OCT) · "
        "cross-dataset: trained on a non-MedMNIST task.</p>"
    )

    b.append("<h2>Benchmark-overfit flag (ChexReason failure mode)</h2>")
    lines = flag_lines(r)
    if flags:
        b.append(
            "<div class='rule bad'><b>FLAGGED</b><ul>" + "".join(f"<li>{e(x)}</li>" for x in lines) + "</ul></div>"
        )
    else:
        b.append(
            f"<p class='{'good' if r.get('overfit', {}).get('checked', True) else ''}'>{e(lines[0] if lines else 'clean: no benchmark won at the cost of transfer')}</p>"
        )
    b.append(
        "<p class='small'>A checkpoint is flagged when it gains more than the margin on the task it was trained for while any transfer "
        "regime or other benchmark drops by more than the margin (ChexReason: GRPO +23% on CheXpert, −19% on NIH).</p>"
    )

    s = r.get("sampling", {})
    b.append("<h2>Evaluation settings</h2>")
    b.append(
        f"<p class='small'>K = {e(str(r.get('k')))}, prompt format <code>{e(str(r.get('prompt_format')))}</code> (v{e(str(r.get('prompt_version')))}), "
        f"temperature {e(str(s.get('temperature')))}, top_p {e(str(s.get('top_p')))}, max_new_tokens {e(str(s.get('max_new_tokens')))}, "
        f"backend {e(str(s.get('backend')))}, seed {e(str(s.get('seed')))}. Closed-form questions, scored by the option letter inside "
        "&lt;answer&gt;…&lt;/answer&gt;. Every completion is in the results artifact (samples.jsonl).</p>"
    )

    b.append("<h2>Steps (lineage of the inputs)</h2>")
    if ctx["steps"]:
        b.append(h_table(STEP_HEAD, step_rows(ctx["steps"]), group_prefix="\0"))
        b.append(
            "<details><summary>parameters of every step</summary>"
            + "".join(
                f"<p><b>{e(str(st.get('step')))} / {e(str(st.get('artifact')))}</b></p><pre>{e(json.dumps(st.get('params', {}), indent=1, default=str))}</pre>"
                for st in ctx["steps"]
            )
            + "</details>"
        )
    else:
        b.append("<p>no lineage found on the inputs</p>")
    b.append("</main></body></html>")
    return "\n".join(b)
