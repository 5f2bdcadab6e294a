import gzip
import hashlib
import shutil

import numpy as np
import pytest

from deepautodnn.config import CLASS_NAMES
from deepautodnn.data import fashion_mnist as data
from deepautodnn.data.fashion_mnist import (
    DataError,
    DatasetNotFoundError,
    load_fashion_mnist,
    load_idx_pair,
    parse_idx,
    read_idx,
    train_val_split,
)
from tests.helpers.idx import idx_bytes


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(write_idx, gz, dtype):
    array = (np.arange(2 * 3 * 4) % 251).astype(dtype).reshape(2, 3, 4)
    path = write_idx("x-idx3-ubyte", array, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


def test_bad_magic_names_file(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x05")
    with pytest.raises(DataError, match=r"bad.*magic"):
        read_idx(path)


def test_unknown_type_code(tmp_path):
    path = tmp_path / "typ"
    path.write_bytes(b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x05")
    with pytest.raises(DataError, match="typ.*data type"):
        read_idx(path)


def test_truncated_and_trailing_bytes(tmp_path):
    good = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    short, long_ = tmp_path / "short", tmp_path / "long"
    short.write_bytes(good[:-10])
    long_.write_bytes(good + b"\x00")
    with pytest.raises(DataError, match="short: truncated"):
        read_idx(short)
    with pytest.raises(DataError, match="long: has trailing bytes"):
        read_idx(long_)
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(good[:9], "hdr")


def test_corrupt_and_truncated_gzip(tmp_path):
    payload = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8).reshape(10, 10, 10)))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="cut.gz: corrupt or truncated gzip"):
        read_idx(cut)
    flipped = bytearray(payload)
    flipped[len(flipped) // 2] ^= 0xFF
    bad = tmp_path / "flip.gz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="flip.gz"):
        read_idx(bad)


def test_mismatched_image_and_label_counts(write_idx):
    images = write_idx("imgs", np.zeros((5, 28, 28), np.uint8))
    labels = write_idx("lbls", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match=r"imgs.gz has 5 images but .*lbls.gz has 4 labels"):
        load_idx_pair(images, labels)
    imgs, lbls = load_idx_pair(images, write_idx("ok", np.arange(5, dtype=np.uint8)))
    assert imgs.shape == (5, 28, 28) and lbls.dtype == np.int64


def test_class_names_follow_table_ii():
    assert CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[6] == "Shirt" and CLASS_NAMES[9] == "Ankle boot"
    assert len(CLASS_NAMES) == 10


def test_real_files_match_recorded_hashes(data_dir):
    for stem, digest in data.SHA256.items():
        path = data._find_file(data_dir, stem)
        assert hashlib.sha256(data._read_bytes(path)).hexdigest() == digest


def test_load_fashion_mnist_shapes(data_dir):
    x, y = load_fashion_mnist("train", data_dir)
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [6000] * 10
    xt, yt = load_fashion_mnist("test", data_dir)
    assert xt.shape == (10000, 28, 28) and np.bincount(yt).tolist() == [1000] * 10
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", data_dir)


def _copy_dataset(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


def test_damaged_file_is_rejected(tmp_path, data_dir):
    copy = _copy_dataset(data_dir, tmp_path / "copy")
    target = data._find_file(copy, "t10k-labels-idx1-ubyte")
    raw = bytearray(data._read_bytes(target))
    raw[100] = (raw[100] + 1) % 10  # still a valid IDX file, but not the official bytes
    target.unlink()
    (copy / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))  # raw, not gzipped: also supported
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: SHA-256"):
        load_fashion_mnist("test", copy)


def test_search_order_prefers_data_dir_then_env(tmp_path, monkeypatch, data_dir):
    explicit = _copy_dataset(data_dir, tmp_path / "explicit")
    env = _copy_dataset(data_dir, tmp_path / "env")
    monkeypatch.setenv(data.ENV_VAR, str(env))
    assert data.find_fashion_mnist(explicit) == explicit
    assert data.find_fashion_mnist(tmp_path / "missing") == env
    monkeypatch.delenv(data.ENV_VAR)
    assert data.find_fashion_mnist(tmp_path / "missing") == data_dir


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_download_verifies_and_fills_cache(no_local_data, monkeypatch, data_dir):
    # A file:// mirror exercises the real download code without any network.
    monkeypatch.setattr(data, "MIRROR_URL", data_dir.as_uri() + "/")
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28)
    assert data.find_fashion_mnist() == data.cache_dir()


def test_damaged_download_leaves_nothing(no_local_data, data_dir):
    mirror = _copy_dataset(data_dir, no_local_data / "mirror")
    bad = mirror / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00" * 60008))
    target = no_local_data / "dl"
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*SHA-256"):
        data.download_fashion_mnist(target, url=mirror.as_uri() + "/")
    assert not any(p.name.startswith("train-labels") for p in target.iterdir())
    assert not list(target.glob(".*part"))


def test_offline_without_data_says_how_to_get_it(no_local_data, monkeypatch):
    monkeypatch.setattr(data, "MIRROR_URL", (no_local_data / "nowhere").as_uri() + "/")
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train")
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_fashion_mnist("train", download=False)


def test_validation_split_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(10), 600)
    tr, va = train_val_split(labels, 500, seed=0)
    tr2, va2 = train_val_split(labels, 500, seed=0)
    np.testing.assert_array_equal(va, va2)
    assert len(va) == 500 and len(tr) == 5500
    assert not set(tr) & set(va)
    assert np.bincount(labels[va]).tolist() == [50] * 10
    _, va3 = train_val_split(labels, 500, seed=1)
    assert set(va3) != set(va)
