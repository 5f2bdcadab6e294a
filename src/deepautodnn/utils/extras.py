"""Optional dependencies come in extras (`pip install 'deepautodnn[serve]'`); a missing one is a
one-line error that names the extra to install, never an ImportError traceback."""

from __future__ import annotations

import importlib.util

from deepautodnn.errors import DeepAutoDNNError

# extra -> the modules it brings (import names), as listed in pyproject.toml
EXTRAS = {
    "serve": ("fastapi", "uvicorn", "multipart"),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "report": ("matplotlib", "skimage"),
}


class MissingExtraError(DeepAutoDNNError, ImportError):
    """An optional dependency is not installed. The message says which extra brings it."""


def missing_extra(extra: str, purpose: str, module: str) -> MissingExtraError:
    return MissingExtraError(f"{purpose} needs {module}, which is not installed: pip install 'deepautodnn[{extra}]'")


def require_extra(extra: str, purpose: str) -> None:
    """Raise MissingExtraError unless every module of `extra` can be imported (checked without importing)."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise missing_extra(extra, purpose, module)
