"""The one training loop every stage and comparator runs: batches, precision, optimiser, schedule.

A `StageSpec` says what a stage trains and for how long; `fit(spec, ...)` runs it: set up, restore
from a checkpoint, then per epoch train, validate, keep the best, save. The dataset lives on the
training device as uint8 tensors; batches are slices of a permutation and are normalised on the
fly. The loop keeps the best epoch on the validation split, checkpoints mid-epoch and resumes
bit-for-bit.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

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
from deepautodnn.utils.runtime import bf16_supported, keep_freed_memory


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
StepLoss = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(kw_only=True)
class StageSpec:
    """What one stage trains, on what data, for how long, and how it picks its epoch."""

    name: str  # "ae", "dnn", "finetune" or a comparator's name; it picks the stage's random streams
    model: torch.nn.Module  # checkpointed whole, and set back to its best epoch at the end
    params: list[torch.nn.Parameter]  # what the optimiser updates
    set_modes: Callable[[], None]  # train / eval modes, set at the start of every epoch
    step_loss: StepLoss  # (batch indices, noise generator) -> (mean loss, number correct or None)
    validate: Callable[[], dict]  # validation metrics after each epoch (rank 0 only)
    score_key: str  # the key of `validate()` that picks the best epoch
    higher_is_better: bool
    n_train: int  # training examples; batches are slices of a permutation of range(n_train)
    epochs: int
    batch_size: int  # global, over all ranks
    lr: float  # peak learning rate
    schedule: str = "constant"  # see make_schedule
    weight_decay: float = 0.0  # > 0: AdamW's decoupled decay; 0: plain Adam
    keep_best_epoch: bool = True  # False keeps the last epoch
    data_device: torch.device | str = "cpu"  # where the batch indices and the epoch's sums live
    classifies: bool = True  # whether step_loss counts correct answers (train_acc); not the autoencoder's


def fit(
    spec: StageSpec,
    *,
    seed: int,
    log: EpochLogger,
    progress: bool = False,
    ctx: DistContext = SINGLE,
    on_step: Callable[[int], None] | None = None,
    checkpointer: Checkpointer | None = None,
    resume: TrainingState | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Train `spec` for its epochs: the one loop all stages share (and the torch baselines reuse).

    At the end it restores the best validation epoch, or keeps the last one when
    `spec.keep_best_epoch` is off or there is no validation split. With several ranks (`ctx`),
    `spec.step_loss` must run a DDP-wrapped module; rank 0 validates and logs, and every rank
    follows its choice of epoch. `on_step(step)` runs after each optimiser step.

    With a `checkpointer`, the whole loop state is saved after every epoch; `resume` (a state of
    this stage, its model weights already loaded) continues from it exactly. When `should_stop()`
    turns true, the state is saved after the current batch (single process) or epoch (torchrun)
    and TrainingInterrupted is raised.
    """
    keep_freed_memory()
    loop = _StageLoop(spec, seed=seed, ctx=ctx, checkpointer=checkpointer)
    if resume is not None:
        loop.restore(resume)
    stop = should_stop or (lambda: False)
    for epoch in range(loop.first_epoch, spec.epochs + 1):
        start = time.perf_counter() - loop.sums.seconds
        stopped_after = loop.train_one_epoch(epoch, progress=progress, on_step=on_step, stop=stop)
        if stopped_after is not None:  # single process, asked to stop mid-epoch
            loop.check_finite(epoch, float(loop.sums.loss))
            loop.sums.seconds = time.perf_counter() - start
            loop.save(epoch - 1, stopped_after, loop.epoch_order)  # a resume redraws this epoch's order
            raise TrainingInterrupted(f"stopped in stage {spec.name}, epoch {epoch}, after batch {stopped_after}")
        row = loop.epoch_row(epoch)
        row.update(distributed.from_main(spec.validate() if ctx.is_main else None, ctx))
        row["seconds"] = time.perf_counter() - start
        if ctx.is_main:
            log(row)
        loop.keep_best(epoch, row.get(spec.score_key))
        loop.save(epoch, 0, loop.order.get_state())
        if _stop_requested(stop, ctx, spec.data_device) and epoch < spec.epochs:
            raise TrainingInterrupted(f"stopped in stage {spec.name} after epoch {epoch}")
    return loop.finish()


def _stop_requested(stop: Callable[[], bool], ctx: DistContext, device) -> bool:
    # Under torchrun any rank's signal stops all of them, or the others would wait forever.
    if not ctx.enabled:
        return stop()
    return distributed.sum_over_ranks([float(stop())], ctx, device)[0] > 0


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


