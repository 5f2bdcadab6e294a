"""Where a run's images come from: Fashion-MNIST, a folder of class folders, or a Kaggle-style CSV.

`--data` takes one of:

- `fashion-mnist` (the default): the official training split, and its test split for the report;
- `imagefolder:PATH`: one sub-folder per class, named for it; every file inside (at any depth)
  goes through `deepautodnn.data.preprocess`, files that can't be read are listed and skipped;
- `csv:PATH`: the Kaggle Fashion-MNIST layout, a header then `label,pixel1,...,pixelN` rows of
  0-255 grey values of a square image.

Fashion-MNIST brings its own test split. For the other two, a stratified tenth of the images
(split seed fixed) is held out as the test split before the validation split is carved, so a
run's test figures never come from images it trained or was selected on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepautodnn.config import CLASS_NAMES
from deepautodnn.data.fashion_mnist import DataError, load_fashion_mnist, train_val_split

FASHION_MNIST = "fashion-mnist"
MIN_IMAGES_PER_CLASS = 3  # one each for the test, validation and training splits
TEST_FRACTION = 0.1


@dataclass
class RunData:
    """A run's images: the training pool with its split, and the test split."""

    images: np.ndarray  # (N, S, S) uint8: training + validation images
    labels: np.ndarray  # (N,) int64
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"file", "error"} per unreadable file


def parse_source(spec: str | None) -> tuple[str, Path | None]:
    if not spec or spec == FASHION_MNIST:
        return FASHION_MNIST, None
    kind, sep, path = spec.partition(":")
    if not sep or kind not in ("imagefolder", "csv") or not path:
        raise ValueError(f"--data {spec!r}: use 'fashion-mnist', 'imagefolder:PATH' or 'csv:PATH'")
    return kind, Path(path)


def load_image_folder(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str], list[dict]]:
    """Images (N, size, size), labels (N,), class names (sorted folder names), skipped files."""
    from deepautodnn.data.preprocess import ImageError, load_image

    if not root.is_dir():
        raise DataError(f"{root}: not a folder (imagefolder:PATH needs one sub-folder per class)")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"{root}: found {len(class_dirs)} class folder(s); need at least 2 sub-folders, one per class")
    images, labels, skipped = [], [], []
    for k, class_dir in enumerate(class_dirs):
        count = 0
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            try:
                images.append(load_image(path, size))
            except ImageError as err:
                skipped.append({"file": str(path), "error": str(err)})
                continue
            labels.append(k)
            count += 1
        if count == 0:
            raise DataError(f"{class_dir}: class {class_dir.name!r} has no readable images")
    return np.stack(images), np.asarray(labels, np.int64), [d.name for d in class_dirs], skipped


def load_csv(path: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A Kaggle-style CSV: header, then `label,pixel1..pixel{size*size}` rows of 0-255 values."""
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
            if not header or header[0].strip().lower() != "label":
                raise DataError(f"{path}: the first line must be a header starting with 'label'")
            if len(header) != 1 + size * size:
                raise DataError(
                    f"{path}: the header has {len(header) - 1} pixel columns; a {size}x{size} image needs {size * size}"
                )
            rows = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    except ValueError as err:
        raise DataError(f"{path}: not a table of whole numbers ({err})") from None
    if rows.shape[0] == 0 or rows.shape[1] != 1 + size * size:
        raise DataError(f"{path}: expected rows of {1 + size * size} values, got {rows.shape[1] if rows.size else 0}")
    pixels = rows[:, 1:]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values must be 0-255, found {pixels.min()}..{pixels.max()}")
    raw = rows[:, 0]
    values = np.unique(raw)
    labels = np.searchsorted(values, raw).astype(np.int64)  # class indices 0..K-1 in label order
    fashion = size == 28 and set(values) <= set(range(len(CLASS_NAMES)))
    names = [CLASS_NAMES[v] if fashion else str(v) for v in values]
    return pixels.reshape(-1, size, size).astype(np.uint8), labels, names


def _check_class_sizes(labels: np.ndarray, names: list[str], origin) -> None:
    counts = np.bincount(labels, minlength=len(names))
    small = [f"{names[k]!r} ({c})" for k, c in enumerate(counts) if c < MIN_IMAGES_PER_CLASS]
    if small:
        raise DataError(
            f"{origin}: too few images to split for class {', '.join(small)}; each class needs "
            f"at least {MIN_IMAGES_PER_CLASS} (test, validation, training)"
        )


def validation_size(val_size: int, n_images: int, train_limit: int | None) -> int:
    """Images carved for validation: `val_size`, or at most a tenth of a `--train-limit` subset."""
    return val_size if not train_limit else min(val_size, n_images // 10)


def load_run_data(
    source: str | None,
    *,
    size: int = 28,
    val_size: int = 5000,
    split_seed: int = 0,
    data_dir=None,
    train_limit: int | None = None,
) -> RunData:
    """The run's images and splits, from `--data`. With `train_limit`, only the first N training
    images are used and the validation split shrinks to a tenth of them."""
    kind, path = parse_source(source)
    skipped: list[dict] = []
    if kind == FASHION_MNIST:
        images, labels = load_fashion_mnist("train", data_dir)
        test_images, test_labels = load_fashion_mnist("test", data_dir)
        names = list(CLASS_NAMES)
    else:
        if kind == "imagefolder":
            pool, pool_labels, names, skipped = load_image_folder(path, size)
        else:
            pool, pool_labels, names = load_csv(path, size)
        _check_class_sizes(pool_labels, names, path)
        n_test = max(len(names), round(TEST_FRACTION * len(pool_labels)))
        rest_idx, test_idx = _split(pool_labels, n_test, split_seed + 1, path)
        images, labels = pool[rest_idx], pool_labels[rest_idx]
        test_images, test_labels = pool[test_idx], pool_labels[test_idx]
        val_size = min(val_size, max(len(names), len(labels) // 10))
    if train_limit:
        images, labels = images[:train_limit], labels[:train_limit]
    val_size = validation_size(val_size, len(labels), train_limit)
    train_idx, val_idx = _split(labels, val_size, split_seed, path or "Fashion-MNIST")
    return RunData(images, labels, train_idx, val_idx, test_images, test_labels, names, skipped)


def _split(labels, size, seed, origin):
    try:
        return train_val_split(labels, size, seed)
    except ValueError as err:
        raise DataError(
            f"{origin}: cannot carve a stratified split of {size} from {len(labels)} images ({err})"
        ) from None
