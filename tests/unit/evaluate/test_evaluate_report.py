"""The final report: its context is built from fixture diagnosis / probe / curation / lineage dirs, and the HTML and
Markdown templates render that one context."""

from __future__ import annotations

import json
import re

from components.common.io import write_json
from components.common.lineage import write_lineage
from components.common.markdown import md_table
from components.evaluate.report import (
    BANNER,
    SECTIONS,
    build_context,
    collect_steps,
    render_html,
    render_markdown,
    synthetic_reasons,
)

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
}


OWN = {"step": "evaluate", "artifact": "results", "sha256": "f" * 64, "summary": "scored 1 benchmark"}


def fixture_context(upstream, results=RESULTS, own=None):
    """The report context of the fixture run (shared with the browser test)."""
    dirs = {
        "diagnosis": upstream["diagnosis"],
        "probe_report": upstream["probe_report"],
        "curation_report": upstream["curation_report"],
        "eval_set": upstream["eval_set"],
    }
    return build_context(
        results,
        diagnosis_dir=upstream["diagnosis"],
        probe_dir=upstream["probe_report"],
        curation_dir=upstream["curation_report"],
        input_dirs=dirs,
        own_lineage=dict(OWN) if own is None else own,
    )


def _texts(table):
    return [[c["text"] for c in r["cells"]] for r in table["rows"]]


def _groups(table):
    return [r["cells"][0]["text"] for r in table["rows"] if r["group"]]


def test_context_holds_ready_rows_by_section(upstream):
    ctx = fixture_context(upstream)
    for key in SECTIONS:
        assert ctx[key]["id"] == f"sec-{key}" and ctx[key]["title"]
    assert ctx["synthetic"] and ctx["synthetic_reasons"] == [
        "lineage marks synthetic: curate/curation_report, curate/eval_set, diagnose/diagnosis, probe/probe_report"
    ]
    dec = ctx["decision"]
    assert dec["branch_label"] == "SHARPEN" and not dec["forced"] and "test rule text" in dec["rule"]
    assert _texts(dec["overall"])[1] == ["Pass@2", "55.0 [40.0, 70.0]"]
    # raw beside chance and the chance-corrected value the rule uses, with the k it was taken at
    assert _texts(dec["overall"])[3] == ["chance Pass@2 (uniform guesser)", "55.6"]
    assert _texts(dec["overall"])[4] == ["corrected Pass@K (k = 1 at 3 options)", "10.0 [0.0, 20.0]"]
    assert dec["decided_on"].startswith("Decided on rl_diag_set") and "breadth" in dec["decided_on"]
    assert dec["overall"]["rows"][1]["cells"][1]["num"] and not dec["overall"]["rows"][1]["cells"][0]["num"]
    dg = ctx["diagnosis"]
    assert _texts(dg["per_modality"]) == [
        ["radiology", "sharpen", "10.0 [0.0, 20.0]", "55.0", "55.6", "25.0", "Pass@2 0.55 >= 0.5"]]
    assert _texts(dg["per_task"]) == [
        ["organamnist", "6", "25.0 [10.0, 40.0]", "55.0 [40.0, 70.0]", "55.6", "10.0 [0.0, 20.0]", "k = 1 at 3 options", ""]]
    assert [c["name"] for c in ctx["curves"]["images"]] == ["passk_curves.png"]
    assert ctx["curves"]["images"][0]["src"].startswith("data:image/png;base64,")
    # the probe table comes from probe.json: one group row per modality group, the task under it
    probe = ctx["probe"]["table"]
    assert _groups(probe) == ["radiology"]
    assert _texts(probe)[1][:4] == ["OrganA", "organamnist", "n/a", "61.0"] and _texts(probe)[1][-1] == "no"
    cur = ctx["curation"]
    assert [t["title"] for t in cur["tables"]] == ["counts.json", "counts.json › rl_set"]
    assert _texts(cur["tables"][1]) == [["CT", "12"], ["MRI", "12"]]
    assert [c["name"] for c in cur["cards"]] == ["card_eval_set.md"] and len(cur["images"]) == 1
    bench = _texts(ctx["benchmarks"]["table"])
    assert bench[0] == [
        "pmc-vqa",
        "4 of 8 closed (10 rows)",
        "25.0",
        "75.0",
        "+50.0 [40.0, 60.0]",
        "50.0",
        "75.0",
        "+25.0 [15.0, 35.0]",
    ]
    assert _groups(ctx["benchmarks"]["table"]) == ["average"] and bench[1][4] == "+50.0"
    assert ctx["benchmarks"]["excluded"] == [{"name": "pmc-vqa", "text": "open question: 2"}]
    tr = ctx["transfer"]["table"]
    assert _groups(tr) == ["cross-dataset"] and _texts(tr)[1][:2] == ["Path (pathmnist)", "trained on pmc-vqa"]
    assert _texts(tr)[1][5] == "-50.0 [-60.0, -40.0]"
    ov = ctx["overfit"]
    assert (
        ov["flagged"]
        and ov["margin"] == "5.0"
        and ov["messages"] == ["acc_at_1: wins pmc-vqa (+50.0%) but loses transfer on cross-dataset"]
    )
    assert ["temperature", "0.7"] in _texts(ctx["settings"]["table"])
    steps = _texts(ctx["steps"]["table"])
    assert [(r[0], r[1]) for r in steps] == [
        ("curate", "curation_report"),
        ("curate", "eval_set"),
        ("probe", "probe_report"),
        ("diagnose", "diagnosis"),
        ("evaluate", "results"),
    ]
    assert steps[-1][2] == "f" * 12 and [p["title"] for p in ctx["steps"]["params"]][1] == "curate / eval_set"
    assert [c["value"] for c in ctx["cards"]] == ["SHARPEN", "Pass@K 10.0", "75.0", "FLAGGED (1)"]
    # no re-diagnosis, no SFT stage, no open questions in this run: the sections say so
    assert not ctx["gate"]["available"] and not ctx["stages"]["available"] and not ctx["open"]["available"]


