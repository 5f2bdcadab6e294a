"""Realistic photos of Fashion-MNIST garments, and the model's accuracy on them. Prints JSON.

Each variant turns a 28x28 image (garment bright on dark) into an encoded photo. The garment is
upscaled smoothly (bicubic) to a few hundred pixels and laid on a backdrop as a coloured layer:

    photo = backdrop * (1 - t) + colour * shade * t,     t = Fashion-MNIST intensity / 255

so the garment's shape and shading survive in any colour. Colours, sizes and positions are drawn
per image from a seeded generator. `VARIANTS` maps a name to `make(arr_u8, rng) -> bytes` and
`render_variants` renders many at once; other benchmark scripts import both.

`main` reads every photo through `deepautodnn.data.preprocess.load_image`, classifies it and reports,
per variant, the accuracy against the labels and the agreement with the in-memory arrays:

    python benchmarks/photo_variants.py --model-dir runs/fast [--n 1000] [--seed 0] \
        [--split test|val] [--out results/photo_variants_fast_seed0_cpu.json]

`--split val` uses the model's own validation images: tune the preprocessing there, not on test.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import sys
import time
import zlib
from collections.abc import Callable

import numpy as np
from _emit import emit_json
from PIL import Image
from scipy import ndimage

JPEG_QUALITY = 92  # a camera's or a shop's usual saving quality, unless the variant says otherwise


# ---- pieces of a photo ------------------------------------------------------------------------


def garment_alpha(arr: np.ndarray, side: int) -> np.ndarray:
    """The garment's coverage t (side, side) in 0..1: the 28x28 intensities upscaled bicubically."""
    big = Image.fromarray(arr).resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(big, np.float32) / 255.0


def place(layer: np.ndarray, canvas_hw: tuple[int, int], top: int, left: int) -> np.ndarray:
    """`layer` pasted at (top, left) on a zero canvas, cropped at the edges."""
    out = np.zeros(canvas_hw, np.float32)
    h, w = layer.shape
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + h, canvas_hw[0]), min(left + w, canvas_hw[1])
    out[t0:t1, l0:l1] = layer[t0 - top : t1 - top, l0 - left : l1 - left]
    return out


def hsv_colour(rng, hue=(0.0, 1.0), sat=(0.0, 1.0), val=(0.0, 1.0)) -> np.ndarray:
    """An RGB colour (3,) in 0..255 drawn uniformly in the given HSV ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.uniform(*hue), rng.uniform(*sat), rng.uniform(*val)), np.float32) * 255.0


def ramp(hw: tuple[int, int], rng, lo: float, hi: float) -> np.ndarray:
    """A linear ramp (H, W) from lo to hi across the image, in a random direction."""
    h, w = hw
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = (xx - w / 2) * np.cos(angle) + (yy - h / 2) * np.sin(angle)
    d = (d - d.min()) / max(float(np.ptp(d)), 1.0)
    return lo + (hi - lo) * d


def vignette(hw: tuple[int, int], strength: float) -> np.ndarray:
    """1 at the centre, 1 - strength in the corners, falling off with the squared radius."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    return 1.0 - strength * r2 / 2.0


def smooth_noise(hw: tuple[int, int], rng, scale: float) -> np.ndarray:
    """Zero-mean, unit-spread noise with features about `scale` pixels wide (cloth, paper, plaster)."""
    h, w = hw
    small = rng.standard_normal((max(2, int(h / scale) + 2), max(2, int(w / scale) + 2))).astype(np.float32)
    big = np.asarray(Image.fromarray(small, "F").resize((w, h), Image.Resampling.BICUBIC))
    return (big - big.mean()) / (big.std() + 1e-6)


def soft_shadow(alpha: np.ndarray, rng, garment_side: int) -> np.ndarray:
    """The garment's silhouette moved down-right and blurred: a shadow's darkness (H, W) in 0..1."""
    dy, dx = (rng.uniform(0.02, 0.05, 2) * garment_side).astype(int)
    shifted = np.roll(np.roll(alpha, dy, 0), dx, 1)
    return ndimage.gaussian_filter(shifted, sigma=rng.uniform(0.03, 0.06) * garment_side)


