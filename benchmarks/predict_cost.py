"""The cost of the whole predict path per image, one photo at a time, through the public API
`predict_files` (decode, preprocessing, the backend, unknown-input detection). Prints JSON.

It uses only API that every release has had, so the same script times an older checkout too:

    python benchmarks/predict_cost.py MODEL_DIR [--backend torch] [--n 200] [--out FILE]
    PYTHONPATH=/tmp/old/src python benchmarks/predict_cost.py OLD_FORMAT_MODEL_DIR ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _emit import emit_json
from PIL import Image

import deepautodnn
from deepautodnn import UnknownDetector, load_fashion_mnist, load_model, predict_files
from deepautodnn.inference.backends import make_backend
from deepautodnn.utils.runtime import machine_info


def product_photos(images: np.ndarray, folder: Path, seed: int) -> list[Path]:
    """Dark garments on a white 600x500 canvas, as JPEG files (a shop's plainest photo)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, arr in enumerate(images):
        side = int(rng.integers(300, 460))
        garment = Image.fromarray(255 - arr).resize((side, side), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (600, 500), 255)
        canvas.paste(garment, (int(rng.integers(0, 600 - side)), int(rng.integers(0, 500 - side))))
        paths.append(folder / f"{i:04d}.jpg")
        canvas.convert("RGB").save(paths[-1], quality=90)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args()
    model = load_model(args.model_dir)
    detector = UnknownDetector.load(args.model_dir)
    backend = make_backend(args.model_dir, args.backend)
    images, _ = load_fashion_mnist("test")
    with tempfile.TemporaryDirectory() as tmp:
        paths = product_photos(images[: args.n], Path(tmp), args.seed)
        for path in paths[:10]:  # warm-up: allocator, oneDNN kernels, imports
            predict_files(model, [path], detector=detector, backend=backend)
        times = []
        for path in paths:
            start = time.perf_counter()
            report = predict_files(model, [path], detector=detector, backend=backend)
            times.append(time.perf_counter() - start)
            assert report.predictions and report.predictions[0]["unknown_score"] is not None
    commit = subprocess.run(
        ["git", "-C", str(Path(deepautodnn.__file__).parent), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    emit_json(
        {
            "benchmark": "predict_cost",
            "command": "python " + " ".join(sys.argv),
            "deepautodnn_commit": commit,
            "deepautodnn_version": deepautodnn.__version__,
            "backend": backend.name,
            "n": args.n,
            "photo": "600x500 JPEG, dark garment on white",
            "median_ms": float(np.median(times) * 1000),
            "p90_ms": float(np.quantile(times, 0.9) * 1000),
            "machine": machine_info(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