def test_report_renders_decision_banner_tables_and_steps(upstream, tmp_path):
    ctx = fixture_context(upstream)
    html = render_html(ctx)
    out = tmp_path / "report.html"
    out.write_text(html)
    assert out.stat().st_size > 1000
    assert BANNER in html and "lineage marks synthetic: curate/curation_report" in html
    decision = re.search(r'<div class="rule" id="decision" data-branch="sharpen">(.*?)</div>', html).group(1)
    assert "SHARPEN" in decision and "test rule text" in decision and "forced" not in decision
    for key in SECTIONS:
        assert html.count(f'<section id="sec-{key}">') == 1
    assert html.count("data:image/png;base64,") == 2  # Pass@k curve + curation chart embedded, no external files
    assert "<script" not in html and 'src="http' not in html and "<link" not in html  # self-contained
    assert '<tr class="group"><td>radiology</td>' in html and "<td>OrganA</td>" in html  # probe table from probe.json
    assert "quarantined" in html and "counts.json › rl_set" in html and "<td>CT</td>" in html  # curation tables
    assert "FLAGGED" in html and "wins pmc-vqa" in html
    assert '<td class="num">+50.0 [40.0, 60.0]</td>' in html  # benchmark delta with its interval, in points
    assert '<tr class="group"><td>cross-dataset</td>' in html and "<td>Path (pathmnist)</td>" in html
    assert "&lt;answer&gt;…&lt;/answer&gt;" in html  # settings text escaped, not a tag
    # one line per step, in pipeline order, each artifact once
    steps = re.findall(r"<tr><td>(curate|probe|diagnose|sft|grpo|evaluate)</td><td>([a-z_]+)</td>", html)
    assert [s for s, _ in steps] == ["curate", "curate", "probe", "diagnose", "evaluate"]
    assert sorted(a for _, a in steps) == ["curation_report", "diagnosis", "eval_set", "probe_report", "results"]
    assert "f" * 12 in html and "&#34;eval_per_class&#34;: 2" in html  # own hash and per-step parameters


