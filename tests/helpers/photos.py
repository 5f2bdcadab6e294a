"""Product photos of Fashion-MNIST garments for tests: small, so that tests stay fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def product_photo(arr: np.ndarray, path: Path) -> Path:
    """A dark garment on a white 120x100 canvas, as a JPEG: a shop photo, small to keep tests fast."""
    garment = Image.fromarray(255 - arr).resize((84, 84), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (120, 100), 255)
    canvas.paste(garment, (18, 8))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.convert("RGB").save(path, quality=90)
    return path
