"""ONNX export: a portable model file with a dynamic batch axis and a pinned opset, checked by
ONNX's checker and against PyTorch on real test images through onnxruntime."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

OPSET = 18


def export_onnx(model_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write MODEL_DIR/model.onnx (or `out_path`): input "image" float (batch, 1, H, W) in [0, 1];
    outputs "probabilities" (batch, K) and "reconstruction" (batch, 1, H, W)."""
    import onnx

    from .checkpoint import load_config
    from .inference import ONNX_FILE, load_graph

    out_path = Path(out_path or Path(model_dir) / ONNX_FILE)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    graph = load_graph(model_dir)
    size = load_config(model_dir).model.image_size
    example = torch.rand(2, 1, size, size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with contextlib.redirect_stdout(sys.stderr):  # the exporter prints progress; stdout stays the caller's
        torch.onnx.export(graph, (example,), str(tmp), input_names=["image"],
                          output_names=["probabilities", "reconstruction"], opset_version=OPSET,
                          dynamic_shapes=({0: batch},), dynamo=True, external_data=False)
    onnx.checker.check_model(str(tmp), full_check=True)
    tmp.replace(out_path)  # only a checked file takes the final name
    return out_path


def onnx_parity(model_dir: str | Path, onnx_path: str | Path, images_u8: np.ndarray) -> dict:
    """Compare the ONNX file with PyTorch on the same uint8 images."""
    from .inference import OnnxBackend, TorchBackend

    ref_proba, ref_recon = TorchBackend(model_dir).run(images_u8)
    proba, recon = OnnxBackend(onnx_path).run(images_u8)
    return {
        "n": len(images_u8),
        "argmax_agreement": float((proba.argmax(1) == ref_proba.argmax(1)).mean()),
        "max_abs_diff_probabilities": float(np.abs(proba - ref_proba).max()),
        "max_abs_diff_reconstruction": float(np.abs(recon - ref_recon).max()),
    }