def test_markdown_renders_the_same_context(upstream):
    md = render_markdown(fixture_context(upstream))
    assert md.startswith("# MedBridge run report\n") and f"> **{BANNER}.** lineage marks synthetic" in md
    assert "**Branch: SHARPEN**" in md and "Rule: Pass@2 CI lower bound" in md
    assert "| pmc-vqa | 4 of 8 closed (10 rows) | 25.0 | 75.0 | +50.0 [40.0, 60.0] |" in md
    assert "| **average** |" in md and "| **cross-dataset** | 1 task(s) |" in md  # group rows bold
    assert "| OrganA | organamnist |" in md and "| **radiology** |" in md  # probe table from probe.json
    assert "| evaluate | results | ffffffffffff |" in md
    assert "**FLAGGED** (margin 5.0 points)" in md and "- acc_at_1: wins pmc-vqa" in md
    assert "passk_curves.png" in md and "base64" not in md  # names the curves, does not inline them
    headings = re.findall(r"^## (.+)$", md, flags=re.MULTILINE)
    assert len(headings) == len(SECTIONS) and headings[0].startswith("Decision")


def test_html_escapes_user_text(upstream, tmp_path):
    evil = "<script>alert(1)</script>"
    results = {
        **RESULTS,
        "models": {"trained": f"/m/{evil}", "base": "org/<b>base</b>"},
        "benchmarks": {f"bench{evil}": RESULTS["benchmarks"]["pmc-vqa"]},
    }
    own = {**OWN, "summary": f"summary {evil}", "params": {"note": evil}}
    html = render_html(fixture_context(upstream, results, own))
    assert "<script" not in html and "<b>base</b>" not in html
    assert "/m/&lt;script&gt;alert(1)&lt;/script&gt;" in html and "org/&lt;b&gt;base&lt;/b&gt;" in html
    assert "<td>bench&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html
    assert "summary &lt;script&gt;" in html
    # Markdown is not HTML-escaped, and a pipe in a cell does not split the row
    md = render_markdown(
        fixture_context(upstream, {**results, "benchmarks": {"a|b": RESULTS["benchmarks"]["pmc-vqa"]}})
    )
    assert f"`/m/{evil}`" in md and "| a\\|b | 4 of 8 closed" in md


def test_collect_steps_dedupes_history(upstream):
    # the eval set appears in the history of probe and diagnosis and as an input itself: listed once
    steps = collect_steps(
        {"a": upstream["diagnosis"], "b": upstream["probe_report"], "c": upstream["eval_set"], "missing": None}
    )
    assert [s["artifact"] for s in steps] == ["eval_set", "probe_report", "diagnosis"]


def test_synthetic_comes_from_lineage_records_only():
    assert synthetic_reasons([]) == []
    assert synthetic_reasons([{"step": "curate", "artifact": "eval_set", "synthetic": False}]) == []
    steps = [
        {"step": "grpo", "artifact": "model", "synthetic": True},
        {"step": "curate", "artifact": "eval_set", "synthetic": True},
        {"step": "probe", "artifact": "probe_report"},
    ]
    assert synthetic_reasons(steps) == ["lineage marks synthetic: curate/eval_set, grpo/model"]


def test_no_banner_for_a_real_run_whatever_other_files_say(tmp_path):
    art = tmp_path / "diagnosis"
    art.mkdir()
    # diagnosis.json's own key is no second rule: the lineage record decides
    (art / "diagnosis.json").write_text(
        '{"k": 2, "synthetic": true, "decision": {"branch": "bridge", "rule": "Pass@2 below tau"}}'
    )
    write_lineage(art, step="diagnose", artifact="diagnosis", summary="bridge", synthetic=False)
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("random weights\n")  # no longer a rule of its own
    results = {**RESULTS, "synthetic_inputs": {"benchmarks": True, "eval_set": True}}  # nor this
    ctx = build_context(results, diagnosis_dir=art, input_dirs={"diagnosis": art}, base_model_ref=str(base))
    html = render_html(ctx)
    assert not ctx["synthetic"] and ctx["synthetic_reasons"] == [] and BANNER not in html
    assert 'data-branch="bridge"><b class="bridge">BRIDGE</b>: Pass@2 below tau</div>' in html
    assert "probe report not available" in html and "curation report not available" in html
    assert BANNER not in render_markdown(ctx)


