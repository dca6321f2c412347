"""What a step's lineage record needs from the pod it runs in, set on each task of a cluster pipeline.

    add_lineage_env(task)    # in pipelines.pipeline._place, for cluster settings

- KFP_RUN_ID and KFP_TASK_NAME from the pod's labels (Kubeflow labels every pipeline pod with `pipeline/runid` and
  `pipelines.kubeflow.org/task_name`), through the downward API;
- MEDBRIDGE_IMAGE: the image the task's component names (pin it by digest, `…@sha256:…`, to record the digest);
- MEDBRIDGE_LINEAGE_KEY from the Secret named by MEDBRIDGE_LINEAGE_SECRET when the pipeline is compiled (e.g.
  `MEDBRIDGE_LINEAGE_SECRET=medbridge-lineage medbridge compile …`; the CronJob reads it from the ConfigMap): every
  lineage record is then signed (components/common/lineage.py). It is opt-in because the Secret must exist: the
  kfp-kubernetes release MedBridge compiles with cannot mark a Secret reference optional for the KFP backends it
  supports.
"""

from __future__ import annotations

import os

SECRET_ENV = "MEDBRIDGE_LINEAGE_SECRET"


def lineage_secret() -> str:
    """The Secret holding MEDBRIDGE_LINEAGE_KEY, read at compile time ("" = records are not signed)."""
    return os.environ.get(SECRET_ENV, "").strip()


def add_lineage_env(task, secret: str | None = None):
    from kfp import kubernetes

    kubernetes.use_field_path_as_env(task, env_name="KFP_RUN_ID", field_path="metadata.labels['pipeline/runid']")
    kubernetes.use_field_path_as_env(
        task, env_name="KFP_TASK_NAME", field_path="metadata.labels['pipelines.kubeflow.org/task_name']"
    )
    image = getattr(getattr(getattr(task.component_spec, "implementation", None), "container", None), "image", None)
    if image:
        task.set_env_variable("MEDBRIDGE_IMAGE", image)
    secret = lineage_secret() if secret is None else secret
    if secret:
        kubernetes.use_secret_as_env(
            task, secret_name=secret, secret_key_to_env={"MEDBRIDGE_LINEAGE_KEY": "MEDBRIDGE_LINEAGE_KEY"}
        )
    return task
