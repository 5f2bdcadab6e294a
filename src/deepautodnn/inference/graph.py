"""The inference graph: float images (B, 1, H, W) in [0, 1] in; probabilities, reconstruction, logits and
features out.

The same module is run eagerly by the torch backends and exported to ONNX.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from deepautodnn.models.hybrid import embedding_from

OUTPUT_NAMES = ("probabilities", "reconstruction", "logits", "features")  # what ONNX export names


class GraphOutputs(NamedTuple):
    """One forward pass as arrays; logits and features are None from an older two-output ONNX file."""

    proba: np.ndarray  # (N, K)
    recon: np.ndarray | None = None  # (N, H, W) in [0, 1]; None from a classify-only graph
    logits: np.ndarray | None = None  # (N, K)
    features: np.ndarray | None = None  # (N, D)
    embedding: np.ndarray | None = None  # (N, D') L2-normalised search vectors, only when asked for


# Each graph output's field in GraphOutputs.
OUTPUT_FIELDS = {"probabilities": "proba", "reconstruction": "recon", "logits": "logits", "features": "features"}


class InferenceGraph(torch.nn.Module):
    """What is exported and served: float images (B, 1, H, W) -> (probabilities (B, K),
    reconstructions (B, 1, H, W), logits (B, K), penultimate features (B, D)).

    The reconstruction runs a whole autoencoder, as much work again as the classifier, and only the
    web page's picture and older unknown detectors read it: `reconstruction=False` skips it (None).
    `embedding="code"` or `"penultimate"` adds a fifth output, the search vectors (`models.hybrid.
    embedding_from`); the exported graph has none."""

    def __init__(self, model, reference_autoencoder=None):
        super().__init__()
        self.model = model
        self.reference = reference_autoencoder

    def forward(self, x: torch.Tensor, reconstruction: bool = True, embedding: str | None = None):
        z = self.model.forward_features(x)  # (B, C, H', W')
        logits, features = self.model.forward_head(z)  # (B, K), (B, D)
        proba = torch.softmax(logits, 1)
        recon = None
        if reconstruction:
            recon = self.reference(x) if self.reference is not None else self.model.decode(z)  # (B, 1, H, W)
        if embedding is None:
            return proba, recon, logits, features
        return proba, recon, logits, features, embedding_from(z, features, embedding)  # (B, D')


def load_graph(model_dir: str | Path) -> InferenceGraph:
    from deepautodnn.inference.ood import load_reference_autoencoder
    from deepautodnn.models.serialization import load_model

    return InferenceGraph(load_model(model_dir), load_reference_autoencoder(model_dir)).eval()
