"""Shared fixtures: tiny IDX files, the real Fashion-MNIST location, and one tiny trained model."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from deepautodnn.data.fashion_mnist import find_fashion_mnist
from tests.helpers.idx import idx_bytes


@pytest.fixture
def write_idx(tmp_path):
    def write(name: str, array: np.ndarray, gz: bool = True):
        data = idx_bytes(array)
        path = tmp_path / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return write


@pytest.fixture(scope="session")
def data_dir():
    """Where the real Fashion-MNIST lives. CI installs it, so there its absence is a failure."""
    found = find_fashion_mnist()
    if found is None:
        msg = "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir):
    """A `fast`-architecture model trained briefly on 3,000 real images; its run directory."""
    from deepautodnn import get_preset, train_run

    cfg = get_preset("fast")
    cfg.train.ae_epochs, cfg.train.dnn_epochs, cfg.train.finetune_epochs = 1, 1, 2
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    metrics = train_run(cfg, run_dir, seed=0, data_dir=data_dir, train_limit=3000, echo=lambda m: None)
    return run_dir, metrics


@pytest.fixture(scope="session")
def test_images(data_dir):
    """Fashion-MNIST's test split: uint8 (10000, 28, 28), int64 (10000,)."""
    from deepautodnn.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist("test", data_dir)


@pytest.fixture(scope="session")
def search_catalogue(tmp_path_factory, test_images):
    """A shop of 60 product photos (test images 0-59), their vectors from the pretrained model and
    an exact index of them: (photo folder, vectors file, index file)."""
    from deepautodnn.inference.embedding import embed_catalogue
    from deepautodnn.inference.vector_index import build_catalogue_index
    from tests.helpers.photos import product_photo

    images, _ = test_images
    root = tmp_path_factory.mktemp("search")
    for i in range(60):
        product_photo(images[i], root / "shop" / f"{i:03d}.jpg")
    vectors, index = root / "vectors.parquet", root / "catalogue.index"
    embed_catalogue("fashion-mnist", [root / "shop"], vectors, workers=0, progress=False)
    build_catalogue_index(vectors, index)
    return root / "shop", vectors, index


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """`serve` sets this process's compute threads (see serve.app.use_serving_threads); tests that run
    it in-process must not leave the rest of the suite on fewer threads."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
