"""Benchmarks as data: one YAML per benchmark in `benchmarks/`, registered in the plain dict `BENCHMARKS`.

Shared by the curate step (which keeps every benchmark question out of the training sets) and the evaluate step
(which scores them), so that both read the very same questions.

    from components.common.benchmark import BENCHMARKS, prepare_benchmark
    spec = BENCHMARKS["vqa-rad"]
    records, stats = prepare_benchmark(spec, "/data/benchmarks", "/tmp/vqa-rad-mcq", max_questions=200)

A YAML holds what lm-evaluation-harness's task files hold: the public dataset id, the on-disk layout and files of
the split, the schema mapping (which column is the question, the options, the answer, the image), the closed-form
filter (`keep_if` column values, plus the hook's own checks), the scorer, and the name of a hook in
`components.common.benchmark_hooks.HOOKS` that turns one row into an MCQ. `prepare_benchmark` reads the benchmark in its
public layout (local folder or s3:// URI) and writes a MedBridge dataset directory (records.jsonl + images/), so
the questions a model was asked are kept with the results.

Layouts (`layout:` in the YAML; the folder is `<benchmarks_root>/<dir>`):
    parquet   the hub's parquet shards, images embedded as {"bytes", "path"} structs (VQA-RAD, PathVQA, MMMU)
    json      one JSON array file + an image folder (SLAKE: test.json + imgs/)
    jsonl     JSON lines + an image folder (MedXpertQA: MM/test.jsonl + images/)
    csv       CSV + an image folder (PMC-VQA: test_clean.csv + images/)
A folder written by `datasets.Dataset(Dict).save_to_disk` (it holds `dataset_dict.json` or `state.json`) is read
with `datasets.load_from_disk` whatever the YAML's layout says, so `load_dataset(id).save_to_disk(dir)` also works.

Bad input: a row that lacks a column the YAML's `fields` name is an error naming the file, the row and the field.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.benchmark_hooks import HOOKS, MCQDoc, OpenDoc
from components.common.records import MODALITIES, MCQRecord, OpenRecord, save_open_records, save_records

BENCHMARK_DIR = Path(__file__).resolve().parent / "benchmarks"
LAYOUTS = ("parquet", "json", "jsonl", "csv")
SCORERS = ("option_letter",)  # multiple choice: the harness's answer reading (components.common.harness)


@dataclass
class BenchmarkSpec:
    name: str
    hf_dataset: str
    dir: str
    layout: str
    data_files: list[str]
    split: str
    doc_to_mcq: str
    fields: dict[str, Any]
    image_root: str | None = None
    keep_if: dict[str, list[Any]] = field(default_factory=dict)
    max_images: int = 1
    modality: str = "none"
    modality_field: str | None = None
    modality_map: dict[str, str] = field(default_factory=dict)
    scorer: str = "option_letter"
    description: str = ""
    open_ended: bool = False  # keep the hook's open questions (scored apart) instead of leaving them out
    split_by: str | None = None  # a column naming the benchmark of each row (one file, several benchmarks)
    dataset_map: dict[str, str] = field(default_factory=dict)  # split_by value -> benchmark name
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str) -> BenchmarkSpec:
        if self.layout not in LAYOUTS:
            raise ValueError(f"{where}: layout={self.layout!r} is not known; use one of {', '.join(LAYOUTS)}")
        if self.doc_to_mcq not in HOOKS:
            raise ValueError(f"{where}: doc_to_mcq={self.doc_to_mcq!r} names no hook; known: {', '.join(HOOKS)}")
        if self.scorer not in SCORERS:
            raise ValueError(f"{where}: scorer={self.scorer!r} is not known; use one of {', '.join(SCORERS)}")
        for m in [self.modality, *self.modality_map.values()]:
            if m not in MODALITIES:
                raise ValueError(f"{where}: modality {m!r} is not one of {', '.join(MODALITIES)}")
        if not self.data_files:
            raise ValueError(f"{where}: data_files is empty; name the split's files (globs allowed)")
        if self.max_images < 1:
            raise ValueError(f"{where}: max_images={self.max_images} must be >= 1")
        return self


def load_spec(path: str | Path) -> BenchmarkSpec:
    """Read and validate one benchmark YAML; the settings its hook declares go to `extra` (e.g. MMMU's subjects)."""
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a benchmark YAML must be a mapping")
    known = {f.name for f in dataclasses.fields(BenchmarkSpec)} - {"extra"}
    missing = [
        f.name
        for f in dataclasses.fields(BenchmarkSpec)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data
    ]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    hook = HOOKS.get(data.get("doc_to_mcq"))
    if hook is None:
        raise ValueError(f"{path}: doc_to_mcq={data.get('doc_to_mcq')!r} names no hook; known: {', '.join(HOOKS)}")
    unknown = [k for k in data if k not in known and k not in hook.settings]
    if unknown:
        raise ValueError(
            f"{path}: unknown key {unknown[0]!r}; the schema has {', '.join(sorted(known))} and hook "
            f"{data['doc_to_mcq']!r} reads {', '.join(hook.settings) or 'no other setting'}"
        )
    kwargs = {k: v for k, v in data.items() if k in known}
    if isinstance(kwargs.get("data_files"), str):
        kwargs["data_files"] = [kwargs["data_files"]]
    kwargs["keep_if"] = {k: list(v) if isinstance(v, list) else [v] for k, v in (kwargs.get("keep_if") or {}).items()}
    spec = BenchmarkSpec(**kwargs, extra={k: v for k, v in data.items() if k not in known})
    return spec.validate(str(path))


def load_registry(directory: str | Path = BENCHMARK_DIR) -> dict[str, BenchmarkSpec]:
    specs = [load_spec(p) for p in sorted(Path(directory).glob("*.yaml"))]
    return {s.name: s for s in specs}


BENCHMARKS: dict[str, BenchmarkSpec] = load_registry()
DEFAULT_BENCHMARKS = ("pmc-vqa", "mmmu-med", "medxpertqa-mm", "pathvqa", "slake", "vqa-rad")


def parse_benchmarks(names: str | list[str]) -> list[str]:
    """'a,b' / ['a', 'b'] / 'all' -> validated names; '' or 'none' -> [] (evaluate on the eval set only)."""
    if isinstance(names, str):
        names = (
            list(DEFAULT_BENCHMARKS)
            if names.strip() == "all"
            else [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]
        )
    out: list[str] = []
    for n in names:
        if n not in BENCHMARKS:
            raise ValueError(f"benchmark {n!r} is not known; choose from {', '.join(BENCHMARKS)} (or 'all')")
        if n not in out:
            out.append(n)
    return out


# --- reading a benchmark in its public layout ------------------------------------------------------------------


def resolve_root(root: str, spec: BenchmarkSpec, cache_dir: str | Path | None = None) -> Path:
    """The local folder of `spec` under `root` (a local dir or an s3:// URI, mirrored into the cache)."""
    if root.startswith("s3://"):
        from components.common.storage import cache_root, local_dir

        return local_dir(f"{root.rstrip('/')}/{spec.dir}", Path(cache_dir or cache_root()) / "benchmarks")
    folder = Path(root).expanduser() / spec.dir
    if not folder.is_dir():
        raise FileNotFoundError(
            f"benchmark {spec.name!r}: {folder} does not exist; download {spec.hf_dataset} there "
            f"(see components/evaluate/README.md) or drop {spec.name!r} from --benchmarks"
        )
    return folder


def _data_paths(folder: Path, spec: BenchmarkSpec) -> list[Path]:
    paths = sorted({p for pattern in spec.data_files for p in folder.glob(pattern) if p.is_file()})
    if not paths:
        raise FileNotFoundError(
            f"benchmark {spec.name!r}: no file in {folder} matches {spec.data_files} ({spec.layout} layout)"
        )
    return paths


def required_columns(spec: BenchmarkSpec) -> list[str]:
    """The columns every row must have: those the YAML's `fields` name (the id column is optional)."""
    cols: list[str] = []
    for key, value in spec.fields.items():
        if key in ("id", "answer_label") or value is None:
            continue
        cols += value if isinstance(value, list) else [value]
    return cols + ([spec.split_by] if spec.split_by else [])


def check_columns(rows: list[dict], spec: BenchmarkSpec, where: str) -> None:
    """Every row holds every required column; else one error naming the file, the row and the field."""
    need = required_columns(spec)
    for i, row in enumerate(rows):
        missing = [c for c in need if c not in row]
        if missing:
            raise ValueError(
                f"{where}: row {i}: missing field {missing[0]!r} (benchmark {spec.name!r} maps it in its YAML)"
            )


def read_rows(folder: Path, spec: BenchmarkSpec) -> list[dict]:
    """All rows of the benchmark's split as plain dicts, in file order; a row missing a mapped column is an error
    naming the file, the row and the field."""
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        import datasets

        ds = datasets.load_from_disk(str(folder))
        if isinstance(ds, datasets.DatasetDict):
            if spec.split not in ds:
                raise ValueError(f"{folder}: save_to_disk folder has splits {list(ds)}, not {spec.split!r}")
            ds = ds[spec.split]
        out = [dict(r) for r in ds]  # Image features decode to PIL images
        check_columns(out, spec, str(folder))
        return out
    rows: list[dict] = []
    for path in _data_paths(folder, spec):
        before = len(rows)
        if spec.layout == "parquet":
            import pyarrow.parquet as pq

            rows += pq.read_table(path).to_pylist()
        elif spec.layout == "csv":
            import pandas as pd

            rows += pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
        elif spec.layout == "json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise ValueError(f"{path}: expected a JSON array of rows ({spec.name} layout)")
            rows += data
        else:
            from components.common.io import read_jsonl

            rows += read_jsonl(path)
        check_columns(rows[before:], spec, str(path))
    return rows


def _open_image(ref: Any, folder: Path, spec: BenchmarkSpec, where: str):
    from PIL import Image

    if hasattr(ref, "convert"):  # already a PIL image (datasets with decoding on)
        return ref.convert("RGB")
    if isinstance(ref, dict) and ref.get("bytes") is not None:
        with Image.open(io.BytesIO(ref["bytes"])) as im:
            return im.convert("RGB")
    name = ref.get("path") if isinstance(ref, dict) else str(ref)
    path = folder / (spec.image_root or "") / name
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {name!r} not found at {path}")
    with Image.open(path) as im:
        return im.convert("RGB")


@dataclass
class PrepareStats:
    rows: int
    kept: int
    used: int
    excluded: dict[str, int]
    open: int = 0  # open-ended questions written to open.jsonl (scored apart)


def to_docs(rows: list[dict], spec: BenchmarkSpec) -> tuple[list[tuple[int, dict, MCQDoc | OpenDoc]], Counter]:
    """Apply the YAML's `keep_if` filter and the hook; return (row index, row, doc) kept and exclusion reasons.
    Open questions (`OpenDoc`) are kept only when the YAML says `open_ended: true`."""
    hook = HOOKS[spec.doc_to_mcq].fn
    kept: list[tuple[int, dict, MCQDoc | OpenDoc]] = []
    excluded: Counter = Counter()
    for i, row in enumerate(rows):
        reason = next(
            (f"{col} not in {allowed}" for col, allowed in spec.keep_if.items() if row.get(col) not in allowed), None
        )
        doc = hook(row, spec) if reason is None else reason
        if isinstance(doc, OpenDoc) and not spec.open_ended:
            doc = doc.reason
        if isinstance(doc, str):
            excluded[doc] += 1
        else:
            kept.append((i, row, doc))
    return kept, excluded


def benchmark_of(row: dict, spec: BenchmarkSpec) -> str:
    """The task name of a row: the spec's name, or `<name>/<benchmark>` for a file that holds several."""
    if not spec.split_by:
        return spec.name
    raw = str(row.get(spec.split_by) or "unknown")
    mapped = spec.dataset_map.get(raw) or re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-") or "unknown"
    return f"{spec.name}/{mapped}"


def prepare_benchmark(
    spec: BenchmarkSpec,
    root: str | Path,
    out_dir: str | Path,
    *,
    max_questions: int = 0,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> tuple[list[MCQRecord], PrepareStats]:
    """Read `spec` from `root`, keep its closed-form questions, subsample `max_questions` (0 = all, seeded) and write
    them as a MedBridge dataset directory at `out_dir` (records.jsonl + images/). Returns (records, stats)."""
    from tqdm.auto import tqdm

    root = str(root)
    folder = resolve_root(root, spec, cache_dir)
    rows = read_rows(folder, spec)
    kept, excluded = to_docs(rows, spec)
    chosen = kept
    if max_questions and len(kept) > max_questions:
        idx = sorted(random.Random(seed).sample(range(len(kept)), max_questions))
        chosen = [kept[i] for i in idx]
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    records: list[MCQRecord] = []
    open_records: list[OpenRecord] = []
    for n, (i, row, doc) in enumerate(tqdm(chosen, desc=f"{spec.name}: images", unit="q", disable=None)):
        raw_id = row.get(spec.fields.get("id")) if spec.fields.get("id") else None
        rid = f"{spec.name}-{raw_id if raw_id not in (None, '') else i}"
        where = f"{folder} ({spec.name}, row {i}, id {raw_id!r})"
        image_rel = f"images/{n:05d}.png"
        _open_image(doc.images[0], folder, spec, where).save(out_dir / image_rel)
        modality = spec.modality
        if spec.modality_field:
            modality = spec.modality_map.get(str(row.get(spec.modality_field)), spec.modality)
        common = dict(id=rid, question=doc.question, answer=doc.answer, image=image_rel, task=benchmark_of(row, spec),
                      modality=modality, split=spec.split, source=f"{spec.hf_dataset} (row {i})", meta=doc.meta)
        if isinstance(doc, OpenDoc):
            open_records.append(OpenRecord(**common).validate(where))
        else:
            records.append(MCQRecord(options=doc.options, **common).validate(where))
    if len({r.id for r in [*records, *open_records]}) != len(records) + len(open_records):
        raise ValueError(f"{folder}: benchmark {spec.name!r} repeats ids in column {spec.fields.get('id')!r}")
    save_records(out_dir, records)
    if open_records:
        save_open_records(out_dir, open_records)
    return records, PrepareStats(rows=len(rows), kept=len(kept), used=len(records) + len(open_records),
                                 excluded=dict(excluded), open=len(open_records))
