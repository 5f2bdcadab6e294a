"""The ablation study: epoch budgets, nested stratified label sets, resumable rows, the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepautodnn import cli, get_preset
from deepautodnn.experiments.ablation import (
    MAX_EPOCH_FACTOR,
    labelled_subset,
    load_ablation,
    parse_labels,
    run_ablation,
    summarize,
    variant_epochs,
)


def test_variants_get_the_same_classifier_epochs():
    cfg = get_preset("fast")
    ae, dnn, ft = cfg.train.ae_epochs, cfg.train.dnn_epochs, cfg.train.finetune_epochs
    full = {v: variant_epochs(cfg, v, 55000, 55000) for v in ("frozen", "finetuned", "scratch")}
    assert full["frozen"] == {"ae": ae, "dnn": dnn + ft, "finetune": 0}
    assert full["finetuned"] == {"ae": ae, "dnn": dnn, "finetune": ft}
    assert full["scratch"] == {"ae": 0, "dnn": 0, "finetune": dnn + ft}
    # Fewer labels: more epochs, capped.
    assert variant_epochs(cfg, "scratch", 11000, 55000)["finetune"] == (dnn + ft) * 5
    assert variant_epochs(cfg, "scratch", 100, 55000)["finetune"] == (dnn + ft) * MAX_EPOCH_FACTOR


def test_label_subsets_are_stratified_and_nested():
    labels = np.repeat(np.arange(10), 100)
    small, large = labelled_subset(labels, 50, seed=3), labelled_subset(labels, 300, seed=3)
    assert np.bincount(labels[small], minlength=10).tolist() == [5] * 10
    assert set(small) <= set(large)
    assert not np.array_equal(small, labelled_subset(labels, 50, seed=4))
    assert len(labelled_subset(labels, None, seed=0)) == 1000
    with pytest.raises(ValueError, match="fewer than one per class"):
        labelled_subset(labels, 5, seed=0)


def test_parse_labels():
    assert parse_labels("100, 1000,all") == [100, 1000, None]
    with pytest.raises(ValueError, match="label budget"):
        parse_labels("100,lots")


def test_summary_mean_and_std():
    rows = {
        f"scratch/100/seed{s}": {"variant": "scratch", "labels": 100, "seed": s, "test_accuracy": a, "seconds": 1.0}
        for s, a in enumerate([0.5, 0.7])
    }
    (s,) = summarize(rows)
    assert s["test_accuracy_mean"] == pytest.approx(0.6)
    assert s["test_accuracy_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_tiny_ablation_runs_and_resumes(tmp_path, data_dir, monkeypatch):
    cfg = get_preset("fast")
    cfg.train.ae_epochs, cfg.train.dnn_epochs, cfg.train.finetune_epochs = 1, 1, 1
    out = tmp_path / "abl"

    def ablate_tiny():
        return run_ablation(
            cfg,
            out,
            seeds=[0],
            label_budgets=[100, None],
            data_dir=data_dir,
            device="cpu",
            train_limit=1000,
            echo=lambda m: None,
        )

    state = ablate_tiny()
    assert len(state["rows"]) == 6
    row = state["rows"]["scratch/100/seed0"]
    assert row["epochs"] == {"ae": 0, "dnn": 0, "finetune": 2 * 9}  # 900 train images / 100 labels = 9x
    assert row["labels"] == 100 and 0.1 < row["test_accuracy"] <= 1.0
    assert state["rows"]["frozen/all/seed0"]["labels"] == 900
    saved = load_ablation(out)
    assert saved["rows"] == json.loads(json.dumps(state["rows"]))
    assert "| frozen |" in (out / "ablation.md").read_text()

    # A second call finds every row saved and trains nothing.
    import deepautodnn.experiments.ablation as ablate

    monkeypatch.setattr(ablate, "train_classifier", lambda *a, **k: pytest.fail("retrained a saved row"))
    again = ablate_tiny()
    assert again["rows"] == saved["rows"]


def test_cli_ablate_rejects_bad_arguments(capsys):
    assert cli.main(["ablate", "--variants", "frozen,bogus"]) == 2
    assert cli.main(["ablate", "--seeds", "0,x"]) == 2
    assert cli.main(["ablate", "--labels", "0"]) == 2
    err = capsys.readouterr().err
    assert "--variants" in err and "--seeds" in err and "label budget" in err
