"""The run's final report: one self-contained HTML file (CSS inline, images embedded) plus the same content as Markdown.

    ctx = build_context(results, diagnosis_dir=..., probe_dir=..., curation_dir=..., input_dirs={...})
    html, md = render_html(ctx), render_markdown(ctx)

`build_context` is the only reader of the inputs. It returns plain data organised by report section (see SECTIONS):
every table as ready rows of display strings (a row is {"cells": [{"text", "num"}], "group": bool}), every number
already formatted, images as data: URIs. The two Jinja2 templates in templates/ (report.html.jinja,
report.md.jinja) only loop over that data and print it; a new section is one more context entry and one more
template block. Every reader is tolerant: a missing file or field shows as "n/a" / "not available", never as a crash.

A run is synthetic when the lineage record of an input, or any record upstream of it, says `"synthetic": true`
(`synthetic_reasons`); the report then opens with the SYNTHETIC banner and the records that set it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import re
from pathlib import Path
from typing import Any

from components.common.lineage import read_lineage
from components.common.markdown import md_table

STEP_ORDER = ("curate", "probe", "diagnose", "sft", "rediagnose", "grpo", "evaluate")
BANNER = "SYNTHETIC RUN: numbers are plumbing checks, not medical results"
NA = "n/a"
TEMPLATES = Path(__file__).resolve().parent / "templates"
HTML_TEMPLATE = "report.html.jinja"
MD_TEMPLATE = "report.md.jinja"
# Context keys of the report's sections, in page order; each is a dict with at least "id" and "title".
SECTIONS = (
    "decision",
    "gate",
    "diagnosis",
    "curves",
    "probe",
    "curation",
    "watch",
    "benchmarks",
    "stages",
    "open",
    "transfer",
    "overfit",
    "settings",
    "steps",
    "audit",
)
STEP_HEAD = ["step", "artifact", "sha256", "summary", "code", "created", "synthetic"]
_NUM = re.compile(r"^[+\-]?\d+(\.\d+)?( \[[^\]]*\])?$")


# --- reading inputs ----------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _lineage(path: str | Path) -> dict | None:
    """read_lineage, but an unreadable record reads as none."""
    try:
        lin = read_lineage(path)
    except (OSError, ValueError):
        return None
    return lin if isinstance(lin, dict) else None


def collect_steps(input_dirs: dict[str, str | Path | None], own: dict | None = None) -> list[dict]:
    """Lineage records of the inputs and of everything upstream of them, deduplicated, in pipeline order."""
    seen: set[tuple] = set()
    steps: list[dict] = []
    for ref in input_dirs.values():
        if not ref or not Path(ref).is_dir():
            continue
        lin = _lineage(ref)
        if lin is None:
            continue
        history = [h for h in lin.get("history") or [] if isinstance(h, dict)]
        for rec in [*history, {k: v for k, v in lin.items() if k != "history"}]:
            key = (rec.get("sha256"), rec.get("artifact"), rec.get("step"))
            if key not in seen:
                seen.add(key)
                steps.append(rec)
    if own is not None:
        steps.append(own)
    # Steps outside the pipeline (e.g. how the input checkpoint was made) come first: they happened before curate.
    order = {s: i for i, s in enumerate(STEP_ORDER)}
    return sorted(
        steps,
        key=lambda r: (order.get(r.get("step"), -1), str(r.get("created_at") or ""), str(r.get("artifact") or "")),
    )


def synthetic_reasons(steps: list[dict]) -> list[str]:
    """Why this run counts as synthetic, from lineage records only (empty: it does not). A record is synthetic when
    it says `"synthetic": true`; `collect_steps` already holds every record upstream of the inputs."""
    marked = sorted({f"{s.get('step') or '?'}/{s.get('artifact') or '?'}" for s in steps if s.get("synthetic")})
    return ["lineage marks synthetic: " + ", ".join(marked)] if marked else []


# --- formatting ----------------------------------------------------------------------------------------------------


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def pct(x: Any) -> str:
    """A fraction as percent with one decimal ("n/a" for anything else)."""
    return f"{100 * x:.1f}" if _is_num(x) else NA


def signed(x: Any) -> str:
    """A fraction as signed percent points ("+5.0")."""
    return f"{100 * x:+.1f}" if _is_num(x) else NA


def ci(pair: Any) -> str:
    """An interval of fractions as "[lo, hi]" in percent; "" when there is none."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_num(v) for v in pair):
        return ""
    return f"[{100 * pair[0]:.1f}, {100 * pair[1]:.1f}]"


def _points(x: Any) -> str:
    """A number already in percent (probe.json) with one decimal."""
    return f"{x:.1f}" if _is_num(x) else NA


def _text(x: Any) -> str:
    return NA if x is None or x == "" else str(x)


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _names(xs: Any) -> str:
    return ", ".join(map(str, xs)) if isinstance(xs, (list, tuple)) and xs else "none"


def _passk(m: Any) -> Any:
    curve = _d(_d(m).get("pass_at_k"))
    keys = [k for k in curve if str(k).isdigit()]
    return curve[max(keys, key=int)] if keys else None


