"""Two-stage training (Algorithm 1) plus optional end-to-end fine-tuning, with explicit loops.

Stage 1 (`train_autoencoder`) fits the autoencoder to the images with MSE; labels are never read.
Stage 2 (`train_classifier(..., stage="dnn")`) fits the DNN on the frozen encoder's code.
Stage 3 (`train_classifier(..., stage="finetune")`) optionally trains encoder + DNN end to end.

The dataset lives on the training device as uint8 tensors; batches are slices of a permutation and
are normalised on the fly. Each stage keeps its best epoch on the validation split.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from deepautodnn.config import STAGES, Config, TrainConfig
from deepautodnn.data.transforms import TrainingData, augment_batch, erase_batch, to_float
from deepautodnn.models.hybrid import DeepAutoDNN, reconstruction_error
from deepautodnn.training import distributed
from deepautodnn.training.distributed import SINGLE, DistContext
from deepautodnn.training.loop import EpochLogger, Precision, fit, map_batches
from deepautodnn.training.state import (
    Checkpointer,
    TrainingState,
)


def reconstruction_mse(model: DeepAutoDNN, x_u8: torch.Tensor, prec: Precision, batch_size: int = 1024) -> float | None:
    """The mean over a set of the model's `reconstruction_error`, at the training precision."""
    if len(x_u8) == 0:
        return None
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for chunk in x_u8.split(batch_size):
            x = to_float(chunk, prec.channels_last)
            with prec.autocast():
                recon = model.reconstruct(x)
            total += reconstruction_error(x, recon).sum().item()  # (B,) per-image MSEs
    return total / len(x_u8)


def train_autoencoder(
    model: DeepAutoDNN,
    data: TrainingData,
    tcfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    log: EpochLogger,
    progress: bool = False,
    ctx: DistContext = SINGLE,
    on_step=None,
    checkpointer: Checkpointer | None = None,
    resume: TrainingState | None = None,
    should_stop=None,
) -> dict:
    """Stage 1: minimise the reconstruction MSE (paper Eq. 3, Table I) on images only.

    `checkpointer`, `resume` and `should_stop` are as for `fit`."""
    if resume is not None:
        resume.load_model(model)
    prec = Precision(tcfg, device)
    net = distributed.wrap(model.autoencoder, ctx)  # (B, 1, H, W) -> reconstruction

    def step_loss(idx, gen):
        x = to_float(data.x_train[idx.to(data.x_train.device)], prec.channels_last)
        with prec.autocast():
            recon = net(x)
        return F.mse_loss(recon.float(), x), None

    def validate():
        return {"val_mse": reconstruction_mse(model, data.x_val, prec)}

    return fit(
        stage="ae",
        model=model,
        params=list(model.autoencoder.parameters()),
        set_modes=lambda: model.autoencoder.train(),
        n_train=len(data.x_train),
        epochs=tcfg.ae_epochs,
        batch_size=tcfg.ae_batch_size,
        lr=tcfg.ae_lr,
        tcfg=tcfg,
        seed=seed,
        step_loss=step_loss,
        data_device=data.x_train.device,
        validate=validate,
        score_key="val_mse",
        higher_is_better=False,
        log=log,
        progress=progress,
        ctx=ctx,
        on_step=on_step,
        checkpointer=checkpointer,
        resume=resume,
        should_stop=should_stop,
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
            chunk = to_float(x_u8[start : start + 1024], prec.channels_last)
            with prec.autocast():
                feats[start : start + len(chunk)] = model.encoder(chunk)
    return feats


def train_classifier(
    model: DeepAutoDNN,
    data: TrainingData,
    tcfg: TrainConfig,
    *,
    stage: str,
    seed: int,
    device: torch.device,
    log: EpochLogger,
    progress: bool = False,
    ctx: DistContext = SINGLE,
    on_step=None,
    checkpointer: Checkpointer | None = None,
    resume: TrainingState | None = None,
    should_stop=None,
) -> dict:
    """Stage 2 ("dnn": encoder frozen, as Algorithm 1) or stage 3 ("finetune": end to end).

    `checkpointer`, `resume` and `should_stop` are as for `fit`."""
    if stage not in ("dnn", "finetune"):
        raise ValueError(f"stage must be 'dnn' or 'finetune', got {stage!r}")
    if resume is not None:
        resume.load_model(model)  # before the frozen codes are computed from it
    prec = Precision(tcfg, device)
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
            logits = map_batches(model, data.x_val, 1024, prec)
        return {"val_acc": (logits.argmax(1) == data.y_val).float().mean().item()}

    try:
        return fit(
            stage=stage,
            model=model,
            params=params,
            set_modes=set_modes,
            n_train=len(data.x_train),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            tcfg=tcfg,
            seed=seed,
            step_loss=step_loss,
            data_device=data.x_train.device,
            validate=validate,
            score_key="val_acc",
            higher_is_better=True,
            log=log,
            progress=progress,
            ctx=ctx,
            on_step=on_step,
            checkpointer=checkpointer,
            resume=resume,
            should_stop=should_stop,
        )
    finally:
        for p in model.encoder.parameters():
            p.requires_grad_(True)


def stage_plan(cfg: Config) -> list[str]:
    """The stages this config runs, in order (an epoch count of 0 skips a stage)."""
    t = cfg.train
    epochs = {"ae": t.ae_epochs, "dnn": t.dnn_epochs, "finetune": t.finetune_epochs}
    return [s for s in STAGES if epochs[s] > 0]
