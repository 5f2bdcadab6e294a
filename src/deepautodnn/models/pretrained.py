"""Pretrained models shipped inside the package, by name: `resolve_model_dir("fashion-mnist")` is a
model directory like any other, so every command and function that takes one takes a name too.

Each shipped directory holds a `MANIFEST.json` with the SHA-256 of every file in it (weights,
config, metrics, the unknown-input detector). `resolve_model_dir` checks them all before it hands
out the directory: a damaged or edited install is an error that names the file, never a wrong
model. `scripts/make_pretrained.py` makes the directory and records the same digests, with the
model's test accuracy, in `results/pretrained_fashion-mnist.json`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from deepautodnn.errors import ModelFileError
from deepautodnn.utils.files import read_json, sha256_hex

MANIFEST_FILE = "MANIFEST.json"
MAX_SHIPPED_FILE_BYTES = 64 * 2**20  # far above anything shipped; a bigger file is not ours

# name -> one line on what it is; the files live in deepautodnn/models/shipped/NAME/
PRETRAINED = {
    "fashion-mnist": "the `fast` preset trained on Fashion-MNIST (seed 0), with its unknown-input detector",
}


def pretrained_root() -> Path:
    return Path(str(resources.files("deepautodnn.models") / "shipped"))


def pretrained_dir(name: str) -> Path:
    """The shipped directory of pretrained model `name`, its files checked against its manifest."""
    if name not in PRETRAINED:
        raise ModelFileError(f"{name}: no pretrained model of that name (known: {', '.join(PRETRAINED)})")
    model_dir = pretrained_root() / name
    manifest_path = model_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelFileError(
            f"{manifest_path}: the pretrained model {name!r} is not installed with this copy of deepautodnn "
            "(reinstall it, or make it with scripts/make_pretrained.py)"
        )
    verify_manifest(model_dir, read_json(manifest_path))
    return model_dir


def verify_manifest(model_dir: Path, manifest: dict) -> None:
    """Every file the manifest names exists and has its SHA-256; the directory holds no other model files."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelFileError(f"{model_dir / MANIFEST_FILE}: no 'files' table of name -> sha256")
    for name, digest in files.items():
        path = model_dir / name
        if Path(name).name != name or not path.is_file():
            raise ModelFileError(f"{path}: missing from the pretrained model (named in {MANIFEST_FILE})")
        if path.stat().st_size > MAX_SHIPPED_FILE_BYTES:
            raise ModelFileError(f"{path}: larger than any file the pretrained model ships")
        if sha256_hex(path.read_bytes()) != digest:
            raise ModelFileError(f"{path}: SHA-256 differs from {MANIFEST_FILE}; the install is damaged or edited")


def is_pretrained_name(value: str | os.PathLike) -> bool:
    return os.fspath(value) in PRETRAINED


def resolve_model_dir(model: str | os.PathLike) -> Path:
    """A model directory from a path or a pretrained name.

    A directory that holds a `config.json` wins, so a user's own folder is never shadowed by a
    name; otherwise a known name is the shipped model; otherwise the path as given (whose loading
    then says what is wrong with it)."""
    path = Path(model)
    if (path / "config.json").is_file() or not is_pretrained_name(model):
        return path
    return pretrained_dir(os.fspath(model))


def pretrained_models() -> list[dict]:
    """The shipped models: name, description, directory, whether installed, and its test metrics."""
    rows = []
    for name, description in PRETRAINED.items():
        model_dir = pretrained_root() / name
        manifest_path = model_dir / MANIFEST_FILE
        manifest = read_json(manifest_path) if manifest_path.is_file() else {}
        rows.append(
            {
                "name": name,
                "description": description,
                "path": str(model_dir),
                "installed": bool(manifest),
                "test_accuracy": manifest.get("test_accuracy"),
                "weights_dtype": manifest.get("weights_dtype"),
            }
        )
    return rows