def _with_ci(value: str, interval: str) -> str:
    return f"{value} {interval}".strip()


def _delta(d: dict, metric: str) -> str:
    e = _d(d.get(metric))
    return _with_ci(signed(e.get("value")), ci(e.get("ci")))


def _table(head: list[str], rows: list[list[str]], groups: set[int] | None = None, title: str = "") -> dict:
    """A ready table: header, rows of display strings (number-like cells marked "num"), group rows marked."""
    groups = groups or set()
    return {
        "title": title,
        "narrow": len(head) <= 2,  # key/value tables need not span the page
        "head": [str(h) for h in head],
        "rows": [
            {"cells": [{"text": str(c), "num": bool(_NUM.match(str(c)))} for c in row], "group": i in groups}
            for i, row in enumerate(rows)
        ],
    }


def _images(paths: list[Path]) -> list[dict]:
    """{"name", "src": data: URI} for each readable image file (an unreadable one is left out)."""
    out = []
    for path in paths:
        try:
            data = base64.b64encode(path.read_bytes()).decode()
        except OSError:
            continue
        mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        out.append({"name": path.name, "src": f"data:{mime};base64,{data}"})
    return out


# --- sections ------------------------------------------------------------------------------------------------------


def _k_used(m: Any) -> str:
    used = _d(_d(_d(m).get("corrected")).get("k_used"))
    return ", ".join(f"k = {k} at {c} options" for c, k in sorted(used.items(), key=lambda kv: int(kv[0]))) or NA


def _chance_passk(m: Any) -> Any:
    return _passk(_d(_d(m).get("chance")))


def _metric_rows(m: Any, k: Any = "K") -> list[list[str]]:
    m = _d(m)
    c = _d(m.get("ci"))
    corr = _d(m.get("corrected"))
    cc = _d(corr.get("ci"))
    distinct = m.get("mean_distinct_answers")
    return [
        ["Acc@1 (greedy)", _with_ci(pct(m.get("acc_at_1")), ci(c.get("acc_at_1")))],
        [f"Pass@{k}", _with_ci(pct(_passk(m)), ci(c.get("pass_at_k")))],
        [f"gap = Pass@{k} - Acc@1", _with_ci(pct(m.get("gap")), ci(c.get("gap")))],
        [f"chance Pass@{k} (uniform guesser)", pct(_chance_passk(m))],
        [f"corrected Pass@K ({_k_used(m)})", _with_ci(pct(corr.get("pass_at_k")), ci(cc.get("pass_at_k")))],
        ["corrected Acc@1", _with_ci(pct(corr.get("acc_at_1")), ci(cc.get("acc_at_1")))],
        ["format failures", pct(m.get("format_failure_rate"))],
        ["truncated at max_new_tokens", pct(m.get("truncation_rate"))],
        ["distinct answers among K", f"{distinct:.2f}" if _is_num(distinct) else NA],
        ["questions", _text(m.get("n"))],
    ]


def _decision_section(dg: dict | None) -> dict:
    dg_ = _d(dg)
    dec = _d(dg_.get("decision"))
    branch = str(dec.get("branch") or NA)
    k = dg_.get("k", "K")
    forced = bool(dec.get("forced"))
    measured = dec.get("measured_branch")
    decided = _d(dg_.get("decided_on"))
    return {
        "id": "sec-decision",
        "title": "Decision: bridge (SFT) or sharpen (GRPO)",
        "available": dg is not None,
        "decided_on": (
            f"Decided on {decided.get('name')} ({_text(decided.get('n'))} questions)"
            + ("; MedMNIST is shown as breadth." if decided.get("set") == "target" else ".")
            if decided else ""
        ),
        "branch": branch,
        "branch_label": branch.upper(),
        "forced": forced,
        "source": "forced by the operator" if forced else "from the diagnosis rule",
        "measured": f"the rule measured: {measured}" if forced and measured else "",
        "rule": _text(dec.get("rule")) if dg is not None else "diagnosis.json not available",
        "settings": (
            f"K = {_text(dg_.get('k'))}, τ = {_text(dg_.get('tau'))}, prompt format {_text(dg_.get('prompt_format'))}, "
            f"sampling {json.dumps(dg_.get('sampling') or {}, sort_keys=True, default=str)}"
        ),
        "overall": _table(["overall (the set that decided)", "value [95% CI]"], _metric_rows(dg_.get("overall"), k)),
        "correction": (
            "Corrected = (value - chance) / (1 - chance) per question from its own option count, Pass@k taken at the "
            f"largest k whose chance stays at or below {_text(_d(dg_.get('chance_correction')).get('ceiling'))}: "
            "0 = a uniform guesser, 100 = always right. τ applies to the corrected interval."
        ),
    }


