"""Draw docs/preprocessing.png: every step of `deepautodnn.data.preprocess` on realistic photos of
Fashion-MNIST test images (from photo_variants.py beside it), each row ending with the original
28x28 image the photo was made from. The panels are the library's own steps.

    python benchmarks/preprocessing_figure.py [--out docs/preprocessing.png]
"""

from __future__ import annotations

import argparse

from photo_variants import VARIANTS, variant_rng  # the benchmark's photos of test images

from deepautodnn import load_fashion_mnist
from deepautodnn.data.preprocess import load_preprocessed, save_steps_figure

ROWS = [  # (variant, test image index)
    ("plain_product_shot", 0),
    ("colour_on_gradient_with_shadow", 1),
    ("textured_light_backdrop", 2),
    ("grey_on_mid_grey_wall", 3),
    ("light_on_dark_backdrop", 4),
    ("small_off_centre_white_canvas", 5),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/preprocessing.png")
    args = parser.parse_args()
    images, _ = load_fashion_mnist("test")
    rows = []
    for name, index in ROWS:
        photo = VARIANTS[name](images[index], variant_rng(0, name, index))
        prepared = load_preprocessed(photo, name=name)
        rows.append((name.replace("_", " "), [*prepared.steps, ("Fashion-MNIST original", images[index])]))
    save_steps_figure(rows, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
