"""Fitting unknown-input detection (`deepautodnn.inference.ood`) for a model directory.

1. The reference autoencoder: a run's stage-1 autoencoder trained on until `unknown_ae_epochs`
   epochs in all (the `fast` preset trains its stage 1 for one epoch, far from converged; a
   fine-tuned run has moved its encoder away from its decoder). It is saved as
   `unknown_autoencoder.safetensors` and used by every backend's graph.
2. The feature statistics (class means, shared covariance, kNN bank) from the training split's
   penultimate features under torch float32.
3. The calibration images: the validation split as arrays, and the same images rendered as
   product photos (`studio_photo`) read back through the real preprocessing, so the input-level
   evidence and the features are calibrated on what photos look like after preprocessing too.
4. For each backend (torch, torch-bf16 where the CPU has it, and the ONNX files that exist), its
   own scales and threshold from its own outputs on those images.
"""

from __future__ import annotations

import dataclasses
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from deepautodnn.data.transforms import to_device_data
from deepautodnn.inference.ood import (
    DEFAULT_FALSE_ALARM_RATE,
    FORMAT,
    FUSED_SIGNALS,
    REFERENCE_AE_FILE,
    UNKNOWN_FILE,
    BackendCalibration,
    FeatureStats,
    UnknownDetector,
    evidence_of_arrays,
    input_signals,
    load_reference_autoencoder,
    model_signals,
)
from deepautodnn.models.hybrid import build_model
from deepautodnn.models.serialization import load_weights, save_weights
from deepautodnn.training.stages import stage_plan, train_autoencoder

CALIBRATION_PHOTOS = 2000  # validation images also rendered as photos for calibration
FEATURE_IMAGES = 20_000  # training images whose features fit the class means, covariance and kNN bank


