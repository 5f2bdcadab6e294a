"""The Table IV comparators: features, selection on validation only, and every one beats chance."""

from __future__ import annotations

import numpy as np
import pytest

from deepautodnn import cli
from deepautodnn.experiments.baselines import (
    COMPARATORS,
    Split,
    hog_features,
    lbp_features,
    load_results,
    load_split,
    parse_only,
    run_baselines,
    run_comparator,
)


@pytest.fixture(scope="module")
def small_split(data_dir) -> Split:
    """1,500 real training images (150 validate) and 2,000 test images."""
    split = load_split(data_dir, train_limit=1500)
    split.x_test, split.y_test = split.x_test[:2000], split.y_test[:2000]
    return split


def test_feature_shapes_and_lbp_histograms(small_split):
    images = small_split.x_train[:5]
    assert hog_features(images).shape == (5, 324)
    lbp = lbp_features(images)
    assert lbp.shape == (5, 160)
    # Each of the 16 cells is a normalised histogram of 10 codes.
    np.testing.assert_allclose(lbp.reshape(5, 16, 10).sum(-1), 1.0, rtol=1e-6)


def test_split_is_the_runs_split(data_dir):
    from deepautodnn import get_preset
    from deepautodnn.training.run import load_training_split

    images, labels, train_idx, val_idx = load_training_split(get_preset("fast"), data_dir, 1500)
    split = load_split(data_dir, train_limit=1500)
    np.testing.assert_array_equal(split.x_val, images[val_idx])
    np.testing.assert_array_equal(split.y_train, labels[train_idx])
    assert not set(train_idx) & set(val_idx)


@pytest.mark.parametrize("name", list(COMPARATORS))
def test_every_comparator_beats_chance(name, small_split):
    result = run_comparator(name, small_split, torch_epochs=4, echo=lambda m: None)
    assert result["accuracy"] > 0.35, f"{name}: {result['accuracy']:.3f} is too close to chance (0.10)"
    assert result["metrics"]["n"] == 2000
    assert result["train_seconds"] > 0 and result["predict_seconds"] > 0
    assert result["n_train"] == 1350 and result["n_val"] == 150
    comp = COMPARATORS[name]
    if comp.kind == "sklearn":
        # The chosen setting is the grid point with the best validation accuracy.
        best = max(result["search"], key=lambda r: r["val_accuracy"])
        assert result["chosen"] == best["params"]


def test_parse_only():
    assert parse_only(None) == list(COMPARATORS)
    assert parse_only("logreg, convnet") == ["logreg", "convnet"]
    with pytest.raises(ValueError, match="unknown comparator"):
        parse_only("logreg,resnet152")


def test_cli_baselines_writes_one_json_each(tmp_path, data_dir, capsys):
    out = tmp_path / "bl"
    rc = cli.main(
        [
            "baselines",
            "--only",
            "logreg,random_forest",
            "--train-limit",
            "1000",
            "--data-dir",
            str(data_dir),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    results = load_results(out)
    assert list(results) == ["random_forest", "logreg"]  # registry order
    assert "| Pixels + logistic regression |" in capsys.readouterr().out
    for r in results.values():
        assert r["paper_row"] is None and r["hyperparameters"]["grid"]
        assert r["machine"]["cpu"]


def test_cli_rejects_unknown_comparator(capsys):
    assert cli.main(["baselines", "--only", "nope"]) == 2
    assert "unknown comparator" in capsys.readouterr().err


def test_run_baselines_default_is_all(monkeypatch, tmp_path, small_split):
    import deepautodnn.experiments.baselines as bl

    seen = []
    monkeypatch.setattr(bl, "load_split", lambda *a, **k: small_split)
    monkeypatch.setattr(bl, "run_comparator", lambda name, *a, **k: seen.append(name) or {"name": name})
    run_baselines(tmp_path, data_dir=None)
    assert seen == list(COMPARATORS)