def test_upstream_synthetic_record_sets_the_banner(tmp_path):
    art = tmp_path / "diagnosis"
    art.mkdir()
    write_json(art / "diagnosis.json", {"k": 2, "decision": {"branch": "bridge", "rule": "r"}})
    src = tmp_path / "data"
    src.mkdir()
    write_lineage(src, step="curate", artifact="diag_set", synthetic=True)
    # the diagnosis record itself says false (as an old or hand-edited record might); its history holds the
    # synthetic diag set
    rec = write_lineage(art, step="diagnose", artifact="diagnosis", inputs={"data": src})
    write_json(art / "lineage.json", {**rec, "synthetic": False})
    ctx = build_context(RESULTS, diagnosis_dir=art, input_dirs={"diagnosis": art})
    assert ctx["synthetic_reasons"] == ["lineage marks synthetic: curate/diag_set"]
    assert BANNER in render_html(ctx)


def test_forced_decision_names_the_operator_and_the_measured_branch(tmp_path):
    art = tmp_path / "diagnosis"
    art.mkdir()
    write_json(
        art / "diagnosis.json",
        {"k": 2, "decision": {"branch": "bridge", "rule": "forced", "forced": True, "measured_branch": "sharpen"}},
    )
    ctx = build_context(RESULTS, diagnosis_dir=art)
    html, md = render_html(ctx), render_markdown(ctx)
    assert "BRIDGE</b> (forced by the operator; the rule measured: sharpen): forced</div>" in html
    assert "**Branch: BRIDGE** (forced by the operator; the rule measured: sharpen)" in md
    assert ctx["cards"][0]["note"] == "forced by the operator"


def test_missing_or_broken_inputs_show_as_not_available(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "diagnosis.json").write_text("{not json")
    (broken / "probe.json").write_text("[1, 2]")
    (broken / "lineage.json").write_text("{not json")
    results = {"benchmarks": {"x": {"base": {}, "trained": None}}, "overfit": {"checked": False, "note": "no eval set"}}
    ctx = build_context(
        results,
        diagnosis_dir=broken,
        probe_dir=broken,
        curation_dir=tmp_path / "nowhere",
        input_dirs={"broken": broken, "nowhere": tmp_path / "nowhere"},
    )
    html, md = render_html(ctx), render_markdown(ctx)
    assert not ctx["synthetic"] and ctx["steps"]["table"]["rows"] == []
    assert ctx["decision"]["branch_label"] == "N/A" and "diagnosis.json not available" in html
    assert _texts(ctx["benchmarks"]["table"])[0][:4] == ["x", "n/a of n/a closed (n/a rows)", "n/a", "n/a"]
    assert ctx["overfit"]["verdict"] == "not checked: no eval set" and "not checked: no eval set" in md
    assert "probe report not available" in html and "no lineage found on the inputs" in html
    assert "no eval set scored" in md and "trained model <code>n/a</code>" in html


def test_md_table_escapes_pipes_and_pads_rows():
    assert md_table(["a", "b"], [["x|y", "1\n2"], ["z"]]) == "| a | b |\n|---|---|\n| x\\|y | 1 2 |\n| z |  |"


def test_launcher_writes_the_report_twice_and_keeps_the_hash(upstream, tmp_path, monkeypatch):
    import copy

    from components.common.io import sha256_path
    from components.evaluate import __main__ as launcher
    from components.evaluate import evaluation

    monkeypatch.setattr(evaluation, "evaluate_models", lambda *a, **k: (copy.deepcopy(RESULTS), []))
    results_dir, report = tmp_path / "out" / "results", tmp_path / "out" / "report"
    argv = ["--model", "m/trained", "--base-model", "m/base", "--out-results", str(results_dir)]
    argv += ["--out-report", str(report), "--eval-set", str(upstream["eval_set"])]
    argv += ["--diagnosis", str(upstream["diagnosis"]), "--probe-report", str(upstream["probe_report"])]
    argv += ["--curation-report", str(upstream["curation_report"])]
    assert launcher.main(argv) == 0
    lineage = json.loads((results_dir / "lineage.json").read_text())
    assert lineage["sha256"] == sha256_path(results_dir)  # report.html is part of the hashed directory
    outside, inside = report.read_text(), (results_dir / "report.html").read_text()
    assert lineage["sha256"][:12] in outside  # written once the hash is known
    assert 'id="decision" data-branch="sharpen"' in inside and BANNER in inside

    # the same report but for the results' own hash row (and the creation time)
    def strip(h):
        return re.sub(r"<tr><td>evaluate</td>.*?</tr>|\d{4}-\d\d-\d\dT[\d:+]+", "", h)

    assert strip(inside) == strip(outside)