def compose(
    backdrop: np.ndarray,
    alpha: np.ndarray,
    colour: np.ndarray,
    shade: np.ndarray | float = 1.0,
    noise: float = 0.0,
    rng=None,
) -> Image.Image:
    """backdrop (H, W, 3) * (1 - t) + colour * shade * t, plus sensor noise, as an 8-bit RGB image."""
    t = alpha[..., None]
    shade = np.asarray(shade, np.float32)
    garment = colour[None, None, :] * (shade[..., None] if shade.ndim == 2 else shade)
    photo = backdrop * (1.0 - t) + garment * t
    if noise:
        photo = photo + rng.normal(0.0, noise, photo.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(photo), 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        kwargs.setdefault("quality", JPEG_QUALITY)
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def canvas_size(rng, lo: int = 400, hi: int = 800) -> tuple[int, int]:
    """(H, W) of a photo, landscape or portrait, each side in [lo, hi]."""
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))


def centred(
    arr: np.ndarray, rng, hw: tuple[int, int], fill: tuple[float, float] = (0.65, 0.85), jitter: float = 0.05
) -> tuple[np.ndarray, int]:
    """The garment's alpha on an (H, W) canvas, filling a share of the short side, near the centre."""
    h, w = hw
    side = int(min(h, w) * rng.uniform(*fill))
    top = (h - side) // 2 + int(rng.uniform(-jitter, jitter) * h)
    left = (w - side) // 2 + int(rng.uniform(-jitter, jitter) * w)
    return place(garment_alpha(arr, side), hw, top, left), side


def rgb(level: np.ndarray | float, tint: np.ndarray | None = None) -> np.ndarray:
    """A grey level map (H, W) as an RGB backdrop (H, W, 3), optionally tinted per channel."""
    level = np.asarray(level, np.float32)
    tint = np.ones(3, np.float32) if tint is None else tint
    return level[..., None] * tint[None, None, :]


# ---- the variants -----------------------------------------------------------------------------


def plain_product_shot(arr, rng) -> bytes:
    """The reference: dark garment on white, 420 px on a 600x500 canvas, JPEG 90 (as the product shot of the earlier real-images benchmark)."""
    alpha = place(garment_alpha(arr, 420), (500, 600), 40, 90)
    return encode(compose(np.full((500, 600, 3), 255, np.float32), alpha, np.zeros(3, np.float32)), quality=90)


def colour_on_gradient_with_shadow(arr, rng) -> bytes:
    """A coloured garment on a light-grey studio sweep: gradient, vignette, soft drop shadow."""
    hw = canvas_size(rng)
    alpha, side = centred(arr, rng, hw)
    level = ramp(hw, rng, rng.uniform(175, 205), rng.uniform(225, 248)) * vignette(hw, rng.uniform(0.0, 0.15))
    backdrop = rgb(level, 1 + rng.uniform(-0.02, 0.02, 3).astype(np.float32))  # a slightly warm/cool grey
    backdrop *= (1.0 - rng.uniform(0.35, 0.55) * soft_shadow(alpha, rng, side))[..., None]
    colour = hsv_colour(rng, sat=(0.35, 0.9), val=(0.25, 0.75))
    shade = ramp(hw, rng, rng.uniform(0.7, 0.85), 1.0)  # light from one side
    return encode(compose(backdrop, alpha, colour, shade, noise=2.0, rng=rng))


def textured_light_backdrop(arr, rng) -> bytes:
    """A garment on light cloth or paper: blotches and fine grain of a few grey levels."""
    hw = canvas_size(rng)
    alpha, side = centred(arr, rng, hw)
    level = (
        rng.uniform(215, 240)
        + rng.uniform(4, 8) * smooth_noise(hw, rng, rng.uniform(20, 60))
        + rng.uniform(2, 4) * smooth_noise(hw, rng, 2.0)
    )
    backdrop = rgb(level, 1 + rng.uniform(-0.03, 0.03, 3).astype(np.float32))
    colour = hsv_colour(rng, sat=(0.0, 0.8), val=(0.15, 0.65))
    shade = ramp(hw, rng, rng.uniform(0.75, 0.9), 1.0)
    return encode(compose(backdrop, alpha, colour, shade, noise=2.0, rng=rng))


