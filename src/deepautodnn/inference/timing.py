"""Inference timing on this machine: batch-1 latency (the paper's "0.001 second/image") and
throughput at larger batches, float32 eager PyTorch, encoder + classifier + softmax."""

from __future__ import annotations

import statistics
import time

import torch

from deepautodnn.models.hybrid import predict_proba_u8


def time_batches(model, x_u8: torch.Tensor, batch: int, repeats: int) -> list[float]:
    """Seconds for each of `repeats` calls of the uint8 -> probabilities path (`predict_proba_u8`)
    on a batch of uint8 images (N, 1, H, W), the whole batch in one forward pass."""
    xb = x_u8[:batch]
    one_pass = max(1, len(xb))
    for _ in range(3):  # warm-up: allocator, oneDNN primitive caches
        predict_proba_u8(model, xb, batch_size=one_pass)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_proba_u8(model, xb, batch_size=one_pass)
        times.append(time.perf_counter() - start)
    return times


def inference_timing(model, x_u8: torch.Tensor, repeats: int = 200, batches=(64, 1024)) -> dict:
    """Batch-1 latency percentiles (ms) and images/s at each batch size."""
    model = model.eval()
    single = sorted(time_batches(model, x_u8, 1, repeats))
    out = {
        "backend": "torch eager float32",
        "torch_threads": torch.get_num_threads(),
        "batch1_latency_ms": {
            "p50": 1e3 * statistics.median(single),
            "p95": 1e3 * single[int(0.95 * (len(single) - 1))],
            "mean": 1e3 * statistics.mean(single),
        },
        "throughput_images_per_s": {},
    }
    for batch in batches:
        times = time_batches(model, x_u8, batch, max(3, 20 * 64 // batch))
        out["throughput_images_per_s"][str(batch)] = min(batch, len(x_u8)) / statistics.median(times)
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[int(q * (len(sorted_values) - 1))]


def backend_speed(
    backend, images_u8, batches=(1, 64, 1024), seconds_per_batch: float = 2.0, reconstruction: bool = False
) -> dict:
    """Latency percentiles (ms per call) and images/s of `backend.run` at each batch size, by default
    without the reconstruction, as `predict` and `serve` run it (see `InferenceGraph`).

    Each batch size runs for about `seconds_per_batch` after a warm-up, so small batches get many
    samples and large ones a few.
    """
    out = {}
    for batch in batches:
        xb = images_u8[:batch]
        for _ in range(3):  # warm-up: allocator, oneDNN and ONNX Runtime kernel caches
            backend.run(xb, reconstruction=reconstruction)
        times, budget_end = [], time.perf_counter() + seconds_per_batch
        while len(times) < 5 or (time.perf_counter() < budget_end and len(times) < 5000):
            start = time.perf_counter()
            backend.run(xb, reconstruction=reconstruction)
            times.append(time.perf_counter() - start)
        times.sort()
        median = statistics.median(times)
        out[str(batch)] = {
            "p50_ms": 1e3 * median,
            "p95_ms": 1e3 * _percentile(times, 0.95),
            "p99_ms": 1e3 * _percentile(times, 0.99),
            "images_per_s": len(xb) / median,
            "samples": len(times),
        }
    return out


def flops_per_image(graph: torch.nn.Module, image_size: int = 28, **forward_kwargs) -> int:
    """Floating-point operations of one forward pass per image (convolutions and matrix products,
    2 per multiply-add, as torch's FlopCounterMode counts them; element-wise ops are left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        graph.eval()(torch.zeros(1, 1, image_size, image_size), **forward_kwargs)
    return int(counter.get_total_flops())


def nominal_cpu_hz() -> float | None:
    """The clock /proc/cpuinfo reports (the nominal one under a hypervisor), or None."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) * 1e6
    except (OSError, ValueError):
        pass
    return None


def _gemm_rate(matmul, a, b, seconds: float) -> float:
    for _ in range(2):
        matmul(a, b)
    runs, start = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - start < seconds:
        matmul(a, b)
        runs += 1
    return 2 * a.shape[0] ** 3 * runs / (time.perf_counter() - start)


def conv_peak_flops(seconds: float = 3.0, batch: int = 128, channels: int = 64, side: int = 28) -> dict:
    """The float32 rate of a large 3x3 convolution (forward, oneDNN, channels_last and contiguous,
    the better of the two): the ceiling that the training stages' convolutions read against."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).eval()
    x = torch.randn(batch, channels, side, side)
    flops = 2 * batch * channels * channels * 9 * side * side
    by_layout = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        layer, xb = conv.to(memory_format=layout), x.contiguous(memory_format=layout)
        with torch.inference_mode():
            for _ in range(2):
                layer(xb)
            runs, start = 0, time.perf_counter()
            while runs < 3 or time.perf_counter() - start < seconds / 2:
                layer(xb)
                runs += 1
        by_layout["channels_last" if layout is torch.channels_last else "contiguous"] = (
            flops * runs / (time.perf_counter() - start)
        )
    return {
        "conv_flops": max(by_layout.values()),
        "conv_flops_by_layout": by_layout,
        "conv_shape": [batch, channels, side, side],
    }


def cpu_peak_flops(size: int = 2048, seconds: float = 3.0) -> dict:
    """References for "this CPU's peak" at float32, with torch's threads:

    - `gemm_flops`: the best rate of a large float32 matrix product, through PyTorch (oneDNN/MKL)
      and through NumPy (its BLAS): what the hardware gives a tuned kernel here. A lower bound on
      the true peak, which is what the fractions in `deepautodnn bench` are taken against;
    - `nominal_flops`: cores x nominal clock x FLOP per cycle, counting two FMA pipes of 8 float32
      lanes (Zen 4 runs AVX-512 as two 256-bit halves: 2 x 8 x 2 = 32). Under a hypervisor the
      nominal clock is the base one; a CPU that boosts beats it, so this is not a bound.
    """
    import os

    import numpy as np

    a, b = torch.randn(size, size), torch.randn(size, size)
    by_library = {
        "torch": _gemm_rate(torch.mm, a, b, seconds),
        "numpy": _gemm_rate(np.matmul, a.numpy(), b.numpy(), seconds),
    }
    threads = min(torch.get_num_threads(), os.cpu_count() or 1)
    hz = nominal_cpu_hz()
    flop_per_cycle = 2 * 8 * 2  # FMA pipes x float32 lanes per pipe x (multiply + add)
    return {
        "gemm_flops": max(by_library.values()),
        "gemm_flops_by_library": by_library,
        "gemm_size": size,
        "nominal_flops": hz * threads * flop_per_cycle if hz else None,
        "nominal_hz": hz,
        "threads": threads,
        "flop_per_cycle_per_core": flop_per_cycle,
    }