def _texture(rng: np.random.Generator, height: int, width: int, blur: float) -> np.ndarray:
    """Gaussian-blurred white noise (height, width) float32 with unit standard deviation.

    A wide blur is drawn on a grid about blur/2 times coarser and resized up: the blurred noise has
    no detail finer than that grid holds, and filtering a 800 px square with a wide kernel was most
    of what a calibration photo cost."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    step = max(1, int(blur // 2))
    # The coarse grid covers the photo with a row and a column to spare and is resized onto it, which
    # shortens the correlation length by about step/size: a few per cent at most.
    grid = (height, width) if step == 1 else (-(-height // step) + 1, -(-width // step) + 1)
    texture = gaussian_filter(rng.standard_normal(grid, dtype=np.float32), blur / step)
    if step > 1:
        texture = np.asarray(Image.fromarray(texture).resize((width, height), Image.Resampling.BILINEAR))
    return texture / (texture.std() + 1e-6)


def studio_photo(arr: np.ndarray, rng: np.random.Generator) -> bytes:
    """A Fashion-MNIST image (H, W) uint8 as a product photo, JPEG-encoded, drawn from a broad family
    of ordinary shop photos: a backdrop of any brightness with a gradient and a little cloth-like
    texture, a garment of any colour that stands out from it, at a random size and place.

    (The photo-variant benchmark has generators of its own; this one only has to cover what
    in-distribution photos look like, so the thresholds do not flag a plain grey wall.)"""
    from PIL import Image

    width, height = int(rng.integers(300, 801)), int(rng.integers(300, 801))
    side = int(min(width, height) * rng.uniform(0.3, 0.95))
    t = np.asarray(Image.fromarray(arr).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255.0
    level = rng.choice([rng.uniform(200, 255), rng.uniform(90, 200), rng.uniform(0, 90)], p=[0.6, 0.25, 0.15])
    tint = rng.uniform(-1, 1, 3) * rng.uniform(0, 20)
    # What varies over the backdrop is the same in each channel: gradients, grain, cloth-like mottle.
    shade = np.linspace(-1, 1, width, dtype=np.float32)[None, :] * np.float32(rng.uniform(-20, 20))
    shade = shade + np.linspace(-1, 1, height, dtype=np.float32)[:, None] * np.float32(rng.uniform(-20, 20))
    for blur, strength in ((rng.uniform(0.7, 2), rng.uniform(0, 4)), (rng.uniform(4, 25), rng.uniform(0, 10))):
        shade += _texture(rng, height, width, blur) * np.float32(strength)
    backdrop = shade[..., None] + (level + tint).astype(np.float32)  # (H, W, 3)
    # The garment's colour: any hue, at least 60 levels away from the backdrop in brightness.
    colour_level = rng.uniform(0, max(level - 60, 0)) if level > 127 else rng.uniform(min(level + 60, 255), 255)
    colour = np.clip(colour_level + rng.uniform(-60, 60, 3), 0, 255).astype(np.float32)
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    region = backdrop[top : top + side, left : left + side]
    backdrop[top : top + side, left : left + side] = region * (1 - t[..., None]) + colour * t[..., None]
    backdrop += rng.standard_normal(backdrop.shape, dtype=np.float32) * np.float32(rng.uniform(0.5, 3))  # sensor noise
    buf = io.BytesIO()
    Image.fromarray(np.clip(backdrop, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=int(rng.integers(60, 96)))
    return buf.getvalue()


def photo_inputs(images_u8: np.ndarray, seed: int = 0, threads: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """Studio photos of `images_u8`, read back through preprocessing: model inputs and evidence.

    Rendered on `threads` threads (default: one per core); most of the work (drawing noise, filtering,
    JPEG) runs outside the GIL. Each photo has its own generator, spawned from `seed`, so the photos
    are the same whatever the number of threads."""
    from deepautodnn.data.preprocess import load_preprocessed
    from deepautodnn.utils.runtime import usable_cores

    generators = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(images_u8))]

    def one(i: int):
        return load_preprocessed(
            studio_photo(images_u8[i], generators[i]), images_u8.shape[-1], name="calibration photo"
        )

    with ThreadPoolExecutor(threads or usable_cores()) as pool:
        done = list(pool.map(one, range(len(images_u8))))
    if not done:
        return np.zeros((0, *images_u8.shape[1:]), np.uint8), []
    return np.stack([p.image for p in done]), [p.evidence for p in done]


def train_reference_autoencoder(
    model,
    cfg,
    images: np.ndarray,
    train_idx,
    val_idx,
    *,
    stage1_path=None,
    device="cpu",
    seed: int = 0,
    echo=lambda m: None,
):
    """The run's stage-1 autoencoder trained on to `cfg.train.unknown_ae_epochs` epochs in all; None
    when the model's own autoencoder is that one already (not fine-tuned, trained long enough).

    A fine-tuned model's stage 1 is read from `stage1_path` (the run's checkpoints/ae.safetensors);
    without it the reference trains from scratch for all `unknown_ae_epochs`."""
    finetuned = "finetune" in stage_plan(cfg)
    done = cfg.train.ae_epochs
    # Drawn weights matter only when none are loaded below. In the preset's memory layout, as its
    # inputs are: contiguous weights under channels_last inputs made each epoch about twice as long.
    reference = build_model(cfg, seed=seed + 1, device=device)
    if not finetuned:
        reference.autoencoder.load_state_dict(model.autoencoder.state_dict())
    elif stage1_path is not None and Path(stage1_path).exists():
        load_weights(stage1_path, reference)
    else:
        done = 0
    extra = max(0, cfg.train.unknown_ae_epochs - done)
    if extra == 0 and not finetuned:
        return None
    if extra:
        echo(f"reference autoencoder for unknown-input detection: {extra} more epochs")
        tcfg = dataclasses.replace(cfg.train, ae_epochs=extra, keep_best_epoch=True)
        data = to_device_data(images, np.zeros(len(images), np.int64), train_idx, val_idx, device)
        train_autoencoder(
            reference,
            data,
            tcfg,
            seed=seed + 1,
            device=torch.device(device),
            log=lambda row: echo(f"  reference ae epoch {row.get('epoch')}: val_mse {row.get('val_mse', 0):.5f}"),
        )
    return reference.autoencoder.to("cpu", memory_format=torch.contiguous_format).float().eval()


def _reference_epochs(model_dir: Path) -> int | None:
    """The epochs of the saved reference autoencoder, as the fused detector recorded them."""
    from deepautodnn.utils.files import read_json

    path = model_dir / UNKNOWN_FILE
    if not path.exists():
        return None
    record = read_json(path)
    return record.get("reference_autoencoder_epochs") if record.get("format") == FORMAT else None


def available_backends(model_dir: str | Path) -> list[str]:
    """The backends this machine can run for the model directory (the ONNX ones once exported)."""
    from deepautodnn.inference.names import INT8_ONNX_FILE, ONNX_FILE
    from deepautodnn.utils.runtime import bf16_supported

    names = ["torch"]
    if bf16_supported(torch.device("cpu")):
        names.append("torch-bf16")
    names += [
        name for name, f in (("onnx", ONNX_FILE), ("onnx-int8", INT8_ONNX_FILE)) if (Path(model_dir) / f).exists()
    ]
    return names


def _gives_features(backend, size: int) -> bool:
    """Whether a backend's graph has the logits and features outputs (older ONNX files do not)."""
    out = backend.run(np.zeros((1, size, size), np.uint8))
    return out.logits is not None and out.features is not None


