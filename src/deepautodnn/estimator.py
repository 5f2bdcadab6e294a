"""DeepAutoDNN as a scikit-learn classifier, for users' own code, pipelines and grid searches.

`DeepAutoDNNClassifier().fit(X, y)` trains a preset's stages (autoencoder, DNN on the frozen
encoder, optional fine-tuning) on images given as arrays: (N, 28, 28), (N, 784) or (N, 1, 28, 28).
Integer inputs are read as 0-255 grey values; float inputs are scaled by the training data's
range (so [0, 1] images stay as they are). Rows of any other width are laid out row by row on the
smallest square image the encoder accepts (side a multiple of 4, at least 8), zero-padded, so the
estimator also runs on plain tabular data; for 784 features that square is exactly 28x28.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from deepautodnn.models.hybrid import build_model, predict_proba_u8, to_unit


def _side_for(n_features: int, multiple: int) -> int:
    side = max(8, math.isqrt(n_features - 1) + 1 if n_features > 1 else 1)
    return -(-side // multiple) * multiple  # round up to the encoder's pooling multiple


class DeepAutoDNNClassifier(ClassifierMixin, TransformerMixin, BaseEstimator):
    """The hybrid classifier with scikit-learn's fit / predict / predict_proba / score / transform.

    Parameters
    ----------
    preset : "fast", "fast-fp32", "paper" or "best"
        Architecture and schedule (see the README's presets table); "fast" trains "fast-fp32" on a
        device without bf16.
    ae_epochs, dnn_epochs, finetune_epochs : int or None
        Override the preset's epochs per stage (0 skips a stage).
    validation_fraction : float
        Share of the training rows held out (stratified) to pick each stage's best epoch; with too
        few rows per class, no rows are held out and each stage keeps its last epoch.
    random_state : int
        Seed for weights, batches, dropout and the validation split.
    device : str
        "cpu", "cuda" or "auto".
    """

    def __init__(
        self,
        preset: str = "fast",
        ae_epochs: int | None = None,
        dnn_epochs: int | None = None,
        finetune_epochs: int | None = None,
        validation_fraction: float = 0.1,
        random_state: int = 0,
        device: str = "cpu",
    ):
        self.preset = preset
        self.ae_epochs = ae_epochs
        self.dnn_epochs = dnn_epochs
        self.finetune_epochs = finetune_epochs
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device

    # --- input handling -----------------------------------------------------------------------

    def _validated(self, X, y=None, reset: bool = False):
        if isinstance(X, (list, tuple)):
            X = np.asarray(X)
        if getattr(X, "ndim", 0) > 2:
            X = np.asarray(X).reshape(len(X), -1)  # (N, H, W) or (N, 1, H, W) -> (N, H*W)
        if y is None:
            return validate_data(self, X, reset=reset, dtype="numeric")
        return validate_data(self, X, y, reset=reset, dtype="numeric")

    def _to_images(self, X: np.ndarray) -> torch.Tensor:
        """(N, F) -> uint8 (N, 1, S, S), scaled with the range fixed at fit."""
        x = (X.astype(np.float64) - self.input_min_) / max(self.input_max_ - self.input_min_, 1e-12)
        x = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        side = self.image_side_
        padded = np.zeros((len(x), side * side), np.uint8)
        padded[:, : x.shape[1]] = x
        return torch.from_numpy(padded.reshape(-1, 1, side, side))

    # --- scikit-learn API ---------------------------------------------------------------------

    def fit(self, X, y):
        from deepautodnn.config import resolve_preset
        from deepautodnn.data.fashion_mnist import train_val_split
        from deepautodnn.data.transforms import TrainingData
        from deepautodnn.training.stages import train_stages
        from deepautodnn.utils.runtime import bf16_supported, select_device

        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        X, y = self._validated(X, y, reset=True)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"DeepAutoDNNClassifier needs at least 2 classes; got 1 class ({self.classes_[0]!r})")
        integer = np.issubdtype(X.dtype, np.integer) or X.dtype == bool
        self.input_min_, self.input_max_ = (0.0, 255.0) if integer else (float(X.min()), float(X.max()))
        dev = select_device(self.device)
        cfg = resolve_preset(self.preset, bf16=bf16_supported(dev))  # `fast` is `fast-fp32` without bf16
        for name in ("ae_epochs", "dnn_epochs", "finetune_epochs"):
            if getattr(self, name) is not None:
                setattr(cfg.train, name, int(getattr(self, name)))
        self.image_side_ = _side_for(X.shape[1], cfg.model.downsampling)
        cfg.model.image_size = self.image_side_
        if X.shape[1] != self.image_side_**2:
            cfg.train.augment = False  # padded rows are not pictures: shifts and flips would scramble them
        cfg.model.class_names = tuple(str(c) for c in self.classes_)
        images = self._to_images(X)
        counts = np.bincount(y_idx)
        n_val = int(round(self.validation_fraction * len(y_idx)))
        if counts.min() >= 2 and len(self.classes_) <= n_val <= len(y_idx) - len(self.classes_):
            train_idx, val_idx = train_val_split(y_idx, n_val, self.random_state)
        else:
            train_idx, val_idx = np.arange(len(y_idx)), np.arange(0)
        # Small data: shrink the batches so that every epoch still takes at least 8 optimiser steps.
        small = max(16, len(train_idx) // 8)
        t = cfg.train
        t.ae_batch_size, t.dnn_batch_size, t.finetune_batch_size = (
            min(b, small) for b in (t.ae_batch_size, t.dnn_batch_size, t.finetune_batch_size)
        )
        labels = torch.from_numpy(y_idx.astype(np.int64))
        data = TrainingData(
            images[train_idx].to(dev), labels[train_idx].to(dev), images[val_idx].to(dev), labels[val_idx].to(dev)
        )
        model = build_model(cfg, seed=self.random_state, device=dev)
        train_stages(model, data, cfg, seed=self.random_state, device=dev, log=lambda row: None)
        self.model_ = model.to(memory_format=torch.contiguous_format).cpu().eval()
        self.config_ = cfg
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, n_classes), columns in the order of `classes_`."""
        check_is_fitted(self)
        return predict_proba_u8(self.model_, self._to_images(self._validated(X))).numpy()

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # checks fitted before classes_ is read
        return self.classes_[proba.argmax(1)]

    @torch.inference_mode()
    def transform(self, X) -> np.ndarray:
        """The encoder's code, flattened: (N, C * H' * W'), the features the DNN reads."""
        check_is_fitted(self)
        x = self._to_images(self._validated(X))  # (N, 1, S, S) uint8
        codes = [self.model_.forward_features(to_unit(chunk)).flatten(1) for chunk in x.split(1024)]  # (B, C*H'*W')
        return torch.cat(codes).numpy().astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
