"""Sharded labelling: each shard labels a fixed part of the questions into its own cache file, and the merge of the
shard files is the single run's labels, whatever the order of files or lines; conflicts are reported."""

from __future__ import annotations

import itertools
import json
import random
import shutil

import pytest

from components.curate.label import main as label_main
from components.curate.labeller import (
    LabelCache,
    LabelEntry,
    ModalityLabeller,
    label_modalities,
    merge_labels,
    shard_files,
    shard_of,
    shard_path,
)
from components.curate.pmcvqa import load_pmc_vqa


@pytest.fixture(scope="module")
def ragged(ragged_model_dir):
    from components.common.modeling import load_model_and_processor

    return load_model_and_processor(str(ragged_model_dir), device="cpu")


def _labeller(ragged, ragged_model_dir):
    model, proc = ragged
    lab = ModalityLabeller(str(ragged_model_dir), model=model, processor=proc)
    calls: list[int] = []
    real = lab.score_prepared
    lab.score_prepared = lambda batch: calls.append(len(batch["lens"])) or real(batch)
    return lab, calls


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_every_key_belongs_to_exactly_one_shard(n):
    keys = [f"{random.Random(i).getrandbits(256):064x}" for i in range(300)]
    shards = [shard_of(k, n) for k in keys]
    assert all(0 <= s < n for s in shards)
    assert shards == [shard_of(k, n) for k in keys]  # a fixed function of the key
    assert len(set(shards)) == n  # 300 keys reach every shard


def test_shards_labelled_separately_and_merged_equal_a_single_run(ragged, ragged_model_dir, ragged_pmc_root, tmp_path):
    recs = load_pmc_vqa(ragged_pmc_root).records
    lab, calls = _labeller(ragged, ragged_model_dir)
    single = label_modalities(recs, ragged_pmc_root, lab, LabelCache(tmp_path / "single" / "c.jsonl"), workers=0)

    cache = tmp_path / "sharded" / "c.jsonl"
    per_shard = []
    for i in (2, 0, 1):  # shards run in any order (separate pods)
        stats: dict = {}
        got = label_modalities(recs, ragged_pmc_root, lab, LabelCache(cache, shard=(i, 3)), workers=0,
                               shard=(i, 3), stats=stats)
        per_shard.append(stats["questions"])
        written = [json.loads(line)["key"] for line in shard_path(cache, i, 3).read_text().splitlines()]
        assert len(written) == stats["questions"] and all(shard_of(k, 3) == i for k in written)
        assert {e.key for e in got.values()} >= set(written)
    assert sum(per_shard) == len(recs) and all(per_shard)  # a partition: every question labelled exactly once
    assert not cache.exists()  # shards never write the main file
    assert [p.name for p in shard_files(cache)] == [f"c.shard-0000{i}-of-00003.jsonl" for i in range(3)]

    merged = LabelCache(cache)
    assert merged.conflicts == [] and merged.duplicates == 0
    n_before = len(calls)
    curated = label_modalities(recs, ragged_pmc_root, lab, merged, workers=0)  # what curation does
    assert len(calls) == n_before  # everything was labelled by a shard: the model scores nothing
    assert {r: e.label for r, e in curated.items()} == {r: e.label for r, e in single.items()}
    for r, e in curated.items():
        assert e.key == single[r].key and e.scores == pytest.approx(single[r].scores, abs=1e-4)

    # The consolidated file does not depend on the order the shard files or their lines come in.
    first = merged.write_merged().read_bytes()
    other = tmp_path / "other" / "c.jsonl"
    other.parent.mkdir()
    for p in reversed(shard_files(cache)):
        lines = p.read_text().splitlines(keepends=True)
        random.Random(0).shuffle(lines)
        (other.parent / p.name).write_text("".join(lines))
    assert LabelCache(other).write_merged().read_bytes() == first
    assert len(first.splitlines()) == len(recs)


def _entry(key, label, created="2026-01-01T00:00:00+00:00", score=-1.0):
    return LabelEntry(key, "img", "q", "m", "v", label, {label: score}, created)


