"""The model directory (`config.json` + `model.safetensors` + `metrics.json`), saved and loaded.

Weights are safetensors with a SHA-256 beside them, checked on every load: a truncated, damaged or
swapped file is an error, never a wrong model. Only safetensors and JSON are ever read; nothing is
unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from deepautodnn.config import Config
from deepautodnn.errors import ModelFileError
from deepautodnn.models.hybrid import DeepAutoDNN
from deepautodnn.models.pretrained import resolve_model_dir
from deepautodnn.utils.files import atomic_write_json, read_json, read_verified, write_with_checksum
from deepautodnn.version import __version__

CONFIG_FILE = "config.json"


WEIGHTS_FILE = "model.safetensors"


METRICS_FILE = "metrics.json"


FORMAT_VERSION = 2  # 2: weights files carry a .sha256 beside them


MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on its JSON header


HALF_STORAGE = (torch.float16, torch.bfloat16)  # accepted on disk for float32 weights, widened on load


def plain_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies: safetensors refuses shared or non-contiguous storage."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def save_weights(path: str | os.PathLike, model: torch.nn.Module) -> str:
    """`model`'s weights as safetensors, with their SHA-256 beside them; returns the digest."""
    return write_with_checksum(
        path, save_safetensors_bytes(plain_tensors(model.state_dict()), metadata={"format": "pt"})
    )


def _expected_tensor_bytes(model: torch.nn.Module) -> int:
    return sum(v.numel() * v.element_size() for v in model.state_dict().values())


def _least_tensor_bytes(model: torch.nn.Module) -> int:
    """The smallest weights file `model` can have: its float32 tensors stored in half precision."""
    return sum(v.numel() * (2 if v.dtype == torch.float32 else v.element_size()) for v in model.state_dict().values())


def parse_safetensors(data: bytes, path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as err:
        raise ModelFileError(f"{path}: not a valid safetensors file ({err})") from None


def load_weights(path: str | os.PathLike, model: torch.nn.Module, *, require_checksum: bool = True) -> None:
    """Load a weights file into `model`, refusing one whose checksum, names or shapes don't fit.

    The file may be no larger than the tensors `model` needs plus a header, checked before it is
    read, so a config that doesn't match its weights can't make this read a huge file.
    """
    path = Path(path)
    data = read_verified(path, required=require_checksum, max_bytes=_expected_tensor_bytes(model) + MAX_HEADER_BYTES)
    tensors = parse_safetensors(data, path)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, value in tensors.items():
        if value.dtype in HALF_STORAGE and expected[name].dtype == torch.float32:
            value = tensors[name] = value.float()  # weights shipped in half precision (a pretrained model)
        if value.shape != expected[name].shape or value.dtype != expected[name].dtype:
            raise ModelFileError(
                f"{path}: weights do not match the config ({name} is {value.dtype} "
                f"{tuple(value.shape)}, the config needs {expected[name].dtype} "
                f"{tuple(expected[name].shape)})"
            )
    if not all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point()):
        raise ModelFileError(f"{path}: weights hold NaN or infinite values")
    model.load_state_dict(tensors, strict=True)


def config_to_json(cfg: Config, **extra) -> dict:
    return {"format_version": FORMAT_VERSION, "deepautodnn_version": __version__, **cfg.to_dict(), **extra}


def save_model(
    model_dir: str | os.PathLike, model: DeepAutoDNN, cfg: Config, metrics: dict | None = None, **extra
) -> Path:
    """Write a self-describing model directory; `load_model` rebuilds it with no code arguments."""
    model_dir = Path(model_dir)
    save_weights(model_dir / WEIGHTS_FILE, model)
    atomic_write_json(model_dir / CONFIG_FILE, config_to_json(cfg, **extra))
    if metrics is not None:
        atomic_write_json(model_dir / METRICS_FILE, metrics)
    return model_dir


def load_config(model_dir: str | os.PathLike) -> Config:
    return load_config_record(model_dir)[0]


def load_config_record(model_dir: str | os.PathLike) -> tuple[Config, dict]:
    """The directory's Config, and its whole `config.json` (seed, data, format_version, ...),
    read once and checked."""
    model_dir = resolve_model_dir(model_dir)
    if not model_dir.is_dir():
        raise ModelFileError(f"{model_dir}: model directory not found")
    raw = read_json(model_dir / CONFIG_FILE)
    version = raw.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{model_dir / CONFIG_FILE}: format_version must be a whole number >= 1")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{model_dir / CONFIG_FILE}: written by a newer deepautodnn; upgrade to load it")
    try:
        return Config.from_dict(raw), raw
    except (TypeError, ValueError) as err:  # ConfigError, or a bad combination the model refuses
        raise ModelFileError(f"{model_dir / CONFIG_FILE}: invalid config ({err})") from None


def checksums_required(record: dict) -> bool:
    """Whether a `config.json` record (from `load_config_record`) promises .sha256 files; format 1
    predates them."""
    return record.get("format_version", 1) >= 2


def load_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> DeepAutoDNN:
    """Rebuild a trained DeepAutoDNN from its directory (or a pretrained name, such as
    "fashion-mnist": see `deepautodnn.models.pretrained`), in eval mode on `device`.

    The weights must match their `.sha256` and the config's names and shapes exactly; anything
    else is a ModelFileError that names the file. The network is first built on the "meta"
    device (no memory), so a config asking for a huge network fails before any allocation.
    """
    model_dir = resolve_model_dir(model_dir)
    cfg, record = load_config_record(model_dir)
    path = model_dir / WEIGHTS_FILE
    with torch.device("meta"):
        needed = _least_tensor_bytes(DeepAutoDNN(cfg.model))
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    size = path.stat().st_size
    if size < needed:
        raise ModelFileError(
            f"{path}: {size} bytes, but the config's network needs at least {needed} bytes "
            "of weights; the file is truncated or belongs to another config"
        )
    model = DeepAutoDNN(cfg.model)
    load_weights(path, model, require_checksum=checksums_required(record))
    return model.to(device).eval()
