"""The one training loop every stage and comparator runs: batches, precision, optimiser, schedule.

The dataset lives on the training device as uint8 tensors; batches are slices of a permutation and
are normalised on the fly. The loop keeps the best epoch on the validation split, checkpoints
mid-epoch and resumes bit-for-bit.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
import zlib
from collections.abc import Callable

import torch

from deepautodnn.config import STAGES, TrainConfig
from deepautodnn.data.transforms import to_float
from deepautodnn.training import distributed
from deepautodnn.training.distributed import SINGLE, DistContext
from deepautodnn.training.state import (
    Checkpointer,
    NonFiniteLossError,
    TrainingInterrupted,
    TrainingState,
    optimizer_tensors,
    restore_optimizer,
    restore_rng_meta,
    rng_meta,
)
from deepautodnn.utils.runtime import bf16_supported


def make_optimizer(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # Plain Adam as the paper; AdamW only when a preset asks for decoupled weight decay. The fused
    # kernels (CPU and CUDA) update all parameters in one pass instead of a dozen element-wise ops.
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=lr, fused=fused)


def make_schedule(optimizer, kind: str, lr: float, total_steps: int, warmup_fraction: float = 0.25):
    """The learning-rate schedule for one stage, stepped once per batch.

    "constant" keeps `lr` (Keras' default, the paper's); "onecycle" warms up linearly to `lr` over
    the first quarter of the steps, then anneals to zero on a cosine. Written as a LambdaLR because
    torch's OneCycleLR divides by zero on the very short stages of quick tries.
    """
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if kind == "onecycle":
        warmup = max(1, int(total_steps * warmup_fraction))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise ValueError(f"unknown schedule {kind!r}; use 'constant' or 'onecycle'")


class Precision:
    """Autocast and memory-format choices for one device."""

    def __init__(self, tcfg: TrainConfig, device: torch.device):
        self.device = device
        self.bf16 = tcfg.bf16 and bf16_supported(device)
        self.channels_last = tcfg.channels_last

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def _batches(n: int, batch_size: int, gen: torch.Generator, device, ctx: DistContext = SINGLE) -> list[torch.Tensor]:
    """This rank's index batches for one epoch: global batches of `batch_size` from one permutation
    that every rank draws alike, each rank taking every world_size-th index of each batch."""
    # Drawn on the generator's device (CPU) so every device sees the same order, then moved once.
    perm = torch.randperm(n, generator=gen, device=gen.device).to(device)
    batches = perm.split(batch_size)
    if ctx.enabled:
        # A last batch smaller than the world would leave a rank without a step; DDP needs all.
        batches = [b[ctx.rank :: ctx.world_size] for b in batches if len(b) >= ctx.world_size]
    return list(batches)


def _stage_stream(seed: int, stage: str) -> int:
    """The random stream of one stage; other loops (baselines) get a stable stream of their own."""
    offset = STAGES.index(stage) if stage in STAGES else 100 + zlib.crc32(stage.encode()) % 900
    return seed * 1000 + offset


def _stage_generator(seed: int, stage: str) -> torch.Generator:
    # One generator per stage, so resuming after a finished stage replays the same batches.
    return torch.Generator().manual_seed(_stage_stream(seed, stage))


def _noise_generator(seed: int, stage: str, rank: int) -> torch.Generator:
    # Augmentation noise: apart from the batch order, which all ranks must share, and per rank.
    return torch.Generator().manual_seed(_stage_stream(seed, stage) + 1_000_003 * (rank + 1))


EpochLogger = Callable[[dict], None]


def fit(
    *,
    stage: str,
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    set_modes: Callable[[], None],
    n_train: int,
    epochs: int,
    batch_size: int,
    lr: float,
    tcfg: TrainConfig,
    seed: int,
    step_loss: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]],
    data_device: torch.device | str = "cpu",
    validate: Callable[[], dict],
    score_key: str,
    higher_is_better: bool,
    log: EpochLogger,
    progress: bool,
    ctx: DistContext = SINGLE,
    on_step: Callable[[int], None] | None = None,
    checkpointer: Checkpointer | None = None,
    resume: TrainingState | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """The one training loop all stages share (and the torch baselines reuse).

    At the end it restores the best validation epoch, or keeps the last one when
    `tcfg.keep_best_epoch` is off or there is no validation split. With several ranks (`ctx`),
    `step_loss` must run a DDP-wrapped module; rank 0 validates and logs, and every rank follows
    its choice of epoch. `on_step(step)` runs after each optimiser step.

    With a `checkpointer`, the whole loop state is saved after every epoch; `resume` (a state of
    this stage, its model weights already loaded) continues from it exactly. When `should_stop()`
    turns true, the state is saved after the current batch (single process) or epoch (torchrun)
    and TrainingInterrupted is raised.
    """
    from tqdm import tqdm

    from deepautodnn.utils.runtime import keep_freed_memory

    keep_freed_memory()
    torch.manual_seed(_stage_stream(seed, stage) + 1_000_003 * ctx.rank)  # dropout noise, per rank
    gen = _stage_generator(seed, stage)  # batch order, the same on every rank
    noise = _noise_generator(seed, stage, ctx.rank)
    optimizer = make_optimizer(params, lr, tcfg.weight_decay)
    steps_per_epoch = math.ceil(n_train / batch_size)
    schedule = make_schedule(optimizer, tcfg.schedule, lr, steps_per_epoch * epochs)
    best_score, best_state, best_epoch = None, None, 0
    stage_start = time.perf_counter() - (resume.meta.get("stage_seconds", 0.0) if resume is not None else 0.0)
    first_epoch, skip = 1, 0
    sums = _EpochSums()
    if resume is not None:
        restore_optimizer(optimizer, resume)
        schedule.load_state_dict(dict(resume.meta["schedule"]))
        best_score, best_epoch = resume.meta["best_score"], resume.meta["best_epoch"]
        best_state = resume.section("best") or None
        first_epoch, skip = resume.meta["epoch"] + 1, resume.meta["batch"]
        sums = _EpochSums.from_meta(resume.meta["sums"], data_device) if skip else sums
        _restore_generators(resume, {"order": gen, "noise": noise}, main=ctx.is_main)

    def save(epoch: int, batch: int, order_state: torch.Tensor) -> None:
        if checkpointer is None or not checkpointer.enabled:  # torchrun ranks other than 0 write nothing
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
        opt_tensors, groups = optimizer_tensors(optimizer)
        tensors.update(opt_tensors)
        tensors.update({"rng.torch": torch.get_rng_state(), "rng.order": order_state, "rng.noise": noise.get_state()})
        if torch.cuda.is_available() and torch.device(data_device).type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(data_device)
        meta = {
            "best_score": best_score,
            "best_epoch": best_epoch,
            "optimizer_groups": groups,
            "schedule": schedule.state_dict(),
            "sums": sums.to_meta(),
            "seed": seed,
            "stage_seconds": time.perf_counter() - stage_start,
            **rng_meta(),
        }
        checkpointer.save(stage=stage, epoch=epoch, batch=batch, tensors=tensors, meta=meta)

    stop = should_stop or (lambda: False)
    for epoch in range(first_epoch, epochs + 1):
        start = time.perf_counter() - sums.seconds
        set_modes()
        order_state = gen.get_state()  # what `resume` needs to draw this epoch's batches again
        batches = _batches(n_train, batch_size, gen, data_device, ctx)
        bar = tqdm(
            batches[skip:],
            desc=f"{stage} {epoch}/{epochs}",
            initial=skip,
            total=len(batches),
            leave=False,
            disable=not progress or not ctx.is_main,
            file=sys.stderr,
        )
        for batch_number, idx in enumerate(bar, start=skip + 1):
            loss, correct = step_loss(idx, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            sums.add(loss, correct, len(idx))
            if on_step is not None:
                on_step(schedule.last_epoch)
            if not ctx.enabled and stop() and batch_number < len(batches):
                if not math.isfinite(float(sums.loss)):
                    raise NonFiniteLossError(f"stage {stage}, epoch {epoch}: loss became {float(sums.loss)}")
                sums.seconds = time.perf_counter() - start
                save(epoch - 1, batch_number, order_state)
                raise TrainingInterrupted(f"stopped in stage {stage}, epoch {epoch}, after batch {batch_number}")
        skip = 0
        total_loss, total_correct, seen = distributed.sum_over_ranks(
            [float(sums.loss), float(sums.correct), sums.seen], ctx, data_device
        )
        sums = _EpochSums()
        epoch_loss = total_loss / seen
        if not math.isfinite(epoch_loss):
            # A non-finite loss poisons the sum, so one check per epoch catches every batch.
            raise NonFiniteLossError(f"stage {stage}, epoch {epoch}: loss became {epoch_loss}")
        row = {
            "stage": stage,
            "epoch": epoch,
            "loss": epoch_loss,
            "train_acc": total_correct / seen if stage != "ae" else None,
            "lr": optimizer.param_groups[0]["lr"],
        }
        row.update(distributed.from_main(validate() if ctx.is_main else None, ctx))
        row["seconds"] = time.perf_counter() - start
        if ctx.is_main:
            log(row)
        score = row.get(score_key)
        if score is None or not tcfg.keep_best_epoch:  # keep the last epoch
            best_score, best_epoch = score, epoch
        elif best_score is None or (score > best_score if higher_is_better else score < best_score):
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        save(epoch, 0, gen.get_state())
        stopping = stop() if not ctx.enabled else distributed.sum_over_ranks([float(stop())], ctx, data_device)[0] > 0
        if stopping and epoch < epochs:
            raise TrainingInterrupted(f"stopped in stage {stage} after epoch {epoch}")
    if best_state is not None:
        model.load_state_dict(best_state)
    return {
        "stage": stage,
        "best_epoch": best_epoch,
        score_key: best_score,
        "seconds": time.perf_counter() - stage_start,
    }


class _EpochSums:
    """Running loss and accuracy sums of one epoch. They stay on the device: reading them once per
    epoch, not per batch, keeps a GPU busy."""

    def __init__(self, loss=0.0, correct=0, seen: int = 0, seconds: float = 0.0):
        self.loss, self.correct, self.seen, self.seconds = loss, correct, seen, seconds

    def add(self, loss: torch.Tensor, correct: torch.Tensor | None, n: int) -> None:
        self.loss = self.loss + loss.detach() * n
        if correct is not None:
            self.correct = self.correct + correct
        self.seen += n

    def to_meta(self) -> dict:
        return {"loss": float(self.loss), "correct": int(self.correct), "seen": self.seen, "seconds": self.seconds}

    @classmethod
    def from_meta(cls, meta: dict, device) -> _EpochSums:
        # float32 and int64 tensors, as the sums were when saved, so the epoch's figures come out the same.
        return cls(
            torch.tensor(meta["loss"], dtype=torch.float32, device=device),
            torch.tensor(meta["correct"], dtype=torch.int64, device=device),
            meta["seen"],
            meta["seconds"],
        )


def _restore_generators(state: TrainingState, gens: dict[str, torch.Generator], main: bool) -> None:
    restore_rng_meta(state.meta)
    gens["order"].set_state(state.tensors["rng.order"])
    if main:  # other torchrun ranks keep their own freshly seeded noise: rank 0's state is the one saved
        gens["noise"].set_state(state.tensors["rng.noise"])
        torch.set_rng_state(state.tensors["rng.torch"])
        if "rng.cuda" in state.tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(state.tensors["rng.cuda"])


@torch.inference_mode()
def map_batches(fn, x_u8: torch.Tensor, batch_size: int, prec: Precision) -> torch.Tensor:
    outs = []
    for chunk in x_u8.split(batch_size):
        with prec.autocast():
            outs.append(fn(to_float(chunk, prec.channels_last)))
    return torch.cat(outs) if outs else torch.empty(0)
