"""Two-stage training (Algorithm 1) plus optional end-to-end fine-tuning, with explicit loops.

Stage 1 (`train_autoencoder`) fits the autoencoder to the images with MSE; labels are never read.
Stage 2 (`train_classifier(..., stage="dnn")`) fits the DNN on the frozen encoder's code.
Stage 3 (`train_classifier(..., stage="finetune")`) optionally trains encoder + DNN end to end.

The dataset lives on the training device as uint8 tensors; batches are slices of a permutation and
are normalised on the fly. Each stage keeps its best epoch on the validation split.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import random
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .checkpoint import atomic_write_text
from .config import STAGES, Config, TrainConfig
from .distributed import SINGLE, DistContext
from .models import DeepAutoDNN
from .training_state import (
    Checkpointer, NonFiniteLossError, TrainingInterrupted, TrainingState, optimizer_tensors, restore_optimizer,
    restore_rng_meta, rng_meta,
)

METRICS_COLUMNS = ("stage", "epoch", "loss", "train_acc", "val_acc", "val_mse", "lr", "seconds")


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


@dataclass
class TrainingData:
    """uint8 images (N, 1, H, W) and int64 labels on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def to_device_data(images: np.ndarray, labels: np.ndarray, train_idx, val_idx, device) -> TrainingData:
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    tr, va = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    return TrainingData(x[tr].to(device), y[tr].to(device), x[va].to(device), y[va].to(device))


def to_float(x_u8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    x = x_u8.float().div_(255.0)  # uint8 [0, 255] -> float [0, 1], the paper's sigmoid range
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def augment_batch(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to `max_shift` pixels (zero fill) and horizontal flip, batched."""
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # (B, C, H+2s, W+2s)
    oy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen, device=gen.device).to(x.device)
    ox = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen, device=gen.device).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    cidx = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[bidx, cidx, rows, cols]  # (B, C, H, W)
    flip = torch.rand(b, generator=gen, device=gen.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def erase_batch(x: torch.Tensor, gen: torch.Generator, prob: float,
                area: tuple[float, float] = (0.02, 0.25), aspect: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al., 2020), batched: with probability `prob` per image, zero one
    rectangle covering `area` of the image with an aspect ratio in `aspect` (log-uniform)."""
    b, _, h, w = x.shape

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(b, generator=gen, device=gen.device)

    frac = uniform(*area)
    ratio = torch.exp(uniform(math.log(aspect[0]), math.log(aspect[1])))
    eh = (torch.sqrt(frac * ratio) * h).round().clamp(1, h)  # (B,) rectangle height in pixels
    ew = (torch.sqrt(frac / ratio) * w).round().clamp(1, w)
    y0 = (uniform(0, 1) * (h - eh + 1)).floor()
    x0 = (uniform(0, 1) * (w - ew + 1)).floor()
    hit = uniform(0, 1) < prob
    rows = torch.arange(h, device=gen.device)[None, :]  # (1, H)
    cols = torch.arange(w, device=gen.device)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])  # (B, H)
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])  # (B, W)
    erase = (in_rows[:, :, None] & in_cols[:, None, :] & hit[:, None, None]).to(x.device)  # (B, H, W)
    return x.masked_fill(erase[:, None], 0.0)


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


class _Precision:
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
        batches = [b[ctx.rank::ctx.world_size] for b in batches if len(b) >= ctx.world_size]
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


def _fit(
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

    from .system import keep_freed_memory

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
        meta = {"best_score": best_score, "best_epoch": best_epoch, "optimizer_groups": groups,
                "schedule": schedule.state_dict(), "sums": sums.to_meta(), "seed": seed,
                "stage_seconds": time.perf_counter() - stage_start, **rng_meta()}
        checkpointer.save(stage=stage, epoch=epoch, batch=batch, tensors=tensors, meta=meta)

    stop = should_stop or (lambda: False)
    for epoch in range(first_epoch, epochs + 1):
        start = time.perf_counter() - sums.seconds
        set_modes()
        order_state = gen.get_state()  # what `resume` needs to draw this epoch's batches again
        batches = _batches(n_train, batch_size, gen, data_device, ctx)
        bar = tqdm(batches[skip:], desc=f"{stage} {epoch}/{epochs}", initial=skip, total=len(batches),
                   leave=False, disable=not progress or not ctx.is_main, file=sys.stderr)
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
            [float(sums.loss), float(sums.correct), sums.seen], ctx, data_device)
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
    return {"stage": stage, "best_epoch": best_epoch, score_key: best_score,
            "seconds": time.perf_counter() - stage_start}


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
    def from_meta(cls, meta: dict, device) -> "_EpochSums":
        # float32 and int64 tensors, as the sums were when saved, so the epoch's figures come out the same.
        return cls(torch.tensor(meta["loss"], dtype=torch.float32, device=device),
                   torch.tensor(meta["correct"], dtype=torch.int64, device=device), meta["seen"], meta["seconds"])


