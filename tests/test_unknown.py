"""Unknown-input detection: calibrated on validation, stored with the model, fires on noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepautodnn import cli, load_model
from deepautodnn.unknown import REFERENCE_AE_FILE, UNKNOWN_FILE, UnknownDetector, calibrate_model_dir, score_images


def test_calibration_meets_its_false_alarm_budget():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.full(10, 0.3), size=4000)
    err = rng.gamma(2.0, 0.01, size=4000)
    det = UnknownDetector.calibrate(proba, err, false_alarm_rate=0.05)
    assert 0.025 <= det.validation_false_alarm_rate <= 0.05
    # The score crosses 1 exactly where a threshold is crossed.
    assert not det.is_unknown(np.eye(10)[:1], np.array([det.recon_threshold * 0.99]))[0]
    assert det.is_unknown(np.eye(10)[:1], np.array([det.recon_threshold * 1.01]))[0]
    with pytest.raises(ValueError, match="between 0 and 1"):
        UnknownDetector.calibrate(proba, err, false_alarm_rate=1.5)


def test_a_trained_run_stores_its_detector(tiny_run):
    run_dir, _ = tiny_run
    saved = json.loads((run_dir / UNKNOWN_FILE).read_text())
    assert saved["false_alarm_rate"] == 0.05 and saved["n_calibration"] == 300
    # The tiny run fine-tunes end to end, so it keeps its stage-1 autoencoder for the score.
    assert (run_dir / REFERENCE_AE_FILE).exists()
    det = UnknownDetector.load(run_dir)
    assert det.autoencoder is not None and det.recon_threshold == saved["recon_threshold"]


def test_flags_noise_and_few_test_images(tiny_run, data_dir):
    from deepautodnn.data import load_fashion_mnist

    run_dir, _ = tiny_run
    model, det = load_model(run_dir), UnknownDetector.load(run_dir)
    images, _ = load_fashion_mnist("test", data_dir)
    flagged_test = det.is_unknown(*score_images(model, images[:2000], autoencoder=det.autoencoder)).mean()
    noise = np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8)
    flagged_noise = det.is_unknown(*score_images(model, noise, autoencoder=det.autoencoder)).mean()
    assert flagged_test < 0.15, flagged_test
    assert flagged_noise > 0.9, flagged_noise


def test_predict_reports_unknown_in_json_and_csv(tiny_run, tmp_path, capsys):
    from PIL import Image

    run_dir, _ = tiny_run
    noise = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    assert cli.main(["predict", str(run_dir), str(tmp_path / "noise.png"), "--format", "json"]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert pred["unknown"] is True and pred["unknown_score"] > 1
    assert cli.main(["predict", str(run_dir), str(tmp_path / "noise.png"), "--format", "csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split(",")[4:6] == ["unknown", "unknown_score"]
    assert row.split(",")[4] == "true"


def test_calibrate_command_rewrites_the_detector(tiny_run, data_dir, tmp_path, capsys):
    import shutil

    run_dir, _ = tiny_run
    copy = tmp_path / "model"
    shutil.copytree(run_dir, copy)
    (copy / UNKNOWN_FILE).unlink()
    assert cli.main(["calibrate", str(copy), "--false-alarm-rate", "0.1", "--data-dir", str(data_dir)]) == 0
    assert UnknownDetector.load(copy).false_alarm_rate == 0.1
    assert "validation images" in capsys.readouterr().out
    det = calibrate_model_dir(copy, data_dir=data_dir, false_alarm_rate=0.01)
    assert det.validation_false_alarm_rate <= 0.01 + 1e-9
    assert cli.main(["calibrate", str(copy), "--false-alarm-rate", "2"]) == 2
