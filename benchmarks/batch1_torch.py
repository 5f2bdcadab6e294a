"""What one image at a time costs in eager PyTorch, and what takes it down. Prints JSON.

The `predict` graph of a model directory (classifier + features, no reconstruction, as `predict`
and `serve` run it), batch 1, median of many calls, in variants: torch's threads (2 and 1), autograd
off by `no_grad` or by `inference_mode`, a TorchScript trace frozen with oneDNN fusion, and ONNX
Runtime's float32 session for comparison. At batch 1 the arithmetic is a few MFLOP, so what is
measured is per-operator overhead: dispatch, thread hand-off and oneDNN primitive set-up.

    python benchmarks/batch1_torch.py MODEL_DIR --out results/batch1_torch_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _emit import emit_json, provenance

from deepautodnn.inference.backends import model_input
from deepautodnn.inference.graph import load_graph
from deepautodnn.utils.runtime import machine_info


class _Predict(torch.nn.Module):
    """The graph without its reconstruction, as a module of one input (for tracing)."""

    def __init__(self, graph):
        super().__init__()
        self.inner = graph  # not "graph": torch.export reserves that name

    def forward(self, x):
        proba, _, logits, features = self.inner(x, reconstruction=False)
        return proba, logits, features


def median_ms(call, x, seconds: float) -> float:
    for _ in range(20):  # warm-up: oneDNN primitive caches, the allocator
        call(x)
    times, end = [], time.perf_counter() + seconds
    while len(times) < 50 or time.perf_counter() < end:
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    module = _Predict(load_graph(args.model_dir)).eval()
    side = module.inner.model.config.image_size
    x = torch.from_numpy(model_input(np.zeros((1, side, side), np.uint8)))  # (1, 1, H, W)
    threads = torch.get_num_threads()
    variants = {}

    def eager_no_grad(inp):
        with torch.no_grad():
            return module(inp)

    def eager_inference_mode(inp):
        with torch.inference_mode():
            return module(inp)

    with torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(module, x))  # constants folded, conv+BN+ReLU fused by oneDNN
    for n in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(n)
        variants[f"eager, no_grad, {n} threads"] = median_ms(eager_no_grad, x, args.seconds)
        variants[f"eager, inference_mode, {n} threads"] = median_ms(eager_inference_mode, x, args.seconds)
        variants[f"TorchScript frozen, {n} threads"] = median_ms(traced, x, args.seconds)
    torch.set_num_threads(threads)
    try:
        from deepautodnn.inference.backends import OnnxBackend
        from deepautodnn.inference.export import export_graph

        with tempfile.TemporaryDirectory() as tmp:
            onnx = OnnxBackend(
                export_graph(module, side, Path(tmp) / "g.onnx", ("probabilities", "logits", "features"))
            )
            images = np.zeros((1, side, side), np.uint8)
            variants[f"ONNX Runtime float32, {threads} threads"] = median_ms(onnx.run, images, args.seconds)
    except ImportError:  # without the [onnx] extra, the torch variants alone
        pass
    emit_json(
        {
            "benchmark": "batch1_torch",
            **provenance(),
            "machine": machine_info(),
            "model_dir": args.model_dir,
            "batch1_p50_ms": variants,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
