"""Optional dependencies come in extras (`pip install 'deepautodnn[serve]'`); a missing one is a
one-line error that names the extra to install, never an ImportError traceback."""

from __future__ import annotations

import importlib.util
import sys

from deepautodnn.errors import DeepAutoDNNError

# extra -> the modules it brings (import names), as listed in pyproject.toml
EXTRAS = {  # what each extra needs; [serve] also brings httptools, uvloop and orjson, used where present
    "serve": ("fastapi", "uvicorn", "multipart", "prometheus_client"),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "report": ("matplotlib", "skimage"),
    "catalogue": ("pyarrow",),
    "ray": ("ray", "pyarrow"),
    "search": ("faiss", "pyarrow"),
}


class MissingExtraError(DeepAutoDNNError, ImportError):
    """An optional dependency is not installed. The message says which extra brings it."""


def missing_extra(extra: str, purpose: str, module: str) -> MissingExtraError:
    return MissingExtraError(f"{purpose} needs {module}, which is not installed: pip install 'deepautodnn[{extra}]'")


def installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (None in sys.modules blocks it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extra(extra: str, purpose: str) -> None:
    """Raise MissingExtraError unless every module of `extra` is installed."""
    for module in EXTRAS[extra]:
        if not installed(module):
            raise missing_extra(extra, purpose, module)
