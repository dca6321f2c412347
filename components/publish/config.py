"""PublishConfig: the knobs of the publish step; PublishIO: its inputs and outputs. Both are the launcher's flags
(components.common.cli)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from components.common.cli import check_nonempty

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class PublishIO:
    model: str = field(metadata={"help": "trained model directory (Hugging Face format, with lineage.json)"})
    results: str = field(metadata={"help": "evaluate's results directory (results.json, report.md, lineage.json)"})
    report: str = field(metadata={"help": "the run's HTML report (evaluate's report output)"})
    diagnosis: str = field(metadata={"help": "diagnose's output directory (diagnosis.json): why this training was chosen"})
    out: str = field(metadata={"help": "local output directory: MODEL_CARD.md, published.json, lineage.json (replaced atomically)"})
    curation_report: str = field(default="", metadata={"help": "curate's curation_report directory: its dataset cards are published beside the model"})
    publish_uri: str = field(default="", metadata={"help": "s3://bucket/prefix to publish under (<prefix>/<name>/...); empty = write the card and manifest locally only"})

    def __post_init__(self):
        check_nonempty(self, optional=("curation_report", "publish_uri"))
        if self.publish_uri and not self.publish_uri.startswith("s3://"):
            raise ValueError(f"publish_uri={self.publish_uri!r} must be an s3:// URI, or empty to skip uploading (--publish-uri)")


@dataclass
class PublishConfig:
    name: str = field(default="", metadata={"help": "folder under --publish-uri; empty = medbridge-<first 12 hex digits of the model's content hash> (a retry publishes to the same place)"})
    model_name: str = field(default="", metadata={"help": "title of the model card; empty = the folder name"})
    include_samples: bool = field(default=True, metadata={"help": "publish evaluate's samples.jsonl (every completion) with the results"})
    overwrite: bool = field(default=False, metadata={"help": "replace a different publication already under the same folder (default: refuse)"})

    def __post_init__(self):
        if self.name and not _NAME_RE.match(self.name):
            raise ValueError(f"name={self.name!r}: use letters, digits, '.', '_' or '-' (at most 128), e.g. qwen-vl-grpo-2026-11 (--name)")
