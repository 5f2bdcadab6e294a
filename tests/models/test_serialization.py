import json

import numpy as np
import pytest
import torch

from deepautodnn import load_model, predict_proba, save_model
from deepautodnn.config import Config
from deepautodnn.errors import DeepAutoDNNError, ModelFileError, WriteError
from deepautodnn.models.hybrid import DeepAutoDNN
from deepautodnn.utils.files import atomic_write_bytes, sha256_hex
from tests.helpers.models import TINY as TINY_MODEL

TINY = Config(model=TINY_MODEL)


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
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
        "model.safetensors.sha256",
    ]
    digest, name = (model_dir / "model.safetensors.sha256").read_text().split()
    assert name == "model.safetensors" and digest == sha256_hex((model_dir / "model.safetensors").read_bytes())


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


def test_truncated_weights_name_the_file(saved):
    model_dir, _ = saved
    path = model_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="model.safetensors: 100 bytes, but the config's network needs at least"):
        load_model(model_dir)


def test_tampered_weights_fail_their_checksum(saved):
    model_dir, _ = saved
    path = model_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # one bit of one weight: still a valid safetensors file, but a different model
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="SHA-256 does not match model.safetensors.sha256"):
        load_model(model_dir)


def test_damaged_file_with_matching_checksum_is_still_refused(saved):
    model_dir, _ = saved
    path = model_dir / "model.safetensors"
    data = b"\xff" * path.stat().st_size  # right size, not safetensors; its checksum updated to match
    path.write_bytes(data)
    (model_dir / "model.safetensors.sha256").write_text(f"{sha256_hex(data)}  model.safetensors\n")
    with pytest.raises(ModelFileError, match="not a valid safetensors file"):
        load_model(model_dir)


def test_missing_checksum_is_refused_in_the_current_format(saved):
    model_dir, model = saved
    (model_dir / "model.safetensors.sha256").unlink()
    with pytest.raises(ModelFileError, match="can't be verified"):
        load_model(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["format_version"] = 1  # directories written before checksums still load
    (model_dir / "config.json").write_text(json.dumps(cfg))
    assert torch.equal(load_model(model_dir).classifier.layers[1].weight, model.classifier.layers[1].weight)


@pytest.mark.parametrize(
    "hidden, message",
    [
        ([512], "the config's network needs at least"),  # far bigger than the file holds, even in float16
        ([16], "do not match the config"),  # a smaller one: names fit, shapes don't
    ],
)
def test_weights_not_matching_config(saved, hidden, message):
    model_dir, _ = saved
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["model"]["dnn_hidden"] = hidden
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match=message):
        load_model(model_dir)


def test_config_asking_for_a_huge_network_fails_before_allocating(saved):
    model_dir, _ = saved
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["model"]["dnn_hidden"] = [65536] * 32  # ~137 billion parameters, if it were built
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="the config's network needs"):
        load_model(model_dir)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"model": {"dnn_hidden": "abc"}}, "model.dnn_hidden must be a list of whole numbers"),
        ({"train": {"ae_lr": -1}}, "ae_lr must be in"),
        ({"model": {"image_size": 10**9}}, "image_size must be"),
        ({"format_version": "2"}, "format_version must be a whole number"),
        ({"format_version": 99}, "written by a newer deepautodnn"),
    ],
)
def test_invalid_config_values_are_clear_errors(saved, edit, message):
    model_dir, _ = saved
    cfg = json.loads((model_dir / "config.json").read_text())
    for key, value in edit.items():
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match=message):
        load_model(model_dir)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not readable JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("[" * 100_000, "not readable JSON"),  # nesting deep enough to overflow a recursive parser
    ],
)
def test_bad_config_json(saved, text, message):
    model_dir, _ = saved
    (model_dir / "config.json").write_text(text)
    with pytest.raises(ModelFileError, match=f"config.json: {message}"):
        load_model(model_dir)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(
        WriteError, match=r"cannot write .*f\.bin: No space left on device; any earlier f\.bin is intact"
    ):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(WriteError, match="cannot write") as err:
        atomic_write_bytes(blocker / "sub" / "f.bin", b"x")  # works even as root, unlike chmod
    assert isinstance(err.value, DeepAutoDNNError) and isinstance(err.value, OSError)
    assert blocker.read_text() == "not a folder"


def test_nothing_in_the_package_unpickles():
    """Only safetensors and JSON are read: no torch.load (unless weights_only=True), pickle, joblib
    or np.load with allow_pickle, anywhere in the package, the benchmarks or the scripts."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    risky = re.compile(
        r"torch\.load\((?![^)]*weights_only=True)|\bpickle\.loads?\(|\bjoblib\.load\(|"
        r"allow_pickle\s*=\s*True|\bdill\.|\bcloudpickle\."
    )
    files = [p for folder in ("src", "benchmarks", "scripts") for p in (root / folder).rglob("*.py")]
    assert len(files) > 20
    found = [
        f"{p.relative_to(root)}:{n}"
        for p in files
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if risky.search(line)
    ]
    assert found == []
    assert risky.search("state = torch.load(path)") and not risky.search("torch.load(p, weights_only=True)")


def test_a_model_directory_from_before_the_layout_change_loads_and_predicts_the_same():
    """tests/fixtures/model_v0.1.0 was saved by deepautodnn 0.1.0 (commit 5ccbdc0, the flat layout),
    with its probabilities for eight fixed images: today's code must load it and agree."""
    import json
    from pathlib import Path

    import numpy as np

    from deepautodnn import load_model, predict_proba

    model_dir = Path(__file__).parents[1] / "fixtures" / "model_v0.1.0"
    expected = json.loads((model_dir / "expected_probabilities.json").read_text())
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(predict_proba(load_model(model_dir), images), expected["probabilities"], atol=1e-6)


def test_half_precision_weights_load_widened_to_float32(saved):
    """A pretrained model ships its weights in float16; they load as the float32 network they round."""
    from safetensors.torch import load_file, save

    from deepautodnn.utils.files import write_with_checksum

    model_dir, model = saved
    path = model_dir / "model.safetensors"
    halved = {k: v.half() if v.dtype == torch.float32 else v for k, v in load_file(path).items()}
    write_with_checksum(path, save(halved))
    again = load_model(model_dir)
    for name, value in again.state_dict().items():
        original = model.state_dict()[name]
        assert value.dtype == original.dtype
        expected = original.half().float() if original.dtype == torch.float32 else original
        torch.testing.assert_close(value, expected, rtol=0, atol=0)
