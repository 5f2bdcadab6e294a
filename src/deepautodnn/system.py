"""What machine this is: recorded with every run and benchmark so that figures carry their context."""

from __future__ import annotations

import os
import platform
from pathlib import Path


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

    from .train import bf16_supported

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
