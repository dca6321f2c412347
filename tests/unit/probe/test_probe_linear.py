"""The linear probe learns what is linearly there, and nothing more; metrics match hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from components.probe.linear import chance_accuracy, probe_metrics, train_linear_probe


def _blobs(n_per_class, n_classes, dim=16, seed=0, sep=4.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * sep
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centers[y] + rng.normal(size=(len(y), dim))
    return x.astype(np.float32), y[:, None]


def test_probe_learns_separable_task():
    xtr, ytr = _blobs(60, 4, seed=0)
    xte, yte = _blobs(20, 4, seed=0)
    xte = xte + np.random.default_rng(1).normal(size=xte.shape).astype(np.float32) * 0.1
    res = train_linear_probe(xtr, ytr, xte, yte, task="multi-class", n_classes=4, epochs=20, batch_size=32, seed=0)
    assert res.accuracy >= 95.0 and res.auc is not None and res.auc >= 99.0
    assert res.n_train == 240 and res.n_test == 80 and np.isfinite(res.final_train_loss)


def test_probe_is_at_chance_on_shuffled_labels():
    rng = np.random.default_rng(0)
    xtr, ytr = rng.normal(size=(400, 16)).astype(np.float32), rng.integers(0, 4, size=(400, 1))
    xte, yte = rng.normal(size=(400, 16)).astype(np.float32), rng.integers(0, 4, size=(400, 1))
    res = train_linear_probe(xtr, ytr, xte, yte, task="multi-class", n_classes=4, epochs=20, batch_size=64, seed=0)
    assert 15.0 <= res.accuracy <= 36.0  # chance is 25%


def test_probe_is_seeded():
    xtr, ytr = _blobs(20, 3, sep=0.7, seed=2)
    a = train_linear_probe(xtr, ytr, xtr, ytr, task="multi-class", n_classes=3, epochs=3, batch_size=16, seed=5)
    b = train_linear_probe(xtr, ytr, xtr, ytr, task="multi-class", n_classes=3, epochs=3, batch_size=16, seed=5)
    assert a == b


def test_multilabel_probe_reports_auc():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 14)).astype(np.float32)
    y = (x + 0.3 * rng.normal(size=x.shape) > 0.5).astype(np.int64)  # finding j present when feature j is high
    res = train_linear_probe(x[:200], y[:200], x[200:], y[200:], task="multi-label, binary-class", n_classes=14,
                             epochs=20, batch_size=32, seed=0)
    assert res.auc is not None and res.auc > 90.0
    assert res.accuracy > 85.0


@pytest.mark.parametrize(
    "y, scores, task, acc, auc",
    [
        # binary: argmax hits 3 of 4; positive-class scores rank 1 of 4 (pos, neg) pairs wrong -> AUC 0.75
        ([[0], [0], [1], [1]], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.7, 0.3]], "binary-class", 50.0, 75.0),
        # perfect 3-class ranking and argmax
        ([[0], [1], [2]], np.eye(3), "multi-class", 100.0, 100.0),
        # one class only in the test labels: AUC undefined
        ([[1], [1]], [[0.2, 0.8], [0.6, 0.4]], "binary-class", 50.0, None),
        # multi-label: 3 of 4 entries right at threshold 0.5; finding 0 ranked right, finding 1 ranked wrong
        ([[1, 0], [0, 1]], [[0.9, 0.8], [0.1, 0.7]], "multi-label, binary-class", 75.0, 50.0),
    ],
)
def test_probe_metrics_hand_computed(y, scores, task, acc, auc):
    got_acc, got_auc = probe_metrics(np.array(y), np.array(scores, dtype=float), task)
    assert got_acc == pytest.approx(acc)
    assert got_auc == (None if auc is None else pytest.approx(auc))


@pytest.mark.parametrize(
    "ytr, yte, task, want",
    [
        ([[0], [1], [1]], [[1], [0], [1], [1]], "binary-class", 75.0),  # majority class 1 hits 3 of 4
        ([[0, 1], [0, 1], [1, 0]], [[0, 1], [1, 1]], "multi-label, binary-class", 75.0),  # majority [0, 1]
    ],
)
def test_chance_accuracy(ytr, yte, task, want):
    assert chance_accuracy(np.array(ytr), np.array(yte), task, 2) == pytest.approx(want)


def test_too_few_examples_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        train_linear_probe(np.zeros((1, 4)), np.zeros((1, 1)), np.zeros((1, 4)), np.zeros((1, 1)), task="binary-class", n_classes=2)
