"""Draw docs/preprocessing.png: each step of `deepautodnn.preprocess` on two realistic inputs (a
product shot on white as JPEG, and a transparent cut-out), using the library's own steps.

    python scripts/preprocessing_figure.py [--out docs/preprocessing.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from real_images import VARIANTS  # noqa: E402  (the benchmark's realistic versions of test images)

from deepautodnn import load_fashion_mnist  # noqa: E402
from deepautodnn.plots import _pyplot, _save  # noqa: E402
from deepautodnn.preprocess import open_image, preprocessing_steps  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/preprocessing.png")
    args = parser.parse_args()
    images, _ = load_fashion_mnist("test")
    rows = [("product shot, JPEG", VARIANTS["product_shot_jpeg"](images[0])),
            ("transparent PNG", VARIANTS["product_shot_transparent_png"](images[1]))]
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 5, figsize=(13, 5.4))
    for r, (title, data) in enumerate(rows):
        img = open_image(data, name=title)
        shown = img.convert("RGBA")
        checker = Image.fromarray(((np.indices(shown.size[::-1]).sum(0) // 20) % 2 * 40 + 200).astype(np.uint8)).convert("RGBA")
        axes[r][0].imshow(Image.alpha_composite(checker, shown))
        axes[r][0].set_title(f"input: {title}\n{img.size[0]}x{img.size[1]} {img.mode}", fontsize=8)
        for c, (name, arr) in enumerate(preprocessing_steps(img), start=1):
            axes[r][c].imshow(arr, cmap="gray", vmin=0, vmax=255)
            axes[r][c].set_title(f"{c}. {name}\n{arr.shape[1]}x{arr.shape[0]}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, args.out, 100)
    print(args.out)


if __name__ == "__main__":
    main()