def _gate_section(rd: dict | None) -> dict:
    """The re-diagnosis of the bridged (SFT) model and the gate it set: GRPO ran (proceed) or the run stopped."""
    rd_ = _d(rd)
    gate = _d(rd_.get("gate"))
    outcome = str(gate.get("outcome") or NA)
    return {
        "id": "sec-gate",
        "title": "Re-diagnosis after the bridge: run GRPO or stop",
        "available": bool(gate),
        "outcome": outcome,
        "outcome_label": {"proceed": "PROCEED (GRPO ran)", "stop": "STOP (GRPO not run)"}.get(outcome, outcome.upper()),
        "cls": {"proceed": "sharpen", "stop": "bad"}.get(outcome, ""),
        "forced": bool(gate.get("forced")),
        "rule": _text(gate.get("rule")),
        "overall": _table(["SFT model, same set", "value [95% CI]"], _metric_rows(rd_.get("overall"), rd_.get("k", "K"))),
        "note": "no re-diagnosis in this run (sharpen branch: RL ran on the diagnosed model directly)" if not gate else "",
    }


def _diagnosis_section(dg: dict | None) -> dict:
    dg_ = _d(dg)
    dec = _d(dg_.get("decision"))
    k = dg_.get("k", "K")
    pmm = _d(dg_.get("per_modality"))
    pm = _d(dec.get("per_modality"))

    def corr(m: Any) -> str:
        c = _d(_d(m).get("corrected"))
        return _with_ci(pct(c.get("pass_at_k")), ci(_d(c.get("ci")).get("pass_at_k")))

    mod_rows = [
        [g, _text(_d(d).get("branch")), corr(pmm.get(g)), pct(_passk(pmm.get(g))), pct(_chance_passk(pmm.get(g))),
         pct(_d(pmm.get(g)).get("acc_at_1")), _text(_d(d).get("rule"))]
        for g, d in pm.items()
    ]
    weak = set(dec.get("weak_tasks") or [])
    limited = set(dg_.get("perception_limited") or [])
    forms = _d(dg_.get("question_forms"))

    def task_row(t: str, m: Any) -> list[str]:
        c = _d(_d(m).get("ci"))
        notes = [x for x, on in (("weak", t in weak), ("perception-limited", t in limited),
                                 ("question form ours", t in forms)) if on]
        return [
            t,
            _text(_d(m).get("n")),
            _with_ci(pct(_d(m).get("acc_at_1")), ci(c.get("acc_at_1"))),
            _with_ci(pct(_passk(m)), ci(c.get("pass_at_k"))),
            pct(_chance_passk(m)),
            corr(m),
            _k_used(m),
            ", ".join(notes),
        ]

    per_task = _d(dg_.get("per_task"))
    task_groups = _d(dg_.get("task_groups"))
    breadth = _d(dg_.get("breadth"))
    group_blocks = {**pmm, **_d(breadth.get("per_modality"))}
    rows: list[list[str]] = []
    groups: set[int] = set()
    if task_groups:  # tasks under their modality group, the group's own numbers on its row
        order = list(dict.fromkeys([*pm, *pmm, *(task_groups.get(t) or "other" for t in per_task)]))
        for g in order:
            tasks = [t for t in per_task if (task_groups.get(t) or "other") == g]
            if not tasks:
                continue
            groups.add(len(rows))
            label = "RL target, all modalities" if g == "mixed" else g
            block = dg_.get("overall") if g == "mixed" else group_blocks.get(g)
            rows.append([label, *task_row(g, block)[1:7], f"branch: {_text(_d(pm.get(g)).get('branch'))}"
                         if g in pm else ""])
            rows += [task_row(t, per_task[t]) for t in tasks]
    else:
        rows = [task_row(t, m) for t, m in per_task.items()]
    breadth_rows = [["breadth (MedMNIST), overall", *task_row("", breadth.get("overall"))[1:7], ""]] if breadth else []
    return {
        "id": "sec-diagnosis",
        "title": "Diagnosis per modality and per task",
        "available": dg is not None,
        "per_modality": _table(
            ["modality group (decides)", "branch", "corrected Pass@K [95% CI]", f"Pass@{k}", f"chance Pass@{k}",
             "Acc@1", "rule"],
            mod_rows,
        ),
        "per_task": _table(
            ["task", "n", "Acc@1 [95% CI]", f"Pass@{k} [95% CI]", f"chance Pass@{k}", "corrected Pass@K [95% CI]",
             "k used", "notes"],
            rows + breadth_rows,
            groups | ({len(rows)} if breadth_rows else set()),
        ),
        "weak_tasks": _names(dec.get("weak_tasks")),
        "weak_modalities": _names(dec.get("weak_modalities")),
        "perception_limited": _names(dg_.get("perception_limited")),
        "question_forms": [{"task": t, "text": str(v)} for t, v in forms.items()],
    }


def _curves_section(dd: Path | None) -> dict:
    curves: list[Path] = []
    if dd is not None and dd.is_dir():
        main = dd / "passk_curves.png"
        curves = [main] if main.is_file() else sorted(dd.glob("passk_*.png"))
    images = _images(curves)
    return {
        "id": "sec-curves",
        "title": "Pass@k curves (diagnosis set)",
        "images": images,
        "names": ", ".join(i["name"] for i in images),
    }


