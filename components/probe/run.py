"""The probe step end to end: features per task (cached) -> linear probe per task -> probe_report directory.

    from components.probe.config import ProbeConfig, ProbeIO
    from components.probe.run import run_probe
    probe = run_probe(ProbeConfig(), ProbeIO(model="Qwen/Qwen2.5-VL-7B-Instruct", data="out/medmnist_data", out="out/probe_report"))

`probe_report` holds probe.json (schema in components/probe/report.py), table.md, probe_accuracy.png,
metrics.json and lineage.json.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from components.common.io import atomic_dir, write_json
from components.common.lineage import inputs_synthetic, write_lineage
from components.common.schema import stamp
from components.common.medmnist import load_split, npz_path, resolve_size
from components.probe.config import ProbeConfig, ProbeIO
from components.probe.features import (
    FeatureExtractor,
    cached_split_features,
    model_fingerprint,
    subset_indices,
)
from components.probe.linear import ProbeResult, train_linear_probe
from components.probe.report import (
    bar_chart,
    build_probe_json,
    summary_metrics,
    table_md,
)

STEP = "probe"


def run_probe(cfg: ProbeConfig, io: ProbeIO) -> dict[str, Any]:
    import medmnist
    from tqdm.auto import tqdm

    from components.common.modeling import pick_device

    cache = cfg.resolved_cache_dir()
    extractor = FeatureExtractor(
        io.model,
        image_size=cfg.image_size,
        pooling=cfg.pooling,
        batch_size=cfg.batch_size,
        device=cfg.device,
        fast_tower=cfg.fast_tower,
        compile=cfg.compile,
        num_workers=cfg.num_workers,
    )
    model_fp = model_fingerprint(io.model)
    subset = {"max_per_split": cfg.max_per_split, "seed": cfg.seed} if cfg.max_per_split else None
    results: dict[str, ProbeResult] = {}
    features: dict[str, Any] = {}
    for flag in tqdm(cfg.flag_list, desc="probe tasks", unit="task", disable=None):
        size = resolve_size(io.data, flag, explicit=cfg.npz_size, prefer=cfg.image_size)
        npz = npz_path(io.data, flag, size)
        data = {}
        features[flag] = {"npz": npz.name, "npz_size": size}
        for split in ("train", "test"):
            split_data = load_split(io.data, flag, split, size)
            imgs, labels = split_data.imgs, split_data.labels
            idx = subset_indices(len(imgs), cfg.max_per_split, cfg.seed, split)
            feats, labels, info = cached_split_features(
                extractor, cache, npz, flag, split, imgs[idx], labels[idx], model_fp=model_fp, subset=subset
            )
            data[split] = (feats, labels)
            features[flag][split] = info
        info = medmnist.INFO[flag]
        results[flag] = train_linear_probe(
            *data["train"],
            *data["test"],
            task=info["task"],
            n_classes=len(info["label"]),
            epochs=cfg.epochs,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            batch_size=cfg.probe_batch_size,
            seed=cfg.seed,
            device=pick_device(cfg.device),
        )
    inputs = {"model": io.model, "medmnist_data": io.data}
    synthetic = inputs_synthetic(inputs)
    probe = build_probe_json(
        results,
        pooling=cfg.pooling,
        synthetic=synthetic,
        limit_fraction=cfg.limit_fraction,
        chance_margin=cfg.chance_margin,
        auc_threshold=cfg.auc_threshold,
        extra={
            "model_ref": io.model,
            "model_fingerprint": model_fp,
            "image_size": cfg.image_size,
            "tower_path": extractor.path_used or "cached",
            "features": features,
        },
    )
    metrics = summary_metrics(probe)
    limited = [f for f, v in probe["tasks"].items() if v["perception_limited"]]
    with atomic_dir(io.out) as tmp:
        write_json(tmp / "probe.json", stamp(probe, "probe"))
        (tmp / "table.md").write_text(table_md(probe), encoding="utf-8")
        bar_chart(probe, tmp / "probe_accuracy.png")
        write_json(tmp / "metrics.json", metrics)
        write_lineage(
            tmp,
            step=STEP,
            artifact="probe_report",
            inputs=inputs,
            params=dataclasses.asdict(cfg),
            summary=(f"linear probe on {len(results)} tasks ({cfg.pooling} pooling, {cfg.image_size}px): mean accuracy "
                     f"{metrics['mean_probe_accuracy']:.1f}%, perception-limited: {', '.join(limited) or 'none'}"),
        )
    if io.metrics_json:
        write_json(io.metrics_json, metrics)
    return probe
