"""deepautodnn: the DeepAutoDNN apparel classifier (convolutional autoencoder + deep neural network).

Public API::

    from deepautodnn import load_model, train_run, get_preset, load_fashion_mnist
    from deepautodnn import run_baselines, run_ablation, write_paper_report

Names are imported on first use (PEP 562), so `import deepautodnn` and `deepautodnn --help` do not
load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from deepautodnn.version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "CLASS_NAMES": "deepautodnn.config",
    "Config": "deepautodnn.config",
    "ModelConfig": "deepautodnn.config",
    "TrainConfig": "deepautodnn.config",
    "get_preset": "deepautodnn.config",
    "resolve_preset": "deepautodnn.config",
    "load_fashion_mnist": "deepautodnn.data.fashion_mnist",
    "ImageError": "deepautodnn.data.preprocess",
    "load_image": "deepautodnn.data.preprocess",
    "ConvAutoencoder": "deepautodnn.models.hybrid",
    "DeepAutoDNN": "deepautodnn.models.hybrid",
    "DeepClassifier": "deepautodnn.models.hybrid",
    "load_model": "deepautodnn.models.serialization",
    "save_model": "deepautodnn.models.serialization",
    "train_run": "deepautodnn.training.run",
    "classification_metrics": "deepautodnn.inference.evaluate",
    "evaluate_model": "deepautodnn.inference.evaluate",
    "predict_proba": "deepautodnn.inference.evaluate",
    "predict_files": "deepautodnn.inference.predict",
    "UnknownDetector": "deepautodnn.inference.ood",
    "DeepAutoDNNClassifier": "deepautodnn.estimator",
    "run_baselines": "deepautodnn.experiments.baselines",
    "run_ablation": "deepautodnn.experiments.ablation",
    "write_paper_report": "deepautodnn.experiments.report",
}

__all__ = [
    "__version__",
    "CLASS_NAMES",
    "Config",
    "ConvAutoencoder",
    "DeepAutoDNN",
    "DeepAutoDNNClassifier",
    "DeepClassifier",
    "ImageError",
    "ModelConfig",
    "TrainConfig",
    "UnknownDetector",
    "classification_metrics",
    "evaluate_model",
    "get_preset",
    "load_fashion_mnist",
    "load_image",
    "load_model",
    "predict_files",
    "predict_proba",
    "resolve_preset",
    "run_ablation",
    "run_baselines",
    "save_model",
    "train_run",
    "write_paper_report",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'deepautodnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from deepautodnn.config import CLASS_NAMES, Config, ModelConfig, TrainConfig, get_preset, resolve_preset
    from deepautodnn.data.fashion_mnist import load_fashion_mnist
    from deepautodnn.data.preprocess import ImageError, load_image
    from deepautodnn.estimator import DeepAutoDNNClassifier
    from deepautodnn.experiments.ablation import run_ablation
    from deepautodnn.experiments.baselines import run_baselines
    from deepautodnn.experiments.report import write_paper_report
    from deepautodnn.inference.evaluate import classification_metrics, evaluate_model, predict_proba
    from deepautodnn.inference.ood import UnknownDetector
    from deepautodnn.inference.predict import predict_files
    from deepautodnn.models.hybrid import ConvAutoencoder, DeepAutoDNN, DeepClassifier
    from deepautodnn.models.serialization import load_model, save_model
    from deepautodnn.training.run import train_run
