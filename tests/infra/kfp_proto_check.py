"""Strict parse of a compiled pipeline against the protos of ONE KFP release, run inside a virtual environment
holding only that release's `kfp-pipeline-spec` and `kfp-kubernetes` (tests/infra/test_infra_kfp_protos.py).

    python kfp_proto_check.py < {"pipeline_spec": {...}, "platform_spec": {...}}    # prints OK or one error line

`json_format.ParseDict` without ignore_unknown_fields rejects any field the release does not know, as the KFP
backend's own parsing does. The kfp-kubernetes pb2 module is loaded by file, without its package (which imports
the kfp SDK, absent here).
"""

import importlib.util
import json
import sys
from pathlib import Path

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2


def _k8s_pb2():
    for root in map(Path, sys.path):
        path = root / "kfp" / "kubernetes" / "kubernetes_executor_config_pb2.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location("kubernetes_executor_config_pb2", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise SystemExit("kfp-kubernetes is not installed here")


def main() -> int:
    doc = json.load(sys.stdin)
    try:
        json_format.ParseDict(doc["pipeline_spec"], pipeline_spec_pb2.PipelineSpec())
        platform = doc.get("platform_spec") or {}
        if platform:
            json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
            k8s = _k8s_pb2()
            for name, config in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
                try:
                    json_format.ParseDict(config, k8s.KubernetesExecutorConfig())
                except json_format.ParseError as e:
                    raise json_format.ParseError(f"platform executor {name}: {e}") from None
    except json_format.ParseError as e:
        print(f"ERROR {e}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
