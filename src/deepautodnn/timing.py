"""Inference timing on this machine: batch-1 latency (the paper's "0.001 second/image") and
throughput at larger batches, float32 eager PyTorch, encoder + classifier + softmax."""

from __future__ import annotations

import statistics
import time

import torch


@torch.inference_mode()
def time_batches(model, x_u8: torch.Tensor, batch: int, repeats: int) -> list[float]:
    """Seconds for each of `repeats` forward passes (+ softmax) on a batch of uint8 images (N, 1, H, W)."""
    xb = x_u8[:batch]
    for _ in range(3):  # warm-up: allocator, oneDNN primitive caches
        torch.softmax(model(xb.float() / 255.0), 1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.softmax(model(xb.float() / 255.0), 1)
        times.append(time.perf_counter() - start)
    return times


def inference_timing(model, x_u8: torch.Tensor, repeats: int = 200, batches=(64, 1024)) -> dict:
    """Batch-1 latency percentiles (ms) and images/s at each batch size."""
    model = model.eval()
    single = sorted(time_batches(model, x_u8, 1, repeats))
    out = {
        "backend": "torch eager float32",
        "torch_threads": torch.get_num_threads(),
        "batch1_latency_ms": {"p50": 1e3 * statistics.median(single),
                              "p95": 1e3 * single[int(0.95 * (len(single) - 1))],
                              "mean": 1e3 * statistics.mean(single)},
        "throughput_images_per_s": {},
    }
    for batch in batches:
        times = time_batches(model, x_u8, batch, max(3, 20 * 64 // batch))
        out["throughput_images_per_s"][str(batch)] = min(batch, len(x_u8)) / statistics.median(times)
    return out