def _probe_section(probe: dict | None) -> dict:
    tasks = {f: t for f, t in _d(_d(probe).get("tasks")).items() if isinstance(t, dict)}
    head = [
        "task",
        "flag",
        "modality",
        "probe acc",
        "AUC",
        "chance",
        "paper Qwen2.5-VL-7B",
        "paper MedViT-V2",
        "n train",
        "n test",
        "perception-limited",
    ]
    rows: list[list[str]] = []
    groups: set[int] = set()
    for g in dict.fromkeys(str(t.get("group") or "other") for t in tasks.values()):
        groups.add(len(rows))
        rows.append([g] + [""] * (len(head) - 1))
        for f, t in tasks.items():
            if str(t.get("group") or "other") != g:
                continue
            rows.append(
                [
                    _text(t.get("name") or f),
                    f,
                    _text(t.get("modality")),
                    _points(t.get("accuracy")),
                    _points(t.get("auc")),
                    _points(t.get("chance")),
                    _points(t.get("qwen25vl_7b_probe")),
                    _points(t.get("medvit_v2")),
                    _text(t.get("n_train")),
                    _text(t.get("n_test")),
                    "yes" if t.get("perception_limited") else "no",
                ]
            )
    p = _d(probe)
    return {
        "id": "sec-probe",
        "title": "Vision probe (frozen tower, linear head)",
        "available": bool(tasks),
        "table": _table(head, rows, groups),
        "pooling": _text(p.get("pooling")),
        "rule": _text(p.get("rule")) if p.get("rule") else "",
        "limited": _names([_text(t.get("name") or f) for f, t in tasks.items() if t.get("perception_limited")]),
    }


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
    scalars = []
    for k, v in data.items():
        if _scalar(v):
            scalars.append([str(k), str(v)])
        elif isinstance(v, list) and len(v) <= 20 and all(_scalar(x) for x in v):
            scalars.append([str(k), ", ".join(map(str, v))])
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


def _curation_section(cd: Path | None) -> dict:
    """Whatever the curation report holds: tables from its JSON files, images, cards, the file list."""
    lin = _lineage(cd) if cd is not None and cd.is_dir() else None
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    images: list[dict] = []
    cards: list[dict] = []
    files: list[dict] = []
    if cd is not None and cd.is_dir():
        shown: set[str] = set()
        nested: dict[str, dict[str, dict]] = {}
        for p in sorted(cd.rglob("*")):
            if not p.is_file() or p.name == "lineage.json":
                continue
            rel = p.relative_to(cd).as_posix()
            size = p.stat().st_size
            files.append({"name": rel, "size": f"{size:,} B"})
            if p.suffix == ".json" and size < 2_000_000:
                data = _read_json(p)
                if data is not None and "/" not in rel:
                    tables += _json_tables(data, rel, shown)[:8]
                elif data is not None:  # e.g. validation/<dataset>.json: one row of its top-level fields
                    nested.setdefault(rel.rsplit("/", 1)[0], {})[rel] = {k: v for k, v in data.items() if _scalar(v)}
            elif p.suffix.lower() in (".png", ".jpg", ".jpeg") and size < 3_000_000 and len(images) < 6:
                images += _images([p])
            elif p.suffix == ".md" and len(cards) < 8:
                cards.append({"name": rel, "text": p.read_text(errors="ignore")[:3000]})
        for folder, found in nested.items():
            cols = list(dict.fromkeys(c for x in found.values() for c in x))[:10]
            rows = [[f, *(str(x.get(c, "")) for c in cols)] for f, x in list(found.items())[:40]]
            tables.append((f"{folder}/", ["file", *cols], rows))
    return {
        "id": "sec-curation",
        "title": "Curation",
        "available": bool(lin or files),
        "summary": str(lin.get("summary") or "") if lin else "",
        "tables": [_table(head, rows, title=title) for title, head, rows in tables],
        "images": images,
        "cards": cards,
        "files": files[:40],
    }


def _final(results: dict) -> str:
    """The final model's label: "SFT" when the gate stopped the run before GRPO, else "final"."""
    return "SFT" if results.get("final_stage") == "sft" else "final"


