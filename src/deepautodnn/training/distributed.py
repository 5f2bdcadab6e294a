"""Data-parallel training on PyTorch's own engine: DistributedDataParallel under torchrun.

`torchrun --nproc-per-node=N -m deepautodnn train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set; `init` joins them into one process group (NCCL on CUDA, gloo on CPU). Every rank
draws the same global batches, each takes its own slice of every batch (see `training.loop._batches`), and
DDP averages the gradients, so a run on N ranks follows the single-process run with the same
global batch. Rank 0 alone writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def from_environment() -> DistContext:
    """The ranks torchrun announces in the environment; a plain process is rank 0 of 1."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
    return DistContext(rank, world, local) if world > 1 else SINGLE


def init(device: torch.device) -> DistContext:
    """Join the process group torchrun set up (no-op for a single process)."""
    ctx = from_environment()
    if ctx.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend)
    return ctx


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """One GPU per rank: cuda:LOCAL_RANK; the CPU is shared."""
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """`module` as DistributedDataParallel when there are several ranks; else unchanged."""
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.local_rank] if next(module.parameters()).is_cuda else None
    return DistributedDataParallel(module, device_ids=device_ids)


def sum_over_ranks(values: list[float], ctx: DistContext, device) -> list[float]:
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def from_main(obj, ctx: DistContext):
    """Rank 0's `obj` on every rank (e.g. a validation result that decides which epoch is kept)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
