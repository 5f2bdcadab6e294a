"""Seeded "foreign" images for the out-of-distribution (unknown-input) benchmark.

The apparel classifier learns Fashion-MNIST: 28x28 grey garments, bright on black. Anyone can send
it anything else, so the benchmark measures how often the unknown-input detector flags images that
are no garment at all. `foreign_sets(n, seed)` returns, for each set below, `n` images encoded as
PNG bytes (fewer only where the source has fewer), ready to push through the package's real
preprocessing (`deepautodnn.data.preprocess.load_image(png, name=...)`), just as an uploaded file would
be. Everything is drawn from `numpy.random.default_rng` keyed by the seed and the set's name, so a
set is the same whatever other sets or `n` are asked for (a smaller `n` gives a prefix).

Noise: no structure at all; the easiest case and a check that the detector isn't blind.

- uniform_noise_28px_grey / _colour: uniform 0-255 pixels at the model's own size, so nothing is
  resampled on the way in (the preprocessing still sees a mid-grey border and shifts the levels);
- uniform_noise_256px_grey / _colour: the same at photo size, so it is downscaled on the way in;
- gaussian_noise_28px_grey / gaussian_noise_256px_colour: mean 128, sd 40-60 (per image), clipped;
  softer noise, closer to the mid-grey texture of a photo.

Near misses: small centred things on plain backgrounds, the shape of data the preprocessing was
built for (an object on a plain background, trimmed and centred), so they reach the model looking
much like a garment would; the hardest sets.

- sklearn_digits: scikit-learn's 8x8 handwritten digits upscaled (bicubic) to 64 px, half light
  on dark and half dark on light (the preprocessing normalises polarity; both paths are covered);
- font_digits: 0-9 typeset in random sizes, positions, slight rotations, weights and colours, on
  light and dark backgrounds, 64-256 px canvases (an MNIST-like intruder);
- font_letters: single letters A-Z and a-z, likewise;
- rendered_words: a short word, or 2-3 lines of words, on a page-like background (screenshots and
  photos of text, which people do send to image endpoints);
- geometric_shapes: 1-3 filled or outlined circles, rectangles, triangles, stars, polygons and
  ellipses in random colours on a plain light or dark background (logos, icons, clip art; a filled
  rectangle or blob is the closest thing here to a garment silhouette).

Backgrounds: images with little or no object, where the preprocessing's trim finds only a
gradient or nothing.

- flat_colours_and_gradients: one flat colour, a two-colour linear gradient in a random direction,
  or a radial gradient / vignette. A flat colour reaches the model as an all-black 28x28 input.

Photos: natural and scientific images, the realistic "wrong upload".

- skimage_photos: every sample image in `skimage.data` that loads offline (those that need a
  download are skipped, nothing is fetched), each upright and rotated 90/180/270 degrees; `n` is
  ignored for this set. Volumes give their middle slice; bool/float/16-bit images are scaled to
  8 bits; transparent ones (the logo) stay RGBA.

    python benchmarks/foreign_images.py /tmp/foreign_sheet.png [--n 300] [--seed 0]

writes a contact sheet (a few images of each set, with the 28x28 model input that the package's
preprocessing makes of each beside it) for a person to look at.
"""

from __future__ import annotations

import inspect
import io
import math
import os
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SETS: tuple[str, ...] = (
    "uniform_noise_28px_grey",
    "uniform_noise_28px_colour",
    "uniform_noise_256px_grey",
    "uniform_noise_256px_colour",
    "gaussian_noise_28px_grey",
    "gaussian_noise_256px_colour",
    "sklearn_digits",
    "font_digits",
    "font_letters",
    "rendered_words",
    "geometric_shapes",
    "flat_colours_and_gradients",
    "skimage_photos",
)

WORDS: tuple[str, ...] = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "hello",
    "world",
    "image",
    "model",
    "apple",
    "river",
    "house",
    "green",
    "paper",
    "table",
    "light",
    "water",
    "music",
    "garden",
    "window",
    "summer",
    "winter",
    "coffee",
    "bridge",
    "planet",
    "number",
    "signal",
    "yellow",
    "orange",
    "simple",
    "friday",
    "market",
    "letter",
    "office",
    "travel",
    "pencil",
    "rocket",
    "cloud",
    "stone",
    "forest",
    "ocean",
    "mirror",
    "silver",
    "engine",
    "dinner",
    "yes",
    "stop",
    "SALE",
    "OPEN",
    "EXIT",
    "Total",
    "Notes",
    "Hello!",
    "42",
    "2024",
)

