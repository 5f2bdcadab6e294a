"""The model directory (`config.json` + `model.safetensors` + `metrics.json`) and atomic writes.

Every file is written to a temporary file in the same folder and then renamed over the target, so
a crash or a full disk never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from . import __version__
from .config import Config
from .models import DeepAutoDNN

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model directory or file is missing or unusable. The message names the file."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path}: not readable JSON ({err})") from None


def save_weights(path: str | os.PathLike, model: torch.nn.Module) -> None:
    # safetensors refuses shared or non-contiguous storage; clone to plain contiguous tensors.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save_safetensors_bytes(tensors, metadata={"format": "pt"}))


def load_weights(path: str | os.PathLike, model: torch.nn.Module) -> None:
    path = Path(path)
    try:
        tensors = load_safetensors_bytes(path.read_bytes())
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except (OSError, SafetensorError, ValueError) as err:
        raise ModelFileError(f"{path}: not a valid safetensors file ({err})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ModelFileError(f"{path}: weights do not match the config ({first})") from None


def config_to_json(cfg: Config, **extra) -> dict:
    return {"format_version": FORMAT_VERSION, "deepautodnn_version": __version__, **cfg.to_dict(), **extra}


def save_model(model_dir: str | os.PathLike, model: DeepAutoDNN, cfg: Config, metrics: dict | None = None, **extra) -> Path:
    """Write a self-describing model directory; `load_model` rebuilds it with no code arguments."""
    model_dir = Path(model_dir)
    save_weights(model_dir / WEIGHTS_FILE, model)
    atomic_write_json(model_dir / CONFIG_FILE, config_to_json(cfg, **extra))
    if metrics is not None:
        atomic_write_json(model_dir / METRICS_FILE, metrics)
    return model_dir


def load_config(model_dir: str | os.PathLike) -> Config:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFileError(f"{model_dir}: model directory not found")
    raw = read_json(model_dir / CONFIG_FILE)
    if raw.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ModelFileError(f"{model_dir / CONFIG_FILE}: written by a newer deepautodnn; upgrade to load it")
    try:
        return Config.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{model_dir / CONFIG_FILE}: invalid config ({err})") from None


def load_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> DeepAutoDNN:
    """Rebuild a trained DeepAutoDNN from its directory, in eval mode on `device`."""
    cfg = load_config(model_dir)
    model = DeepAutoDNN(cfg.model)
    load_weights(Path(model_dir) / WEIGHTS_FILE, model)
    return model.to(device).eval()
