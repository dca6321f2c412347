"""The benchmarks' profile reader (benchmarks/gpu_profile.py): kernel kinds, and GPU-busy time inside host ranges
read from a real torch.profiler trace (CPU-only here, so the device side is checked on hand-made intervals)."""

from __future__ import annotations

import pytest

from benchmarks.gpu_profile import _union_ns, busy_by_range, kernel_category


@pytest.mark.parametrize("name, kind", [
    ("nvjet_sm90_tst_144x64_64x8_2x1_v_bz_TNN", "gemm"),
    ("cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm>", "gemm"),
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128>>", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float>", "norm/softmax/reduce"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float>>", "norm/softmax/reduce"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::AUnaryFunctor>", "elementwise"),
    ("Memcpy DtoD (Device -> Device)", "copy"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<float>", "copy"),
    ("some_custom_kernel", "other"),
])
def test_kernel_kinds(name, kind):
    assert kernel_category(name) == kind


def test_union_counts_overlaps_once():
    assert _union_ns([]) == 0
    assert _union_ns([(0, 10), (5, 15), (20, 25)]) == 20  # [0, 15) and [20, 25)
    assert _union_ns([(20, 25), (0, 10), (10, 12)]) == 17  # touching intervals join, order does not matter


def test_busy_by_range_reads_the_host_ranges_of_a_trace():
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            with record_function("phase:work"):
                torch.ones(1000).sum()
        with record_function("other:skip"):
            torch.ones(10)
    busy = busy_by_range(prof, "phase:")
    assert set(busy) == {"phase:work"}
    assert busy["phase:work"]["calls"] == 2 and busy["phase:work"]["wall_s"] > 0
    assert busy["phase:work"]["gpu_busy_s"] == 0.0  # no device in this trace
