"""Unknown-input detection: calibrated per backend on validation, stored with the model, each signal
separating noise from test images, the fused score flagging noise, old detectors still loading."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from deepautodnn import cli, load_model
from deepautodnn.experiments.ood_report import separation
from deepautodnn.inference.backends import make_backend, run_batched
from deepautodnn.inference.ood import (
    FUSED_SIGNALS,
    MODEL_SIGNALS,
    REFERENCE_AE_FILE,
    STATS_FILE,
    UNKNOWN_FILE,
    BackendCalibration,
    FeatureStats,
    TwoSignalDetector,
    UnknownDetector,
)


def test_calibration_meets_its_false_alarm_budget_on_each_subset():
    rng = np.random.default_rng(0)
    n = 4000
    signals = {"a": rng.gamma(2.0, 1.0, n), "b": rng.normal(0, 1, n) + np.r_[np.zeros(n // 2), np.ones(n // 2)]}
    subsets = {"first": np.arange(n) < n // 2, "second": np.arange(n) >= n // 2}
    cal = BackendCalibration.fit(signals, subsets, ("a", "b"), 0.05)
    for subset, rate in cal.validation_false_alarm_rate.items():
        assert rate <= 0.05, (subset, rate)
    assert max(cal.validation_false_alarm_rate.values()) >= 0.03  # not far stricter than asked either
    # The fused score is the largest normalised signal; the threshold is crossed exactly there.
    z = cal.normalised(signals)
    assert np.allclose(cal.fuse(signals, ("a", "b")), np.maximum(z["a"], z["b"]))
    for k in ("a", "b"):
        assert np.mean(signals[k][subsets["first"]] > cal.alone[k]) <= 0.05


def test_feature_statistics_find_the_nearest_class_and_neighbour():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 10
    labels = rng.integers(0, 4, 2000)
    features = (centres[labels] + rng.normal(0, 1, (2000, 8))).astype(np.float32)
    stats = FeatureStats.fit(features, labels, bank_size=500)
    near, far = centres[:2] + 0.1, np.full((2, 8), 30.0, np.float32)
    assert (stats.mahalanobis(near) < 5).all() and (stats.mahalanobis(far) > 100).all()
    assert (stats.knn(near) < stats.knn(far)).all()
    assert stats.bank.shape == (500, 8) and np.allclose(np.linalg.norm(stats.bank, axis=1), 1, atol=1e-5)
    # A class missing from the sample (labels 0, 1 and 3 only) gives no NaN distances.
    keep = labels != 2
    partial = FeatureStats.fit(features[keep], labels[keep], bank_size=500)
    assert partial.class_means.shape == (3, 8) and np.isfinite(partial.mahalanobis(far)).all()


def test_the_reconstruction_signal_is_the_per_image_mse_of_the_backend_outputs():
    from deepautodnn.inference.graph import GraphOutputs
    from deepautodnn.inference.ood import model_signals

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    recon = rng.random((5, 28, 28), dtype=np.float32)
    features = rng.normal(size=(5, 8)).astype(np.float32)
    logits = rng.normal(size=(5, 3)).astype(np.float32)
    out = GraphOutputs(np.full((5, 3), 1 / 3, np.float32), recon, logits, features)
    stats = FeatureStats.fit(rng.normal(size=(60, 8)).astype(np.float32), np.arange(60) % 3, bank_size=20)
    direct = np.array([np.mean((r.astype(np.float64) - i / 255.0) ** 2) for i, r in zip(images, recon)])
    np.testing.assert_allclose(model_signals(out, images, stats)["reconstruction"], direct, rtol=1e-6)


def test_a_half_bank_is_stored_in_float16_and_scores_the_same_after_loading():
    """The shipped model's kNN bank: rounded to float16 before calibration, so storing it halves the
    file and changes no score."""
    rng = np.random.default_rng(0)
    stats = FeatureStats.fit(rng.normal(size=(60, 8)).astype(np.float32), np.arange(60) % 3, bank_size=20)
    assert stats.tensors()["bank"].dtype == torch.float32, "a bank of full float32 values is stored as such"
    stats.half_bank()
    stored = stats.tensors()
    assert stored["bank"].dtype == torch.float16 and stored["precision"].dtype == torch.float32
    loaded = FeatureStats(*(stored[k].float().numpy() for k in ("class_means", "precision", "bank")))
    query = rng.normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.knn(query, k=3), stats.knn(query, k=3))


def test_a_trained_run_stores_its_detector(tiny_run):
    run_dir, _ = tiny_run
    saved = json.loads((run_dir / UNKNOWN_FILE).read_text())
    assert saved["format"] == 2 and saved["false_alarm_rate"] == 0.05
    assert tuple(saved["fused_signals"]) == FUSED_SIGNALS and "torch" in saved["backends"]
    assert saved["backends"]["torch"]["n_calibration"] == 600  # 300 validation arrays + 300 photos of them
    assert (run_dir / STATS_FILE).exists() and (run_dir / f"{STATS_FILE}.sha256").exists()
    # The tiny run fine-tunes end to end, so its reference autoencoder is trained apart from it.
    assert (run_dir / REFERENCE_AE_FILE).exists() and saved["reference_autoencoder_epochs"] == 8
    det = UnknownDetector.load(run_dir)
    assert det.autoencoder is not None and det.backends["torch"].threshold == saved["backends"]["torch"]["threshold"]


@pytest.fixture(scope="module")
def scored(tiny_run, data_dir):
    """Every signal and the unknown score for 1,000 test images, 150 noise arrays (28 px) and 150
    noise photos (256 px colour PNGs read through preprocessing)."""
    from deepautodnn.data.fashion_mnist import load_fashion_mnist
    from deepautodnn.data.preprocess import load_preprocessed

    run_dir, _ = tiny_run
    det, backend = UnknownDetector.load(run_dir), make_backend(run_dir, "torch")
    images, _ = load_fashion_mnist("test", data_dir)
    rng = np.random.default_rng(0)
    photos = []
    for _ in range(150):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, "PNG")
        photos.append(load_preprocessed(buf.getvalue()))

    def run(x, evidence=None):
        out = run_batched(backend, x)
        return det.signals(out, x, evidence), det.scores(out, x, evidence, "torch")

    return {
        "test": run(images[:1000]),
        "noise_28px": run(rng.integers(0, 256, (150, 28, 28), dtype=np.uint8)),
        "noise_photos": run(np.stack([p.image for p in photos]), [p.evidence for p in photos]),
    }


@pytest.mark.parametrize(
    "signal, noise",
    [
        *((s, "noise_28px") for s in MODEL_SIGNALS),
        ("background_residual", "noise_photos"),
        ("high_frequency", "noise_photos"),
    ],
)
def test_each_signal_separates_noise_from_test_images(scored, signal, noise):
    auroc = separation(scored["test"][0][signal], scored[noise][0][signal])["auroc"]
    assert auroc > 0.95, (signal, auroc)


def test_the_fused_score_flags_noise_and_few_test_images(scored):
    test_scores = scored["test"][1]
    assert (test_scores > 1).mean() < 0.12, (test_scores > 1).mean()
    for noise in ("noise_28px", "noise_photos"):
        assert (scored[noise][1] > 1).mean() > 0.95, noise
        assert separation(test_scores, scored[noise][1])["auroc"] > 0.99, noise


def test_predict_reports_unknown_in_json_and_csv(tiny_run, tmp_path, capsys):
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


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """A copy of the tiny run with an ONNX file, calibrated for torch and onnx."""
    from deepautodnn.inference.export import export_onnx

    model_dir = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(tiny_run[0], model_dir)
    export_onnx(model_dir)
    return model_dir


def test_per_backend_thresholds_are_used_by_the_serving_backend(exported, data_dir):
    from deepautodnn.serve.predictor import Predictor
    from deepautodnn.training.run import calibrate_model_dir

    det = calibrate_model_dir(exported, data_dir=data_dir, backends=["torch", "onnx"])
    assert set(det.backends) == {"torch", "onnx"}
    # Each from its own outputs: onnx float32 is close to torch, but fitted apart.
    assert det.backends["onnx"].threshold == pytest.approx(det.backends["torch"].threshold, rel=0.05)
    saved = (exported / UNKNOWN_FILE).read_text()
    record = json.loads(saved)
    record["backends"]["onnx"]["threshold"] = 1e9  # so the served scores show which threshold is read
    (exported / UNKNOWN_FILE).write_text(json.dumps(record))
    noise = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    onnx, torch_ = Predictor(exported, "onnx"), Predictor(exported, "torch")
    assert onnx.info["unknown_calibrated_for"] == "onnx" and torch_.info["unknown_calibrated_for"] == "torch"
    assert all(p["unknown_score"] < 1e-6 for p in onnx.predict(noise, ["n"] * 20, 3, False))
    assert sum(p["unknown"] for p in torch_.predict(noise, ["n"] * 20, 3, False)) >= 18
    (exported / UNKNOWN_FILE).write_text(saved)


def test_a_backend_never_calibrated_falls_back_to_torch(exported):
    det = UnknownDetector.load(exported)
    assert det.calibration_for("onnx-int8")[0] == "torch"


def test_an_old_two_output_onnx_file_is_a_clear_error(exported, tmp_path):
    from deepautodnn.inference.backends import OnnxBackend
    from deepautodnn.inference.export import export_graph
    from deepautodnn.inference.graph import InferenceGraph

    class TwoOutputs(InferenceGraph):
        def forward(self, x):
            return super().forward(x)[:2]

    path = export_graph(
        TwoOutputs(load_model(exported)), 28, tmp_path / "old.onnx", output_names=("probabilities", "reconstruction")
    )
    out = OnnxBackend(path).run(np.zeros((2, 28, 28), np.uint8))
    assert out.logits is None and out.features is None
    with pytest.raises(ValueError, match="export it again"):
        UnknownDetector.load(exported).scores(out, np.zeros((2, 28, 28), np.uint8))


def test_an_old_two_signal_detector_still_loads_and_scores(tiny_run, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_run[0], model_dir)
    old = {
        "recon_threshold": 0.02,
        "uncertainty_threshold": 0.5,
        "false_alarm_rate": 0.05,
        "validation_false_alarm_rate": 0.049,
        "n_calibration": 300,
    }
    (model_dir / UNKNOWN_FILE).write_text(json.dumps(old))
    det = UnknownDetector.load(model_dir)
    assert isinstance(det, TwoSignalDetector)
    noise = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    out = make_backend(model_dir, "torch").run(noise)
    assert (det.scores(out, noise) > 1).all()


def test_calibrate_command_rewrites_the_detector(tiny_run, data_dir, tmp_path, capsys):
    run_dir, _ = tiny_run
    copy = tmp_path / "model"
    shutil.copytree(run_dir, copy)
    (copy / UNKNOWN_FILE).unlink()
    assert cli.main(["calibrate", str(copy), "--false-alarm-rate", "0.1", "--data-dir", str(data_dir)]) == 0
    det = UnknownDetector.load(copy)
    assert det.false_alarm_rate == 0.1 and max(det.backends["torch"].validation_false_alarm_rate.values()) <= 0.1
    assert "torch: threshold" in capsys.readouterr().out
    assert cli.main(["calibrate", str(copy), "--false-alarm-rate", "2"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_a_damaged_statistics_file_is_refused(tiny_run, tmp_path):
    from deepautodnn.errors import ModelFileError

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_run[0], model_dir)
    data = bytearray((model_dir / STATS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (model_dir / STATS_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=STATS_FILE):
        UnknownDetector.load(model_dir)