def grey_on_mid_grey_wall(arr, rng) -> bytes:
    """Low contrast: a grey garment (darker or lighter) on a mid-grey wall with uneven light."""
    hw = canvas_size(rng)
    alpha, _ = centred(arr, rng, hw)
    wall = rng.uniform(115, 145)
    level = wall + ramp(hw, rng, -10, 10) + 2.0 * smooth_noise(hw, rng, 40.0)
    offset = rng.uniform(45, 80) * rng.choice([-1, 1])
    colour = np.full(3, wall + offset, np.float32)
    shade = ramp(hw, rng, 0.9, 1.0)
    return encode(compose(rgb(level), alpha, colour, shade, noise=2.5, rng=rng))


def light_on_dark_backdrop(arr, rng) -> bytes:
    """A light garment (white, cream, pastel) on a dark backdrop with a spot of light."""
    hw = canvas_size(rng)
    alpha, _ = centred(arr, rng, hw)
    level = rng.uniform(20, 50) * vignette(hw, rng.uniform(0.2, 0.5)) + ramp(hw, rng, 0, rng.uniform(5, 15))
    colour = hsv_colour(rng, sat=(0.0, 0.3), val=(0.8, 0.97))
    shade = ramp(hw, rng, rng.uniform(0.75, 0.9), 1.0)
    return encode(compose(rgb(level), alpha, colour, shade, noise=2.0, rng=rng))


def small_off_centre(arr, rng) -> bytes:
    """A small garment (120-200 px) somewhere off-centre on a large white canvas."""
    hw = canvas_size(rng, 700, 800)
    side = int(rng.integers(120, 201))
    top = int(rng.integers(20, hw[0] - side - 20))
    left = int(rng.integers(20, hw[1] - side - 20))
    alpha = place(garment_alpha(arr, side), hw, top, left)
    colour = hsv_colour(rng, sat=(0.0, 0.9), val=(0.1, 0.6))
    return encode(compose(np.full((*hw, 3), rng.uniform(248, 255), np.float32), alpha, colour, noise=1.5, rng=rng))


def jpeg_plain(quality: int) -> Callable:
    """A coloured garment on a plain off-white backdrop, 600x500, saved at the given JPEG quality."""

    def make(arr, rng) -> bytes:
        alpha, _ = centred(arr, rng, (500, 600), fill=(0.75, 0.85))
        backdrop = np.full((500, 600, 3), rng.uniform(238, 252), np.float32)
        colour = hsv_colour(rng, sat=(0.0, 0.9), val=(0.15, 0.65))
        return encode(compose(backdrop, alpha, colour, noise=1.5, rng=rng), quality=quality)

    make.__doc__ = f"{jpeg_plain.__doc__.split(',')[0]}, JPEG quality {quality}."
    return make


def perspective_coefficients(dst: np.ndarray, src: np.ndarray) -> list[float]:
    """PIL's PERSPECTIVE data: the 8 coefficients mapping output corners `dst` to input corners `src`."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.linalg.solve(np.array(rows, np.float64), np.array(rhs, np.float64)).tolist()


def rotated_perspective(arr, rng) -> bytes:
    """A hand-held shot: the garment turned by up to 8 degrees and seen slightly askew."""
    hw = canvas_size(rng, 500, 700)
    side = int(min(hw) * rng.uniform(0.6, 0.75))
    garment = Image.fromarray((garment_alpha(arr, side) * 255).astype(np.float32), "F")
    h, w = hw
    corners = np.array([[0, 0], [side, 0], [side, side], [0, side]], np.float64)
    angle = np.deg2rad(rng.uniform(-8, 8))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (corners - side / 2) @ rot.T + rng.uniform(-0.04, 0.04, (4, 2)) * side + [w / 2, h / 2]
    warped = garment.transform(
        (w, h), Image.Transform.PERSPECTIVE, perspective_coefficients(dst, corners), Image.Resampling.BICUBIC
    )
    alpha = np.clip(np.asarray(warped, np.float32) / 255.0, 0, 1)
    level = ramp(hw, rng, rng.uniform(215, 235), rng.uniform(240, 252))
    colour = hsv_colour(rng, sat=(0.0, 0.9), val=(0.15, 0.65))
    shade = ramp(hw, rng, rng.uniform(0.8, 0.9), 1.0)
    return encode(compose(rgb(level), alpha, colour, shade, noise=2.0, rng=rng))


VARIANTS: dict[str, Callable[[np.ndarray, np.random.Generator], bytes]] = {
    "plain_product_shot": plain_product_shot,
    "colour_on_gradient_with_shadow": colour_on_gradient_with_shadow,
    "textured_light_backdrop": textured_light_backdrop,
    "grey_on_mid_grey_wall": grey_on_mid_grey_wall,
    "light_on_dark_backdrop": light_on_dark_backdrop,
    "small_off_centre_white_canvas": small_off_centre,
    "jpeg_q95": jpeg_plain(95),
    "jpeg_q75": jpeg_plain(75),
    "jpeg_q40": jpeg_plain(40),
    "rotated_perspective": rotated_perspective,
}


def variant_rng(seed: int, name: str, index: int) -> np.random.Generator:
    """The generator for image `index` of variant `name`: the same photo whatever else is rendered."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), index])


