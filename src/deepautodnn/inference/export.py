"""ONNX export and the choice of inference backend.

`export_onnx` writes a portable float32 file with a dynamic batch axis and a pinned opset, checked
by ONNX's checker. `quantize_int8` derives a static int8 file from it, calibrated on training
images. `select_backend` measures every backend on the validation split and records, in
`backend.json`, the fastest one whose accuracy holds; `--backend auto` then uses it.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

from deepautodnn.utils.extras import require_extra

OPSET = 18
INT8_MAX_ACCURACY_DROP = 0.002  # a backend "holds accuracy" within 0.2 points of torch float32


def export_graph(graph: torch.nn.Module, image_size: int, out_path: str | Path, output_names=None) -> Path:
    """Export a module of float images (batch, 1, S, S) to ONNX; the file takes its name, with its
    .sha256 beside it, only once the checker has passed it."""
    require_extra("onnx", "ONNX export")
    import onnx

    from deepautodnn.inference.graph import OUTPUT_NAMES
    from deepautodnn.utils.files import write_with_checksum

    output_names = output_names or OUTPUT_NAMES
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, 1, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with contextlib.redirect_stdout(sys.stderr):  # the exporter prints progress; stdout stays the caller's
        torch.onnx.export(
            graph.eval(),
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=list(output_names),
            opset_version=OPSET,
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
        )
    try:
        onnx.checker.check_model(str(tmp), full_check=True)
        write_with_checksum(out_path, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def export_onnx(model_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write MODEL_DIR/model.onnx (or `out_path`): input "image" float (batch, 1, H, W) in [0, 1];
    outputs "probabilities" (batch, K), "reconstruction" (batch, 1, H, W), "logits" (batch, K) and
    "features" (batch, D), the classifier's penultimate activations."""
    from deepautodnn.inference.graph import load_graph
    from deepautodnn.inference.names import ONNX_FILE
    from deepautodnn.models.serialization import load_config

    require_extra("onnx", "ONNX export")  # before loading the model: say so at once
    out_path = Path(out_path or Path(model_dir) / ONNX_FILE)
    return export_graph(load_graph(model_dir), load_config(model_dir).model.image_size, out_path)


def quantize_int8(
    fp32_path: str | Path, out_path: str | Path, calibration_u8: np.ndarray, batch_size: int = 64
) -> Path:
    """Static int8 quantization (QDQ, per-channel int8 weights, uint8 activations) with ONNX
    Runtime, its activation ranges calibrated on `calibration_u8` (N, H, W) training images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from deepautodnn.inference.backends import model_input
    from deepautodnn.utils.files import write_with_checksum

    class Reader(CalibrationDataReader):
        def __init__(self):
            batches = range(0, len(calibration_u8), batch_size)
            self.feeds = iter({"image": model_input(calibration_u8[i : i + batch_size])} for i in batches)

        def get_next(self):
            return next(self.feeds, None)

    out_path = Path(out_path)
    prepared = out_path.with_name(f".{out_path.name}.pre")
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        quant_pre_process(str(fp32_path), str(prepared))  # shape inference and graph folding first
        quantize_static(
            str(prepared),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        write_with_checksum(out_path, tmp.read_bytes())
    finally:
        prepared.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out_path


def onnx_parity(model_dir: str | Path, onnx_path: str | Path, images_u8: np.ndarray) -> dict:
    """Compare the ONNX file with PyTorch on the same uint8 images."""
    from deepautodnn.inference.backends import OnnxBackend, TorchBackend

    ref = TorchBackend.from_model_dir(model_dir).run(images_u8)
    out = OnnxBackend(onnx_path).run(images_u8)
    return {
        "n": len(images_u8),
        "argmax_agreement": float((out.proba.argmax(1) == ref.proba.argmax(1)).mean()),
        "max_abs_diff_probabilities": float(np.abs(out.proba - ref.proba).max()),
        "max_abs_diff_reconstruction": float(np.abs(out.recon - ref.recon).max()),
        "max_abs_diff_features": float(np.abs(out.features - ref.features).max()),
    }


def select_backend(
    model_dir: str | Path, val_images: np.ndarray, val_labels: np.ndarray, seconds_per_batch: float = 1.0
) -> dict:
    """Measure each available backend on the validation images (never the test split): accuracy,
    batch-1 latency and batch-64 throughput. The fastest at batch 64 among those within
    INT8_MAX_ACCURACY_DROP of torch float32 is chosen; the record goes to MODEL_DIR/backend.json."""
    from deepautodnn.errors import ModelFileError
    from deepautodnn.inference.backends import backend_accuracy, make_backend
    from deepautodnn.inference.names import BACKEND_FILE, BACKENDS
    from deepautodnn.inference.timing import backend_speed
    from deepautodnn.utils.files import atomic_write_json
    from deepautodnn.utils.runtime import machine_info

    measured, reference = {}, None
    for name in BACKENDS:
        try:
            backend = make_backend(model_dir, name)
        except (ValueError, ModelFileError) as err:  # e.g. no bf16 on this CPU, no int8 file
            measured[name] = {"available": False, "reason": str(err)}
            continue
        accuracy = backend_accuracy(backend, val_images, val_labels)
        reference = accuracy if name == "torch" else reference
        speed = backend_speed(backend, val_images, batches=(1, 64), seconds_per_batch=seconds_per_batch)
        measured[name] = {
            "available": True,
            "val_accuracy": accuracy,
            "batch1_p50_ms": speed["1"]["p50_ms"],
            "batch64_images_per_s": speed["64"]["images_per_s"],
        }
    for row in measured.values():
        if row["available"]:
            row["holds_accuracy"] = row["val_accuracy"] >= reference - INT8_MAX_ACCURACY_DROP
    eligible = [n for n, r in measured.items() if r["available"] and r["holds_accuracy"]]
    chosen = max(eligible, key=lambda n: measured[n]["batch64_images_per_s"])
    record = {
        "chosen": chosen,
        "rule": f"fastest at batch 64 with validation accuracy within "
        f"{INT8_MAX_ACCURACY_DROP * 100:.1f} points of torch float32",
        "n_validation": len(val_images),
        "backends": measured,
        "machine": machine_info(),
    }
    atomic_write_json(Path(model_dir) / BACKEND_FILE, record)
    return record
