"""What a step's lineage record needs from the pod it runs in, set on each task of a cluster pipeline.

    add_lineage_env(task)    # in pipelines.pipeline._place, for cluster settings

- KFP_RUN_ID and KFP_TASK_NAME from the pod's labels (Kubeflow labels every pipeline pod with `pipeline/runid` and
  `pipelines.kubeflow.org/task_name`), through the downward API;
- MEDBRIDGE_IMAGE: the image the task's component names (pin it by digest, `…@sha256:…`, to record the digest);
- MEDBRIDGE_LINEAGE_KEY from the optional Secret `medbridge-lineage`: when it exists, every lineage record is signed
  (components/common/lineage.py); when it does not, the pods start all the same.
"""

from __future__ import annotations

LINEAGE_SECRET = "medbridge-lineage"


def add_lineage_env(task):
    from kfp import kubernetes

    kubernetes.use_field_path_as_env(task, env_name="KFP_RUN_ID", field_path="metadata.labels['pipeline/runid']")
    kubernetes.use_field_path_as_env(
        task, env_name="KFP_TASK_NAME", field_path="metadata.labels['pipelines.kubeflow.org/task_name']"
    )
    image = getattr(getattr(getattr(task.component_spec, "implementation", None), "container", None), "image", None)
    if image:
        task.set_env_variable("MEDBRIDGE_IMAGE", image)
    kubernetes.use_secret_as_env(
        task, secret_name=LINEAGE_SECRET, secret_key_to_env={"MEDBRIDGE_LINEAGE_KEY": "MEDBRIDGE_LINEAGE_KEY"},
        optional=True,
    )
    return task
