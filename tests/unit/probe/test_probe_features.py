"""Feature extraction on the tiny checkpoint: shapes, both tower paths, and the cache (a hit runs no model)."""

from __future__ import annotations

import numpy as np
import pytest

from components.probe.features import FeatureExtractor, cached_split_features, model_fingerprint, subset_indices


def _images(n=10, rgb=False, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
    return rng.integers(0, 255, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("image_size, rgb", [(56, False), (112, True)])  # grey and RGB; 1 and 4 windows
def test_feature_shapes_and_paths_agree(tiny_model_dir, image_size, rgb):
    imgs = _images(7, rgb)
    fast = FeatureExtractor(str(tiny_model_dir), image_size=image_size, batch_size=4, device="cpu")
    hf = FeatureExtractor(str(tiny_model_dir), image_size=image_size, batch_size=4, device="cpu", fast_tower=False)
    a, b = fast.extract(imgs), hf.extract(imgs)
    assert a.shape == (7, 64) and a.dtype == np.float32  # out_hidden_size of the tiny model
    assert (fast.path_used, hf.path_used) == ("fast", "hf")
    assert fast.forward_calls == 2  # ceil(7 / 4) batches
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    assert np.abs(a).sum() > 0


def test_max_pooling_differs_from_mean(tiny_model_dir):
    imgs = _images(3)
    mean = FeatureExtractor(str(tiny_model_dir), image_size=56, device="cpu").extract(imgs)
    mx = FeatureExtractor(str(tiny_model_dir), image_size=56, pooling="max", device="cpu").extract(imgs)
    assert (mx >= mean - 1e-6).all() and not np.allclose(mx, mean)


def test_bad_pooling_rejected():
    with pytest.raises(ValueError, match="pooling='sum'"):
        FeatureExtractor("unused", pooling="sum")


def test_cache_hit_runs_no_model(tiny_model_dir, tmp_path, npz_writer):
    npz = npz_writer(tmp_path / "data", "pneumoniamnist", n_per_class=3)
    imgs, labels = _images(6), np.arange(6)[:, None] % 2
    first = FeatureExtractor(str(tiny_model_dir), image_size=56, device="cpu")
    f1, _, info1 = cached_split_features(first, tmp_path / "cache", npz, "pneumoniamnist", "train", imgs, labels)
    assert not info1["cache_hit"] and first.forward_calls == 1
    assert {p.name for p in (tmp_path / "cache" / "pneumoniamnist").iterdir() for p in p.iterdir()} >= {
        "features.npy", "labels.npy", "meta.json", "lineage.json"}

    second = FeatureExtractor(str(tiny_model_dir), image_size=56, device="cpu")
    f2, l2, info2 = cached_split_features(second, tmp_path / "cache", npz, "pneumoniamnist", "train", imgs, labels)
    assert info2["cache_hit"] and info2["key"] == info1["key"]
    assert second.forward_calls == 0 and second.visual is None  # the checkpoint was never opened
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(l2, labels)

    # Another pooling (or image size, checkpoint, data file) is another cache entry.
    third = FeatureExtractor(str(tiny_model_dir), image_size=56, pooling="max", device="cpu")
    _, _, info3 = cached_split_features(third, tmp_path / "cache", npz, "pneumoniamnist", "train", imgs, labels)
    assert not info3["cache_hit"] and third.forward_calls == 1


def test_fingerprint_follows_the_weights(tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert model_fingerprint(str(copy)) == model_fingerprint(str(tiny_model_dir))  # same content, other path
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes() + b"\0")
    assert model_fingerprint(str(copy)) != model_fingerprint(str(tiny_model_dir))


def test_subset_indices_seeded_and_sorted():
    a = subset_indices(100, 10, seed=3, split="train")
    assert len(a) == 10 and list(a) == sorted(a)
    assert (a == subset_indices(100, 10, seed=3, split="train")).all()
    assert not (a == subset_indices(100, 10, seed=3, split="test")).all()
    assert (subset_indices(5, 0, 0, "train") == np.arange(5)).all()  # 0 = every image
