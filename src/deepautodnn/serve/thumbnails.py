"""Small JPEG thumbnails of catalogue items, for `POST /v1/similar?thumbnails=true` and the page.

Only files the index holds are ever opened (the route takes no path from the client). A JPEG is
decoded at a reduced scale (Pillow's `draft`), so a 600x500 photo costs about a millisecond."""

from __future__ import annotations

import base64
import io

from PIL import Image, UnidentifiedImageError

THUMBNAIL_SIDE = 96  # pixels, the longer side
MAX_PIXELS = 50_000_000  # a catalogue file larger than this is not thumbnailed (decompression bombs)


def thumbnail_base64(path: str, side: int = THUMBNAIL_SIDE) -> str | None:
    """A JPEG of the image at `path`, at most `side` pixels wide and high, base64-encoded; None
    when the file is gone or unreadable (the neighbour is still listed)."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                return None
            image.draft("RGB", (2 * side, 2 * side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            image = image.convert("RGB")
            image.thumbnail((side, side))
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=85)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return base64.b64encode(buf.getvalue()).decode()