class _StageLoop:
    """The mutable state of one stage's loop, and the steps `fit` takes with it, in the order it
    takes them. Everything here goes into each checkpoint."""

    def __init__(self, spec: StageSpec, *, seed: int, ctx: DistContext, checkpointer: Checkpointer | None):
        self.spec, self.seed, self.ctx, self.checkpointer = spec, seed, ctx, checkpointer
        torch.manual_seed(_stage_stream(seed, spec.name) + 1_000_003 * ctx.rank)  # dropout noise, per rank
        self.order = _stage_generator(seed, spec.name)  # batch order, the same on every rank
        self.noise = _noise_generator(seed, spec.name, ctx.rank)
        self.optimizer = make_optimizer(spec.params, spec.lr, spec.weight_decay)
        steps_per_epoch = math.ceil(spec.n_train / spec.batch_size)
        self.schedule = make_schedule(self.optimizer, spec.schedule, spec.lr, steps_per_epoch * spec.epochs)
        self.best_score: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0
        self.stage_start = time.perf_counter()
        self.first_epoch, self.skip = 1, 0  # skip: batches of first_epoch done before a mid-epoch stop
        self.epoch_order: torch.Tensor | None = None  # the order generator's state before this epoch's draw
        self.sums = _EpochSums()

    def restore(self, resume: TrainingState) -> None:
        """Continue from a checkpoint of this stage, whose model weights are already loaded."""
        meta = resume.meta
        self.stage_start -= meta.get("stage_seconds", 0.0)  # time before the interruption counts too
        restore_optimizer(self.optimizer, resume)
        self.schedule.load_state_dict(dict(meta["schedule"]))
        self.best_score, self.best_epoch = meta["best_score"], meta["best_epoch"]
        self.best_state = resume.section("best") or None
        self.first_epoch, self.skip = meta["epoch"] + 1, meta["batch"]
        if self.skip:  # stopped mid-epoch: carry on with that epoch's sums
            self.sums = _EpochSums.from_meta(meta["sums"], self.spec.data_device)
        restore_rng_meta(meta)
        self.order.set_state(resume.tensors["rng.order"])
        if self.ctx.is_main:  # other torchrun ranks keep their own freshly seeded noise: rank 0's is saved
            self.noise.set_state(resume.tensors["rng.noise"])
            torch.set_rng_state(resume.tensors["rng.torch"])
            if "rng.cuda" in resume.tensors and torch.cuda.is_available():
                torch.cuda.set_rng_state(resume.tensors["rng.cuda"])

    def train_one_epoch(
        self, epoch: int, *, progress: bool, on_step: Callable[[int], None] | None, stop: Callable[[], bool]
    ) -> int | None:
        """One pass over this rank's batches (after the first `skip` of them, on a resume). Returns
        the batch it stopped after when `stop()` asked it to stop mid-epoch, else None."""
        spec, ctx = self.spec, self.ctx
        spec.set_modes()
        self.epoch_order = self.order.get_state()  # what a resume needs to draw this epoch's batches again
        batches = _batches(spec.n_train, spec.batch_size, self.order, spec.data_device, ctx)
        bar = tqdm(
            batches[self.skip :],
            desc=f"{spec.name} {epoch}/{spec.epochs}",
            initial=self.skip,
            total=len(batches),
            leave=False,
            disable=not progress or not ctx.is_main,
            file=sys.stderr,
        )
        for batch_number, idx in enumerate(bar, start=self.skip + 1):
            loss, correct = spec.step_loss(idx, self.noise)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            self.sums.add(loss, correct, len(idx))
            if on_step is not None:
                on_step(self.schedule.last_epoch)
            if not ctx.enabled and stop() and batch_number < len(batches):
                return batch_number
        self.skip = 0
        return None

    def epoch_row(self, epoch: int) -> dict:
        """The epoch's training figures over all ranks, for metrics.csv; the sums start again."""
        sums = self.sums
        total_loss, total_correct, seen = distributed.sum_over_ranks(
            [float(sums.loss), float(sums.correct), sums.seen], self.ctx, self.spec.data_device
        )
        self.sums = _EpochSums()
        epoch_loss = total_loss / seen
        # A non-finite loss poisons the sum, so one check per epoch catches every batch.
        self.check_finite(epoch, epoch_loss)
        return {
            "stage": self.spec.name,
            "epoch": epoch,
            "loss": epoch_loss,
            "train_acc": total_correct / seen if self.spec.classifies else None,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def check_finite(self, epoch: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"stage {self.spec.name}, epoch {epoch}: loss became {loss}")

    def keep_best(self, epoch: int, score: float | None) -> None:
        spec = self.spec
        if score is None or not spec.keep_best_epoch:  # keep the last epoch
            self.best_score, self.best_epoch = score, epoch
        elif self.best_score is None or (score > self.best_score if spec.higher_is_better else score < self.best_score):
            self.best_score, self.best_epoch = score, epoch
            self.best_state = copy.deepcopy(spec.model.state_dict())

    def save(self, epoch: int, batch: int, order_state: torch.Tensor) -> None:
        """A checkpoint after `epoch` finished epochs and `batch` batches of the next one."""
        checkpointer, data_device = self.checkpointer, self.spec.data_device
        if checkpointer is None or not checkpointer.enabled:  # torchrun ranks other than 0 write nothing
            return
        tensors = {f"model.{k}": v for k, v in self.spec.model.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in (self.best_state or {}).items()})
        opt_tensors, groups = optimizer_tensors(self.optimizer)
        tensors.update(opt_tensors)
        tensors.update(
            {"rng.torch": torch.get_rng_state(), "rng.order": order_state, "rng.noise": self.noise.get_state()}
        )
        if torch.cuda.is_available() and torch.device(data_device).type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(data_device)
        meta = {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "optimizer_groups": groups,
            "schedule": self.schedule.state_dict(),
            "sums": self.sums.to_meta(),
            "seed": self.seed,
            "stage_seconds": time.perf_counter() - self.stage_start,
            **rng_meta(),
        }
        checkpointer.save(stage=self.spec.name, epoch=epoch, batch=batch, tensors=tensors, meta=meta)

    def finish(self) -> dict:
        """Set the model to its best epoch; the stage's summary."""
        if self.best_state is not None:
            self.spec.model.load_state_dict(self.best_state)
        return {
            "stage": self.spec.name,
            "best_epoch": self.best_epoch,
            self.spec.score_key: self.best_score,
            "seconds": time.perf_counter() - self.stage_start,
        }


@torch.inference_mode()
def map_batches(fn, x_u8: torch.Tensor, batch_size: int, prec: Precision) -> torch.Tensor:
    outs = []
    for chunk in x_u8.split(batch_size):
        with prec.autocast():
            outs.append(fn(to_float(chunk, prec.channels_last)))
    return torch.cat(outs) if outs else torch.empty(0)