def render_variants(images: np.ndarray, names=None, seed: int = 0) -> dict[str, list[bytes]]:
    """Encoded photos {variant name: [one per image]} for uint8 images (N, 28, 28)."""
    names = list(VARIANTS) if names is None else list(names)
    return {name: [VARIANTS[name](arr, variant_rng(seed, name, i)) for i, arr in enumerate(images)] for name in names}


# ---- the measurement --------------------------------------------------------------------------


def classify(model, images_u8: np.ndarray) -> np.ndarray:
    """Predicted class per uint8 image (N, 28, 28)."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(images_u8).unsqueeze(1).float() / 255.0  # (N, 1, 28, 28)
        return torch.cat([model.predict_proba(chunk) for chunk in x.split(1024)]).argmax(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="runs/fast", help="trained model directory (default: runs/fast)")
    parser.add_argument("--n", type=int, default=1000, help="images per variant (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the photo generator (default: 0)")
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "val"],
        help="test images, or the model's validation images for tuning (default: test)",
    )
    parser.add_argument("--variants", help="comma-separated variant names (default: all)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    from deepautodnn import load_fashion_mnist, load_model
    from deepautodnn.data.preprocess import load_image
    from deepautodnn.utils.runtime import machine_info

    model = load_model(args.model_dir)
    if args.split == "test":
        images, labels = load_fashion_mnist("test")
    else:
        from deepautodnn.training.run import load_model_run_data

        data = load_model_run_data(args.model_dir)
        images, labels = data.images[data.val_idx], data.labels[data.val_idx]
    images, labels = images[: args.n], np.asarray(labels[: args.n])
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    base_pred = classify(model, images)
    result = {
        "benchmark": "photo_variants",
        "command": "python " + " ".join(sys.argv),
        "model_dir": args.model_dir,
        "split": args.split,
        "n_images": len(labels),
        "seed": args.seed,
        "in_memory": {"accuracy": float((base_pred == labels).mean())},
        "variants": {},
        "machine": machine_info(),
    }
    for name in names:
        photos = render_variants(images, [name], args.seed)[name]
        start = time.perf_counter()
        x = np.stack([load_image(p, name=f"{name}[{i}]") for i, p in enumerate(photos)])
        seconds = time.perf_counter() - start
        pred = classify(model, x)
        result["variants"][name] = {
            "description": (VARIANTS[name].__doc__ or "").strip(),
            "accuracy": float((pred == labels).mean()),
            "agreement_with_in_memory": float((pred == base_pred).mean()),
            "accuracy_minus_in_memory": float((pred == labels).mean() - (base_pred == labels).mean()),
            "mean_abs_pixel_difference": float(np.abs(x.astype(int) - images).mean()),
            "mean_photo_bytes": float(np.mean([len(p) for p in photos])),
            "load_image_ms_per_image": seconds / len(photos) * 1000,
        }
        print(
            name,
            {k: round(v, 4) for k, v in result["variants"][name].items() if isinstance(v, float)},
            file=sys.stderr,
            flush=True,
        )
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
