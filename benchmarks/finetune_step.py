"""Where one `fast` fine-tuning step spends its time, and what each candidate change buys. Prints JSON.

A step as the trainer runs it (uint8 batch -> float, shift+flip augmentation, encoder + DNN forward,
cross-entropy with label smoothing, backward, fused AdamW), batch 128, random images (speed does not
depend on them). First the step of the `fast` network in float32 profiled by operator, then each
variant timed on its own: memory layout, `torch.compile`, batch size, a stride-2 first convolution
instead of the first pooling, and narrower convolution blocks.

    python benchmarks/finetune_step.py --out results/finetune_step_cpu.json

Run it with `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` on an AVX-512 machine to imitate
AVX2; the machine record says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from _emit import emit_json, provenance

from deepautodnn.config import get_preset
from deepautodnn.data.transforms import augment_batch, to_float
from deepautodnn.models.hybrid import build_model
from deepautodnn.training.loop import make_optimizer
from deepautodnn.utils.runtime import keep_freed_memory, machine_info

VARIANTS = {  # name: (settings, what it tries)
    "fast, float32, contiguous": ({"channels_last": False}, "the preset's network in the default layout"),
    "fast, float32, channels_last": ({}, "the layout the presets train in"),
    "fast, float32, channels_last, torch.compile": ({"compile": True}, "inductor's fused kernels"),
    "fast, float32, channels_last, batch 256": ({"batch": 256}, "fewer, larger steps"),
    "fast, float32, channels_last, batch 64": ({"batch": 64}, "more, smaller steps"),
    "fast, stride-2 first convolution": (
        {"stem": True},
        "the first block at 14x14 from the start: no full-resolution batch norm, ReLU or pooling",
    ),
    "blocks 16-64-128": ({"channels": (16, 64, 128)}, "a narrower first block only"),
    "blocks 16-32-64 (fast-fp32)": ({"channels": (16, 32, 64)}, "every block half as wide"),
}


class _StrideTwoStem(torch.nn.Module):
    """The encoder with its first convolution at stride 2 and the first pooling dropped."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        layers = list(encoder.layers)
        conv = layers[0]
        layers[0] = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=2, padding=1, bias=False)
        layers.pop(next(i for i, m in enumerate(layers) if isinstance(m, torch.nn.MaxPool2d)))
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def make_step(channels_last=True, compile=False, batch=128, stem=False, channels=None):
    cfg = get_preset("fast")
    cfg.train.bf16, cfg.train.channels_last = False, channels_last
    if channels:
        cfg.model = dataclasses.replace(cfg.model, encoder_channels=channels)
    model = build_model(cfg, seed=0)
    encoder = _StrideTwoStem(model.encoder) if stem else model.encoder
    net = torch.nn.Sequential(encoder, model.classifier)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(net.parameters(), 3e-3, 5e-4)
    forward = torch.compile(net) if compile else net
    images = torch.randint(0, 256, (batch * 8, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch * 8,))
    noise = torch.Generator().manual_seed(0)
    net.train()

    def step(i: int) -> None:
        rows = slice((i % 8) * batch, (i % 8 + 1) * batch)
        x = augment_batch(to_float(images[rows], channels_last), noise)  # (B, 1, 28, 28)
        loss = F.cross_entropy(forward(x), labels[rows], label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, batch


def time_step(step, batch: int, seconds: float) -> dict:
    for i in range(15):  # warm-up: oneDNN primitives, the allocator, compilation
        step(i)
    steps, start = 0, time.perf_counter()
    while steps < 20 or time.perf_counter() - start < seconds:
        step(steps)
        steps += 1
    per_step = (time.perf_counter() - start) / steps
    return {
        "ms_per_step": 1e3 * per_step,
        "images_per_s": batch / per_step,
        "seconds_per_epoch": 55_000 * per_step / batch,  # the fine-tuning split
    }


def profile_by_operator(steps: int = 30, top: int = 12) -> list[dict]:
    """The float32 `fast` step's time by operator (self time), largest first."""
    from torch.profiler import ProfilerActivity, profile

    step, _ = make_step()
    for i in range(10):
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(i)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {"operator": e.key, "share": e.self_cpu_time_total / total, "ms_per_step": e.self_cpu_time_total / 1e3 / steps}
        for e in events[:top]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timing budget per variant (default: 4)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    # A fresh compile cache: inductor's shared one can hold kernels built under another ISA limit,
    # and loading those crashed the process here.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="deepautodnn-inductor-")
    keep_freed_memory()  # as the trainer does
    variants = {}
    for name, (settings, why) in VARIANTS.items():
        variants[name] = {"settings": settings, "what": why, **time_step(*make_step(**settings), args.seconds)}
        print(f"{name}: {variants[name]['ms_per_step']:.1f} ms/step", file=sys.stderr, flush=True)
    emit_json(
        {
            "benchmark": "finetune_step",
            **provenance(),
            "machine": machine_info(),
            "batch": 128,
            "profile_fast_float32_channels_last": profile_by_operator(),
            "variants": variants,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
