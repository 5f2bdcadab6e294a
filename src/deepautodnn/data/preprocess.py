"""Real images to the model's input: find the garment the way a photo editor would, then apply
Fashion-MNIST's own recipe.

Zalando made Fashion-MNIST from product photos on white (the dataset's README): trim the edges
close to the corner colour (5% of full scale in RGB), fit the longest side to 28 pixels, sharpen
(Gaussian unsharp mask, radius and sigma 1), centre on a square, negate, 8-bit grey. A photo taken
anywhere else has a backdrop that is not one colour (a gradient, a vignette, cloth, a shadow, a dark
wall), so `preprocess` first models the backdrop and finds the garment on it:

1. decode safely: limits on the file and on the declared pixel count, checked before decoding; the
   first frame of an animation; EXIF orientation; a large JPEG decoded at a reduced scale; any
   mode (L, RGB, P, CMYK, 16-bit, float) to 8-bit RGB, transparent pixels onto white;
2. the working image: longest side `WORK_SIDE`, plenty to find an object that ends up 28 pixels;
3. background model: a quadratic surface per RGB channel, fitted robustly to the border band, so
   gradients and vignetting are backdrop, not object (`fit_background`);
4. colour distance of every pixel from that surface (RMS over R, G, B, in grey levels): colour
   counts, not luminance alone, and polarity does not matter. Object pixels differ by more than
   the border's own noise (median + NOISE_SPREADS robust spreads), and by OBJECT_FLOOR at least;
5. shadows are backdrop. Light and shade scale R, G and B together, so an object whose pixels
   differ from the backdrop in colour is found by the chroma distance, which a shadow does not
   change. An object of the backdrop's own colour (grey on grey) keeps its outline: soft
   shadow-like pixels that the backdrop reaches from the border are dropped (`soft_shadows`);
6. clean-up: specks dropped, nearby pieces grouped, the largest group kept, its holes filled;
7. model intensity = the distance from the backdrop inside the slightly grown object, cut from the
   full-resolution image: the object is bright on black whatever its colours (Fashion-MNIST's
   negation); trimmed where it exceeds 5% of its peak (Fashion-MNIST's trim);
8. Fashion-MNIST's recipe: fit the longest side, centre on a black square, stretch the object's
   99th-percentile level to 255, 8-bit.

An image that is already the model's size with a dark border is taken as it is (it is in the
dataset's own format), so Fashion-MNIST images saved as PNG round-trip exactly.

`preprocess` also returns input-level evidence for unknown-input detection (`EVIDENCE_KEYS`),
measured on the same working image, and every step's image. The image maths is scikit-image and
scipy.ndimage (which scikit-image builds on; used directly where that is faster). OpenCV's GrabCut
would be the alternative for steps 3-6; it was not measured, because OpenCV is not a dependency
and cannot be installed here, and it would need the seed rectangle these steps already produce.
Every constant below was chosen by accuracy on photos of validation images
(benchmarks/photo_variants.py --split val), not on the test split.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from deepautodnn.errors import DeepAutoDNNError
from deepautodnn.utils.extras import missing_extra

MAX_FILE_BYTES = 50 * 2**20  # refuse files over 50 MiB before reading them
MAX_PIXELS = 40_000_000  # refuse declared sizes over 40 megapixels before decoding (bombs)
DRAFT_SIDE = 256  # a JPEG is decoded at 1/2, 1/4 or 1/8 scale if its longest side stays >= this
DETAIL_SIDE = 256  # pixels: longest side of the grey image whose fine detail is evidence
WORK_SIDE = 96  # pixels: longest side of the working image the object is found in (128: same accuracy)
BORDER_BAND = 0.04  # share of the short side: the band along the edges the backdrop is fitted to
NOISE_SPREADS = 4.0  # object pixels differ from the backdrop by this many robust spreads of its noise
OBJECT_FLOOR = 6.0  # grey levels: and by at least this (12.75, Fashion-MNIST's 5%, lost faint garments)
COLOURED_SHARE = 0.5  # an object is coloured when half its pixels differ in chroma, not just brightness
SHADOW_DARKEST = 0.35  # a shadow keeps at least this share of the backdrop's brightness
SHADOW_SOFTNESS = 0.3  # a shadow darkens at under this share of the rate of the image's sharpest edges
SHADOW_SIGMA = 0.7  # working pixels: smoothing before the rate of darkening is measured
SHADOW_CLOSE = 2  # working pixels: gaps in an outline this wide are closed before its inside is filled
SHADOW_MAX_SHARE = 0.5  # a "shadow" over half the object means the backdrop got in: nothing is dropped
SPECK = 0.0005  # share of the working image: smaller pieces are noise, grain or texture
MEANINGFUL_OBJECT = (0.02, 0.10)  # an object counts if >= 2% of the image or >= 10% of the largest
GROUP_GAP = 0.03  # share of the side: pieces closer than this are one object
GROW = 0.01  # share of the side: the mask is grown by this to hold the object's soft edge
TRIM_THRESHOLD = 0.05  # Fashion-MNIST: the object is trimmed where it is over 5% of full scale
CROP_FACTOR = 5  # the object is cut out at up to 5x the model's size (8x: same accuracy, slower)
STRETCH_PERCENTILE = 99.0  # this percentile of the object's intensity becomes 255
# Fashion-MNIST's unsharp mask (radius 1) would be amount 1.0. Off: on photos of the dataset's own,
# already sharpened images, amounts 0.3 and 0.6 cost 0.1 to 1.2 points of accuracy.
SHARPEN_AMOUNT = 0.0
EVIDENCE_KEYS = (
    "foreground_fraction",
    "background_residual",
    "object_count",
    "high_frequency",
    "object_touches_border",
)


class ImageError(DeepAutoDNNError, ValueError):
    """An input image can't be used. The message names the file."""