def _benchmarks_section(results: dict) -> dict:
    k = results.get("k", "K")
    fin = _final(results)
    bench = {n: e for n, e in _d(results.get("benchmarks")).items() if isinstance(e, dict)}
    head = [
        "benchmark",
        "questions",
        "Acc@1 base",
        f"Acc@1 {fin}",
        "Δ Acc@1 [95% CI]",
        f"Pass@{k} base",
        f"Pass@{k} {fin}",
        f"Δ Pass@{k} [95% CI]",
    ]
    rows = []
    for name, e in bench.items():
        base, trained, d = _d(e.get("base")), _d(e.get("trained")), _d(e.get("delta"))
        used = e.get("used", base.get("n"))
        source = e.get("source")
        questions = (
            f"{_text(used)} of {_text(e.get('kept'))} closed ({_text(e.get('rows'))} rows)"
            if not source or source == name else f"{_text(used)} (of {source})"
        )
        rows.append(
            [
                name,
                questions,
                pct(base.get("acc_at_1")),
                pct(trained.get("acc_at_1")),
                _delta(d, "acc_at_1"),
                pct(_passk(base)),
                pct(_passk(trained)),
                _delta(d, "pass_at_k"),
            ]
        )
    groups: set[int] = set()
    avg = {"base": None, "trained": None}
    if rows:
        for side in avg:
            accs = [_d(e.get(side)).get("acc_at_1") for e in bench.values()]
            accs = [a for a in accs if _is_num(a)]
            avg[side] = sum(accs) / len(accs) if accs else None
        both = avg["base"] is not None and avg["trained"] is not None
        diff = avg["trained"] - avg["base"] if both else None
        groups.add(len(rows))
        rows.append(["average", "", pct(avg["base"]), pct(avg["trained"]), signed(diff), "", "", ""])
    excluded = list({
        str(e.get("source") or n): {"name": str(e.get("source") or n),
                                    "text": ", ".join(f"{r}: {c}" for r, c in _d(e.get("excluded")).items())}
        for n, e in bench.items()
        if _d(e.get("excluded"))
    }.values())
    return {
        "id": "sec-benchmarks",
        "title": f"Benchmarks, multiple choice: base vs {fin} model (percent; Δ = {fin} − base, paired bootstrap 95% CI)",
        "available": bool(bench),
        "table": _table(head, rows, groups),
        "average_base": pct(avg["base"]),
        "average_trained": pct(avg["trained"]),
        "average_delta": signed(avg["trained"] - avg["base"]) if bench and None not in avg.values() else NA,
        "excluded": excluded,
    }


def _stages_section(results: dict) -> dict:
    """Base -> SFT -> SFT+GRPO on the same questions: what the bridge added and what RL added, kept apart."""
    k = results.get("k", "K")
    entries: list[tuple[str, dict]] = [(n, e) for n, e in _d(results.get("benchmarks")).items() if isinstance(e, dict)]
    tr = _d(results.get("transfer"))
    entries += [(f"{r} (MedMNIST)", e) for r, e in _d(tr.get("regimes")).items() if isinstance(e, dict)]
    entries = [(n, e) for n, e in entries if _d(e.get("deltas"))]
    tables = []
    for metric, label in (("acc_at_1", "Acc@1"), ("pass_at_k", f"Pass@{k}")):
        def value(m: Any, metric=metric) -> Any:
            return _d(m).get("acc_at_1") if metric == "acc_at_1" else _passk(m)

        rows = [
            [name, pct(value(e.get("base"))), pct(value(e.get("sft"))), pct(value(e.get("trained"))),
             _delta(_d(_d(e.get("deltas")).get("base_to_sft")), metric),
             _delta(_d(_d(e.get("deltas")).get("sft_to_rl")), metric),
             _delta(_d(_d(e.get("deltas")).get("base_to_final")), metric)]
            for name, e in entries
        ]
        tables.append(_table(["set", f"{label} base", f"{label} SFT", f"{label} SFT+GRPO", "Δ base → SFT [95% CI]",
                              "Δ SFT → RL [95% CI]", "Δ base → final [95% CI]"], rows, title=label))
    return {
        "id": "sec-stages",
        "title": "SFT and RL gains kept apart (bridge branch: base → SFT → SFT+GRPO, same questions, paired)",
        "available": bool(entries),
        "tables": tables,
        "sft_tasks": _names(results.get("sft_tasks")),
        "note": (
            "Δ base → SFT is the bridge's gain, Δ SFT → RL what GRPO added on top of it; tasks the SFT step trained on "
            "count as in-domain in the transfer table."
        ),
    }


def _open_section(results: dict) -> dict:
    """Open-ended benchmark questions, scored apart: exact match (or the judge) and token F1."""
    k = results.get("k", "K")
    fin = _final(results)
    judged = bool(_d(results.get("sampling")).get("judge_model"))
    rows = []
    for name, e in _d(results.get("open")).items():
        if not isinstance(e, dict):
            continue
        base, final, d = _d(e.get("base")), _d(e.get("trained")), _d(e.get("delta"))
        rows.append([name, _text(base.get("n")), pct(base.get("acc_at_1")), pct(final.get("acc_at_1")),
                     _delta(d, "acc_at_1"), pct(base.get("token_f1")), pct(final.get("token_f1")),
                     pct(_passk(base)), pct(_passk(final)), _delta(d, "pass_at_k")])
    return {
        "id": "sec-open",
        "title": "Benchmarks, open-ended questions (scored apart)",
        "available": bool(rows),
        "table": _table(["set", "questions", "correct base", f"correct {fin}", "Δ [95% CI]", "token F1 base",
                         f"token F1 {fin}", f"Pass@{k} base", f"Pass@{k} {fin}", f"Δ Pass@{k} [95% CI]"], rows),
        "note": (
            "Correct = the judge says the answer means the reference" if judged else
            "Correct = normalised exact match with the reference answer (lower case, punctuation and articles removed)"
        ) + "; token F1 = overlap of the normalised words (greedy answer). Percent.",
    }


