"""FingerprintConfig: the knobs of the fingerprint step; FingerprintIO: its inputs and outputs. Both are the
launcher's flags (components.common.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.common.cli import check_nonempty


@dataclass
class FingerprintIO:
    refs: str = field(metadata={"help": "comma-separated NAME=REF inputs (s3:// prefix, Hugging Face id or local path), e.g. model=s3://models/latest"})
    out: str = field(default="", metadata={"help": "also write the fingerprint (hex sha256) to this file"})

    def __post_init__(self):
        check_nonempty(self, optional=("out",))
        parse_refs(self.refs)


@dataclass
class FingerprintConfig:
    step: str = field(default="", metadata={"help": "the step whose inputs these are (part of the fingerprint)"})
    resolve_hub: bool = field(default=True, metadata={"help": "key a Hugging Face id by its current commit (asks the hub unless HF_HUB_OFFLINE=1, then reads the local cache)"})

    def __post_init__(self):
        if not self.step.strip():
            raise ValueError("step is empty: name the step whose inputs are fingerprinted (--step), e.g. --step curate")


def parse_refs(text: str) -> dict[str, str]:
    """'a=s3://x,b=Qwen/Qwen2.5-VL-7B-Instruct' -> {'a': 's3://x', 'b': 'Qwen/...'}; empty references are dropped."""
    out: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        name, sep, ref = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"refs item {item!r}: expected NAME=REF, e.g. model=s3://models/latest (--refs)")
        if ref.strip():
            out[name.strip()] = ref.strip()
    return out
