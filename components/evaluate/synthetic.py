"""Tiny synthetic copies of the six evaluation benchmarks, in each one's public on-disk layout and schema.

    python -m components.evaluate.synthetic --out /tmp/benchmarks [--n 24]

Each copy mixes questions the closed-form filter keeps with ones it must leave out (open questions, Chinese SLAKE
questions, non-medical MMMU subjects, multi-image MedXpertQA questions), so the loaders and filters are exercised
on the real layouts. Images are small random PNGs. Every copy is SYNTHETIC: scores on it are plumbing checks,
never medical results; the root's lineage record says synthetic, which marks every artifact built from it.
"""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

from components.common.io import atomic_write_text
from components.common.lineage import write_lineage
from components.common.benchmark import BENCHMARKS

MEDICAL_SUBJECTS = (
    "Basic_Medical_Science",
    "Clinical_Medicine",
    "Diagnostics_and_Laboratory_Medicine",
    "Pharmacy",
    "Public_Health",
)
_ORGANS = ("liver", "lung", "kidney", "spleen", "heart", "brain", "colon", "bladder")


def _png(rng: random.Random, size: int = 32) -> bytes:
    from PIL import Image

    colour = tuple(rng.randrange(256) for _ in range(3))
    im = Image.new("RGB", (size, size), colour)
    im.putpixel((rng.randrange(size), rng.randrange(size)), (255 - colour[0], 255 - colour[1], 255 - colour[2]))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _yes_no_rows(rng: random.Random, n: int) -> list[dict]:
    """Two of three questions closed (yes/no), one open."""
    rows = []
    for i in range(n):
        organ = rng.choice(_ORGANS)
        if i % 3 == 2:
            rows.append({"question": f"Which organ is abnormal in image {i}?", "answer": organ})
        else:
            rows.append(
                {"question": f"Is the {organ} normal in image {i}?", "answer": rng.choice(["yes", "no", "Yes"])}
            )
    return rows