def _transfer_section(results: dict) -> dict:
    k = results.get("k", "K")
    tr = _d(results.get("transfer"))
    fin = _final(results)
    head = [
        "regime / task",
        "shift",
        "questions",
        "Acc@1 base",
        f"Acc@1 {fin}",
        "Δ Acc@1 [95% CI]",
        f"Pass@{k} base",
        f"Pass@{k} {fin}",
        f"Δ Pass@{k} [95% CI]",
    ]

    def row(label: str, shift: str, e: Any) -> list[str]:
        base, trained, d = _d(_d(e).get("base")), _d(_d(e).get("trained")), _d(_d(e).get("delta"))
        return [
            label,
            shift,
            _text(base.get("n")),
            pct(base.get("acc_at_1")),
            pct(trained.get("acc_at_1")),
            _delta(d, "acc_at_1"),
            pct(_passk(base)),
            pct(_passk(trained)),
            _delta(d, "pass_at_k"),
        ]

    rows: list[list[str]] = []
    groups: set[int] = set()
    tasks = _d(tr.get("tasks"))
    for regime, e in _d(tr.get("regimes")).items():
        names = [t for t in _d(e).get("tasks") or []]
        groups.add(len(rows))
        rows.append(row(regime, f"{len(names)} task(s)", e))
        for task in names:
            t = _d(tasks.get(task))
            ours = " — question form ours" if t.get("question_form") else ""
            rows.append(row(f"{_text(t.get('name') or task)} ({task}){ours}", str(t.get("shift") or ""), t))
    train_task = _text(results.get("train_task"))
    return {
        "id": "sec-transfer",
        "title": f"Transfer on MedMNIST (trained on {train_task})",
        "available": bool(rows),
        "table": _table(head, rows, groups),
        "note": (
            "in-domain: the trained task, and tasks the SFT step trained on · within-modality: same group (OrganA → "
            "OrganC/OrganS same modality; OrganA → Pneumonia a larger shift) · cross-modality: another group (OCT → "
            "Path, OrganA → Path, OrganA → OCT) · cross-dataset: trained on a non-MedMNIST task."
            + (f" The SFT step trained on: {_names(results.get('sft_tasks'))}." if results.get("sft_tasks") else "")
        ),
    }


def _overfit_section(results: dict) -> dict:
    ov = _d(results.get("overfit"))
    checked = ov.get("checked", True) is not False
    flags = [f for f in ov.get("flags") or [] if isinstance(f, dict)] if checked else []
    messages = [_text(f.get("message")) for f in flags]
    if not checked:
        state, cls, verdict = "not checked", "", f"not checked: {ov.get('note') or ''}".strip()
    elif flags:
        state, cls, verdict = f"FLAGGED ({len(flags)})", "bad", "FLAGGED"
    else:
        state, cls, verdict = "clean", "good", "clean: no benchmark confidently won at a confident cost in transfer"
    checks = [c for c in ov.get("checks") or [] if isinstance(c, dict)]
    rows = [
        [_text(c.get("name")), _text(c.get("metric")), _with_ci(signed(c.get("value")), ci(c.get("ci"))),
         f"{c['p']:.3f}" if _is_num(c.get("p")) else NA,
         f"{c['p_adjusted']:.3f}" if _is_num(c.get("p_adjusted")) else NA, "LOSS" if c.get("rejected") else "no"]
        for c in checks
    ]
    alpha = ov.get("alpha")
    return {
        "id": "sec-overfit",
        "title": "Transfer guard: wins the benchmark, loses transfer (ChexReason failure mode)",
        "flagged": bool(flags),
        "state": state,
        "cls": cls,
        "verdict": verdict,
        "messages": messages,
        "margin": pct(ov.get("margin")),
        "checks": _table(["transfer check", "metric", "Δ [95% CI]", "p (Δ ≥ −margin)", "p Holm", "loss?"], rows),
        "note": (
            "Flagged only when the in-domain gain's paired 95% interval lies above 0 and a transfer change lies "
            f"confidently below −{pct(ov.get('margin'))} points: a one-sided bootstrap test per transfer check, with "
            f"Holm's correction over the {_text(ov.get('m', len(checks)))} transfer checks of this run (family-wise "
            f"α = {_text(alpha)}), comparing the {_text(ov.get('compared') or 'base -> final model')}. ChexReason: "
            "GRPO +23% on CheXpert, −19% on NIH."
        ),
    }


def _settings_section(results: dict) -> dict:
    s = _d(results.get("sampling"))
    h = _d(results.get("harness"))
    trunc = _d(results.get("truncation"))
    rows = [
        ["K (samples per question)", _text(results.get("k"))],
        ["prompt format", f"{_text(results.get('prompt_format'))} (v{_text(results.get('prompt_version'))})"],
        ["temperature", _text(s.get("temperature"))],
        ["top_p", _text(s.get("top_p"))],
        ["max_new_tokens", _text(s.get("max_new_tokens"))],
        ["backend", _text(s.get("backend"))],
        *([["Liger's fused kernels (transformers backend)", "on" if h["liger_kernels"] else "off"]]
          if "liger_kernels" in h else []),  # results written before the setting existed do not say
        ["image pixels (min, max)", f"{s.get('min_pixels') or 'processor default'}, {s.get('max_pixels') or 'processor default'}"],
        ["judge", f"{s.get('judge_model')} ({s.get('judge_mode')})" if s.get("judge_model") else "none: the parser alone"],
        ["chance-correction ceiling", _text(h.get("chance_ceiling"))],
        ["seed", _text(s.get("seed"))],
        *[[f"truncated completions, {m} (samples / greedy)",
           f"{pct(_d(t).get('samples'))} / {pct(_d(t).get('greedy'))}"] for m, t in trunc.items()],
    ]
    return {
        "id": "sec-settings",
        "title": "Evaluation settings (the measurement harness shared with the diagnosis)",
        "table": _table(["setting", "value"], rows),
        "answer_tag": "<answer>…</answer>",
        "parser": "components.common.answers.parse_answer",
        "samples": "samples.jsonl",
    }


