"""The model directory (`config.json` + `model.safetensors` + `metrics.json`) and atomic writes.

Every file is written to a temporary file in the same folder and then renamed over the target, so
a crash or a full disk never leaves a half-written model behind. Every weights file F gets
`F.sha256` beside it (`sha256sum` format, so `sha256sum -c` checks it by hand), checked on every
load: a truncated, damaged or swapped file is an error, never a wrong model. Only safetensors and
JSON are ever read; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
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
from .errors import DeepAutoDNNError
from .models import DeepAutoDNN

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 2  # 2: weights files carry a .sha256 beside them
CHECKSUM_SUFFIX = ".sha256"
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on its JSON header


class ModelFileError(DeepAutoDNNError, ValueError):
    """A model directory or file is missing or unusable. The message names the file."""


class WriteError(DeepAutoDNNError, OSError):
    """A file could not be written (full disk, no permission, ...); the earlier file is intact.

    Raised as WriteError(errno, strerror, path), like the OSError it replaces."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}; any earlier {Path(self.filename).name} is intact"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either its old bytes or all the new ones.

    Raises WriteError naming the file when the disk is full or the folder can't be written.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteError(err.errno, err.strerror or str(err), str(path)) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


MAX_JSON_BYTES = 64 * 2**20  # far above any config, metrics or record this package writes


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from `path`; anything else (missing, huge, not JSON, not an object) is a
    ModelFileError naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ModelFileError(f"{path}: over {MAX_JSON_BYTES // 2**20} MiB, too large for a JSON record")
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a file") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise ModelFileError(f"{path}: not readable JSON ({str(err)[:200]})") from None
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_with_checksum(path: str | os.PathLike, data: bytes) -> str:
    """Write `data` atomically, then its SHA-256 to `path.sha256`; returns the digest."""
    path = Path(path)
    digest = sha256_hex(data)
    atomic_write_bytes(path, data)
    atomic_write_text(path.with_name(path.name + CHECKSUM_SUFFIX), f"{digest}  {path.name}\n")
    return digest


def recorded_checksum(path: str | os.PathLike) -> str | None:
    """The digest in `path.sha256`, or None when there is none."""
    path = Path(path)
    sidecar = path.with_name(path.name + CHECKSUM_SUFFIX)
    try:
        text = sidecar.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{sidecar}: cannot read the checksum ({err})") from None
    digest = text.split(maxsplit=1)[0].lower() if text.strip() else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ModelFileError(f"{sidecar}: not a SHA-256 checksum")
    return digest


def read_verified(path: str | os.PathLike, *, required: bool = True, max_bytes: int | None = None,
                  digest: str | None = None) -> bytes:
    """The bytes of `path`, checked against `digest` when given, else against `path.sha256`
    (which must exist when `required`)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        expected = digest or recorded_checksum(path)
        if expected is None and required:
            raise ModelFileError(f"{path}: no {path.name}{CHECKSUM_SUFFIX} beside it, so it can't be verified; "
                                 "it was not written by this version of deepautodnn, or its checksum was lost")
        if max_bytes is not None and size > max_bytes:
            raise ModelFileError(f"{path}: {size} bytes is more than the {max_bytes} its config needs; "
                                 "the file does not belong to this config")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a file") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read ({err.strerror or err})") from None
    if expected is not None and sha256_hex(data) != expected:
        where = "the recorded one" if digest else f"{path.name}{CHECKSUM_SUFFIX}"
        raise ModelFileError(f"{path}: SHA-256 does not match {where}; the file was changed, truncated or "
                             "damaged after it was written. Restore it or train again")
    return data


def plain_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies: safetensors refuses shared or non-contiguous storage."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def save_weights(path: str | os.PathLike, model: torch.nn.Module) -> str:
    """`model`'s weights as safetensors, with their SHA-256 beside them; returns the digest."""
    return write_with_checksum(path, save_safetensors_bytes(plain_tensors(model.state_dict()),
                                                            metadata={"format": "pt"}))


def _expected_tensor_bytes(model: torch.nn.Module) -> int:
    return sum(v.numel() * v.element_size() for v in model.state_dict().values())


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
    data = read_verified(path, required=require_checksum,
                         max_bytes=_expected_tensor_bytes(model) + MAX_HEADER_BYTES)
    tensors = parse_safetensors(data, path)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"{path}: weights do not match the config (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    for name, value in tensors.items():
        if value.shape != expected[name].shape or value.dtype != expected[name].dtype:
            raise ModelFileError(f"{path}: weights do not match the config ({name} is {value.dtype} "
                                 f"{tuple(value.shape)}, the config needs {expected[name].dtype} "
                                 f"{tuple(expected[name].shape)})")
    if not all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point()):
        raise ModelFileError(f"{path}: weights hold NaN or infinite values")
    model.load_state_dict(tensors, strict=True)


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
    return load_config_record(model_dir)[0]


def load_config_record(model_dir: str | os.PathLike) -> tuple[Config, dict]:
    """The directory's Config, and its whole `config.json` (seed, data, format_version, ...),
    read once and checked."""
    model_dir = Path(model_dir)
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
    """Rebuild a trained DeepAutoDNN from its directory, in eval mode on `device`.

    The weights must match their `.sha256` and the config's names and shapes exactly; anything
    else is a ModelFileError that names the file. The network is first built on the "meta"
    device (no memory), so a config asking for a huge network fails before any allocation.
    """
    cfg, record = load_config_record(model_dir)
    path = Path(model_dir) / WEIGHTS_FILE
    with torch.device("meta"):
        needed = _expected_tensor_bytes(DeepAutoDNN(cfg.model))
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    size = path.stat().st_size
    if size < needed:
        raise ModelFileError(f"{path}: {size} bytes, but the config's network needs {needed} bytes "
                             "of weights; the file is truncated or belongs to another config")
    model = DeepAutoDNN(cfg.model)
    load_weights(path, model, require_checksum=checksums_required(record))
    return model.to(device).eval()
