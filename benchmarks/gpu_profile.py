"""Reading a torch.profiler trace the way the benchmarks need it: device time per kind of kernel, and how busy the
GPU was inside each named range of the host timeline.

    with torch.profiler.profile(activities=[CPU, CUDA]) as prof:
        with record_function("phase:generate"):
            ...
    kernel_time_by_category(prof)          # {"gemm": s, "attention": s, "elementwise": s, ...}
    kernel_time_by_name(prof)              # {kernel name: s}
    busy_by_range(prof, prefix="phase:")   # {"phase:generate": {"wall_s", "gpu_busy_s", "calls"}, ...}

A range whose wall time is much larger than its GPU busy time is bound by the host (Python, the CPU image processor,
synchronisations), not by the GPU: that is what decides which of the two to speed up.
"""

from __future__ import annotations

CATEGORIES = ("gemm", "attention", "norm/softmax/reduce", "elementwise", "copy", "other")


def kernel_category(name: str) -> str:
    """The kind of a CUDA kernel, from its name (cuBLAS/cuBLASLt/CUTLASS GEMMs, SDPA's attention kernels, ...)."""
    n = name.lower()
    if any(s in n for s in ("memcpy", "memset", "copy_kernel", "cat_", "catarray", "index_copy", "indexcopy")):
        return "copy"
    if any(s in n for s in ("fmha", "flash", "attention", "sdpa", "efficient_attention")):
        return "attention"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "gemv", "splitk", "matmul", "cublas")):
        return "gemm"
    if any(s in n for s in ("norm", "softmax", "reduce", "argmax", "sum_", "logsumexp", "cumsum", "scan")):
        return "norm/softmax/reduce"
    if any(s in n for s in ("elementwise", "vectorized", "unrolled", "pointwise", "triton_")):
        return "elementwise"
    return "other"


def _device_events(prof):
    """(name, start_ns, end_ns) of every kernel, memcpy and memset the profiler saw on a GPU."""
    out = []
    for e in prof.profiler.kineto_results.events():
        if e.device_type().name == "CUDA" and e.duration_ns() > 0 and not e.is_user_annotation():
            out.append((e.name(), e.start_ns(), e.start_ns() + e.duration_ns()))
    return out


def kernel_time_by_category(prof) -> dict[str, float]:
    """Seconds of device time per kernel category (`CATEGORIES`), summed over every kernel of the trace."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    for name, start, end in _device_events(prof):
        out[kernel_category(name)] += (end - start) / 1e9
    return out


def kernel_time_by_name(prof) -> dict[str, float]:
    """Seconds of device time per kernel name (the first 100 characters), summed over the trace."""
    out: dict[str, float] = {}
    for name, start, end in _device_events(prof):
        out[name[:100]] = out.get(name[:100], 0.0) + (end - start) / 1e9
    return out


def _union_ns(intervals: list[tuple[int, int]]) -> int:
    total, cur_s, cur_e = 0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + ((cur_e - cur_s) if cur_e is not None else 0)


def busy_by_range(prof, prefix: str = "phase:") -> dict[str, dict]:
    """For every host range (`record_function`) named `prefix...`: its summed wall time, the time at least one GPU
    kernel or copy ran inside it, and its number of calls. The range must synchronise the device before it closes
    (the benchmarks' phase timers do), so that its kernels fall inside it."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for e in prof.profiler.kineto_results.events():
        if e.device_type().name == "CPU" and e.name().startswith(prefix):
            ranges.setdefault(e.name(), []).append((e.start_ns(), e.start_ns() + e.duration_ns()))
    kernels = sorted((s, e) for _, s, e in _device_events(prof))
    out = {}
    for name, spans in ranges.items():
        inside = [(max(s, a), min(e, b)) for a, b in spans for s, e in kernels if s < b and e > a]
        out[name] = {"wall_s": sum(b - a for a, b in spans) / 1e9, "gpu_busy_s": _union_ns(inside) / 1e9,
                     "calls": len(spans)}
    return out


def format_busy(busy: dict[str, dict]) -> str:
    """One line per range: wall seconds, GPU-busy seconds and their ratio."""
    lines = []
    for name, b in sorted(busy.items(), key=lambda kv: -kv[1]["wall_s"]):
        frac = b["gpu_busy_s"] / b["wall_s"] if b["wall_s"] else 0.0
        lines.append(f"  {name:<32} wall {b['wall_s']:8.3f} s  GPU busy {b['gpu_busy_s']:8.3f} s ({frac:5.1%})"
                     f"  x{b['calls']}")
    return "\n".join(lines)
