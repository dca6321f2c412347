"""`medbridge trend`: diagnoses across checkpoints on one page, schema versions read or refused by name, branch changes
and support collapses flagged, the webhook called for the newest checkpoint's events (a real HTTP receiver), and the
same page from an s3:// prefix on the real S3 server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.cli import main as cli
from pipelines.trend import add_events, gather


def _metrics(acc, passk, ci, n_options=None):
    m = {"n": 40, "acc_at_1": acc, "pass_at_k": {"1": acc, "8": passk},
         "ci": {"acc_at_1": [acc - 0.05, acc + 0.05], "pass_at_k": ci}}
    if n_options:
        m["n_options"] = n_options
    return m


def _diagnosis(root, name, created, branch, passk, ci, *, n_options=None, version=None):
    d = root / name / "diagnose" / "diagnosis"
    d.mkdir(parents=True)
    doc = {"k": 8, "tau": 0.5, "model_ref": f"s3://models/{name}", "synthetic": False,
           "decision": {"branch": branch, "forced": False, "per_modality": {"radiology": {"branch": branch}}},
           "per_modality": {"radiology": _metrics(0.4, passk, ci, n_options)}}
    if version is not None:
        doc["schema_version"] = version
    (d / "diagnosis.json").write_text(json.dumps(doc))
    (d / "lineage.json").write_text(json.dumps({"schema_version": 2, "created_at": created, "step": "diagnose",
                                                "inputs": {"model": {"ref": f"s3://models/{name}", "sha256": name * 8}}}))
    return d


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    _diagnosis(root, "c1", "2026-11-01T00:00:00+00:00", "sharpen", 0.80, [0.74, 0.86], n_options=4)
    _diagnosis(root, "c2", "2026-11-02T00:00:00+00:00", "sharpen", 0.78, [0.72, 0.84], n_options=4, version=1)
    _diagnosis(root, "c3", "2026-11-03T00:00:00+00:00", "bridge", 0.40, [0.33, 0.47], n_options=4)  # collapse
    future = _diagnosis(root, "c4", "2026-11-04T00:00:00+00:00", "bridge", 0.5, [0.4, 0.6], version=99)
    broken = root / "c5" / "diagnosis"
    broken.mkdir(parents=True)
    (broken / "diagnosis.json").write_text("{not json")
    return root, future


def test_points_events_and_refusals(runs):
    root, future = runs
    points, refused = gather(str(root))
    assert [p["checkpoint"] for p in points] == ["s3://models/c1", "s3://models/c2", "s3://models/c3"]  # by time
    assert {r["source"].split("/runs/")[1].split("/")[0] for r in refused} == {"c4", "c5"}
    by_source = {r["source"].split("/runs/")[1].split("/")[0]: r["reason"] for r in refused}
    assert "unknown diagnosis schema version 99" in by_source["c4"] and str(future) in by_source["c4"]
    assert "not valid JSON" in by_source["c5"]
    support = points[0]["groups"]["radiology"]["support"]
    chance = 1 - (3 / 4) ** 8  # a uniform guesser's pass@8 among 4 options
    assert support["corrected"] and support["value"] == pytest.approx((0.80 - chance) / (1 - chance))
    events = add_events(points)
    assert [(e["event"], e["checkpoint"]) for e in events] == [
        ("branch_changed", "s3://models/c3"), ("flag_raised", "s3://models/c3")]
    assert events[0]["from"] == "sharpen" and events[0]["to"] == "bridge"
    assert "support collapse" == events[1]["flag"]


class Receiver:
    def __init__(self):
        got = self.got = []

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/notify"


def test_page_and_webhook(runs, tmp_path, monkeypatch, capsys):
    root, _ = runs
    hook = Receiver()
    monkeypatch.setenv("MEDBRIDGE_WEBHOOK_URL", hook.url)
    out = tmp_path / "trend.html"
    try:
        assert cli(["trend", str(root), "--out", str(out), "--notify"]) == 0
    finally:
        hook.server.shutdown()
        hook.server.server_close()
    html = out.read_text()
    for text in ("s3://models/c1", "s3://models/c3", "radiology", "chance-corrected support", "Diagnoses not shown",
                 "unknown diagnosis schema version 99", "branch sharpen → bridge", "<svg", "<polyline"):
        assert text in html, text
    assert [e["event"] for e in hook.got] == ["branch_changed", "flag_raised"]
    assert all(e["checkpoint"] == "s3://models/c3" and e["source"] == "medbridge" for e in hook.got)
    assert "3 diagnosed checkpoint(s), 2 refused, 2 event(s)" in capsys.readouterr().out


def test_json_and_bad_input(runs, tmp_path, capsys):
    root, _ = runs
    assert cli(["trend", str(root), "--out", str(tmp_path / "t.html"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and len(doc["points"]) == 3 and len(doc["refused"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["trend", str(empty), "--out", str(tmp_path / "e.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medbridge trend: error:") and "no diagnosis.json" in err and len(err.splitlines()) == 1


def test_trend_from_s3(runs, s3, tmp_path, capsys):
    from components.common.storage import upload_dir

    client, bucket = s3
    root, _ = runs
    for name in ("c1", "c3"):
        upload_dir(root / name / "diagnose" / "diagnosis", f"s3://{bucket}/state/diagnoses/{name}/diagnosis",
                   progress=False)
    out = tmp_path / "s3.html"
    assert cli(["trend", f"s3://{bucket}/state/diagnoses", "--out", str(out)]) == 0
    assert "2 diagnosed checkpoint(s), 0 refused" in capsys.readouterr().out
    assert "s3://models/c3" in out.read_text()
