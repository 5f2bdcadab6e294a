"""Unknown-input detection from the model itself: the autoencoder's reconstruction error and the
softmax confidence, with thresholds calibrated on the validation split.

An input is flagged `unknown` when its reconstruction error or its uncertainty (1 - top
probability) is higher than on all but a stated fraction of validation images. Each of the two
thresholds takes half the false-alarm budget, so at most that fraction of in-distribution images is
flagged. The `unknown_score` is the larger of the two, each divided by its threshold: above 1 means
unknown. The thresholds are stored in the model directory as `unknown.json`.

The reconstruction comes from the stage-1 autoencoder. A model fine-tuned end to end has moved
its encoder away from the decoder, so its own autoencoder no longer reconstructs anything; such a
run also saves the stage-1 autoencoder as `unknown_autoencoder.safetensors`, used only here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write_json, read_json

UNKNOWN_FILE = "unknown.json"
REFERENCE_AE_FILE = "unknown_autoencoder.safetensors"
DEFAULT_FALSE_ALARM_RATE = 0.05


@torch.inference_mode()
def score_images(model, images_u8: np.ndarray, batch_size: int = 1024, device="cpu",
                 autoencoder=None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, K) and per-image reconstruction MSE (N,).

    The reconstruction is by `autoencoder` (the stage-1 reference) when given, else by the
    model's own autoencoder, sharing the classifier's encoder pass.
    """
    from .inference import InferenceGraph

    graph = InferenceGraph(model, autoencoder).to(device).eval()
    x_all = torch.as_tensor(images_u8)
    if x_all.ndim == 3:
        x_all = x_all.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    probas, errors = [], []
    for chunk in x_all.split(batch_size):
        x = chunk.to(device).float() / 255.0
        proba, recon = graph(x)  # (B, K), (B, 1, H, W)
        probas.append(proba.float().cpu())
        errors.append(((recon.float() - x) ** 2).flatten(1).mean(1).cpu())
    if not probas:
        return np.zeros((0, model.config.num_classes), np.float32), np.zeros(0, np.float32)
    return torch.cat(probas).numpy(), torch.cat(errors).numpy()


def save_reference_autoencoder(run_dir: str | Path, cfg):
    """For a run fine-tuned end to end: copy its stage-1 autoencoder (from checkpoints/ae) beside
    the model and return it; None for runs whose own autoencoder is still the stage-1 one."""
    from .checkpoint import load_weights, save_weights
    from .models import DeepAutoDNN
    from .train import stage_plan

    stage1 = Path(run_dir) / "checkpoints" / "ae.safetensors"
    if "finetune" not in stage_plan(cfg) or not stage1.exists():
        return None
    pretrained = DeepAutoDNN(cfg.model)
    load_weights(stage1, pretrained)
    save_weights(Path(run_dir) / REFERENCE_AE_FILE, pretrained.autoencoder)
    return pretrained.autoencoder.eval()


def load_reference_autoencoder(model_dir: str | Path):
    """The stage-1 autoencoder saved beside a fine-tuned model, or None."""
    from .checkpoint import checksums_required, load_config_record, load_weights
    from .models import ConvAutoencoder

    path = Path(model_dir) / REFERENCE_AE_FILE
    if not path.exists():
        return None
    cfg, record = load_config_record(model_dir)
    autoencoder = ConvAutoencoder(cfg.model)
    load_weights(path, autoencoder, require_checksum=checksums_required(record))
    return autoencoder.eval()


@dataclass
class UnknownDetector:
    recon_threshold: float  # reconstruction MSE above this is unusual
    uncertainty_threshold: float  # 1 - top probability above this is unusual
    false_alarm_rate: float  # the budget it was calibrated for
    validation_false_alarm_rate: float  # what it flags on the validation split it was fit on
    n_calibration: int
    autoencoder: torch.nn.Module | None = field(default=None, repr=False, compare=False)  # not saved

    @classmethod
    def calibrate(cls, proba: np.ndarray, recon_error: np.ndarray,
                  false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> "UnknownDetector":
        if not 0 < false_alarm_rate < 1:
            raise ValueError(f"false-alarm rate must be between 0 and 1, got {false_alarm_rate}")
        if len(recon_error) < 20:
            raise ValueError(f"need at least 20 validation images to calibrate, got {len(recon_error)}")
        q = 1 - false_alarm_rate / 2
        # "higher": an order statistic, so strictly fewer than half the budget lies above each one.
        det = cls(float(np.quantile(recon_error, q, method="higher")),
                  float(np.quantile(1 - proba.max(1), q, method="higher")),
                  false_alarm_rate, 0.0, len(recon_error))
        det.validation_false_alarm_rate = float(det.is_unknown(proba, recon_error).mean())
        return det

    def scores(self, proba: np.ndarray, recon_error: np.ndarray) -> np.ndarray:
        """Unknown score per image: > 1 means unknown."""
        tiny = 1e-12
        return np.maximum(recon_error / max(self.recon_threshold, tiny),
                          (1 - proba.max(1)) / max(self.uncertainty_threshold, tiny))

    def is_unknown(self, proba: np.ndarray, recon_error: np.ndarray) -> np.ndarray:
        return self.scores(proba, recon_error) > 1.0

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "autoencoder"}

    def save(self, model_dir: str | Path) -> None:
        atomic_write_json(Path(model_dir) / UNKNOWN_FILE, self.to_dict())

    @classmethod
    def load(cls, model_dir: str | Path) -> "UnknownDetector | None":
        path = Path(model_dir) / UNKNOWN_FILE
        if not path.exists():
            return None
        data = read_json(path)
        try:
            det = cls(**data)
        except TypeError as err:
            from .checkpoint import ModelFileError

            raise ModelFileError(f"{path}: not an unknown-detector file ({err})") from None
        det.autoencoder = load_reference_autoencoder(model_dir)
        return det


def fit_detector(model, cfg, val_images: np.ndarray, model_dir: str | Path, *,
                 false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE, device="cpu") -> UnknownDetector:
    """Fit the detector on validation images and save it (and, for a fine-tuned run, its stage-1
    autoencoder) beside the model."""
    reference = load_reference_autoencoder(model_dir) or save_reference_autoencoder(model_dir, cfg)
    proba, err = score_images(model, val_images, device=device, autoencoder=reference)
    det = UnknownDetector.calibrate(proba, err, false_alarm_rate)
    det.save(model_dir)
    det.autoencoder = reference
    return det


def calibrate_model_dir(model_dir: str | Path, *, data_dir=None, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
                        device="cpu") -> UnknownDetector:
    """Fit the detector on the validation split the model was selected on; save it beside the model."""
    from .checkpoint import load_config, load_model
    from .runner import load_model_run_data

    data = load_model_run_data(model_dir, data_dir)
    return fit_detector(load_model(model_dir), load_config(model_dir), data.images[data.val_idx], model_dir,
                        false_alarm_rate=false_alarm_rate, device=device)
