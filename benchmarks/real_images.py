"""Real-image robustness and unknown-input detection of a trained model directory. Prints JSON.

1. Realistic versions of the Fashion-MNIST test images, each encoded as a file and read back
   through `deepautodnn.preprocess`: a product shot (dark garment on white, upscaled to 420 px on
   a 600x500 canvas) as JPEG, as RGB PNG, as a transparent PNG (garment on alpha 0); and the
   original 28x28 PNG. Accuracy of each against the in-memory arrays.
2. Unknown-input detection at the model's calibrated false-alarm rate (`unknown.json`): the
   share flagged among the test images (false alarms), the product shots, and out-of-distribution
   images that installed packages ship: scikit-learn's digits, scikit-image's sample photos, and
   uniform random noise at 28x28 and at 256x256 pixels.

    python benchmarks/real_images.py MODEL_DIR [--n 1000] > results/real_images_fast_seed0_cpu.json
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np
from PIL import Image

from _emit import emit_json
from deepautodnn import load_fashion_mnist, load_model
from deepautodnn.preprocess import load_image
from deepautodnn.system import machine_info
from deepautodnn.unknown import UnknownDetector, score_images


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def product_shot(arr: np.ndarray, rgba: bool = False) -> Image.Image:
    """A Fashion-MNIST image as a shop photo: the garment dark on white (or on transparency), large."""
    garment = Image.fromarray(arr).resize((420, 420), Image.Resampling.BICUBIC)
    if rgba:
        # A cut-out: the garment opaque with soft edges, the background fully transparent.
        g = np.asarray(garment)
        rgb = Image.merge("RGB", [Image.fromarray(255 - g)] * 3)
        alpha = Image.fromarray(np.clip(g.astype(int) * 8, 0, 255).astype(np.uint8))
        out = Image.new("RGBA", (600, 500), (0, 0, 0, 0))
        out.paste(Image.merge("RGBA", (*rgb.split(), alpha)), (90, 40))
        return out
    out = Image.new("RGB", (600, 500), (255, 255, 255))
    out.paste(Image.fromarray(255 - np.asarray(garment)).convert("RGB"), (90, 40))
    return out


VARIANTS = {
    "png_28x28": lambda a: encode(Image.fromarray(a), "PNG"),
    "product_shot_jpeg": lambda a: encode(product_shot(a), "JPEG", quality=90),
    "product_shot_rgb_png": lambda a: encode(product_shot(a), "PNG"),
    "product_shot_transparent_png": lambda a: encode(product_shot(a, rgba=True), "PNG"),
}


def ood_sets(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Model inputs for images unlike Fashion-MNIST, through the same preprocessing."""
    import skimage.data
    from sklearn.datasets import load_digits

    digits = load_digits().images  # (1797, 8, 8) in 0..16
    sets = {"sklearn_digits": [load_image(encode(Image.fromarray((d * 15.9).astype(np.uint8)).resize(
        (64, 64), Image.Resampling.BICUBIC), "PNG")) for d in digits[:500]]}
    names = ["camera", "astronaut", "coffee", "chelsea", "rocket", "page", "text", "moon", "horse", "clock",
             "coins", "immunohistochemistry", "hubble_deep_field", "retina", "cat", "grass", "gravel", "brick",
             "colorwheel", "logo"]
    photos = []
    for name in names:
        arr = getattr(skimage.data, name)()
        if arr.dtype != np.uint8:
            arr = (arr > 0).astype(np.uint8) * 255 if arr.dtype == bool else arr.astype(np.uint8)
        photos.append(load_image(encode(Image.fromarray(arr), "PNG"), name=name))
    sets["skimage_photos"] = photos
    for side in (28, 256):  # resizing 256 -> 28 smooths the noise into a grey blob
        sets[f"uniform_noise_{side}px"] = [
            load_image(encode(Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)), "PNG"))
            for _ in range(500)]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--n", type=int, default=1000, help="test images per variant (default: 1000)")
    args = parser.parse_args()
    model = load_model(args.model_dir)
    detector = UnknownDetector.load(args.model_dir)
    if detector is None:
        sys.exit(f"{args.model_dir} has no unknown.json; run `deepautodnn calibrate {args.model_dir}` first")
    images, labels = load_fashion_mnist("test")
    images, labels = images[:args.n], labels[:args.n]
    ref = detector.autoencoder
    base_proba, base_err = score_images(model, images, autoencoder=ref)
    base_pred = base_proba.argmax(1)
    result = {
        "benchmark": "real_images",
        "command": "python " + " ".join(sys.argv),
        "model_dir": args.model_dir,
        "n_test_images": len(labels),
        "detector": detector.to_dict(),
        "in_memory": {"accuracy": float((base_pred == labels).mean()),
                      "flagged_unknown": float(detector.is_unknown(base_proba, base_err).mean())},
        "variants": {},
        "out_of_distribution": {},
        "machine": machine_info(),
    }
    for name, make in VARIANTS.items():
        x = np.stack([load_image(make(a)) for a in images])
        proba, err = score_images(model, x, autoencoder=ref)
        pred = proba.argmax(1)
        result["variants"][name] = {
            "accuracy": float((pred == labels).mean()),
            "agreement_with_in_memory": float((pred == base_pred).mean()),
            "flagged_unknown": float(detector.is_unknown(proba, err).mean()),
            "mean_abs_pixel_difference": float(np.abs(x.astype(int) - images).mean()),
        }
        print(name, result["variants"][name], file=sys.stderr, flush=True)
    for name, inputs in ood_sets(np.random.default_rng(0)).items():
        proba, err = score_images(model, np.stack(inputs), autoencoder=ref)
        result["out_of_distribution"][name] = {"n": len(inputs),
                                               "detected_unknown": float(detector.is_unknown(proba, err).mean())}
        print(name, result["out_of_distribution"][name], file=sys.stderr, flush=True)
    emit_json(result)


if __name__ == "__main__":
    main()
