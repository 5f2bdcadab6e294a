"""Fashion-MNIST: the IDX reader, where the files are found, their verification, and the splits.

The paper (Sec. IV-A) uses the official 60,000/10,000 train/test split. We additionally carve a
stratified validation split out of the training set for model selection, so that the test split is
touched only for the final report.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from deepautodnn.errors import DeepAutoDNNError

# Table II of the paper, in label order.


MIRROR_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


ENV_VAR = "DEEPAUTODNN_DATA"


# SHA-256 of the *decompressed* IDX bytes. Debian recompresses the .gz files, so hashing the
# decompressed payload lets both the upstream and the Debian copies pass.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataError(DeepAutoDNNError, ValueError):
    """A data file is missing, damaged, or inconsistent. The message names the file."""


class DatasetNotFoundError(DataError):
    """Fashion-MNIST is nowhere on disk and could not be downloaded."""


MAX_IDX_BYTES = 2**30  # 1 GiB: 20x Fashion-MNIST's training images; bounds what a gzip bomb can cost


def _gunzip(raw: bytes, name) -> bytes:
    """Decompress every gzip member of `raw`, refusing more than MAX_IDX_BYTES of output."""
    out, size = [], 0
    while raw:
        inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
        try:
            while raw:
                chunk = inflater.decompress(raw, MAX_IDX_BYTES - size + 1)
                raw = inflater.unconsumed_tail
                out.append(chunk)
                size += len(chunk)
                if size > MAX_IDX_BYTES:
                    raise DataError(f"{name}: decompresses to more than {MAX_IDX_BYTES // 2**20} MiB; refused")
                if inflater.eof or not chunk:
                    break
        except zlib.error as err:
            raise DataError(f"{name}: corrupt or truncated gzip data ({err})") from None
        if not inflater.eof:
            raise DataError(f"{name}: corrupt or truncated gzip data (ends before the end of the stream)")
        raw = inflater.unused_data.lstrip(b"\0")  # another member may follow; padding zeros may not
    return b"".join(out)


def _read_bytes(path: Path) -> bytes:
    """The file's payload, transparently gunzipped (detected by magic bytes, not by suffix)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err.strerror or err})") from None
    if raw[:2] == b"\x1f\x8b":
        return _gunzip(raw, path)
    return raw


def parse_idx(payload: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array, checking magic, type, dimensions and byte count."""
    if len(payload) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(payload)} bytes)")
    zero, type_code, ndim = int.from_bytes(payload[:2], "big"), payload[2], payload[3]
    if zero != 0:
        raise DataError(f"{name}: bad IDX magic number {payload[:4].hex()} (must start 0000)")
    if type_code not in _IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX data type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares zero dimensions")
    header_len = 4 + 4 * ndim
    if len(payload) < header_len:
        raise DataError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = header_len + math.prod(shape) * dtype.itemsize  # exact: a hostile header can't overflow it
    if len(payload) != expected:
        kind = "truncated" if len(payload) < expected else "has trailing bytes"
        raise DataError(f"{name}: {kind}: header shape {shape} needs {expected} bytes, file has {len(payload)}")
    data = np.frombuffer(payload, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzipped)."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def _candidate_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    dirs.append(DEBIAN_DIR)
    dirs.append(cache_dir())
    return dirs


def cache_dir() -> Path:
    """The per-user cache directory where downloads go."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deepautodnn" / "fashion-mnist"


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first directory (in search order) that holds all four files, or None."""
    stems = [s for pair in FILES.values() for s in pair]
    for directory in _candidate_dirs(data_dir):
        if all(_find_file(directory, s) for s in stems):
            return directory
    return None


def _verified_payload(path: Path, stem: str) -> bytes:
    payload = _read_bytes(path)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SHA256[stem]:
        raise DataError(
            f"{path}: SHA-256 of decompressed data is {digest}, expected {SHA256[stem]}; "
            "the file is damaged or not the official Fashion-MNIST. Delete it and fetch it again."
        )
    return payload


def download_fashion_mnist(target: str | os.PathLike | None = None, url: str | None = None) -> Path:
    """Download the four files from the official mirror into `target` (default: the cache).

    Each file is verified before it is moved into place, so a failed download never leaves a
    damaged file behind.
    """
    url = url or MIRROR_URL
    target = Path(target) if target is not None else cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    for stem in (s for pair in FILES.values() for s in pair):
        final = target / (stem + ".gz")
        if final.is_file():
            continue
        fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{stem}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url + stem + ".gz", timeout=60) as resp:
                shutil.copyfileobj(resp, out)
            _verified_payload(tmp, stem)
            os.replace(tmp, final)
        except (urllib.error.URLError, OSError) as err:
            raise DatasetNotFoundError(f"could not download {url}{stem}.gz ({err}). {_HOW_TO_GET}") from None
        finally:
            tmp.unlink(missing_ok=True)
    return target


_HOW_TO_GET = (
    "Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four "
    "official IDX files (.gz or raw) in a folder and pass --data-dir DIR or set $DEEPAUTODNN_DATA."
)


def load_fashion_mnist(
    split: str, data_dir: str | os.PathLike | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load a Fashion-MNIST split as `(images, labels)`: uint8 (N, 28, 28) and int64 (N,).

    Looks in `data_dir`, `$DEEPAUTODNN_DATA`, the Debian package folder, then the user cache;
    downloads into the cache if the files are nowhere (unless `download=False`).
    Every file is verified by the SHA-256 of its decompressed bytes.
    """
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
    directory = find_fashion_mnist(data_dir)
    if directory is None:
        if not download:
            raise DatasetNotFoundError(f"Fashion-MNIST not found. {_HOW_TO_GET}")
        directory = download_fashion_mnist()
    image_stem, label_stem = FILES[split]
    image_path, label_path = _find_file(directory, image_stem), _find_file(directory, label_stem)
    images = parse_idx(_verified_payload(image_path, image_stem), str(image_path))
    labels = parse_idx(_verified_payload(label_path, label_stem), str(label_path))
    return _checked_pair(images, labels, image_path, label_path)


def load_idx_pair(image_path: str | os.PathLike, label_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load any image/label IDX pair (no hash check), checking that the two agree."""
    return _checked_pair(read_idx(image_path), read_idx(label_path), image_path, label_path)


def _checked_pair(images, labels, image_path, label_path) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{image_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{label_path}: expected labels of shape (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    return images, labels.astype(np.int64)


def train_val_split(labels: np.ndarray, val_size: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split of training indices into (train_idx, val_idx).

    The split seed is separate from the training seed so that every run selects models on the
    same validation images.
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    if val_size <= 0:
        return indices, indices[:0]
    train_idx, val_idx = train_test_split(indices, test_size=val_size, stratify=labels, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)