def _vqa_rad_like(folder: Path, rng: random.Random, n: int, shards: int) -> None:
    rows = [{"image": {"bytes": _png(rng), "path": f"synth_{i}.png"}, **r} for i, r in enumerate(_yes_no_rows(rng, n))]
    per = -(-len(rows) // shards)
    for s in range(shards):
        _write_parquet(folder / "data" / f"test-{s:05d}-of-{shards:05d}.parquet", rows[s * per : (s + 1) * per])


def _slake(folder: Path, rng: random.Random, n: int) -> None:
    rows = []
    for i, r in enumerate(_yes_no_rows(rng, n)):
        img_name = f"xmlab{i}/source.jpg"
        path = folder / "imgs" / img_name
        path.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.open(io.BytesIO(_png(rng))).save(path, format="JPEG")
        zh = i % 4 == 3  # every fourth question is the Chinese version
        closed = r["answer"].lower() in ("yes", "no")
        rows.append(
            {
                "img_id": i,
                "img_name": img_name,
                "question": ("肝脏正常吗?" if zh else r["question"]),
                "answer": ("是" if zh and closed else r["answer"]),
                "q_lang": "zh" if zh else "en",
                "location": "Abdomen",
                "modality": rng.choice(["CT", "MRI", "X-Ray"]),
                "answer_type": "CLOSED" if closed else "OPEN",
                "base_type": "vqa",
                "content_type": "Organ",
                "triple": ["vhead", "_", "_"],
                "qid": 1000 + i,
            }
        )
    atomic_write_text(folder / "test.json", json.dumps(rows, ensure_ascii=False, indent=1))


def _mmmu(folder: Path, rng: random.Random, n: int) -> None:
    subjects = [*MEDICAL_SUBJECTS, "Art"]  # Art is outside the medical set and must be left out
    by_subject: dict[str, list[dict]] = {s: [] for s in subjects}
    for i in range(n):
        subject = subjects[i % len(subjects)]
        k = len(by_subject[subject]) + 1
        n_opt = rng.choice([4, 5])
        two_images = i % 7 == 6
        row = {
            "id": f"validation_{subject}_{k}",
            "question": f"What does the {rng.choice(_ORGANS)} show in <image 1> (case {i})?",
            "options": str([f"finding {j}" for j in range(n_opt)]),
            "explanation": "",
            "image_1": {"bytes": _png(rng), "path": "image_1.png"},
            "image_2": {"bytes": _png(rng), "path": "image_2.png"} if two_images else None,
            **{f"image_{j}": None for j in range(3, 8)},
            "img_type": "['Medical Images']",
            "answer": "ABCDE"[rng.randrange(n_opt)],
            "topic_difficulty": "Medium",
            "question_type": "open" if i % 5 == 4 else "multiple-choice",
            "subfield": "Synthetic",
        }
        by_subject[subject].append(row)
    for subject, rows in by_subject.items():
        if rows:
            _write_parquet(folder / subject / "validation-00000-of-00001.parquet", rows)


def _medxpertqa(folder: Path, rng: random.Random, n: int) -> None:
    rows = []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        qid = f"MM-{i}"
        names = [f"{qid}-a.jpeg"] + ([f"{qid}-b.jpeg"] if i % 6 == 5 else [])  # some questions have two images
        for name in names:
            from PIL import Image

            Image.open(io.BytesIO(_png(rng))).save(folder / "images" / name, format="JPEG")
        options = {L: f"diagnosis {L.lower()}{i}" for L in "ABCDE"}
        choices = " ".join(f"({L}) {t}" for L, t in options.items())
        rows.append(
            {
                "id": qid,
                "question": f"A patient presents with finding {i}. What is the most likely diagnosis?\nAnswer Choices: {choices}",
                "options": options,
                "label": rng.choice("ABCDE"),
                "images": names,
                "medical_task": "Diagnosis",
                "body_system": "Digestive",
                "question_type": "Reasoning",
            }
        )
    atomic_write_text(folder / "MM" / "test.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _pmc_vqa(folder: Path, rng: random.Random, n: int) -> None:
    import csv

    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        fig = f"PMC{100000 + i}_F1.jpg"
        from PIL import Image

        Image.open(io.BytesIO(_png(rng))).save(folder / "images" / fig, format="JPEG")
        texts = [f"{m} of the {rng.choice(_ORGANS)}" for m in ("CT", "MRI", "Ultrasound", "X-ray")]
        label = "ABCD"[rng.randrange(4)]
        lines.append(
            {
                "Figure_path": fig,
                "Question": f"What imaging modality is used in figure {i}?",
                "Answer": texts["ABCD".index(label)],
                **{f"Choice {L}": f"{L}:{t}" for L, t in zip("ABCD", texts)},
                "Answer_label": label,
            }
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(lines[0]))
    writer.writeheader()
    writer.writerows(lines)
    atomic_write_text(folder / "test_clean.csv", buf.getvalue())


def _medvlthinker_eval(folder: Path, rng: random.Random, n: int) -> None:
    """One parquet test split holding several benchmarks, told apart by dataset_name; options as one string (some
    rows as a dict string, as some copies store them), a few open questions and a few two-image rows."""
    names = ["PMC-VQA", "MMMU-Medical", "MedXpert-MM", "PathVQA", "SLAKE", "VQA-RAD"]
    rows = []
    for i in range(n):
        name = names[i % len(names)]
        n_opt = 2 if name in ("PathVQA", "SLAKE", "VQA-RAD") else 4
        texts = ["yes", "no"] if n_opt == 2 else [f"{rng.choice(_ORGANS)} finding {j}" for j in range(n_opt)]
        label = "ABCD"[rng.randrange(n_opt)]
        images = [{"bytes": _png(rng), "path": f"{i}_0.png"}] + ([{"bytes": _png(rng), "path": f"{i}_1.png"}] if i % 9 == 8 else [])
        if i % 7 == 6:  # an open question: no options, no label
            options, label, answer = "", "", rng.choice(_ORGANS)
        elif i % 5 == 4:
            options, answer = json.dumps({"ABCD"[j]: t for j, t in enumerate(texts)}), texts["ABCD".index(label)]
        else:
            options, answer = "\n".join(f"{'ABCD'[j]}. {t}" for j, t in enumerate(texts)), texts["ABCD".index(label)]
        rows.append({"images": images, "question": f"What does the {rng.choice(_ORGANS)} show in case {i}?",
                     "options": options, "answer_label": label, "answer": answer, "dataset_name": name,
                     "dataset_index": i})
    _write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows)


_WRITERS = {
    "vqa-rad": lambda f, rng, n: _vqa_rad_like(f, rng, n, shards=1),
    "pathvqa": lambda f, rng, n: _vqa_rad_like(f, rng, n, shards=2),
    "slake": _slake,
    "mmmu-med": _mmmu,
    "medxpertqa-mm": _medxpertqa,
    "pmc-vqa": _pmc_vqa,
    "medvlthinker-eval": _medvlthinker_eval,
}

def write_synthetic_benchmarks(root: str | Path, names: list[str] | None = None, n: int = 24, seed: int = 0) -> Path:
    """Write synthetic copies of `names` (default: all six) under `root/<dir>`, and a lineage record marked synthetic
    at `root`; return root."""
    names = list(names) if names else list(_WRITERS)
    unknown = [x for x in names if x not in _WRITERS]
    if unknown:
        raise ValueError(f"no synthetic writer for {unknown}; known: {', '.join(_WRITERS)}")
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    root = Path(root)
    for name in names:
        folder = root / BENCHMARKS[name].dir
        folder.mkdir(parents=True, exist_ok=True)
        _WRITERS[name](folder, random.Random(f"{seed}-{name}"), n)
    write_lineage(
        root, step="synthetic-data", artifact="benchmarks_root", params={"names": names, "n": n, "seed": seed},
        synthetic=True,
        summary=f"SYNTHETIC copies of {', '.join(names)} ({n} rows each, seed {seed}) in each benchmark's public layout "
        "and schema, with random questions, answers and images: scores on them are plumbing checks, not medical results.",
    )
    return root


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="root folder for the benchmark copies")
    parser.add_argument("--names", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--n", type=int, default=24, help="rows per benchmark")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    names = [x for x in args.names.split(",") if x] or None
    print(write_synthetic_benchmarks(args.out, names, n=args.n, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