@dataclass
class Preprocessed:
    """The model input of one image, what preprocessing saw in it, and every step's image."""

    image: np.ndarray  # (size, size) uint8, the model input
    evidence: dict[str, float]  # EVIDENCE_KEYS, for unknown-input detection
    steps: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (name, uint8 image), in order


# ---- decoding ----------------------------------------------------------------------------------


def open_image(source, name: str | None = None, *, draft_side: int | None = None):
    """A decoded PIL image (first frame, EXIF-rotated) from a path or bytes, with the limits checked.

    With `draft_side`, a JPEG is decoded at a reduced scale (1/2, 1/4, 1/8: the decoder's own DCT
    scaling, much faster) that keeps its longest side at least `draft_side` pixels."""
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
                raise ImageError(
                    f"{name}: {width}x{height} pixels is over the limit of "
                    f"{MAX_PIXELS // 10**6} megapixels (refused before decoding)"
                )
            if width == 0 or height == 0:
                raise ImageError(f"{name}: image has no pixels ({width}x{height})")
            img.seek(0)  # animated files: the first frame
            if draft_side and img.format == "JPEG" and max(width, height) > 2 * draft_side:
                k = draft_side / max(width, height)
                img.draft(img.mode, (int(np.ceil(width * k)), int(np.ceil(height * k))))
            img.load()
            return ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (unrecognised format)") from None
    except Image.DecompressionBombError:
        # Pillow's own guard fires on opening for sizes far over ours.
        raise ImageError(
            f"{name}: declared size is over the limit of {MAX_PIXELS // 10**6} megapixels (refused before decoding)"
        ) from None
    except (OSError, ValueError, EOFError, SyntaxError) as err:
        raise ImageError(f"{name}: cannot decode image ({err})") from None


def _flatten_alpha(img):
    """The image without transparency: palette expanded, transparent pixels composited onto white."""
    from PIL import Image

    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    return img


def to_gray(img) -> np.ndarray:
    """8-bit luminance (H, W) of any PIL mode; transparency is composited onto white."""
    img = _flatten_alpha(img)
    mode = img.mode
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


def to_rgb(img):
    """The image as an 8-bit RGB PIL image, whatever its mode; transparency is composited onto white."""
    from PIL import Image

    img = _flatten_alpha(img)
    if img.mode.startswith("I") or img.mode == "F":
        return Image.fromarray(to_gray(img)).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def working_image(rgb, side: int = WORK_SIDE) -> np.ndarray:
    """An RGB PIL image as float32 (h, w, 3), its longest side reduced to `side` (never enlarged)."""
    from PIL import Image

    w, h = rgb.size
    scale = side / max(h, w)
    if scale < 1:
        rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return np.asarray(rgb, np.float32)


