"""Inference backends: the same answer from PyTorch or from an exported ONNX file.

A backend's `run` maps uint8 images (N, 28, 28) to its graph's outputs as arrays: for the
`InferenceGraph` served here, `GraphOutputs` of class probabilities (N, K), the autoencoder's
reconstructions (N, 28, 28) in [0, 1], the logits (N, K) and the classifier's penultimate features
(N, D); all but the probabilities feed unknown-input detection (`deepautodnn.unknown`). An ONNX file
exported before the logits and features were outputs gives None for them.
For a run fine-tuned end to end the reconstruction comes from its stage-1 autoencoder
(`unknown_autoencoder.safetensors`), as in `deepautodnn.unknown`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

ONNX_FILE = "model.onnx"


OUTPUT_NAMES = ("probabilities", "reconstruction", "logits", "features")


class GraphOutputs(NamedTuple):
    """One forward pass as arrays; logits and features are None from an older two-output ONNX file."""

    proba: np.ndarray  # (N, K)
    recon: np.ndarray | None = None  # (N, H, W) in [0, 1]; None from a classify-only graph
    logits: np.ndarray | None = None  # (N, K)
    features: np.ndarray | None = None  # (N, D)


class InferenceGraph(torch.nn.Module):
    """What is exported and served: float images (B, 1, H, W) -> (probabilities (B, K),
    reconstructions (B, 1, H, W), logits (B, K), penultimate features (B, D))."""

    def __init__(self, model, reference_autoencoder=None):
        super().__init__()
        self.model = model
        self.reference = reference_autoencoder

    def forward(self, x: torch.Tensor):
        z = self.model.forward_features(x)  # (B, C, H', W')
        logits, features = self.model.forward_head(z)  # (B, K), (B, D)
        proba = torch.softmax(logits, 1)
        recon = self.reference(x) if self.reference is not None else self.model.autoencoder.decoder(z)
        return proba, recon, logits, features


def load_graph(model_dir: str | Path) -> InferenceGraph:
    from .checkpoint import load_model
    from .unknown import load_reference_autoencoder

    return InferenceGraph(load_model(model_dir), load_reference_autoencoder(model_dir)).eval()


BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")
INT8_ONNX_FILE = "model.int8.onnx"
BACKEND_FILE = "backend.json"  # written by `deepautodnn export`: what each backend measured, which won


def model_input(images_u8: np.ndarray) -> np.ndarray:
    """What every graph here takes: (N, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1]."""
    return (images_u8.astype(np.float32) / 255.0)[:, None]


def _as_numpy(outputs) -> GraphOutputs:
    """Graph outputs as float32 arrays; images (N, 1, H, W) lose their channel axis."""
    arrays = [o.float().numpy() if isinstance(o, torch.Tensor) else np.asarray(o, np.float32) for o in outputs]
    return GraphOutputs(*(a[:, 0] if a.ndim == 4 else a for a in arrays))


class TorchBackend:
    """Eager PyTorch, float32, or bf16 autocast with channels_last where the CPU has AVX512-BF16."""

    def __init__(self, graph: torch.nn.Module, bf16: bool = False):
        from .train import bf16_supported

        self.bf16 = bf16
        if bf16 and not bf16_supported(torch.device("cpu")):
            raise ValueError("backend torch-bf16 needs a CPU with AVX512-BF16 or AMX; use torch or onnx")
        self.name = "torch-bf16" if bf16 else "torch"
        self.graph = graph.eval()
        if bf16:
            self.graph = self.graph.to(memory_format=torch.channels_last)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, bf16: bool = False) -> "TorchBackend":
        return cls(load_graph(model_dir), bf16)

    @torch.inference_mode()
    def run(self, images_u8: np.ndarray) -> GraphOutputs:
        x = torch.from_numpy(model_input(images_u8))  # (N, 1, H, W)
        if not self.bf16:
            outputs = self.graph(x)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outputs = self.graph(x.contiguous(memory_format=torch.channels_last))
        return _as_numpy(outputs if isinstance(outputs, tuple) else (outputs,))


class OnnxBackend:
    """ONNX Runtime on the CPU, from an exported float32 or int8 file."""

    def __init__(self, onnx_path: str | Path, name: str = "onnx", threads: int | None = None):
        import onnxruntime as ort

        from .checkpoint import ModelFileError, read_verified

        path = Path(onnx_path)
        self.name = name
        if not path.exists():
            raise ModelFileError(f"{path}: no ONNX file (make one with `deepautodnn export MODEL_DIR`)")
        graph = read_verified(path)  # the bytes `export` wrote, by their .sha256; ORT parses these bytes
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{path}: not a usable ONNX model ({err})") from None
        self.input_name = self.session.get_inputs()[0].name

    def run(self, images_u8: np.ndarray) -> GraphOutputs:
        return _as_numpy(self.session.run(None, {self.input_name: model_input(images_u8)}))


def chosen_backend(model_dir: str | Path) -> str:
    """The backend `export` found fastest among those that hold accuracy; "torch" before any export."""
    from .checkpoint import read_json

    path = Path(model_dir) / BACKEND_FILE
    if not path.exists():
        return "torch"
    choice = read_json(path).get("chosen", "torch")
    return choice if choice in BACKENDS else "torch"


def make_backend(model_dir: str | Path, backend: str = "auto"):
    """A backend for a model directory. "auto" is the one `deepautodnn export` chose (see BACKEND_FILE)."""
    if backend == "auto":
        backend = chosen_backend(model_dir)
    if backend in ("torch", "torch-bf16"):
        return TorchBackend.from_model_dir(model_dir, bf16=backend == "torch-bf16")
    if backend == "onnx":
        return OnnxBackend(Path(model_dir) / ONNX_FILE)
    if backend == "onnx-int8":
        return OnnxBackend(Path(model_dir) / INT8_ONNX_FILE, name="onnx-int8")
    raise ValueError(f"unknown backend {backend!r}; use auto or one of {', '.join(BACKENDS)}")


def backend_accuracy(backend, images_u8: np.ndarray, labels: np.ndarray, batch_size: int = 1024) -> float:
    """Share of `images_u8` whose top class from `backend` (first output) matches `labels`."""
    proba = run_batched(backend, images_u8, batch_size).proba
    return float((proba.argmax(1) == labels).mean())


def run_batched(backend, images_u8: np.ndarray, batch_size: int = 1024) -> GraphOutputs:
    """`backend.run` over `images_u8` in chunks, the outputs concatenated."""
    parts = [backend.run(images_u8[i:i + batch_size]) for i in range(0, len(images_u8), batch_size)]
    if not parts:
        raise ValueError("no images to run")
    return GraphOutputs(*(None if part[0] is None else np.concatenate(part) for part in zip(*parts)))
