"""Small JPEG thumbnails of catalogue items, for `POST /v1/similar?thumbnails=true` and the page.

Only files the index holds are ever opened (the route takes no path from the client). They are
opened by preprocessing's `open_image`, with its limits (file size, pixels) and EXIF rotation; a
JPEG is decoded at a reduced scale, so a 600x500 photo costs about a millisecond."""

from __future__ import annotations

import base64
import io

from deepautodnn.data.preprocess import ImageError, open_image

THUMBNAIL_SIDE = 96  # pixels, the longer side


def thumbnail_base64(path: str, side: int = THUMBNAIL_SIDE) -> str | None:
    """A JPEG of the image at `path`, at most `side` pixels wide and high, base64-encoded; None
    when the file is gone or unreadable (the neighbour is still listed)."""
    try:
        image = open_image(path, draft_side=2 * side).convert("RGB")
    except (ImageError, OSError):
        return None
    image.thumbnail((side, side))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode()
