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
from deepautodnn.training.loop import EpochLogger, Precision, StageSpec, fit, map_batches
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

    spec = StageSpec(
        name="ae",
        model=model,
        params=list(model.autoencoder.parameters()),
        set_modes=lambda: model.autoencoder.train(),
        step_loss=step_loss,
        validate=validate,
        score_key="val_mse",
        higher_is_better=False,
        n_train=len(data.x_train),
        epochs=tcfg.ae_epochs,
        batch_size=tcfg.ae_batch_size,
        lr=tcfg.ae_lr,
        schedule=tcfg.schedule,
        weight_decay=tcfg.weight_decay,
        keep_best_epoch=tcfg.keep_best_epoch,
        data_device=data.x_train.device,
        classifies=False,
    )
    return fit(
        spec,
        seed=seed,
        log=log,
        progress=progress,
        ctx=ctx,
        on_step=on_step,
        checkpointer=checkpointer,
        resume=resume,
        should_stop=should_stop,
    )


def _frozen_features(model: DeepAutoDNN, x_u8, prec, cache_limit_gib: float):
    """The frozen encoder's codes for all of x_u8, or None if they would not fit in the limit.

    Kept in the precision they are computed in: float32 for a float32 run (the `paper` preset), so
    stage 2 sees exactly the codes it would compute at every step; float16 under bf16 autocast,
    whose codes carry fewer mantissa bits than float16 holds."""
    dtype = torch.float16 if prec.bf16 else torch.float32
    shape = (len(x_u8), *model.config.latent_shape)  # (N, C, H', W')
    if math.prod(shape) * dtype.itemsize > cache_limit_gib * 2**30:
        return None
    model.encoder.eval()
    # Filled in place, batch by batch, so peak memory is the cache itself, not twice it.
    feats = torch.empty(shape, dtype=dtype, device=x_u8.device)
    with torch.inference_mode():
        for start in range(0, len(x_u8), 1024):
            chunk = to_float(x_u8[start : start + 1024], prec.channels_last)  # (B, 1, H, W)
            with prec.autocast():
                feats[start : start + len(chunk)] = model.forward_features(chunk)  # (B, C, H', W')
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
    try:
        make_spec = _frozen_stage if stage == "dnn" else _finetune_stage
        return fit(
            make_spec(model, data, tcfg, prec, ctx),
            seed=seed,
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


def _frozen_stage(model: DeepAutoDNN, data: TrainingData, tcfg: TrainConfig, prec: Precision, ctx) -> StageSpec:
    """Stage 2: the DNN on the frozen encoder's codes (Algorithm 1 step 3)."""
    # The frozen encoder is deterministic in eval mode, so its codes are computed once if they fit.
    train_feats = _frozen_features(model, data.x_train, prec, tcfg.cache_features_gib)
    val_feats = _frozen_features(model, data.x_val, prec, tcfg.cache_features_gib)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    net = distributed.wrap(model.classifier, ctx)  # what the optimiser trains, as one module for DDP

    def logits(idx, gen):
        if train_feats is not None:
            z = train_feats[idx.to(train_feats.device)].float()  # (B, C, H', W')
            if prec.channels_last:
                z = z.contiguous(memory_format=torch.channels_last)
            return net(z)
        x = to_float(data.x_train[idx.to(data.x_train.device)], prec.channels_last)
        with torch.no_grad():
            z = model.forward_features(x)  # (B, 1, H, W) -> (B, C, H', W')
        return net(z)

    def val_logits():
        if val_feats is None:
            return map_batches(model, data.x_val, 1024, prec)
        with torch.inference_mode(), prec.autocast():
            return torch.cat([model.forward_head(z.float())[0] for z in val_feats.split(1024)])

    def set_modes():
        model.eval()
        model.classifier.train()

    return _classifier_spec(
        model,
        data,
        tcfg,
        prec,
        name="dnn",
        params=list(model.classifier.parameters()),
        set_modes=set_modes,
        logits=logits,
        val_logits=val_logits,
    )


def _finetune_stage(model: DeepAutoDNN, data: TrainingData, tcfg: TrainConfig, prec: Precision, ctx) -> StageSpec:
    """Stage 3: encoder + DNN end to end on (augmented) images; the decoder takes no part."""
    for p in model.encoder.parameters():
        p.requires_grad_(True)
    # Encoder + DNN as one module so DDP can wrap it (the whole model would add the unused decoder).
    net = distributed.wrap(torch.nn.Sequential(model.encoder, model.classifier), ctx)

    def logits(idx, gen):
        x = to_float(data.x_train[idx.to(data.x_train.device)], prec.channels_last)  # (B, 1, H, W)
        if tcfg.augment:
            x = augment_batch(x, gen)
            if tcfg.erase_prob > 0:
                x = erase_batch(x, gen, tcfg.erase_prob)
        return net(x)

    return _classifier_spec(
        model,
        data,
        tcfg,
        prec,
        name="finetune",
        params=[p for name, p in model.named_parameters() if not name.startswith("autoencoder.decoder")],
        set_modes=model.train,
        logits=logits,
        val_logits=lambda: map_batches(model, data.x_val, 1024, prec),
    )


def _classifier_spec(
    model: DeepAutoDNN,
    data: TrainingData,
    tcfg: TrainConfig,
    prec: Precision,
    *,
    name: str,
    params: list[torch.nn.Parameter],
    set_modes,
    logits,
    val_logits,
) -> StageSpec:
    """Cross-entropy on `logits(idx, gen)` (B, num_classes); the best epoch by validation accuracy."""

    def step_loss(idx, gen):
        with prec.autocast():
            out = logits(idx, gen)
        y = data.y_train[idx.to(data.y_train.device)]
        loss = F.cross_entropy(out.float(), y, label_smoothing=tcfg.label_smoothing)
        return loss, (out.argmax(1) == y).sum()

    def validate():
        if len(data.x_val) == 0:
            return {"val_acc": None}
        model.eval()
        return {"val_acc": (val_logits().argmax(1) == data.y_val).float().mean().item()}

    epochs, batch_size, lr = {
        "dnn": (tcfg.dnn_epochs, tcfg.dnn_batch_size, tcfg.dnn_lr),
        "finetune": (tcfg.finetune_epochs, tcfg.finetune_batch_size, tcfg.finetune_lr),
    }[name]
    return StageSpec(
        name=name,
        model=model,
        params=params,
        set_modes=set_modes,
        step_loss=step_loss,
        validate=validate,
        score_key="val_acc",
        higher_is_better=True,
        n_train=len(data.x_train),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule=tcfg.schedule,
        weight_decay=tcfg.weight_decay,
        keep_best_epoch=tcfg.keep_best_epoch,
        data_device=data.x_train.device,
    )


def train_stage(model: DeepAutoDNN, data: TrainingData, tcfg: TrainConfig, stage: str, **kwargs) -> dict:
    """One stage by name ("ae", "dnn" or "finetune"); `kwargs` as for `train_autoencoder`."""
    if stage == "ae":
        return train_autoencoder(model, data, tcfg, **kwargs)
    return train_classifier(model, data, tcfg, stage=stage, **kwargs)


def train_stages(model: DeepAutoDNN, data: TrainingData, cfg: Config, **kwargs) -> dict[str, dict]:
    """Every stage of `cfg` in order, without checkpoints; each stage's summary by its name."""
    return {stage: train_stage(model, data, cfg.train, stage, **kwargs) for stage in stage_plan(cfg)}


def stage_plan(cfg: Config) -> list[str]:
    """The stages this config runs, in order (an epoch count of 0 skips a stage)."""
    t = cfg.train
    epochs = {"ae": t.ae_epochs, "dnn": t.dnn_epochs, "finetune": t.finetune_epochs}
    return [s for s in STAGES if epochs[s] > 0]