def _restore_generators(state: TrainingState, gens: dict[str, torch.Generator], main: bool) -> None:
    restore_rng_meta(state.meta)
    gens["order"].set_state(state.tensors["rng.order"])
    if main:  # other torchrun ranks keep their own freshly seeded noise: rank 0's state is the one saved
        gens["noise"].set_state(state.tensors["rng.noise"])
        torch.set_rng_state(state.tensors["rng.torch"])
        if "rng.cuda" in state.tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(state.tensors["rng.cuda"])


@torch.inference_mode()
def _map_batches(fn, x_u8: torch.Tensor, batch_size: int, prec: _Precision) -> torch.Tensor:
    outs = []
    for chunk in x_u8.split(batch_size):
        with prec.autocast():
            outs.append(fn(to_float(chunk, prec.channels_last)))
    return torch.cat(outs) if outs else torch.empty(0)


def reconstruction_mse(model: DeepAutoDNN, x_u8: torch.Tensor, prec: _Precision, batch_size: int = 1024) -> float | None:
    if len(x_u8) == 0:
        return None
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for chunk in x_u8.split(batch_size):
            x = to_float(chunk, prec.channels_last)
            with prec.autocast():
                recon = model.reconstruct(x)
            total += F.mse_loss(recon.float(), x, reduction="sum").item()
    return total / x_u8[0].numel() / len(x_u8)


def train_autoencoder(model: DeepAutoDNN, data: TrainingData, tcfg: TrainConfig, *, seed: int,
                      device: torch.device, log: EpochLogger, progress: bool = False,
                      ctx: DistContext = SINGLE, on_step=None, checkpointer: Checkpointer | None = None,
                      resume: TrainingState | None = None, should_stop=None) -> dict:
    """Stage 1: minimise the reconstruction MSE (paper Eq. 3, Table I) on images only.

    `checkpointer`, `resume` and `should_stop` are as for `_fit`."""
    if resume is not None:
        resume.load_model(model)
    prec = _Precision(tcfg, device)
    net = distributed.wrap(model.autoencoder, ctx)  # (B, 1, H, W) -> reconstruction

    def step_loss(idx, gen):
        x = to_float(data.x_train[idx.to(data.x_train.device)], prec.channels_last)
        with prec.autocast():
            recon = net(x)
        return F.mse_loss(recon.float(), x), None

    def validate():
        return {"val_mse": reconstruction_mse(model, data.x_val, prec)}

    return _fit(
        stage="ae", model=model, params=list(model.autoencoder.parameters()),
        set_modes=lambda: model.autoencoder.train(), n_train=len(data.x_train),
        epochs=tcfg.ae_epochs, batch_size=tcfg.ae_batch_size, lr=tcfg.ae_lr, tcfg=tcfg, seed=seed,
        step_loss=step_loss, data_device=data.x_train.device, validate=validate, score_key="val_mse",
        higher_is_better=False, log=log, progress=progress, ctx=ctx, on_step=on_step,
        checkpointer=checkpointer, resume=resume, should_stop=should_stop,
    )


def _frozen_features(model, x_u8, prec, cache_limit_gib: float):
    """The frozen encoder's codes for all of x_u8 as float16, or None if they would not fit."""
    shape = (len(x_u8), *model.config.latent_shape)  # (N, C, H', W')
    if math.prod(shape) * 2 > cache_limit_gib * 2**30:
        return None
    model.encoder.eval()
    # Filled in place, batch by batch, so peak memory is the cache itself, not twice it.
    feats = torch.empty(shape, dtype=torch.float16, device=x_u8.device)
    with torch.inference_mode():
        for start in range(0, len(x_u8), 1024):
            chunk = to_float(x_u8[start:start + 1024], prec.channels_last)
            with prec.autocast():
                feats[start:start + len(chunk)] = model.encoder(chunk)
    return feats


