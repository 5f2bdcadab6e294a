"""The CLI end to end, run as a user would: `python -m deepautodnn ...` in a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deepautodnn import CLASS_NAMES, load_fashion_mnist, load_model, predict_proba
from tests.helpers.models import ONE_EPOCH_PER_STAGE


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "deepautodnn", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_train_then_evaluate_json_schema(tmp_path, data_dir):
    out = tmp_path / "run"
    proc = cli(
        "train",
        "--preset",
        "fast",
        "--data-dir",
        data_dir,
        "--out",
        out,
        "--train-limit",
        1000,
        "--ae-epochs",
        1,
        "--dnn-epochs",
        1,
        "--finetune-epochs",
        1,
        "--seed",
        5,
    )
    assert "Test-set evaluation" in proc.stdout and "test accuracy" in proc.stderr
    assert json.loads((out / "config.json").read_text())["seed"] == 5

    result = json.loads(cli("evaluate", out, "--data-dir", data_dir, "--json").stdout)
    assert 0 <= result["accuracy"] <= 1 and result["split"] == "test"
    assert list(result["per_class"]) == list(CLASS_NAMES)
    for m in result["per_class"].values():
        assert set(m) >= {"precision", "recall", "specificity", "f1"}
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 10000
    assert np.isclose(result["accuracy"], json.loads((out / "metrics.json").read_text())["accuracy"])

    val = json.loads(cli("evaluate", out, "--data-dir", data_dir, "--split", "val", "--json").stdout)
    assert val["split"] == "val" and np.array(val["confusion_matrix"]).sum() == 100  # 10% of 1,000

    again = cli("train", "--out", out, "--data-dir", data_dir, check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "Traceback" not in again.stderr


def test_predict_pngs_agree_with_in_memory_predictions(tmp_path, tiny_run, data_dir):
    run_dir, _ = tiny_run
    x, _ = load_fashion_mnist("test", data_dir)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(x[i]).save(folder / f"img{i:02d}.png")
    expected = predict_proba(load_model(run_dir), x[:20])
    out = json.loads(cli("predict", run_dir, folder, "--format", "json", "--top-k", 2).stdout)
    assert [p["file"] for p in out] == [str(folder / f"img{i:02d}.png") for i in range(20)]
    for p, e in zip(out, expected):
        assert p["label_index"] == int(e.argmax()) and p["label"] == CLASS_NAMES[int(e.argmax())]
        assert np.isclose(p["probability"], e.max(), atol=1e-6)
        assert len(p["top_k"]) == 2 and p["top_k"][0]["label"] == p["label"]

    csv_out = cli("predict", run_dir, folder / "img00.png", "--format", "csv").stdout.splitlines()
    assert csv_out[0] == "file,label,label_index,probability,unknown,unknown_score,top_k" and len(csv_out) == 2
    table = cli("predict", run_dir, folder / "img01.png").stdout
    assert CLASS_NAMES[int(expected[1].argmax())] in table


def test_predict_reports_bad_files_and_exits_nonzero(tmp_path, tiny_run, data_dir):
    run_dir, _ = tiny_run
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    good = tmp_path / "good.png"
    Image.fromarray(load_fashion_mnist("test", data_dir)[0][0]).save(good)
    proc = cli("predict", run_dir, good, bad, tmp_path / "missing.jpg", "--format", "json", check=False)
    assert proc.returncode == 1
    assert f"{bad}: not an image file" in proc.stderr
    assert "missing.jpg: file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [p["file"] for p in json.loads(proc.stdout)] == [str(good)]


@pytest.mark.parametrize(
    "args,message",
    [
        (["evaluate", "/nonexistent/model"], "model directory not found"),
        (["train", "--train-limit", "5"], "at least 20"),
        (["train", "--resume", "/nonexistent/run"], "nothing to resume"),
        (["train", "--out", "/proc/deepautodnn-run"], "the run folder can't be written"),  # even for root
        (["serve", "/nonexistent/model", "--client-timeout", "0"], "--client-timeout must be > 0"),
    ],
)
def test_bad_arguments_give_clear_errors(args, message):
    proc = cli(*args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_info_reports_dataset(data_dir):
    out = cli("info").stdout
    assert "torch" in out and "dataset" in out


def test_cli_offers_the_library_names():
    # The parser reads the names from light modules; each must be one the library accepts.
    from deepautodnn.config import ABLATION_VARIANTS, PRESETS

    help_text = cli("train", "--help").stdout + cli("predict", "--help").stdout + cli("ablate", "--help").stdout
    for name in PRESETS:
        assert name in help_text
    assert ",".join(ABLATION_VARIANTS) in help_text


def test_every_offered_backend_is_one_make_backend_knows(tiny_run):
    from deepautodnn.errors import ModelFileError
    from deepautodnn.inference.backends import make_backend
    from deepautodnn.inference.names import BACKENDS

    for name in BACKENDS:
        try:
            assert make_backend(tiny_run[0], name).name == name
        except ModelFileError:  # an ONNX backend before `export`: known, its file is missing
            assert name.startswith("onnx")
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend(tiny_run[0], "tpu")


def test_every_ablation_variant_has_its_epochs():
    from deepautodnn.config import ABLATION_VARIANTS, get_preset
    from deepautodnn.experiments.ablation import variant_epochs

    cfg = get_preset("fast")
    epochs = {v: variant_epochs(cfg, v, 60000, 60000) for v in ABLATION_VARIANTS}
    assert epochs["scratch"]["ae"] == 0 and epochs["frozen"]["finetune"] == 0
    assert len({tuple(e.values()) for e in epochs.values()}) == len(ABLATION_VARIANTS)  # three different plans


def test_fast_trains_its_float32_variant_where_there_is_no_bf16(tmp_path, data_dir, monkeypatch, capsys):
    """On a CPU without bf16, `train --preset fast` trains `fast-fp32`, says so, and records it."""
    from deepautodnn import cli as cli_module
    from deepautodnn.utils import runtime

    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    out = tmp_path / "run"
    args = ["train", "--preset", "fast", "--data-dir", str(data_dir), "--out", str(out), "--quiet"]
    args += ["--train-limit", "300", "--device", "cpu", *ONE_EPOCH_PER_STAGE]
    assert cli_module.main(args) == 0
    assert "this CPU has no bf16, so it trains fast-fp32" in capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    assert saved["preset"] == "fast-fp32" and saved["model"]["encoder_channels"] == [16, 32, 64]
    assert load_model(out).config.latent_shape == (64, 7, 7)