# ---- the backdrop ------------------------------------------------------------------------------


def _border(a: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels of a 2-D array (each pixel once)."""
    if min(a.shape[:2]) < 3:
        return a.reshape(-1, *a.shape[2:])
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


@lru_cache(maxsize=64)
def border_band(shape: tuple[int, int]) -> np.ndarray:
    """Flat indices of the band along the edges of an (H, W) image that the backdrop is fitted to."""
    h, w = shape
    b = max(1, round(BORDER_BAND * min(h, w)))
    band = np.ones((h, w), bool)
    band[b : h - b, b : w - b] = False
    return np.flatnonzero(band)


def surface_terms(shape: tuple[int, int], rows=None, cols=None) -> np.ndarray:
    """The quadratic surface's terms (h, w, 6): 1, x, y, x^2, xy, y^2, with x, y in [-1, 1] over an
    image of `shape`, at the pixel centres `rows`, `cols` (default: every pixel; fractional pixel
    positions allowed), so the same surface evaluates at any resolution."""
    h, w = shape
    rows = np.arange(h, dtype=np.float32) if rows is None else np.asarray(rows, np.float32)
    cols = np.arange(w, dtype=np.float32) if cols is None else np.asarray(cols, np.float32)
    y = ((rows + 0.5) / h * 2 - 1)[:, None]
    x = ((cols + 0.5) / w * 2 - 1)[None, :]
    x, y = np.broadcast_arrays(x, y)
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)


def surface_at(coef: np.ndarray, shape: tuple[int, int], rows=None, cols=None) -> np.ndarray:
    """The fitted backdrop (h, w, 3) at pixel centres of an image of `shape` (see `surface_terms`)."""
    return surface_terms(shape, rows, cols)[..., : coef.shape[0]] @ coef


def robust_spread(values: np.ndarray) -> tuple[float, float]:
    """(median, MAD * 1.4826): the centre and spread of values, unmoved by a minority of outliers."""
    if values.size == 0:
        return 0.0, 0.0
    med = float(np.median(values))
    return med, 1.4826 * float(np.median(np.abs(values - med)))


def colour_distance(rgb: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """RMS difference over R, G, B (H, W) in grey levels: a grey difference of d gives d."""
    d = rgb - surface
    return np.sqrt(np.einsum("ijk,ijk->ij", d, d) / 3.0)


def brightness_ratio(rgb: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """Each pixel's brightness over the backdrop's there (H, W): under 1 in a shadow."""
    return rgb.sum(-1) / np.maximum(surface.sum(-1), 1.0)


def chroma_distance(rgb: np.ndarray, surface: np.ndarray, ratio: np.ndarray | None = None) -> np.ndarray:
    """RMS difference (H, W) from the backdrop scaled to the pixel's brightness: the part of the
    difference that no shadow or shading explains (light and shade scale R, G and B together)."""
    ratio = brightness_ratio(rgb, surface) if ratio is None else ratio
    return colour_distance(rgb, surface * ratio[..., None])


def fit_background(rgb: np.ndarray, rounds: int = 2, terms: np.ndarray | None = None) -> np.ndarray:
    """A smooth backdrop's coefficients (terms, 3) for `surface_at`: a quadratic per RGB channel,
    fitted to the border band of the image (H, W, 3).

    The fit starts from the band's median colour and refits on the pixels close to the previous
    fit (median + 3 robust spreads), so an object that touches the border does not bend it."""
    h, w = rgb.shape[:2]
    terms = surface_terms((h, w)) if terms is None else terms
    band = border_band((h, w))
    a, v = terms.reshape(h * w, -1)[band], rgb.reshape(h * w, 3)[band]  # (n, 6), (n, 3)
    if len(v) < 3 * a.shape[1]:
        a = a[:, :1]  # too few pixels for a surface: one colour
    pred = np.broadcast_to(np.median(v, axis=0), v.shape)
    coef = None
    for _ in range(rounds):
        d = v - pred
        res = np.sqrt(np.einsum("ij,ij->i", d, d) / 3.0)
        med, spread = robust_spread(res)
        ak = a[res <= med + 3 * spread + 1.0].astype(np.float64)
        vk = v[res <= med + 3 * spread + 1.0]
        coef = np.linalg.lstsq(ak.T @ ak, ak.T @ vk, rcond=None)[0]  # (terms, 3): normal equations
        pred = a @ coef.astype(np.float32)
    return coef.astype(np.float32)


def noise_threshold(distance: np.ndarray, floor: float = OBJECT_FLOOR) -> float:
    """The distance over which a pixel is object: the border band's median + NOISE_SPREADS robust
    spreads (its noise, grain or texture), and at least `floor`."""
    med, spread = robust_spread(distance.ravel()[border_band(distance.shape)])
    return max(floor, med + NOISE_SPREADS * spread)


# ---- the object --------------------------------------------------------------------------------


def _grow(h: int, w: int, share: float = GROW) -> int:
    return max(1, round(share * max(h, w)))


@dataclass
class ObjectSearch:
    """What finding the object produced, at the working resolution."""

    rgb: np.ndarray  # (h, w, 3) float32, the working image
    coef: np.ndarray  # (terms, 3) float32, the fitted backdrop (`surface_at`)
    surface: np.ndarray  # (h, w, 3) float32, the backdrop on the working image
    distance: np.ndarray  # (h, w) float32, colour distance from the backdrop (grey levels)
    measure: np.ndarray  # (h, w) float32, the distance the object is found by: colour or chroma
    threshold: float  # measure above which a pixel is object
    by_colour: bool  # measure is the chroma distance: the object differs from the backdrop in colour
    shadow: np.ndarray  # (h, w) bool, pixels dropped as shadow
    candidates: np.ndarray  # (h, w) bool, object pixels after clean-up, every piece
    mask: np.ndarray  # (h, w) bool, the kept object, holes filled
    object_count: int  # meaningful pieces among the candidates

    @cached_property
    def inside(self) -> np.ndarray:
        """The mask grown by GROW: the object with its soft edge (h, w) bool."""
        from scipy.ndimage import maximum_filter

        return maximum_filter(self.mask, size=2 * _grow(*self.mask.shape) + 1) if self.mask.any() else self.mask


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every region it encloses filled (background not connected to the edge)."""
    from scipy.ndimage import label

    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return mask
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    inner = np.pad(~mask[box], 1, constant_values=True)  # the box's surroundings count as outside
    labels, _ = label(inner)
    out = mask.copy()
    out[box] |= (labels != labels[0, 0])[1:-1, 1:-1]
    return out


def soft_shadows(ratio: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The candidates that are a soft shadow around an object of the backdrop's own colour: (H, W) bool.

    Such a shadow looks like the object: the backdrop's colour (`ratio`: the brightness ratio),
    darker, but not under SHADOW_DARKEST. What differs is the edge: a shadow fades out, a garment
    has an outline. Pixels whose darkening changes slowly (under SHADOW_SOFTNESS of the rate at the
    image's sharpest 1%) are shadow-like; those the backdrop reaches from the border through
    shadow-like pixels, after an opening that closes one-pixel gaps in an outline, are shadow,
    except what the rest of the object encloses once wider gaps (SHADOW_CLOSE) are closed: a
    garment's smooth inside. A shadow falls to one side, so it is dropped only if that moves one
    side of the object's box more than the opposite one, and only if it is under SHADOW_MAX_SHARE
    of the object (more means the backdrop got in)."""
    from scipy.ndimage import binary_closing, binary_dilation, binary_opening, gaussian_filter, label

    shadow = np.zeros_like(candidates)
    rows, cols = np.nonzero(candidates)
    if len(rows) == 0:
        return shadow
    # Outside the candidates' box everything is backdrop: work in the box and a 2-pixel margin.
    box = (slice(max(rows.min() - 2, 0), rows.max() + 3), slice(max(cols.min() - 2, 0), cols.max() + 3))
    r, inner = ratio[box], candidates[box]
    gy, gx = np.gradient(gaussian_filter(r, sigma=SHADOW_SIGMA))
    rate = np.hypot(gx, gy)
    shadowish = inner & (rate < SHADOW_SOFTNESS * np.percentile(rate[inner], 99))
    shadowish &= (r > SHADOW_DARKEST) & (r < 1.0)
    if not shadowish.any():
        return shadow
    labels, _ = label(binary_opening(~inner | shadowish, border_value=1))  # a 3x3 cross
    reached = np.isin(labels, np.unique(_border(labels))) & (labels > 0)
    reached = binary_dilation(reached) & shadowish  # with the thin fringe the opening took away
    k = SHADOW_CLOSE
    rest = binary_closing(np.pad(inner & ~reached, k), _disk(k))
    shadow[box] = reached & ~fill_holes(rest)[k:-k, k:-k]
    if shadow.sum() > SHADOW_MAX_SHARE * candidates.sum() or not _one_sided(candidates, candidates & ~shadow):
        shadow[:] = False
    return shadow


def _one_sided(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether removing pixels moved one side of the bounding box by 2+ pixels more than the
    opposite side: a cast shadow falls to one side; soft edges all round are the object's own."""
    rows, cols = np.nonzero(after)
    if len(rows) == 0:
        return False
    r0, c0 = np.nonzero(before)
    top, bottom = int(rows.min() - r0.min()), int(r0.max() - rows.max())
    left, right = int(cols.min() - c0.min()), int(c0.max() - cols.max())
    return abs(top - bottom) >= 2 or abs(left - right) >= 2


def find_object(rgb: np.ndarray) -> ObjectSearch:
    """The backdrop model and the object mask of a working image (h, w, 3) float32."""
    from scipy.ndimage import label, maximum_filter

    h, w = rgb.shape[:2]
    terms = surface_terms((h, w))
    coef = fit_background(rgb, terms=terms)
    surface = terms[..., : coef.shape[0]] @ coef
    distance = colour_distance(rgb, surface)
    measure, threshold = distance, noise_threshold(distance)
    candidates = distance > threshold
    shadow, by_colour = np.zeros((h, w), bool), False
    if candidates.any() and min(h, w) >= 32:
        ratio = brightness_ratio(rgb, surface)
        chroma = chroma_distance(rgb, surface, ratio)
        chroma_threshold = noise_threshold(chroma)
        if np.mean(chroma[candidates] > chroma_threshold) >= COLOURED_SHARE:
            # A coloured object is found by its colour alone: a shadow changes brightness only.
            by_colour, measure, threshold = True, chroma, chroma_threshold
            shadow = candidates & (chroma <= chroma_threshold)
            candidates = chroma > chroma_threshold
        elif SHADOW_SOFTNESS > 0:
            shadow = soft_shadows(ratio, candidates)
            candidates &= ~shadow
    eight = np.ones((3, 3))
    labels, n = label(candidates, structure=eight)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    if h * w >= 32 * 32:  # specks of noise, grain or texture are not objects
        areas[areas < SPECK * h * w] = 0
        candidates &= np.concatenate([[0], areas])[labels] > 0
    largest = int(areas.max(initial=0))
    meaningful = (areas >= MEANINGFUL_OBJECT[0] * h * w) | (areas >= MEANINGFUL_OBJECT[1] * largest)
    mask = np.zeros((h, w), bool)
    if largest:
        # Pieces of one garment (a sandal's straps, the outline of a dark jacket) lie close together:
        # group pieces within GROUP_GAP and keep the group with the most object pixels.
        groups, _ = label(maximum_filter(candidates, size=2 * _grow(h, w, GROUP_GAP) + 1), structure=eight)
        mask = fill_holes(candidates & (groups == int(np.bincount(groups[candidates]).argmax())))
    return ObjectSearch(
        rgb,
        coef,
        surface,
        distance,
        measure,
        threshold,
        by_colour,
        shadow,
        candidates,
        mask,
        int(np.sum((areas > 0) & meaningful)),
    )


def object_intensity(rgb, search: ObjectSearch, size: int) -> np.ndarray:
    """The object cut out of the full-resolution RGB PIL image, trimmed: (H', W') float32.

    The intensity is the distance from the backdrop (the chroma distance for a coloured object)
    above the backdrop's own level, inside the grown object mask: bright on black whatever the
    colours, as Fashion-MNIST's negation makes it. The cut-out is reduced to at most CROP_FACTOR
    times the model's size (plenty for the final resize), then trimmed where the intensity is over
    5% of its peak (Fashion-MNIST's trim)."""
    from PIL import Image

    inside = search.inside
    if not inside.any():
        return np.zeros((1, 1), np.float32)
    w, h = rgb.size
    rows, cols = np.nonzero(inside)
    sy, sx = h / inside.shape[0], w / inside.shape[1]  # working pixel -> full-resolution pixels
    top, bottom = int(rows.min() * sy), min(h, int(np.ceil((rows.max() + 1) * sy)))
    left, right = int(cols.min() * sx), min(w, int(np.ceil((cols.max() + 1) * sx)))
    scale = min(1.0, CROP_FACTOR * size / max(bottom - top, right - left))
    ch, cw = max(1, round((bottom - top) * scale)), max(1, round((right - left) * scale))
    crop = np.asarray(rgb.resize((cw, ch), Image.Resampling.BOX, box=(left, top, right, bottom)), np.float32)
    # The backdrop at the crop's pixel centres, as positions in the full-resolution image.
    surface = surface_at(
        search.coef, (h, w), top - 0.5 + (np.arange(ch) + 0.5) / scale, left - 0.5 + (np.arange(cw) + 0.5) / scale
    )
    distance = (chroma_distance if search.by_colour else colour_distance)(crop, surface)
    box_mask = inside[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    mask = np.asarray(Image.fromarray(box_mask).resize((cw, ch), Image.Resampling.NEAREST))
    outside = distance[~mask][::7]  # a sample is plenty for the median
    floor = float(np.median(outside)) if outside.size >= 20 else 0.0
    intensity = np.where(mask, np.maximum(distance - floor, 0.0), 0.0).astype(np.float32)
    box = trim_box(intensity)
    return intensity[box] if box is not None else intensity


def trim_box(intensity: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of pixels over 5% of the object's peak; None when there are none."""
    peak = float(intensity.max(initial=0))
    if peak <= 0:
        return None
    rows, cols = np.nonzero(intensity > TRIM_THRESHOLD * peak)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


# ---- Fashion-MNIST's recipe --------------------------------------------------------------------


def fit_square(obj: np.ndarray, size: int, sharpen: float = 0.0) -> np.ndarray:
    """Resize so the longest side is `size` (Lanczos), unsharp-mask by `sharpen` (radius 1, as
    Fashion-MNIST; 0: none), centre on a black (size, size) canvas; float32 in the input's scale."""
    from PIL import Image

    h, w = obj.shape
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(
        Image.fromarray(obj.astype(np.float32), "F").resize((new_w, new_h), Image.Resampling.LANCZOS), np.float32
    )
    if sharpen:
        try:
            from skimage.filters import unsharp_mask
        except ModuleNotFoundError:
            raise missing_extra("report", "sharpening (sharpen > 0)", "scikit-image") from None

        resized = unsharp_mask(resized, radius=1.0, amount=sharpen, preserve_range=True).astype(np.float32)
    canvas = np.zeros((size, size), np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def to_uint8(x: np.ndarray, peak: float | None = None) -> np.ndarray:
    """x / peak * 255 rounded and clipped to 8 bits (peak: x's maximum unless given)."""
    peak = float(x.max(initial=0)) if peak is None else peak
    return np.clip(np.rint(x / max(peak, 1e-6) * 255.0), 0, 255).astype(np.uint8)


# ---- evidence ----------------------------------------------------------------------------------


def high_frequency(gray: np.ndarray) -> float:
    """Fine detail of a grey image (H, W): mean |gray - Gaussian blur (sigma 1)| / 255."""
    from scipy.ndimage import gaussian_filter

    gray = gray.astype(np.float32)
    return float(np.mean(np.abs(gray - gaussian_filter(gray, sigma=1.0, truncate=3.0))) / 255.0)


def detail_image(rgb, side: int = DETAIL_SIDE) -> np.ndarray:
    """The grey image (h, w) float32 at up to `side` pixels, where `high_frequency` is measured:
    finer than the working image, which averages fine noise away."""
    from PIL import Image

    gray = rgb.convert("L")
    w, h = gray.size
    scale = side / max(h, w)
    if scale < 1:
        gray = gray.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return np.asarray(gray, np.float32)


def evidence_of(search: ObjectSearch, detail: np.ndarray) -> dict[str, float]:
    """Input-level evidence for unknown-input detection (EVIDENCE_KEYS): from the working image, the
    kept object's share of the image; the robust spread (MAD * 1.4826, grey levels) of the
    backdrop's colour distance from its fitted surface; the number of meaningful pieces; the share
    of the image's border that the object covers; and from the grey `detail` image, its
    `high_frequency`."""
    background = search.distance[~search.inside][::3]  # every third pixel is plenty for a median
    _, residual = robust_spread(background)
    return {
        "foreground_fraction": float(search.mask.mean()),
        "background_residual": float(residual),
        "object_count": float(search.object_count),
        "high_frequency": high_frequency(detail),
        "object_touches_border": float(_border(search.mask).mean()),
    }


# ---- the whole path ----------------------------------------------------------------------------


def _shown(x: np.ndarray, peak: float | None = None) -> np.ndarray:
    return x.astype(np.uint8) * 255 if x.dtype == bool else to_uint8(x, peak)


def preprocess(img, size: int = 28) -> Preprocessed:
    """A decoded PIL image -> the model input, the evidence and every step (see the module doc)."""
    if img.size == (size, size):
        gray = to_gray(img)
        if np.median(_border(gray)) <= 127:  # already in the dataset's format: taken as it is
            search = find_object(np.repeat(gray[..., None].astype(np.float32), 3, axis=2))
            return Preprocessed(
                gray, evidence_of(search, gray), [("grey, dataset format", gray), ("model input", gray)]
            )
    rgb = to_rgb(img)
    work = working_image(rgb)
    search = find_object(work)
    trimmed = object_intensity(rgb, search, size)
    fitted = fit_square(trimmed, size, sharpen=SHARPEN_AMOUNT)
    # The object's full-contrast level, read before the resize blurs its thin bright lines.
    peak = float(np.percentile(trimmed[trimmed > 0], STRETCH_PERCENTILE)) if (trimmed > 0).any() else 0.0
    image = to_uint8(fitted, peak) if peak > 0 else np.zeros((size, size), np.uint8)
    steps = [
        ("working image", np.clip(np.rint(work), 0, 255).astype(np.uint8)),
        ("background model", np.clip(np.rint(search.surface), 0, 255).astype(np.uint8)),
        ("chroma distance" if search.by_colour else "colour distance", _shown(search.measure, 4 * search.threshold)),
        ("dropped as shadow", _shown(search.shadow)),
        ("object mask", _shown(search.mask)),
        ("trimmed", _shown(trimmed, peak or None)),
        ("model input", image),
    ]
    return Preprocessed(image, evidence_of(search, detail_image(rgb)), steps)


def preprocessing_steps(img, size: int = 28) -> list[tuple[str, np.ndarray]]:
    """Each step's image (uint8, grey or RGB), in order; the last is the model's input (size, size)."""
    return preprocess(img, size).steps


def _disk(radius: int) -> np.ndarray:
    """A round structuring element, (2r+1, 2r+1) bool: the pixels within `radius` of the centre."""
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def to_model_input(img, size: int = 28) -> np.ndarray:
    """A decoded PIL image -> the model's uint8 (size, size) input."""
    return preprocess(img, size).image


def save_steps_figure(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], path) -> None:
    """A PNG with one row of titled panels per image: (row title, `Preprocessed.steps`)."""
    from deepautodnn.utils.plots import pyplot

    plt = pyplot()

    cols = max(len(steps) for _, steps in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.75 * cols, 2.1 * len(rows)), squeeze=False)
    for r, (title, steps) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c >= len(steps):
                continue
            name, arr = steps[c]
            ax.imshow(arr, cmap=None if arr.ndim == 3 else "gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"{c + 1}. {name}\n{arr.shape[1]}x{arr.shape[0]}", fontsize=8)
        axes[r][0].text(
            -0.08, 0.5, title, transform=axes[r][0].transAxes, rotation=90, ha="right", va="center", fontsize=8
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def load_preprocessed(source: str | os.PathLike | bytes, size: int = 28, name: str | None = None) -> Preprocessed:
    """A file path or the bytes of an image file -> `Preprocessed` (model input, evidence, steps)."""
    img = open_image(source, name, draft_side=DRAFT_SIDE)
    try:
        return preprocess(img, size)
    except (OSError, ValueError) as err:
        label = name or ("<bytes>" if isinstance(source, (bytes, bytearray)) else source)
        raise ImageError(f"{label}: cannot convert image ({err})") from None


def load_image(source: str | os.PathLike | bytes, size: int = 28, name: str | None = None) -> np.ndarray:
    """A file path or the bytes of an image file -> the model's uint8 (size, size) input."""
    return load_preprocessed(source, size, name).image