def train_classifier(model: DeepAutoDNN, data: TrainingData, tcfg: TrainConfig, *, stage: str,
                     seed: int, device: torch.device, log: EpochLogger, progress: bool = False,
                     ctx: DistContext = SINGLE, on_step=None, checkpointer: Checkpointer | None = None,
                     resume: TrainingState | None = None, should_stop=None) -> dict:
    """Stage 2 ("dnn": encoder frozen, as Algorithm 1) or stage 3 ("finetune": end to end).

    `checkpointer`, `resume` and `should_stop` are as for `_fit`."""
    if stage not in ("dnn", "finetune"):
        raise ValueError(f"stage must be 'dnn' or 'finetune', got {stage!r}")
    if resume is not None:
        resume.load_model(model)  # before the frozen codes are computed from it
    prec = _Precision(tcfg, device)
    frozen = stage == "dnn"
    if frozen:
        # The frozen encoder is deterministic in eval mode, so its codes can be computed once.
        train_feats = _frozen_features(model, data.x_train, prec, tcfg.cache_features_gib)
        val_feats = _frozen_features(model, data.x_val, prec, tcfg.cache_features_gib)
        params = list(model.classifier.parameters())
        epochs, batch_size, lr = tcfg.dnn_epochs, tcfg.dnn_batch_size, tcfg.dnn_lr

        def set_modes():
            model.eval()
            model.classifier.train()
    else:
        train_feats = val_feats = None
        params = [p for name, p in model.named_parameters() if not name.startswith("autoencoder.decoder")]
        epochs, batch_size, lr = tcfg.finetune_epochs, tcfg.finetune_batch_size, tcfg.finetune_lr

        def set_modes():
            model.train()
    for p in model.encoder.parameters():
        p.requires_grad_(not frozen)
    # What the optimiser trains, as one module so DDP can wrap it: the DNN on codes when frozen,
    # else encoder + DNN on images (the decoder takes no part).
    net = distributed.wrap(model.classifier if frozen else torch.nn.Sequential(model.encoder, model.classifier), ctx)

    def train_logits(idx, gen):
        if frozen and train_feats is not None:
            z = train_feats[idx.to(train_feats.device)].float()
            if prec.channels_last:
                z = z.contiguous(memory_format=torch.channels_last)
            return net(z)
        x = to_float(data.x_train[idx.to(data.x_train.device)], prec.channels_last)
        if tcfg.augment and not frozen:
            x = augment_batch(x, gen)
            if tcfg.erase_prob > 0:
                x = erase_batch(x, gen, tcfg.erase_prob)
        if frozen:
            with torch.no_grad():
                z = model.encoder(x)
            return net(z)
        return net(x)

    def step_loss(idx, gen):
        with prec.autocast():
            logits = train_logits(idx, gen)
        y = data.y_train[idx.to(data.y_train.device)]
        loss = F.cross_entropy(logits.float(), y, label_smoothing=tcfg.label_smoothing)
        return loss, (logits.argmax(1) == y).sum()

    def validate():
        if len(data.x_val) == 0:
            return {"val_acc": None}
        model.eval()
        if val_feats is not None:
            with torch.inference_mode(), prec.autocast():
                logits = torch.cat([model.classifier(z.float()) for z in val_feats.split(1024)])
        else:
            logits = _map_batches(model, data.x_val, 1024, prec)
        return {"val_acc": (logits.argmax(1) == data.y_val).float().mean().item()}

    try:
        return _fit(
            stage=stage, model=model, params=params, set_modes=set_modes,
            n_train=len(data.x_train), epochs=epochs, batch_size=batch_size, lr=lr, tcfg=tcfg,
            seed=seed, step_loss=step_loss, data_device=data.x_train.device, validate=validate,
            score_key="val_acc", higher_is_better=True, log=log, progress=progress, ctx=ctx, on_step=on_step,
            checkpointer=checkpointer, resume=resume, should_stop=should_stop,
        )
    finally:
        for p in model.encoder.parameters():
            p.requires_grad_(True)


class MetricsLog:
    """metrics.csv in the run directory: one row per epoch, appended as it finishes."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None):
        self.path = path
        self.echo = echo

    def keep(self, stages: set[str], current: str | None = None, up_to_epoch: int = 0) -> None:
        """Keep the rows of finished `stages` and of `current` up to its checkpoint's epoch; drop
        the rest, including a line cut short by a kill (used when resuming)."""
        def finished(row) -> bool:
            if None in row or any(row.get(k) is None for k in METRICS_COLUMNS):  # a cut or garbled line
                return False
            if row["stage"] in stages:
                return True
            return row["stage"] == current and row["epoch"].isdigit() and int(row["epoch"]) <= up_to_epoch

        rows = [r for r in self.read() if finished(r)]
        text = io.StringIO()
        writer = csv.DictWriter(text, METRICS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, text.getvalue())

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def __call__(self, row: dict) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, METRICS_COLUMNS, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in METRICS_COLUMNS})
            f.flush()
        if self.echo:
            parts = [f"{row['stage']} epoch {row['epoch']}", f"loss {row['loss']:.4f}"]
            for key in ("train_acc", "val_acc", "val_mse"):
                if row.get(key) is not None:
                    parts.append(f"{key} {row[key]:.4f}")
            parts.append(f"{row['seconds']:.1f}s")
            self.echo("  ".join(parts))


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def stage_plan(cfg: Config) -> list[str]:
    """The stages this config runs, in order (an epoch count of 0 skips a stage)."""
    t = cfg.train
    epochs = {"ae": t.ae_epochs, "dnn": t.dnn_epochs, "finetune": t.finetune_epochs}
    return [s for s in STAGES if epochs[s] > 0]
