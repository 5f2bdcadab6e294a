"""Inference backends: the same answer from PyTorch or from an exported ONNX file.

A backend maps uint8 images (N, 28, 28) to class probabilities (N, K) and the autoencoder's
reconstructions (N, 28, 28) in [0, 1]; the reconstruction error feeds unknown-input detection.
For a run fine-tuned end to end the reconstruction comes from its stage-1 autoencoder
(`unknown_autoencoder.safetensors`), as in `deepautodnn.unknown`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

ONNX_FILE = "model.onnx"


class InferenceGraph(torch.nn.Module):
    """What is exported and served: float images (B, 1, H, W) -> (probabilities (B, K),
    reconstructions (B, 1, H, W))."""

    def __init__(self, model, reference_autoencoder=None):
        super().__init__()
        self.model = model
        self.reference = reference_autoencoder

    def forward(self, x: torch.Tensor):
        z = self.model.encoder(x)  # (B, C, H', W')
        proba = torch.softmax(self.model.classifier(z), 1)
        recon = self.reference(x) if self.reference is not None else self.model.autoencoder.decoder(z)
        return proba, recon


def load_graph(model_dir: str | Path) -> InferenceGraph:
    from .checkpoint import load_model
    from .unknown import load_reference_autoencoder

    return InferenceGraph(load_model(model_dir), load_reference_autoencoder(model_dir)).eval()


class TorchBackend:
    name = "torch"

    def __init__(self, model_dir: str | Path):
        self.graph = load_graph(model_dir)

    @torch.inference_mode()
    def run(self, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(images_u8)).unsqueeze(1).float() / 255.0  # (N, 1, H, W)
        proba, recon = self.graph(x)
        return proba.float().numpy(), recon[:, 0].float().numpy()


class OnnxBackend:
    name = "onnx"

    def __init__(self, onnx_path: str | Path):
        import onnxruntime as ort

        from .checkpoint import ModelFileError

        path = Path(onnx_path)
        if not path.exists():
            raise ModelFileError(f"{path}: no ONNX file (make one with `deepautodnn export MODEL_DIR`)")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{path}: not a usable ONNX model ({err})") from None

    def run(self, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = (images_u8.astype(np.float32) / 255.0)[:, None]  # (N, 1, H, W)
        proba, recon = self.session.run(None, {"image": x})
        return proba, recon[:, 0]


def make_backend(model_dir: str | Path, backend: str = "torch"):
    if backend == "torch":
        return TorchBackend(model_dir)
    if backend == "onnx":
        return OnnxBackend(Path(model_dir) / ONNX_FILE)
    raise ValueError(f"unknown backend {backend!r}; use 'torch' or 'onnx'")


def reconstruction_error(images_u8: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Per-image MSE between the input in [0, 1] and its reconstruction: (N,)."""
    x = images_u8.astype(np.float32) / 255.0
    return ((recon - x) ** 2).reshape(len(x), -1).mean(1)
