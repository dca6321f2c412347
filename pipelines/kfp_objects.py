"""Kubeflow Pipelines objects found by name, or created when absent, safe when callers race.

Kubeflow keeps an experiment's and a pipeline's name unique in its namespace and a version's name unique in its
pipeline: of two callers that both look a name up, find nothing and create it (two `medbridge watch` CronJob pods,
two submits of one release), the API server refuses the second with 409 AlreadyExists. kfp.Client's own
`create_experiment` looks up and then creates, so the loser fails. These helpers take that answer as "someone just
made it" and look the name up again, so every racer ends with the one object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _by_name(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def _find_or_create(find: Callable[[], Any], create: Callable[[], Any]) -> Any:
    """find() or, when it returns None, create(); a 409 from create means a racer created it: find() again."""
    import kfp_server_api

    found = find()
    if found is not None:
        return found
    try:
        return create()
    except kfp_server_api.ApiException as e:
        if e.status != 409:
            raise
    found = find()
    if found is None:  # 409 for another reason than the name (the server's message says which)
        raise RuntimeError("the Kubeflow API answered 409 AlreadyExists, yet nothing of that name can be listed")
    return found


def experiment(client, name: str, namespace: str | None = None):
    """The experiment named `name` (V2beta1Experiment), created when absent."""

    def find():
        try:
            return client.get_experiment(experiment_name=name, namespace=namespace)
        except ValueError as e:  # kfp.Client's answer for "none of that name"
            if str(e).startswith("No experiment is found with name"):
                return None
            raise

    return _find_or_create(find, lambda: client.create_experiment(name, namespace=namespace))


def pipeline_version(client, spec: str, pipeline_name: str, version_name: str, namespace: str | None,
                     description: str = "") -> tuple[str, str]:
    """(pipeline id, version id) of `pipeline_name`'s version `version_name`, each uploaded from `spec` if new."""

    def find_pipeline():
        found = client.list_pipelines(filter=_by_name(pipeline_name), namespace=namespace).pipelines or []
        return found[0] if found else None

    pipeline = _find_or_create(find_pipeline, lambda: client.upload_pipeline(
        spec, pipeline_name=pipeline_name, namespace=namespace, description=description))

    def find_version():
        found = client.list_pipeline_versions(pipeline.pipeline_id, filter=_by_name(version_name)).pipeline_versions
        return found[0] if found else None

    version = _find_or_create(find_version, lambda: client.upload_pipeline_version(
        spec, pipeline_version_name=version_name, pipeline_id=pipeline.pipeline_id))
    return pipeline.pipeline_id, version.pipeline_version_id