def _watch_section(model_dir: Path | None) -> dict:
    """The sharpen step's support watch (train_log.json of the trained model): chance-corrected Pass@K and Acc@1 at
    each watch point, the guard's decision and its plot (support_watch.png)."""
    log = _read_json(model_dir / "train_log.json") if model_dir else None
    history = [h for h in _d(log).get("support_watch") or [] if isinstance(h, dict)]
    guard = _d(_d(log).get("guard"))
    shipped = guard.get("ship_step")
    k = history[0].get("k", "K") if history else "K"
    rows = [
        [
            _text(h.get("step")) + (" (shipped)" if h.get("step") == shipped else ""),
            _ratio(h.get("pass_corrected")),
            _ratio_ci(h.get("pass_corrected_ci")),
            _ratio(h.get("acc_corrected")),
            _ratio_ci(h.get("acc_corrected_ci")),
            pct(h.get("pass_at_k")),
            pct(h.get("acc_at_1")),
        ]
        for h in history
    ]
    plot = model_dir / "support_watch.png" if model_dir else None
    return {
        "id": "sec-watch",
        "title": "Support watch during RL (sharpen step)",
        "available": bool(history),
        "collapsed": bool(guard.get("collapsed")),
        "reason": _text(guard.get("reason")),
        "table": _table(
            ["step", f"corrected Pass@{k}", "95% CI", "corrected Acc@1", "95% CI", f"raw Pass@{k} (%)", "raw Acc@1 (%)"],
            rows,
        ),
        "images": _images([plot]) if plot is not None and plot.is_file() else [],
    }


def _ratio(x: Any) -> str:
    """A chance-corrected score (0 = guessing, 1 = always right) with three decimals."""
    return f"{x:.3f}" if _is_num(x) else NA


def _ratio_ci(pair: Any) -> str:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_num(v) for v in pair):
        return ""
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def _steps_section(steps: list[dict]) -> dict:
    rows = [
        [
            _text(s.get("step") or "?"),
            _text(s.get("artifact") or "?"),
            str(s["sha256"])[:12] if s.get("sha256") else "in lineage.json",
            str(s.get("summary") or ""),
            str(s.get("code_version") or ""),
            str(s.get("created_at") or ""),
            "yes" if s.get("synthetic") else "no",
        ]
        for s in steps
    ]
    params = [
        {
            "title": f"{s.get('step') or '?'} / {s.get('artifact') or '?'}",
            "json": json.dumps(s.get("params") or {}, indent=1, sort_keys=True, default=str),
        }
        for s in steps
    ]
    return {
        "id": "sec-steps",
        "title": "Steps (lineage of the inputs)",
        "available": bool(steps),
        "table": _table(STEP_HEAD, rows),
        "params": params,
    }


def _audit_section(input_dirs: dict[str, str | Path | None]) -> dict:
    """Every input artifact and its history checked against the lineage records (components.common.audit)."""
    from components.common.audit import audit_dirs

    rows, key_used, error = audit_dirs([d for d in input_dirs.values() if d])
    table = [[r.status.upper() if r.status == "tampered" else r.status, r.artifact, r.role, r.location, r.detail]
             for r in rows]
    return {
        "id": "sec-audit",
        "title": "Audit (inputs checked against their lineage)",
        "available": bool(rows),
        "tampered": sum(r.status == "tampered" for r in rows),
        "table": _table(["status", "artifact", "role", "where", "detail"], table),
        "note": error or ("lineage records authenticated with the signing key" if key_used
                          else "no signing key: files checked against their records, records not authenticated"),
    }


