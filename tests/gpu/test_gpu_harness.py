"""The measurement harness on a CUDA GPU (CUDA-graph decoding): completions come back flagged when cut at the token
limit, pixel bounds reach the processor, and the metrics block is complete (run with `make test-gpu`)."""

from __future__ import annotations

import pytest


@pytest.mark.gpu
def test_harness_on_gpu_counts_truncation_and_summarises(tiny_model_dir, tmp_path):
    import numpy as np
    from PIL import Image

    from components.common.harness import HarnessConfig, measure, support_summary
    from components.common.records import MCQRecord, save_records
    from components.common.sampling import TransformersBackend

    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    recs = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        recs.append(MCQRecord(id=f"q{i}", question="Which?", options=["a", "b", "c", "d"], answer="ABCD"[i % 4],
                              image=f"images/{i}.png", task="t", modality="CT"))
    save_records(tmp_path, recs)
    h = HarnessConfig(k=4, max_new_tokens=6, device="cuda", min_pixels=112 * 112, max_pixels=112 * 112)
    backend = TransformersBackend(str(tiny_model_dir), h.sampling())
    assert backend.use_cuda_graph and backend._encode([backend_prompt(recs[0], tmp_path)])["image_grid_thw"].tolist() == [[1, 8, 8]]
    backend.eos_ids = []  # a random model may sample an end token within 6; without one every row runs to the limit
    outcomes, rows = measure(recs, tmp_path, backend, h)
    assert all(o.greedy_truncated and all(o.sample_truncated) for o in outcomes)
    m = support_summary(outcomes, 4, n_boot=200)
    assert m["truncation_rate"] == 1.0 and m["corrected"]["k_used"] == {"4": 2} and len(rows) == 6


def backend_prompt(rec, root):
    from components.common.prompts import build_messages
    from components.common.records import open_image
    from components.common.sampling import Prompt

    return Prompt(build_messages(rec), open_image(root, rec))
