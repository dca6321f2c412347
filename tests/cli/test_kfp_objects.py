"""Kubeflow objects looked up or created by name (pipelines/kfp_objects.py) against the tests' KFP API server
(tests/kfp_api_server.py), which keeps names unique as the backend does: another client creates the same name
between our lookup and our create, and both end with the one object."""

from __future__ import annotations

import kfp
import pytest
from kfp_api_server import FakeKFP  # tests/kfp_api_server.py (tests/ is on sys.path)

from pipelines import kfp_objects


@pytest.fixture
def server():
    s = FakeKFP().start()
    yield s
    s.stop()


def _racer(server: FakeKFP, path_suffix: str, act):
    """Before our first POST to `path_suffix` is answered, another client does `act` (once)."""

    def before(record):
        if record["method"] == "POST" and record["path"].endswith(path_suffix):
            server.before = None
            act(kfp.Client(host=server.url))

    server.before = before


def test_experiment_created_by_a_racer_is_the_one_used(server):
    _racer(server, "/experiments", lambda other: other.create_experiment("medbridge-rediagnose"))
    exp = kfp_objects.experiment(kfp.Client(host=server.url), "medbridge-rediagnose")
    assert list(server.experiments) == [exp.experiment_id]
    posts = [r for r in server.requests if r["method"] == "POST" and r["path"].endswith("/experiments")]
    assert len(posts) == 2  # the racer's create, and ours, refused with 409
    assert kfp_objects.experiment(kfp.Client(host=server.url), "medbridge-rediagnose").experiment_id == exp.experiment_id


def test_pipeline_and_version_uploaded_by_a_racer_are_the_ones_used(server, tmp_path):
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11")
    def noop():
        pass

    @dsl.pipeline(name="medbridge")
    def pipe():
        noop()

    spec = str(tmp_path / "p.yaml")
    compiler.Compiler().compile(pipe, spec)

    def upload_both(other):
        p = other.upload_pipeline(spec, pipeline_name="medbridge")
        other.upload_pipeline_version(spec, pipeline_version_name="medbridge-abc", pipeline_id=p.pipeline_id)

    _racer(server, "/pipelines/upload", upload_both)
    pid, vid = kfp_objects.pipeline_version(kfp.Client(host=server.url), spec, "medbridge", "medbridge-abc", None)
    assert list(server.pipelines) == [pid]
    assert [v["pipeline_version_id"] for v in server.versions.values() if v["display_name"] == "medbridge-abc"] == [vid]


def test_other_refusals_of_the_create_are_not_taken_for_a_race(server):
    import kfp_server_api

    def refuse(record):  # lookups are answered; the create is refused for another reason than the name
        server.token = "needed" if record["method"] == "POST" else None

    server.before = refuse
    with pytest.raises(kfp_server_api.ApiException) as e:
        kfp_objects.experiment(kfp.Client(host=server.url), "x")
    assert e.value.status == 401 and not server.experiments
