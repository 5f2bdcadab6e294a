import json

import numpy as np
import pytest
import torch

from deepautodnn import load_model, predict_proba, save_model
from deepautodnn.checkpoint import ModelFileError, atomic_write_bytes
from deepautodnn.config import Config, ModelConfig
from deepautodnn.models import DeepAutoDNN

TINY = Config(model=ModelConfig(encoder_channels=(8, 16), encoder_pool=(True, True), dnn_hidden=(32,)))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = DeepAutoDNN(TINY.model).eval()
    save_model(tmp_path / "m", model, TINY, {"accuracy": 0.5})
    return tmp_path / "m", model


def test_round_trip_gives_identical_predictions(saved):
    model_dir, model = saved
    x = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    again = load_model(model_dir)
    np.testing.assert_array_equal(predict_proba(model, x), predict_proba(again, x))
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "metrics.json", "model.safetensors"]


def test_real_model_round_trip(tiny_run, data_dir):
    from deepautodnn import load_fashion_mnist

    run_dir, metrics = tiny_run
    x, y = load_fashion_mnist("test", data_dir)
    proba = predict_proba(load_model(run_dir), x)
    assert np.isclose((proba.argmax(1) == y).mean(), metrics["accuracy"])


def test_missing_dir_and_files(tmp_path, saved):
    with pytest.raises(ModelFileError, match="model directory not found"):
        load_model(tmp_path / "nope")
    model_dir, _ = saved
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="model.safetensors: file not found"):
        load_model(model_dir)


def test_corrupt_weights_name_the_file(saved):
    model_dir, _ = saved
    path = model_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="model.safetensors: not a valid safetensors"):
        load_model(model_dir)


def test_weights_not_matching_config(saved):
    model_dir, _ = saved
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["model"]["dnn_hidden"] = [64]
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="do not match the config"):
        load_model(model_dir)


def test_bad_config_json(saved):
    model_dir, _ = saved
    (model_dir / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="config.json: not readable JSON"):
        load_model(model_dir)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind
