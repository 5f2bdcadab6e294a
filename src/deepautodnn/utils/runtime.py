"""The machine a run executes on: device choice, bf16 support, seeds, allocator, and its description.

`machine_info` is recorded with every run and benchmark so that figures carry their context.
"""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path

import numpy as np
import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import torch

    from deepautodnn.utils.runtime import bf16_supported

    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": bf16_supported(torch.device("cpu")),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to serve large blocks from its heap and to keep what is freed.

    Each training step frees and reallocates the same tens of megabytes (gradients, activations).
    By default glibc maps such blocks fresh from the kernel each time, and touching new pages costs
    page faults: 35% of the `paper` DNN step, 16% of a `fast` fine-tuning step on this project's
    CPU. The price is that the process keeps its peak memory until it exits. Set
    DEEPAUTODNN_KEEP_FREED_MEMORY=0 to leave the allocator alone. Returns whether it applied.
    """
    import ctypes
    import ctypes.util

    if os.environ.get("DEEPAUTODNN_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False


def select_device(name: str = "auto") -> torch.device:
    """CUDA when available for "auto", else CPU; "cpu"/"cuda" force one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
