"""Image files in, class predictions out, through the one preprocessing path (`preprocess`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepautodnn.data.preprocess import ImageError, load_preprocessed

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def expand_inputs(paths) -> list[Path]:
    """Files as given, and the image files inside any directory (sorted, not recursive)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


@dataclass
class PredictionReport:
    predictions: list[dict]
    errors: list[dict]  # {"file": ..., "error": ...} for each file that could not be used


def prediction_record(name: str, proba: np.ndarray, class_names, top_k: int, unknown_score=None) -> dict:
    """One image's answer, as `predict` and the HTTP service give it."""
    order = np.argsort(-proba, kind="stable")[:top_k]
    return {
        "file": name,
        "label": class_names[order[0]],
        "label_index": int(order[0]),
        "probability": float(proba[order[0]]),
        "unknown": None if unknown_score is None else bool(unknown_score > 1.0),
        "unknown_score": None if unknown_score is None else float(unknown_score),
        "top_k": [{"label": class_names[i], "label_index": int(i), "probability": float(proba[i])} for i in order],
    }


def run_with_detection(
    backend,
    detector,
    images_u8: np.ndarray,
    evidence: list[dict] | None = None,
    batch_size: int = 1024,
    reconstruction: bool = False,
    embedding: str | None = None,
):
    """One pass of `backend` over model inputs (N, H, W) uint8 -> (GraphOutputs, unknown scores (N,)
    or None without a detector). `evidence` is preprocessing's, one dict per image. The
    reconstruction is computed when asked for or when the detector reads it, else skipped;
    `embedding` (a space, torch backends only) adds the search vectors."""
    from deepautodnn.inference.backends import run_batched

    reconstruction = reconstruction or bool(detector is not None and detector.needs_reconstruction)
    out = run_batched(backend, images_u8, batch_size, reconstruction=reconstruction, embedding=embedding)
    if detector is None:
        return out, None
    return out, detector.scores(out, images_u8, evidence, backend.name)


def predict_files(model, paths, top_k: int = 3, batch_size: int = 256, detector=None, backend=None) -> PredictionReport:
    """Predict every readable image in `paths`; unreadable ones are reported, not fatal.

    With a detector (`UnknownDetector.load(model_dir)`), each prediction says whether the input
    looks unlike the training data (`unknown`) and by how much (`unknown_score`, > 1 is unknown);
    without one both are None. `backend` (see `deepautodnn.inference`, e.g. ONNX) runs the model;
    by default it is `model` itself in PyTorch float32.
    """
    from deepautodnn.inference.backends import TorchBackend
    from deepautodnn.inference.graph import InferenceGraph

    names = model.config.class_names
    size = model.config.image_size
    images, evidence, good, errors = [], [], [], []
    for path in expand_inputs(paths):
        try:
            prepared = load_preprocessed(path, size)
        except ImageError as err:
            errors.append({"file": str(path), "error": str(err)})
            continue
        images.append(prepared.image)
        evidence.append(prepared.evidence)
        good.append(path)
    predictions = []
    if images:
        if backend is None:
            backend = TorchBackend(InferenceGraph(model, detector.autoencoder if detector else None))
        out, scores = run_with_detection(backend, detector, np.stack(images), evidence, batch_size)
        scores = [None] * len(good) if scores is None else scores
        k = max(1, min(top_k, len(names)))
        predictions = [
            prediction_record(str(path), p, names, k, score) for path, p, score in zip(good, out.proba, scores)
        ]
    return PredictionReport(predictions, errors)
