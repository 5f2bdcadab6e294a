"""Image files in, class predictions out.

Images are converted to the model's input the simple way: EXIF orientation applied, grayscale,
resized to 28x28. (Robust preprocessing for real product photos is a later step.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_FILE_BYTES = 50 * 2**20  # refuse files over 50 MiB before reading them


class ImageError(ValueError):
    """An input image can't be used. The message names the file."""


def load_image(path: str | os.PathLike, size: int = 28) -> np.ndarray:
    """A uint8 (size, size) grayscale array from an image file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"{path}: file is larger than {MAX_FILE_BYTES // 2**20} MiB")
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img = img.convert("L")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(img, dtype=np.uint8).copy()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (unrecognised format)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: cannot decode image ({err})") from None


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


def predict_files(model, paths, top_k: int = 3, batch_size: int = 256) -> PredictionReport:
    """Predict every readable image in `paths`; unreadable ones are reported, not fatal."""
    from .evaluate import predict_proba

    names = model.config.class_names
    size = model.config.image_size
    images, good, errors = [], [], []
    for path in expand_inputs(paths):
        try:
            images.append(load_image(path, size))
            good.append(path)
        except ImageError as err:
            errors.append({"file": str(path), "error": str(err)})
    predictions = []
    if images:
        proba = predict_proba(model, np.stack(images), batch_size)
        k = max(1, min(top_k, len(names)))
        for path, p in zip(good, proba):
            order = np.argsort(-p, kind="stable")[:k]
            predictions.append({
                "file": str(path),
                "label": names[order[0]],
                "label_index": int(order[0]),
                "probability": float(p[order[0]]),
                "top_k": [{"label": names[i], "label_index": int(i), "probability": float(p[i])} for i in order],
            })
    return PredictionReport(predictions, errors)