def fit_detector(
    model,
    cfg,
    images: np.ndarray,
    labels: np.ndarray,
    train_idx,
    val_idx,
    model_dir: str | Path,
    *,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
    device="cpu",
    backends=None,
    photos: int = CALIBRATION_PHOTOS,
    seed: int = 0,
    fused=FUSED_SIGNALS,
    half_bank: bool = False,
    echo=lambda m: None,
) -> UnknownDetector:
    """Fit every part of the detector (see the module docstring) and save it beside the model.
    `half_bank` stores the kNN bank in float16 (half the file), thresholds fitted to it as stored."""
    from deepautodnn.inference.backends import make_backend, run_batched

    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false-alarm rate must be between 0 and 1, got {false_alarm_rate}")
    if len(val_idx) < 20:
        raise ValueError(f"need at least 20 validation images to calibrate, got {len(val_idx)}")
    model_dir = Path(model_dir)
    epochs = max(cfg.train.ae_epochs, cfg.train.unknown_ae_epochs)
    # A reference saved by an older deepautodnn is the bare stage-1 autoencoder: train it anew.
    reference = load_reference_autoencoder(model_dir) if _reference_epochs(model_dir) == epochs else None
    if reference is None:
        reference = train_reference_autoencoder(
            model,
            cfg,
            images,
            train_idx,
            val_idx,
            device=device,
            seed=seed,
            stage1_path=model_dir / "checkpoints" / "ae.safetensors",
            echo=echo,
        )
        if reference is not None:
            save_weights(model_dir / REFERENCE_AE_FILE, reference)

    torch_backend = make_backend(model_dir, "torch")
    rng = np.random.default_rng(seed)
    feature_idx = rng.permutation(np.asarray(train_idx))[:FEATURE_IMAGES]
    features = run_batched(torch_backend, images[feature_idx], reconstruction=False).features  # (N, D)
    stats = FeatureStats.fit(features, labels[feature_idx], seed=seed)
    if half_bank:
        stats.half_bank()

    val_images = images[val_idx]
    photo_images, photo_evidence = photo_inputs(val_images[rng.permutation(len(val_images))[:photos]], seed)
    cal_images = np.concatenate([val_images, photo_images])
    evidence = input_signals(evidence_of_arrays(val_images) + photo_evidence)
    subsets = {
        "arrays": np.arange(len(cal_images)) < len(val_images),
        "photos": np.arange(len(cal_images)) >= len(val_images),
    }
    if not photos:
        del subsets["photos"]

    calibrations = {}
    for name in backends or available_backends(model_dir):
        backend = torch_backend if name == "torch" else make_backend(model_dir, name)
        if not _gives_features(backend, cfg.model.image_size):
            echo(
                f"{name}: its ONNX file was exported by an older deepautodnn and gives no features; not "
                f"calibrated (run `deepautodnn export {model_dir}` to replace it)"
            )
            continue
        signals = {**model_signals(run_batched(backend, cal_images), cal_images, stats), **evidence}
        calibrations[name] = BackendCalibration.fit(signals, subsets, fused, false_alarm_rate)
        echo(
            f"unknown-input detection calibrated for {name}: flags "
            + ", ".join(f"{v:.1%} of {k}" for k, v in calibrations[name].validation_false_alarm_rate.items())
        )
    det = UnknownDetector(false_alarm_rate, fused, calibrations, stats, reference_autoencoder_epochs=epochs)
    det.save(model_dir)
    det.autoencoder = reference
    return det