def _summary_cards(decision: dict, dg: dict | None, bench: dict, overfit: dict, gate: dict | None = None) -> list[dict]:
    dg_ = _d(dg)
    ov = _d(dg_.get("overall"))
    corr = _d(ov.get("corrected"))
    cards = [
        {
            "id": "card-decision",
            "label": "decision",
            "value": decision["branch_label"],
            "cls": decision["branch"],
            "note": decision["source"],
        },
        {
            "id": "card-support",
            "label": "support (diagnosis, chance-corrected)",
            "value": f"Pass@K {pct(corr.get('pass_at_k'))}" if corr else f"Pass@{_text(dg_.get('k', 'K'))} {pct(_passk(ov))}",
            "cls": "",
            "note": f"raw Pass@{_text(dg_.get('k', 'K'))} {pct(_passk(ov))} (chance {pct(_chance_passk(ov))}) · "
            f"Acc@1 {pct(ov.get('acc_at_1'))}",
        },
    ]
    if gate and gate.get("available"):
        cards.append({"id": "card-gate", "label": "after the bridge", "value": gate["outcome_label"],
                      "cls": gate["cls"], "note": "forced by the operator" if gate["forced"] else "from the re-diagnosis"})
    if bench["available"]:
        cards.append(
            {
                "id": "card-benchmarks",
                "label": "benchmark avg Acc@1",
                "value": bench["average_trained"],
                "cls": "",
                "note": f"base {bench['average_base']} · Δ {bench['average_delta']}",
            }
        )
    cards.append(
        {
            "id": "card-overfit",
            "label": "transfer guard",
            "value": overfit["state"],
            "cls": overfit["cls"],
            "note": f"margin {overfit['margin']} points",
        }
    )
    return cards


def build_context(
    results: dict,
    *,
    diagnosis_dir: str | Path | None = None,
    rediagnosis_dir: str | Path | None = None,
    probe_dir: str | Path | None = None,
    curation_dir: str | Path | None = None,
    input_dirs: dict[str, str | Path | None] | None = None,
    own_lineage: dict | None = None,
    base_model_ref: str | None = None,
) -> dict:
    """Read every input once and return the report's data, by section (SECTIONS), ready for the templates.

    Top-level keys: title, created_at, synthetic, synthetic_reasons, banner, header, cards and one dict per section
    in SECTIONS. `base_model_ref` is shown in the header when results name no base model; whether the run is
    synthetic comes from the lineage records alone (synthetic_reasons)."""
    results = _d(results)
    dd = Path(diagnosis_dir) if diagnosis_dir else None
    pd_ = Path(probe_dir) if probe_dir else None
    cd = Path(curation_dir) if curation_dir else None
    diagnosis = _read_json(dd / "diagnosis.json") if dd else None
    rediagnosis = _read_json(Path(rediagnosis_dir) / "diagnosis.json") if rediagnosis_dir else None
    probe = _read_json(pd_ / "probe.json") if pd_ else None
    steps = collect_steps(input_dirs or {}, own_lineage)
    # The run's own record takes its flag from this answer, so only the inputs' records decide it.
    reasons = synthetic_reasons([s for s in steps if s is not own_lineage])
    models = _d(results.get("models"))
    created_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    ctx: dict[str, Any] = {
        "title": "MedBridge run report",
        "created_at": created_at,
        "synthetic": bool(reasons),
        "synthetic_reasons": reasons,
        "banner": {"show": bool(reasons), "text": BANNER, "reasons": "; ".join(reasons)},
        "header": {
            "trained_model": _text(models.get("trained")),
            "final_label": "SFT model (GRPO not run)" if results.get("final_stage") == "sft" else "trained model",
            "sft_model": _text(models.get("sft")) if models.get("sft") else "",
            "base_model": _text(models.get("base") or base_model_ref),
            "train_task": _text(results.get("train_task")),
            "created_at": created_at,
        },
        "decision": _decision_section(diagnosis),
        "gate": _gate_section(rediagnosis),
        "diagnosis": _diagnosis_section(diagnosis),
        "curves": _curves_section(dd),
        "probe": _probe_section(probe),
        "curation": _curation_section(cd),
        "watch": _watch_section(Path(input_dirs["model"]) if (input_dirs or {}).get("model") else None),
        "benchmarks": _benchmarks_section(results),
        "stages": _stages_section(results),
        "open": _open_section(results),
        "transfer": _transfer_section(results),
        "overfit": _overfit_section(results),
        "settings": _settings_section(results),
        "steps": _steps_section(steps),
        "audit": _audit_section(input_dirs or {}),
    }
    ctx["cards"] = _summary_cards(ctx["decision"], diagnosis, ctx["benchmarks"], ctx["overfit"], ctx["gate"])
    return ctx


# --- rendering -----------------------------------------------------------------------------------------------------


def _md_table(table: dict) -> str:
    """A context table as Markdown (group rows bold in their first cell)."""
    rows = []
    for r in table["rows"]:
        cells = [c["text"] for c in r["cells"]]
        if r["group"] and cells and cells[0]:
            cells[0] = f"**{cells[0]}**"
        rows.append(cells)
    return md_table(table["head"], rows)


def _environment(autoescape: bool):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md_table"] = _md_table
    return env


def render_html(ctx: dict) -> str:
    """The self-contained HTML report (templates/report.html.jinja, autoescaped) of a build_context result."""
    from components.common.redact import redact_text

    return redact_text(_environment(autoescape=True).get_template(HTML_TEMPLATE).render(sections=SECTIONS, **ctx))


def render_markdown(ctx: dict) -> str:
    """The same report as Markdown (templates/report.md.jinja), from the same context."""
    from components.common.redact import redact_text

    return redact_text(_environment(autoescape=False).get_template(MD_TEMPLATE).render(sections=SECTIONS, **ctx))
