"""The final report renders from fixture diagnosis / probe / curation / lineage dirs."""

from __future__ import annotations

import re

from components.common.lineage import write_lineage
from components.evaluate.report import BANNER, build_context, collect_steps, render_html, render_markdown

K = 2


def _m(acc, pk):
    return {
        "n": 4,
        "acc_at_1": acc,
        "pass_at_k": {"1": acc, "2": pk},
        "gap": pk - acc,
        "ci": {"acc_at_1": [0, 1], "pass_at_k": [0, 1], "gap": [0, 1]},
        "format_failure_rate": 0.0,
        "mean_distinct_answers": 1.0,
    }


def _delta(a, p):
    return {
        "n": 4,
        "acc_at_1": {"value": a, "ci": [a - 0.1, a + 0.1]},
        "pass_at_k": {"value": p, "ci": [p - 0.1, p + 0.1]},
    }


RESULTS = {
    "k": K,
    "prompt_format": "think",
    "prompt_version": "1",
    "train_task": "pmc-vqa",
    "sampling": {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 8, "backend": "transformers", "seed": 0},
    "models": {"trained": "/m/trained", "base": "org/base"},
    "benchmarks": {
        "pmc-vqa": {
            "rows": 10,
            "kept": 8,
            "used": 4,
            "excluded": {"open question": 2},
            "base": _m(0.25, 0.5),
            "trained": _m(0.75, 0.75),
            "delta": _delta(0.5, 0.25),
        }
    },
    "transfer": {
        "train_task": "pmc-vqa",
        "tasks": {
            "pathmnist": {
                "name": "Path",
                "shift": "trained on pmc-vqa",
                "regime": "cross-dataset",
                "base": _m(0.5, 1.0),
                "trained": _m(0.0, 0.5),
                "delta": _delta(-0.5, -0.5),
            }
        },
        "regimes": {
            "cross-dataset": {
                "tasks": ["pathmnist"],
                "base": _m(0.5, 1.0),
                "trained": _m(0.0, 0.5),
                "delta": _delta(-0.5, -0.5),
            }
        },
    },
    "overfit": {
        "margin": 0.05,
        "checked": True,
        "note": "",
        "flags": [
            {
                "metric": "acc_at_1",
                "benchmark": "pmc-vqa",
                "benchmark_delta": 0.5,
                "lost": {"cross-dataset": -0.5},
                "message": "acc_at_1: wins pmc-vqa (+50.0%) but loses transfer on cross-dataset",
            }
        ],
    },
    "synthetic_inputs": {"benchmarks": False, "eval_set": False},
}


def test_report_renders_decision_banner_tables_and_steps(upstream, tmp_path):
    dirs = {
        "diagnosis": upstream["diagnosis"],
        "probe_report": upstream["probe_report"],
        "curation_report": upstream["curation_report"],
        "eval_set": upstream["eval_set"],
    }
    own = {
        "step": "evaluate",
        "artifact": "results",
        "sha256": "f" * 64,
        "summary": "scored 1 benchmark",
        "synthetic": True,
    }
    ctx = build_context(
        RESULTS,
        diagnosis_dir=upstream["diagnosis"],
        probe_dir=upstream["probe_report"],
        curation_dir=upstream["curation_report"],
        input_dirs=dirs,
        own_lineage=own,
    )
    html = render_html(ctx)
    out = tmp_path / "report.html"
    out.write_text(html)
    assert out.stat().st_size > 1000
    assert BANNER in html and ctx["synthetic"]  # upstream lineage says synthetic
    assert "SHARPEN" in html and "test rule text" in html  # decision branch and its rule
    assert html.count("data:image/png;base64,") >= 2  # Pass@k curves + curation chart embedded, no external files
    assert "<td>OrganA</td>" in html  # probe table.md rendered as a table
    assert (
        "quarantined" in html and "counts.json › rl_set" in html and "<td>CT</td>" in html
    )  # curation counts as tables
    assert "FLAGGED" in html and "wins pmc-vqa" in html
    assert "+50.0 [40.0, 60.0]" in html  # benchmark delta with its interval, in points
    # one line per step, in pipeline order, each artifact once
    steps = re.findall(r"<tr><td>(curate|probe|diagnose|sft|grpo|evaluate)</td><td>([a-z_]+)</td>", html)
    assert [s for s, _ in steps] == ["curate", "curate", "probe", "diagnose", "evaluate"]
    assert sorted(a for _, a in steps) == ["curation_report", "diagnosis", "eval_set", "probe_report", "results"]
    md = render_markdown(ctx)
    assert BANNER in md and "**Branch: SHARPEN**" in md and "| pmc-vqa |" in md


def test_collect_steps_dedupes_history(upstream):
    # the eval set appears in the history of probe and diagnosis and as an input itself: listed once
    steps = collect_steps(
        {"a": upstream["diagnosis"], "b": upstream["probe_report"], "c": upstream["eval_set"], "missing": None}
    )
    assert [s["artifact"] for s in steps] == ["eval_set", "probe_report", "diagnosis"]


def test_no_banner_for_a_real_run(tmp_path):
    art = tmp_path / "diagnosis"
    art.mkdir()
    (art / "diagnosis.json").write_text(
        '{"k": 2, "synthetic": false, "decision": {"branch": "bridge", "rule": "Pass@2 below tau"}}'
    )
    write_lineage(art, step="diagnose", artifact="diagnosis", summary="bridge", synthetic=False)
    ctx = build_context(RESULTS, diagnosis_dir=art, input_dirs={"diagnosis": art})
    html = render_html(ctx)
    assert not ctx["synthetic"] and BANNER not in html
    assert "BRIDGE" in html and "probe report not available" in html and "curation report not available" in html
