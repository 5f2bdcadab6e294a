"""The ablation study: epoch budgets, nested stratified label sets, resumable rows, the summary."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from deepautodnn import cli, get_preset
from deepautodnn.experiments.ablation import (
    MAX_EPOCH_FACTOR,
    VARIANTS,
    labelled_subset,
    load_ablation,
    parse_labels,
    run_ablation,
    summarize,
    variant_epochs,
)
from deepautodnn.inference.evaluate import evaluate_model
from deepautodnn.models.hybrid import build_model
from deepautodnn.training.stages import train_autoencoder, train_classifier


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


def _prefixed(weights: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in weights.items()}


def _part(weights: dict, prefix: str) -> dict:
    return {k: v for k, v in weights.items() if k.startswith(prefix)}


def _differing(a: dict, b: dict) -> list[str]:
    """The names whose tensors differ (every name, if the two hold different names)."""
    if a.keys() != b.keys():
        return sorted(a.keys() | b.keys())
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_tiny_ablation_runs_and_resumes(tmp_path, data_dir, monkeypatch):
    import deepautodnn.experiments.ablation as ablate

    cfg = get_preset("fast")
    cfg.train.ae_epochs, cfg.train.dnn_epochs, cfg.train.finetune_epochs = 1, 1, 1
    out = tmp_path / "abl"
    # Per row key: the stages it trained (with their epochs and labels per class), then the weights
    # it was tested with. run_ablation echoes "<row key>: test ..." as each row is saved.
    trace, stages, tested, pretrained = [], {}, {}, []

    def pretrain(model, data, tcfg, **kwargs):
        summary = train_autoencoder(model, data, tcfg, **kwargs)
        pretrained.append(_prefixed(copy.deepcopy(model.autoencoder.state_dict()), "autoencoder."))
        trace.append(("ae", tcfg.ae_epochs, len(data.x_train)))
        return summary

    def classify(model, data, tcfg, *, stage, **kwargs):
        per_class = np.bincount(data.y_train.cpu().numpy(), minlength=10).tolist()
        trace.append((stage, getattr(tcfg, f"{stage}_epochs"), per_class))
        return train_classifier(model, data, tcfg, stage=stage, **kwargs)

    def evaluate(model, *args, **kwargs):
        trace.append(copy.deepcopy(model.state_dict()))
        return evaluate_model(model, *args, **kwargs)

    def row_saved(message):
        key = message.split(":")[0]
        stages[key], tested[key] = trace[:-1], trace[-1]
        trace.clear()

    def ablate_tiny(echo):
        return run_ablation(
            cfg,
            out,
            seeds=[0],
            label_budgets=[100, None],
            data_dir=data_dir,
            device="cpu",
            train_limit=1000,
            echo=echo,
        )

    with monkeypatch.context() as m:
        m.setattr(ablate, "train_autoencoder", pretrain)
        m.setattr(ablate, "train_classifier", classify)
        m.setattr(ablate, "evaluate_model", evaluate)
        state = ablate_tiny(row_saved)
    rows = state["rows"]
    assert sorted(rows) == sorted(stages) == sorted(f"{v}/{n}/seed0" for v in VARIANTS for n in (100, "all"))
    assert rows["scratch/100/seed0"]["epochs"] == {"ae": 0, "dnn": 0, "finetune": 2 * 9}  # 900 images / 100 labels
    (autoencoder,) = pretrained  # pretrained once per seed, for every pretrained row
    fresh = build_model(cfg, seed=0).state_dict()
    all_labels = stages["frozen/all/seed0"][-1][2]
    assert sum(all_labels) == 900
    for key, row in rows.items():
        variant, budget = row["variant"], key.split("/")[1]
        assert row["labels"] == (100 if budget == "100" else 900)
        assert row["epochs"] == variant_epochs(cfg, variant, row["labels"], 900)
        # The classifier stages it ran, each for its epochs, on a stratified set of its labels.
        per_class = [10] * 10 if budget == "100" else all_labels
        expected = [(s, row["epochs"][s], per_class) for s in ("dnn", "finetune") if row["epochs"][s]]
        assert [t for t in stages[key] if t[0] != "ae"] == expected, key
        weights = tested[key]
        encoder, decoder = (_part(weights, f"autoencoder.{p}.") for p in ("encoder", "decoder"))
        if variant == "frozen":  # the encoder the DNN read is the pretrained one, untouched
            assert _differing(_part(weights, "autoencoder."), autoencoder) == [], key
        elif variant == "finetuned":  # fine-tuning moved the pretrained encoder, not the decoder
            assert _differing(decoder, _part(autoencoder, "autoencoder.decoder.")) == [], key
            assert _differing(encoder, _part(autoencoder, "autoencoder.encoder.")), key
        else:  # scratch: no pretrained weights at all
            assert _differing(decoder, _part(fresh, "autoencoder.decoder.")) == [], key
            assert _differing(encoder, _part(autoencoder, "autoencoder.encoder.")), key
    assert stages["frozen/all/seed0"][0] == ("ae", 1, 900)  # the first row pretrains, on all images
    # The pretrained rows score well above chance (0.1): about 0.4-0.65 here. (Scratch barely starts
    # learning in so few epochs, about 0.2; its weights are checked above instead.)
    assert min(r["test_accuracy"] for r in rows.values() if r["variant"] != "scratch") > 0.3
    saved = load_ablation(out)
    assert saved["rows"] == json.loads(json.dumps(rows))
    assert "| frozen |" in (out / "ablation.md").read_text()

    # A second call finds every row saved and trains nothing.
    monkeypatch.setattr(ablate, "train_classifier", lambda *a, **k: pytest.fail("retrained a saved row"))
    again = ablate_tiny(lambda m: None)
    assert again["rows"] == saved["rows"]


def test_cli_ablate_rejects_bad_arguments(capsys):
    assert cli.main(["ablate", "--variants", "frozen,bogus"]) == 2
    assert cli.main(["ablate", "--seeds", "0,x"]) == 2
    assert cli.main(["ablate", "--labels", "0"]) == 2
    err = capsys.readouterr().err
    assert "--variants" in err and "--seeds" in err and "label budget" in err