def _three_stage_results():
    import copy

    res = copy.deepcopy(RESULTS)
    res["stages"] = ["base", "sft", "trained"]
    res["sft_tasks"] = ["pathmnist"]
    res["models"]["sft"] = "/m/sft"
    entry = res["benchmarks"]["pmc-vqa"]
    entry["sft"] = _m(0.5, 0.75)
    entry["deltas"] = {"base_to_sft": _delta(0.25, 0.25), "sft_to_rl": _delta(0.25, 0.0), "base_to_final": _delta(0.5, 0.25)}
    res["open"] = {"vqa-rad (open)": {"base": {**_m(0.0, 0.5), "token_f1": 0.2}, "trained": {**_m(0.5, 0.5), "token_f1": 0.6},
                                      "delta": _delta(0.5, 0.0)}}
    res["overfit"]["checks"] = [{"name": "cross-dataset", "metric": "acc_at_1", "value": -0.5, "ci": [-0.6, -0.4],
                                 "p": 0.001, "p_adjusted": 0.002, "rejected": True}]
    res["overfit"].update({"m": 2, "alpha": 0.05})
    return res


def test_report_shows_the_gate_the_stages_the_open_questions_and_the_guard(upstream, tmp_path):
    rd = tmp_path / "rediagnosis"
    rd.mkdir()
    write_json(rd / "diagnosis.json", {
        "k": 2, "stage": "after-bridge", "overall": _m(0.2, 0.4),
        "gate": {"outcome": "stop", "rule": "stop: after the bridge the corrected support is still below tau", "forced": False},
    })
    ctx = build_context(_three_stage_results(), diagnosis_dir=upstream["diagnosis"], rediagnosis_dir=rd)
    gate = ctx["gate"]
    assert gate["available"] and gate["outcome_label"] == "STOP (GRPO not run)" and not gate["forced"]
    assert [c["value"] for c in ctx["cards"]][2] == "STOP (GRPO not run)"
    st = ctx["stages"]
    assert st["available"] and st["sft_tasks"] == "pathmnist"
    acc = _texts(st["tables"][0])
    assert acc[0] == ["pmc-vqa", "25.0", "50.0", "75.0", "+25.0 [15.0, 35.0]", "+25.0 [15.0, 35.0]", "+50.0 [40.0, 60.0]"]
    op = _texts(ctx["open"]["table"])
    assert op[0][:7] == ["vqa-rad (open)", "4", "0.0", "50.0", "+50.0 [40.0, 60.0]", "20.0", "60.0"]
    checks = _texts(ctx["overfit"]["checks"])
    assert checks == [["cross-dataset", "acc_at_1", "-50.0 [-60.0, -40.0]", "0.001", "0.002", "LOSS"]]
    assert "Holm's correction over the 2 transfer checks" in ctx["overfit"]["note"]
    html, md = render_html(ctx), render_markdown(ctx)
    assert 'id="gate" data-outcome="stop"' in html and "Δ SFT → RL" in html and "vqa-rad (open)" in html
    assert "**STOP (GRPO not run)**" in md and "| pmc-vqa | 25.0 | 50.0 | 75.0 |" in md
    for key in SECTIONS:
        assert html.count(f'<section id="sec-{key}">') == 1


def test_settings_say_whether_liger_kernels_sampled_and_stay_silent_for_older_results():
    from components.evaluate.report import _settings_section

    row = "Liger's fused kernels (transformers backend)"
    for harness, want in (({"liger_kernels": True}, ["on"]), ({"liger_kernels": False}, ["off"]), ({}, [])):
        rows = _texts(_settings_section({"sampling": {"backend": "transformers"}, "harness": harness})["table"])
        assert [r[1] for r in rows if r[0] == row] == want