def test_merge_is_order_independent_and_reports_conflicts():
    sources = [
        ("a.jsonl", [_entry("k1", "CT"), _entry("k2", "MRI")]),
        ("b.jsonl", [_entry("k1", "CT", created="2026-02-01T00:00:00+00:00"), _entry("k2", "X-ray")]),
        ("c.jsonl", [_entry("k3", "OCT")]),
    ]
    results = []
    for perm in itertools.permutations(sources):
        shuffled = [(name, list(reversed(entries))) for name, entries in perm]
        for src in (perm, shuffled):
            m = merge_labels(src)
            results.append((m.entries, m.duplicates, m.conflicts))
    assert all(r == results[0] for r in results)
    entries, duplicates, conflicts = results[0]
    assert sorted(entries) == ["k1", "k2", "k3"]
    # the same label twice is a duplicate: the canonical entry (earliest timestamp for equal content) is kept
    assert duplicates == 1 and entries["k1"].created_at == "2026-01-01T00:00:00+00:00"
    # two labels for one key: reported with the files holding each, one kept by the documented rule
    assert conflicts == [{"key": "k2", "labels": {"MRI": ["a.jsonl"], "X-ray": ["b.jsonl"]}, "kept": "MRI"}]
    assert entries["k2"].label == "MRI"


def test_cache_reads_main_and_shard_files_and_skips_torn_lines(tmp_path):
    main = tmp_path / "labels.jsonl"

    def row(k, lab):
        return json.dumps({"key": k, "image_sha256": "i", "question_sha256": "q", "model": "m", "prompt_version": "v",
                           "label": lab, "scores": {lab: -1.0}, "created_at": ""})

    main.write_text(row("k1", "CT") + "\n")
    shard_path(main, 0, 2).write_text(row("k2", "MRI") + "\n" + '{"key": "k3", "ima')  # torn by an interruption
    shard_path(main, 1, 2).write_text(row("k4", "OCT") + "\n" + row("k1", "X-ray") + "\n")
    (tmp_path / "labels.other.jsonl").write_text(row("k9", "CT") + "\n")  # not a shard of this cache
    cache = LabelCache(main, shard=(0, 2))
    assert sorted(cache.entries) == ["k1", "k2", "k4"] and cache.get("k3") is None
    assert [c["key"] for c in cache.conflicts] == ["k1"]
    cache.append([_entry("k5", "none")])
    assert cache.write_path == shard_path(main, 0, 2) and "k5" in shard_path(main, 0, 2).read_text()
    assert "k5" not in main.read_text()
    with pytest.raises(ValueError, match=r"label_shard=2 must be in \[0, 2\)"):
        LabelCache(main, shard=(2, 2))


def test_label_launcher_shards_resume_and_merge(ragged_model_dir, ragged_pmc_root, tmp_path, capsys):
    cache = tmp_path / "cache" / "modality_labels.jsonl"
    base = ["--pmc-vqa-root", str(ragged_pmc_root), "--labeller-model", str(ragged_model_dir), "--label-cache",
            str(cache), "--device", "cpu", "--label-workers", "0", "--label-num-shards", "2"]
    done = []
    for i in (1, 0):
        capsys.readouterr()
        assert label_main(base + ["--label-shard", str(i)]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["written_to"].endswith(f"modality_labels.shard-0000{i}-of-00002.jsonl")
        done.append(out["labelled_now"])
    assert sum(done) == 24 and all(done)
    assert label_main(base + ["--label-shard", "0"]) == 0  # a rerun labels only what is missing: nothing
    assert json.loads(capsys.readouterr().out)["labelled_now"] == 0

    assert label_main(["--label-cache", str(cache), "--merge"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["entries"] == 24 and out["conflicts"] == [] and len(out["files"]) == 2
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert keys == sorted(keys) and len(keys) == 24

    assert label_main(base + ["--label-shard", "2"]) == 2
    assert "label_shard=2 must be in [0, 2)" in capsys.readouterr().err
    assert label_main(["--label-cache", str(tmp_path / "none.jsonl"), "--merge"]) == 2
    assert "no label cache" in capsys.readouterr().err
    shutil.rmtree(cache.parent)
