"""Linear probe on frozen features: BatchNorm1d + Linear, SGD (momentum 0.9), cosine-annealed lr, fixed epochs.

    res = train_linear_probe(x_train, y_train, x_test, y_test, task="multi-class", n_classes=9, epochs=20, seed=0)
    res.accuracy, res.auc      # percent (0-100); auc None when the test labels hold a single class

As in the public MedBridgeRL probe code: lr 0.1, cosine schedule, 20 epochs, train split -> test split.
Single-label tasks (multi-class, binary, ordinal) use cross-entropy; the multi-label task (chestmnist) uses BCE with
one logit per finding. Metrics follow MedMNIST's evaluator: accuracy = argmax hit rate (multi-label: per-finding
accuracy at threshold 0.5, averaged); AUC = one-vs-rest ROC AUC averaged over classes (binary: of the positive
class; multi-label: averaged over findings), from sklearn's roc_auc_score. Classes / findings whose test labels
hold a single value have no AUC and are left out of the average.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float  # percent
    auc: float | None  # percent
    chance: float  # percent: accuracy of always predicting the training majority (per finding for multi-label)
    n_train: int
    n_test: int
    final_train_loss: float


def is_multilabel(task: str) -> bool:
    return task.startswith("multi-label")


def chance_accuracy(y_train: np.ndarray, y_test: np.ndarray, task: str, n_classes: int) -> float:
    """Accuracy (percent) on the test split of predicting the training split's majority class / finding value."""
    if is_multilabel(task):
        majority = (y_train.mean(axis=0) >= 0.5).astype(np.int64)
        return float(100.0 * (y_test == majority).mean()) if len(y_test) else 0.0
    counts = np.bincount(y_train.reshape(-1), minlength=n_classes)
    return float(100.0 * (y_test.reshape(-1) == int(counts.argmax())).mean()) if len(y_test) else 0.0


def probe_metrics(y_true: np.ndarray, scores: np.ndarray, task: str) -> tuple[float, float | None]:
    """(accuracy %, AUC % or None) from test labels and probe outputs (probabilities)."""
    from sklearn.metrics import roc_auc_score

    if is_multilabel(task):
        y = y_true.astype(np.int64)
        acc = float(100.0 * ((scores >= 0.5).astype(np.int64) == y).mean())
        cols = [(y[:, j], scores[:, j]) for j in range(y.shape[1]) if len(np.unique(y[:, j])) == 2]
    else:
        y = y_true.reshape(-1).astype(np.int64)
        acc = float(100.0 * (scores.argmax(axis=1) == y).mean())
        if scores.shape[1] == 2:
            cols = [(y, scores[:, 1])] if len(np.unique(y)) == 2 else []
        else:
            cols = [((y == c).astype(np.int64), scores[:, c]) for c in range(scores.shape[1]) if len(np.unique(y == c)) == 2]
    auc = float(100.0 * np.mean([roc_auc_score(t, s) for t, s in cols])) if cols else None
    return acc, auc


def train_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    task: str,
    n_classes: int,
    epochs: int = 20,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "cpu",
) -> ProbeResult:
    """Fit BatchNorm1d + Linear on (x_train, y_train) and score it on (x_test, y_test)."""
    import torch

    if len(x_train) < 2:
        raise ValueError(f"{len(x_train)} training examples: a linear probe with BatchNorm needs at least 2")
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"features must be 2-D with equal widths, got train {x_train.shape} and test {x_test.shape}")
    dev = torch.device(device)
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        # A BatchNorm + Linear step on <= 4k-wide features is a few MFLOPs: one thread is fastest, and OpenMP
        # teams on a busy machine turn each tiny op into tens of milliseconds of spinning.
        torch.set_num_threads(1)
    try:
        return _fit(x_train, y_train, x_test, y_test, task, n_classes, epochs, lr, momentum, weight_decay, batch_size,
                    seed, dev)
    finally:
        torch.set_num_threads(threads)


def _fit(x_train, y_train, x_test, y_test, task, n_classes, epochs, lr, momentum, weight_decay, batch_size, seed, dev):
    import torch
    from torch import nn

    multilabel = is_multilabel(task)
    n_out = y_train.shape[1] if multilabel else n_classes
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x_train, dtype=torch.float32, device=dev)
    if multilabel:
        yt = torch.as_tensor(y_train, dtype=torch.float32, device=dev)
        loss_fn: nn.Module = nn.BCEWithLogitsLoss()
    else:
        yt = torch.as_tensor(y_train.reshape(-1), dtype=torch.long, device=dev)
        loss_fn = nn.CrossEntropyLoss()
    head = nn.Sequential(nn.BatchNorm1d(xt.shape[1]), nn.Linear(xt.shape[1], n_out)).to(dev)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-len(xt) // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    head.train()
    last = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen).to(dev)
        for start in range(0, len(xt), batch_size):
            idx = perm[start : start + batch_size]
            if len(idx) < 2:  # BatchNorm cannot normalise a batch of one
                sched.step()
                continue
            loss = loss_fn(head(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            last = float(loss.detach())
    head.eval()
    with torch.no_grad():
        logits = head(torch.as_tensor(x_test, dtype=torch.float32, device=dev))
        scores = (torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)).cpu().numpy()
    acc, auc = probe_metrics(y_test, scores, task) if len(x_test) else (0.0, None)
    return ProbeResult(
        accuracy=acc,
        auc=auc,
        chance=chance_accuracy(y_train, y_test, task, n_classes),
        n_train=int(len(x_train)),
        n_test=int(len(x_test)),
        final_train_loss=last,
    )