# skimage.data attributes that are not image loaders
_SKIMAGE_NOT_LOADERS = {"data_dir", "download_all", "file_hash", "lbp_frontal_face_cascade_filename"}


# ------------------------------------------------------------------ helpers


def _png(img: Image.Image | np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of an image (fast compression: the benchmark decodes, size doesn't matter)."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=level)
    return buf.getvalue()


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one set: depends on the seed and the set's name only."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


_FONT_CACHE: dict[int, ImageFont.FreeTypeFont] = {}
_FALLBACK_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)


def _font(size: int):
    """A scalable font: Pillow's built-in one (Pillow >= 10.1), else a system TrueType font."""
    size = max(6, int(size))
    if size not in _FONT_CACHE:
        font = None
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: load_default takes no size
            pass
        if not isinstance(font, ImageFont.FreeTypeFont):  # no FreeType: a fixed bitmap font
            for path in _FALLBACK_FONTS:
                if os.path.exists(path):
                    font = ImageFont.truetype(path, size)
                    break
            else:
                raise RuntimeError(
                    "no scalable font: needs Pillow >= 10.1 with FreeType, or fonts-dejavu-core installed"
                )
        _FONT_CACHE[size] = font
    return _FONT_CACHE[size]


def _light(rng: np.random.Generator, grey: bool) -> tuple[int, int, int]:
    if grey:
        v = int(rng.integers(185, 256))
        return (v, v, v)
    return tuple(int(v) for v in rng.integers(170, 256, 3))


def _dark(rng: np.random.Generator, grey: bool) -> tuple[int, int, int]:
    if grey:
        v = int(rng.integers(0, 71))
        return (v, v, v)
    return tuple(int(v) for v in rng.integers(0, 90, 3))


def _contrasting(rng: np.random.Generator) -> tuple[tuple, tuple, bool]:
    """(background, ink, background is light): colours or greys, light on dark or dark on light."""
    grey = rng.random() < 0.35
    light_bg = rng.random() < 0.5
    if light_bg:
        return _light(rng, grey), _dark(rng, grey), True
    return _dark(rng, grey), _light(rng, grey), False


def _canvas_size(rng: np.random.Generator, lo: int = 64, hi: int = 256) -> tuple[int, int]:
    """Square (60%) or up to 2:1 either way, each side within [lo, hi]."""
    w = int(rng.integers(lo, hi + 1))
    if rng.random() < 0.6:
        return w, w
    return w, int(np.clip(round(w * rng.uniform(0.5, 2.0)), lo, hi))


# ------------------------------------------------------------------ noise


def _noise(n: int, seed: int, name: str, side: int, colour: bool, gaussian: bool) -> list[bytes]:
    rng = _rng(seed, name)
    shape = (side, side, 3) if colour else (side, side)
    out = []
    for _ in range(n):
        if gaussian:
            sd = rng.uniform(40, 60)
            arr = np.clip(np.rint(rng.normal(128, sd, shape)), 0, 255).astype(np.uint8)
        else:
            arr = rng.integers(0, 256, shape, dtype=np.uint8)
        out.append(_png(arr))
    return out


# ------------------------------------------------------------------ sklearn digits


def _sklearn_digits(n: int, seed: int) -> list[bytes]:
    from sklearn.datasets import load_digits

    images = load_digits().images  # (1797, 8, 8), 0..16, ink high
    rng = _rng(seed, "sklearn_digits")
    order = rng.permutation(len(images))[:n]
    out = []
    for i, k in enumerate(order):
        arr = np.clip(np.rint(images[k] * (255 / 16)), 0, 255).astype(np.uint8)
        if i % 2:  # every other one dark on light
            arr = 255 - arr
        out.append(_png(Image.fromarray(arr).resize((64, 64), Image.Resampling.BICUBIC)))
    return out


# ------------------------------------------------------------------ typeset glyphs and words


def _glyph_image(rng: np.random.Generator, text: str) -> Image.Image:
    """One string (a glyph) at a random size, position, weight, slight rotation and colours."""
    w, h = _canvas_size(rng)
    bg, ink, _ = _contrasting(rng)
    size = int(min(w, h) * rng.uniform(0.3, 0.9))
    font = _font(size)
    stroke = int(rng.integers(0, max(1, size // 14) + 1)) if rng.random() < 0.4 else 0
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    gw, gh = x1 - x0, y1 - y0
    x = rng.integers(0, max(0, w - gw) + 1) - x0
    y = rng.integers(0, max(0, h - gh) + 1) - y0
    draw.text((int(x), int(y)), text, font=font, fill=ink, stroke_width=stroke, stroke_fill=ink)
    if rng.random() < 0.5:
        img = img.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BICUBIC, fillcolor=bg)
    return img


def _glyphs(n: int, seed: int, name: str, alphabet: str) -> list[bytes]:
    rng = _rng(seed, name)
    return [_png(_glyph_image(rng, alphabet[int(rng.integers(len(alphabet)))])) for _ in range(n)]


def _word_image(rng: np.random.Generator) -> Image.Image:
    """A word large, or 2-3 short lines of text, on paper (mostly) or a dark page."""
    paper = rng.random() < 0.85
    if paper:  # off-white, slightly warm or cool; ink near black or blue
        base = int(rng.integers(225, 256))
        bg = tuple(int(np.clip(base + d, 0, 255)) for d in rng.integers(-12, 6, 3))
        ink = (
            (int(rng.integers(0, 50)),) * 3
            if rng.random() < 0.75
            else (int(rng.integers(0, 40)), int(rng.integers(20, 60)), int(rng.integers(90, 170)))
        )
    else:
        bg, ink = _dark(rng, rng.random() < 0.5), _light(rng, True)
    single = rng.random() < 0.45
    if single:
        text = str(WORDS[int(rng.integers(len(WORDS)))])
        w = int(rng.integers(80, 257))
        h = int(w * rng.uniform(0.35, 0.8))
        size = int(h * rng.uniform(0.35, 0.6))
        font = _font(size)
        x0, y0, x1, y1 = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
        if x1 - x0 > w * 0.9:  # shrink to fit the width
            size = max(8, int(size * w * 0.9 / (x1 - x0)))
            font = _font(size)
            x0, y0, x1, y1 = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
        img = Image.new("RGB", (w, h), bg)
        m = max(2, h // 12)  # a little paper around the word
        x = rng.integers(m, max(m, w - (x1 - x0) - m) + 1) - x0
        y = rng.integers(m, max(m, h - (y1 - y0) - m) + 1) - y0
        ImageDraw.Draw(img).text((int(x), int(y)), text, font=font, fill=ink)
        return img
    n_lines = int(rng.integers(2, 4))
    lines = [
        " ".join(str(WORDS[int(k)]) for k in rng.integers(len(WORDS), size=int(rng.integers(1, 4))))
        for _ in range(n_lines)
    ]
    size = int(rng.integers(12, 30))
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [probe.textbbox((0, 0), line, font=font)[2] for line in lines]
    margin = int(rng.integers(6, 24))
    spacing = int(size * rng.uniform(1.2, 1.6))
    w = max(widths) + 2 * margin + int(rng.integers(0, 60))
    h = n_lines * spacing + 2 * margin + int(rng.integers(0, 40))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    if paper and rng.random() < 0.3:  # ruled paper
        rule = tuple(int(v) for v in np.clip(np.array(bg) - [40, 25, 0], 0, 255))
        for k in range(n_lines):  # a rule under each baseline
            yy = margin + k * spacing + size + max(2, size // 5)
            draw.line([(0, yy), (w, yy)], fill=rule, width=1)
    for k, line in enumerate(lines):  # baseline of line k a font size below its top
        draw.text((margin, margin + k * spacing + size), line, font=font, fill=ink, anchor="ls")
    return img


def _words(n: int, seed: int) -> list[bytes]:
    rng = _rng(seed, "rendered_words")
    return [_png(_word_image(rng)) for _ in range(n)]


# ------------------------------------------------------------------ shapes


def _star(cx: float, cy: float, r: float, points: int, inner: float, phase: float) -> list[tuple]:
    pts = []
    for k in range(2 * points):
        rad = r if k % 2 == 0 else r * inner
        a = phase + k * math.pi / points
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _shape_image(rng: np.random.Generator) -> Image.Image:
    w, h = _canvas_size(rng)
    light_bg = rng.random() < 0.5
    bg = _light(rng, rng.random() < 0.4) if light_bg else _dark(rng, rng.random() < 0.4)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    side = min(w, h)
    for _ in range(int(rng.integers(1, 4))):
        # any saturated-ish colour that stands off the background
        colour = rng.integers(0, 256, 3)
        if light_bg:
            colour = (colour * 0.75).astype(int)
        else:
            colour = (64 + colour * 0.75).astype(int)
        colour = tuple(int(v) for v in colour)
        kind = ("circle", "rectangle", "triangle", "star", "polygon", "ellipse")[int(rng.integers(6))]
        filled = rng.random() < 0.6
        width = int(rng.integers(2, max(3, side // 25) + 1))
        r = side * rng.uniform(0.1, 0.3)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        fill, outline = (colour, None) if filled else (None, colour)
        if kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=width)
        elif kind == "ellipse":
            ry = r * rng.uniform(0.4, 0.9)
            box = [cx - r, cy - ry, cx + r, cy + ry]
            if rng.random() < 0.5:  # rotated ellipse as a polygon
                a = rng.uniform(0, math.pi)
                ts = np.linspace(0, 2 * math.pi, 64, endpoint=False)
                pts = [
                    (
                        cx + r * math.cos(t) * math.cos(a) - ry * math.sin(t) * math.sin(a),
                        cy + r * math.cos(t) * math.sin(a) + ry * math.sin(t) * math.cos(a),
                    )
                    for t in ts
                ]
                draw.polygon(pts, fill=fill, outline=outline, width=width)
            else:
                draw.ellipse(box, fill=fill, outline=outline, width=width)
        elif kind == "rectangle":
            rw, rh = r * rng.uniform(0.5, 1.0), r * rng.uniform(0.5, 1.0)
            draw.rectangle([cx - rw, cy - rh, cx + rw, cy + rh], fill=fill, outline=outline, width=width)
        elif kind == "triangle":
            if rng.random() < 0.5:
                draw.regular_polygon(
                    (cx, cy, r), 3, rotation=float(rng.uniform(0, 360)), fill=fill, outline=outline, width=width
                )
            else:
                pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in np.sort(rng.uniform(0, 2 * math.pi, 3))]
                draw.polygon(pts, fill=fill, outline=outline, width=width)
        elif kind == "star":
            pts = _star(cx, cy, r, int(rng.integers(5, 9)), rng.uniform(0.35, 0.55), rng.uniform(0, math.pi))
            draw.polygon(pts, fill=fill, outline=outline, width=width)
        else:  # polygon: regular 5-8 sides, or an irregular convex-ish one
            if rng.random() < 0.5:
                draw.regular_polygon(
                    (cx, cy, r),
                    int(rng.integers(5, 9)),
                    rotation=float(rng.uniform(0, 360)),
                    fill=fill,
                    outline=outline,
                    width=width,
                )
            else:
                k = int(rng.integers(4, 8))
                angles = np.sort(rng.uniform(0, 2 * math.pi, k))
                radii = r * rng.uniform(0.6, 1.0, k)
                pts = [(cx + q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(angles, radii)]
                draw.polygon(pts, fill=fill, outline=outline, width=width)
    return img


def _shapes(n: int, seed: int) -> list[bytes]:
    rng = _rng(seed, "geometric_shapes")
    return [_png(_shape_image(rng)) for _ in range(n)]


# ------------------------------------------------------------------ flat colours and gradients


def _flat_or_gradient(rng: np.random.Generator) -> np.ndarray:
    w, h = _canvas_size(rng, 28, 256)
    grey = rng.random() < 0.3

    def colour() -> np.ndarray:
        if grey:
            return np.full(3, rng.integers(0, 256), dtype=float)
        return rng.integers(0, 256, 3).astype(float)

    kind = int(rng.integers(3))
    c1 = colour()
    if kind == 0:  # flat
        arr = np.broadcast_to(c1, (h, w, 3))
    else:
        c2 = colour()
        yy, xx = np.mgrid[0:h, 0:w].astype(float)
        if kind == 1:  # linear, any direction
            a = rng.uniform(0, 2 * math.pi)
            proj = xx * math.cos(a) + yy * math.sin(a)
            t = (proj - proj.min()) / max(proj.max() - proj.min(), 1e-9)
        else:  # radial / vignette, centre anywhere inside
            cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
            radius = rng.uniform(0.4, 1.0) * math.hypot(w, h) / 2
            t = np.clip(np.hypot(xx - cx, yy - cy) / radius, 0, 1) ** rng.uniform(0.7, 2.0)
        arr = c1 * (1 - t[..., None]) + c2 * t[..., None]
    arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr[..., 0].copy() if grey else np.ascontiguousarray(arr)


def _flats(n: int, seed: int) -> list[bytes]:
    rng = _rng(seed, "flat_colours_and_gradients")
    return [_png(_flat_or_gradient(rng)) for _ in range(n)]


# ------------------------------------------------------------------ scikit-image samples


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Any sample array -> uint8 (H, W), (H, W, 3) or (H, W, 4)."""
    arr = np.asarray(arr)
    # volumes: middle slice along leading axes until a 2-D image (or 2-D with colour) remains
    while arr.ndim > 3 or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        arr = arr[arr.shape[0] // 2]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    x = arr.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, np.uint8)
    lo, hi = float(x[finite].min()), float(x[finite].max())
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0  # already on a 0..1 scale: keep it
    elif np.issubdtype(arr.dtype, np.integer) and lo >= 0:
        lo = 0.0  # 16-bit etc.: scale by the brightest value, keep black black
    x = np.where(finite, x, lo)
    scaled = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)


def skimage_samples(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 array) of every `skimage.data` sample that loads without a download.

    A loader that raises is skipped; one that draws at random (binary_blobs) gets `seed`. If pooch
    is installed, its fetch is limited for the duration to files already in its cache, so nothing
    is ever downloaded.
    """
    import skimage.data as data

    fetchers = getattr(data, "_fetchers", None)
    fetcher = getattr(fetchers, "_image_fetcher", None) if fetchers is not None else None
    if fetcher is not None:

        def offline_fetch(fname, *args, **kwargs):
            path = os.path.join(str(fetcher.abspath), fname)
            if os.path.exists(path):
                return path
            raise OSError(f"{fname} is not cached and downloads are off")

        fetcher.fetch = offline_fetch  # instance attribute shadows the method
    samples = []
    try:
        for name in sorted(getattr(data, "__all__", dir(data))):
            loader = getattr(data, name, None)
            if name in _SKIMAGE_NOT_LOADERS or name.startswith("_") or not callable(loader):
                continue
            try:
                params = inspect.signature(loader).parameters
            except (TypeError, ValueError):
                params = {}
            kwargs = {key: int(seed) for key in ("rng", "seed", "random_state") if key in params}
            try:
                arr = loader(**kwargs)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # needs a download (pooch), or broken; under pytest it raises Skipped
                continue
            if isinstance(arr, tuple):  # e.g. stereo_motorcycle: (left, right, disparity)
                arr = arr[0]
            if not isinstance(arr, np.ndarray) or arr.ndim < 2:
                continue
            samples.append((name, _to_uint8(arr)))
    finally:
        if fetcher is not None:
            del fetcher.fetch
    return samples


def _skimage_photos(seed: int = 0) -> list[bytes]:
    out = []
    for _, arr in skimage_samples(seed):
        for k in range(4):  # upright, then 90, 180, 270 degrees anticlockwise
            out.append(_png(np.ascontiguousarray(np.rot90(arr, k))))
    return out


# ------------------------------------------------------------------ API

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

_MAKERS: dict[str, Callable[[int, int], list[bytes]]] = {
    "uniform_noise_28px_grey": lambda n, s: _noise(n, s, "uniform_noise_28px_grey", 28, False, False),
    "uniform_noise_28px_colour": lambda n, s: _noise(n, s, "uniform_noise_28px_colour", 28, True, False),
    "uniform_noise_256px_grey": lambda n, s: _noise(n, s, "uniform_noise_256px_grey", 256, False, False),
    "uniform_noise_256px_colour": lambda n, s: _noise(n, s, "uniform_noise_256px_colour", 256, True, False),
    "gaussian_noise_28px_grey": lambda n, s: _noise(n, s, "gaussian_noise_28px_grey", 28, False, True),
    "gaussian_noise_256px_colour": lambda n, s: _noise(n, s, "gaussian_noise_256px_colour", 256, True, True),
    "sklearn_digits": _sklearn_digits,
    "font_digits": lambda n, s: _glyphs(n, s, "font_digits", "0123456789"),
    "font_letters": lambda n, s: _glyphs(n, s, "font_letters", _LETTERS),
    "rendered_words": _words,
    "geometric_shapes": _shapes,
    "flat_colours_and_gradients": _flats,
    "skimage_photos": lambda n, s: _skimage_photos(s),
}
assert tuple(_MAKERS) == SETS


def foreign_set(name: str, n: int = 300, seed: int = 0) -> list[bytes]:
    """One set's images as PNG bytes (see the module docstring)."""
    if name not in _MAKERS:
        raise KeyError(f"unknown set {name!r}; the sets are {', '.join(SETS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return _MAKERS[name](int(n), int(seed))


def foreign_sets(n: int = 300, seed: int = 0) -> dict[str, list[bytes]]:
    """Set name -> n PNG-encoded foreign images (fewer only where the source has fewer;
    skimage_photos ignores n and has every offline sample in four rotations)."""
    return {name: foreign_set(name, n, seed) for name in SETS}


# ------------------------------------------------------------------ contact sheet


def contact_sheet(sets: dict[str, list[bytes]], per_set: int = 8, thumb: int = 96) -> Image.Image:
    """A sheet: one row per set, `per_set` thumbnails spread over the set, each with the 28x28
    model input the package's preprocessing makes of it (shown 2x) underneath, when importable."""
    try:
        from deepautodnn.data.preprocess import load_image
    except Exception as err:  # the sheet works without the package
        import sys

        print(f"contact sheet without model inputs: cannot import deepautodnn.data.preprocess ({err})", file=sys.stderr)
        load_image = None
    label_w, pad, small = 230, 6, 56
    cell_h = thumb + (small + 4 if load_image else 0)
    width = label_w + per_set * (thumb + pad) + pad
    height = len(sets) * (cell_h + pad) + pad
    sheet = Image.new("RGB", (width, height), (128, 128, 128))
    draw = ImageDraw.Draw(sheet)
    font = _font(14)
    for row, (name, images) in enumerate(sets.items()):
        y = pad + row * (cell_h + pad)
        draw.text((pad, y + 4), f"{name}\n({len(images)} images)", font=font, fill=(255, 255, 255))
        if not images:
            continue
        picks = np.unique(np.linspace(0, len(images) - 1, min(per_set, len(images))).round().astype(int))
        for col, k in enumerate(picks):
            x = label_w + col * (thumb + pad)
            img = Image.open(io.BytesIO(images[k]))
            img.load()
            if img.mode in ("RGBA", "LA", "P"):
                img = img.convert("RGBA")
                back = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(back, img)
            img = img.convert("RGB")
            if max(img.size) > thumb:
                img.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
            elif max(img.size) < thumb:  # small images (28 px) shown larger, pixels kept sharp
                f = thumb // max(img.size)
                img = img.resize((img.width * f, img.height * f), Image.Resampling.NEAREST)
            sheet.paste(img, (x + (thumb - img.width) // 2, y + (thumb - img.height) // 2))
            if load_image is not None:
                try:
                    model_in = Image.fromarray(load_image(images[k], name=f"{name}[{k}]"))
                    model_in = model_in.resize((small, small), Image.Resampling.NEAREST)
                    sheet.paste(model_in, (x + (thumb - small) // 2, y + thumb + 4))
                except Exception as err:  # noqa: BLE001 - show the refusal instead
                    draw.text((x, y + thumb + 4), type(err).__name__, font=_font(10), fill=(255, 0, 0))
    return sheet


if __name__ == "__main__":
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Write a contact sheet of the foreign image sets.")
    parser.add_argument("out", help="PNG path for the contact sheet")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    all_sets = foreign_sets(args.n, args.seed)
    took = time.perf_counter() - t0
    for set_name, imgs in all_sets.items():
        print(f"{set_name:30s} {len(imgs):5d}")
    print(f"generated in {took:.1f} s")
    contact_sheet(all_sets).save(args.out)
    print(f"contact sheet: {args.out}")
