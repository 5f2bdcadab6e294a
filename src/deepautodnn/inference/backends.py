"""Running a saved model: PyTorch (float32 or bf16) or ONNX Runtime (float32 or int8), one interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepautodnn.inference.graph import GraphOutputs, load_graph
from deepautodnn.inference.names import BACKEND_FILE, BACKENDS, INT8_ONNX_FILE, ONNX_FILE
from deepautodnn.utils.extras import missing_extra


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
        from deepautodnn.utils.runtime import bf16_supported

        self.bf16 = bf16
        if bf16 and not bf16_supported(torch.device("cpu")):
            raise ValueError("backend torch-bf16 needs a CPU with AVX512-BF16 or AMX; use torch or onnx")
        self.name = "torch-bf16" if bf16 else "torch"
        self.graph = graph.eval()
        if bf16:
            self.graph = self.graph.to(memory_format=torch.channels_last)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, bf16: bool = False) -> TorchBackend:
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
        try:
            import onnxruntime as ort
        except ModuleNotFoundError:
            raise missing_extra("onnx", f"the {name} backend", "onnxruntime") from None

        from deepautodnn.errors import ModelFileError
        from deepautodnn.utils.files import read_verified

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
    from deepautodnn.utils.files import read_json

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
    parts = [backend.run(images_u8[i : i + batch_size]) for i in range(0, len(images_u8), batch_size)]
    if not parts:
        raise ValueError("no images to run")
    return GraphOutputs(*(None if part[0] is None else np.concatenate(part) for part in zip(*parts)))
