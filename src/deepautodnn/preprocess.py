"""Real images to the model's input, the way Fashion-MNIST itself was made.

Zalando built Fashion-MNIST from product photos on white: trim the edges that match the corner
colour, fit the longest side to 28 pixels, centre on a square, negate the intensities and keep
8-bit grey. `to_model_input` does the same to any image, so a shop's photo looks like the data the
model learned from:

1. decode safely: a size limit on the file and on the declared pixel count, checked before
   decoding; the first frame of an animation; EXIF orientation applied;
2. grey: any mode (L, RGB, P, CMYK, 16-bit, float) to 8-bit luminance; transparent pixels become
   background (composited onto white, as a product shot);
3. polarity: a light background (the median of the border) is negated, so the object is bright on
   dark; the background level is then subtracted, so the background is 0 as in Fashion-MNIST;
4. trim to the object: the bounding box of pixels that differ from the background by more than 5%;
5. fit the longest side to the model's size and centre on a black square.

An image that is already the model's size with a dark background is taken as it is (it is in the
dataset's own format), so Fashion-MNIST images saved as PNG round-trip exactly.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .errors import DeepAutoDNNError

MAX_FILE_BYTES = 50 * 2**20  # refuse files over 50 MiB before reading them
MAX_PIXELS = 40_000_000  # refuse declared sizes over 40 megapixels before decoding (bombs)
TRIM_THRESHOLD = 0.05  # a pixel is object if it differs from the background by > 5% of full scale


class ImageError(DeepAutoDNNError, ValueError):
    """An input image can't be used. The message names the file."""


def open_image(source, name: str | None = None):
    """A decoded PIL image (first frame, EXIF-rotated) from a path or bytes, with the limits checked."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray)):
        name = name or "<bytes>"
        if len(source) > MAX_FILE_BYTES:
            raise ImageError(f"{name}: file is larger than {MAX_FILE_BYTES // 2**20} MiB")
        if not source:
            raise ImageError(f"{name}: empty file")
        opener = lambda: Image.open(io.BytesIO(source))  # noqa: E731
    else:
        path = Path(source)
        name = name or str(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageError(f"{name}: file not found") from None
        if path.is_dir():
            raise ImageError(f"{name}: is a directory")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{name}: file is larger than {MAX_FILE_BYTES // 2**20} MiB")
        if size == 0:
            raise ImageError(f"{name}: empty file")
        opener = lambda: Image.open(path)  # noqa: E731
    try:
        with opener() as img:
            width, height = img.size  # from the header; nothing is decoded yet
            if width * height > MAX_PIXELS:
                raise ImageError(f"{name}: {width}x{height} pixels is over the limit of "
                                 f"{MAX_PIXELS // 10**6} megapixels (refused before decoding)")
            if width == 0 or height == 0:
                raise ImageError(f"{name}: image has no pixels ({width}x{height})")
            img.seek(0)  # animated files: the first frame
            img.load()
            return ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (unrecognised format)") from None
    except Image.DecompressionBombError:
        # Pillow's own guard fires on opening for sizes far over ours.
        raise ImageError(f"{name}: declared size is over the limit of {MAX_PIXELS // 10**6} megapixels "
                         f"(refused before decoding)") from None
    except (OSError, ValueError, EOFError, SyntaxError) as err:
        raise ImageError(f"{name}: cannot decode image ({err})") from None


def to_gray(img) -> np.ndarray:
    """8-bit luminance (H, W) of any PIL mode; transparency is composited onto white."""
    from PIL import Image

    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("L"), dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        # 16-bit and float images: scale the value range to 0..255 instead of clipping at 255.
        a = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and a.max(initial=0) > 255):
            a = a / (65535.0 if a.max(initial=0) > 255 else 255.0) * 255.0
        elif mode == "F":
            lo, hi = float(a.min(initial=0)), float(a.max(initial=1))
            a = (a - lo) / (hi - lo or 1.0) * 255.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if mode != "L":
        img = img.convert("RGB").convert("L")  # CMYK, YCbCr, 1, RGB...
    return np.asarray(img, dtype=np.uint8)


def _border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def to_dark_background(gray: np.ndarray) -> np.ndarray:
    """Negate a light background, then subtract the background level, so it is 0: (H, W) uint8."""
    x = gray.astype(np.float32)
    background = float(np.median(_border(gray)))
    if background > 127:
        x, background = 255.0 - x, 255.0 - background
    x = (x - background) / max(1.0, 255.0 - background) * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def trim(dark: np.ndarray) -> np.ndarray:
    """The bounding box of the object (pixels above the trim threshold); the whole image if blank."""
    rows, cols = np.nonzero(dark > TRIM_THRESHOLD * 255)
    if len(rows) == 0:
        return dark
    return dark[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def fit_square(obj: np.ndarray, size: int) -> np.ndarray:
    """Resize so the longest side is `size`, and centre on a black (size, size) canvas."""
    from PIL import Image

    h, w = obj.shape
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(Image.fromarray(obj).resize((new_w, new_h), Image.Resampling.LANCZOS))
    canvas = np.zeros((size, size), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas


def preprocessing_steps(img, size: int = 28) -> list[tuple[str, np.ndarray]]:
    """Each step's output, in order; the last is the model's input (size, size) uint8."""
    gray = to_gray(img)
    if gray.shape == (size, size) and np.median(_border(gray)) <= 127:
        return [("grey", gray), ("model input", gray)]  # already in the dataset's format
    dark = to_dark_background(gray)
    obj = trim(dark)
    return [("grey", gray), ("dark background", dark), ("trimmed", obj), ("model input", fit_square(obj, size))]


def to_model_input(img, size: int = 28) -> np.ndarray:
    """A decoded PIL image -> the model's uint8 (size, size) input."""
    return preprocessing_steps(img, size)[-1][1]


def load_image(source: str | os.PathLike | bytes, size: int = 28, name: str | None = None) -> np.ndarray:
    """A file path or the bytes of an image file -> the model's uint8 (size, size) input."""
    img = open_image(source, name)
    try:
        return to_model_input(img, size)
    except (OSError, ValueError) as err:
        label = name or ("<bytes>" if isinstance(source, (bytes, bytearray)) else source)
        raise ImageError(f"{label}: cannot convert image ({err})") from None
