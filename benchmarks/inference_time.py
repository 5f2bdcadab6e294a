"""Inference time of a trained model directory on this machine, float32 eager PyTorch: per-image
latency at batch 1 (the paper's "0.001 second/image") and throughput at larger batches. Prints JSON.

    python benchmarks/inference_time.py MODEL_DIR [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from deepautodnn import load_fashion_mnist, load_model
from deepautodnn.checkpoint import load_config
from deepautodnn.system import machine_info


@torch.inference_mode()
def time_batches(model, x: torch.Tensor, batch: int, repeats: int) -> list[float]:
    """Seconds for each of `repeats` forward passes (+ softmax) on a batch of uint8 test images."""
    xb = x[:batch]
    for _ in range(3):  # warm-up: allocator, oneDNN primitive caches
        torch.softmax(model(xb.float() / 255.0), 1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.softmax(model(xb.float() / 255.0), 1)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--repeats", type=int, default=200, help="timed passes at batch 1 (default: 200)")
    args = parser.parse_args()
    model = load_model(args.model_dir)
    images, _ = load_fashion_mnist("test")
    x = torch.from_numpy(images).unsqueeze(1)  # (10000, 1, 28, 28) uint8
    single = time_batches(model, x, 1, args.repeats)
    single.sort()
    result = {
        "benchmark": "inference_time",
        "command": "python " + " ".join(sys.argv),
        "model_dir": args.model_dir,
        "preset": load_config(args.model_dir).preset,
        # The inference path is encoder + classifier; the decoder is not run.
        "inference_parameters": sum(p.numel() for m in (model.encoder, model.classifier) for p in m.parameters()),
        "backend": "torch eager float32",
        "batch1_latency_ms": {"p50": 1e3 * statistics.median(single),
                              "p95": 1e3 * single[int(0.95 * (len(single) - 1))],
                              "mean": 1e3 * statistics.mean(single)},
        "throughput_images_per_s": {},
        "paper_claim_seconds_per_image": 0.001,
        "machine": machine_info(),
    }
    for batch in (64, 1024):
        times = time_batches(model, x, batch, max(3, 20 * 64 // batch))
        result["throughput_images_per_s"][str(batch)] = batch / statistics.median(times)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
