"""The machine a run executes on: device choice, bf16 support, seeds, allocator, and its description.

`machine_info` is recorded with every run and benchmark so that figures carry their context.
"""

from __future__ import annotations

import functools
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


@functools.cache
def _cpuinfo_field(name: str) -> str | None:
    """The first `name : value` of /proc/cpuinfo (the CPU does not change under a process), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


# The instruction-set features that decide how fast this package's kernels run: AVX2 + FMA is the
# float32 baseline, AVX-512 widens it, BF16 doubles the convolution rate under autocast, VNNI makes
# int8 worth it, AMX is the matrix unit of recent Xeons.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")

# Environment variables that make torch, oneDNN and MKL use less than the CPU has: how a machine with
# AVX-512 imitates an AVX2 one. A figure measured under any of them says so (see `cpu_class`).
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel reports them (empty where /proc/cpuinfo is missing)."""
    return set((_cpuinfo_field("flags") or "").split())


def cpu_features() -> dict[str, bool]:
    """Which of SPEED_FLAGS this CPU has."""
    flags = cpu_flags()
    return {name: name in flags for name in SPEED_FLAGS}


def isa_limits() -> dict[str, str]:
    """The ISA-limiting environment variables that are set, with their values."""
    return {name: os.environ[name] for name in ISA_LIMITS if os.environ.get(name)}


def cpu_class() -> str:
    """The class of CPU that torch actually computes on here, the column every speed figure goes in:
    "avx512-bf16", "avx512", "avx2" or "baseline" (torch's capability, and oneDNN's bf16 support).
    Under an ISA limit (see ISA_LIMITS) it says what the hardware is, e.g. "avx2 (limited, on an
    avx512-bf16 CPU)", so an imitation never reads as the real class."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability().lower()  # "avx512", "avx2", "default", ...
    if capability.startswith("avx512"):
        effective = "avx512-bf16" if bf16_supported(torch.device("cpu")) else "avx512"
    elif capability.startswith("avx2"):
        effective = "avx2"
    else:
        effective = "baseline"
    if not isa_limits():
        return effective
    features = cpu_features()
    hardware = "avx2" if features["avx2"] else "baseline"
    if features["avx512f"]:
        hardware = "avx512-bf16" if features["avx512_bf16"] else "avx512"
    return effective if hardware == effective else f"{effective} (limited, on an {hardware} CPU)"


def machine_info() -> dict:
    """Where a figure was measured; every results file records it."""
    import torch

    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_class": cpu_class(),
        "cpu_features": cpu_features(),
        "isa_limits": isa_limits(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": bf16_supported(torch.device("cpu")),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def source_commit() -> str:
    """The git commit this package runs from (short hash), or "" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _command_line() -> str:
    """How this process was started, as a user would retype it."""
    script = Path(sys.argv[0])
    if script.name == "__main__.py":
        first = f"python -m {script.parent.name}"
    elif script.suffix == ".py":
        first = f"python {sys.argv[0]}"
    else:
        first = script.name  # a console script such as `deepautodnn`
    return " ".join([first, *sys.argv[1:]])


def provenance() -> dict:
    """What made a result: its command line, the commit, the UTC date and the package version.
    Every results file records these beside `machine_info()`."""
    from deepautodnn.version import __version__

    return {
        "command": _command_line(),
        "commit": source_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": __version__,
    }


def recorded_cpu_class(machine: dict) -> str | None:
    """The CPU class of a `machine_info()` record; records from before `cpu_class` was kept had
    only the bf16 flag and torch's capability. None when the record says neither."""
    if "cpu_class" in machine:
        return machine["cpu_class"]
    if "cpu_bf16" not in machine:
        return None
    capability = machine.get("cpu_capability", "").lower()
    return "avx512-bf16" if machine["cpu_bf16"] else ("avx512" if capability.startswith("avx512") else capability)


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


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def select_device(name: str = "auto") -> torch.device:
    """CUDA when available for "auto", else CPU; "cpu"/"cuda" force one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast pays on `device`. On a CPU that takes bf16 instructions: oneDNN also
    accepts bf16 on any AVX-512 CPU, but emulates it there, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        flags = cpu_flags()
        in_hardware = not flags or bool({"avx512_bf16", "amx_bf16"} & flags)  # no flags (not Linux): trust oneDNN
        return in_hardware and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
