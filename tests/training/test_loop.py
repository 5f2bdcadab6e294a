"""The one training loop, on a toy stage: it logs every epoch, restores the best one, and reports
train accuracy only for stages that classify."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepautodnn.training.loop import StageSpec, fit


def toy_spec(scores: list[float], *, classifies: bool = True, keep_best_epoch: bool = True, epochs: int = 3):
    """A linear classifier on separable points; validation reports the scripted `scores`, one per epoch."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(2, 2)
    epoch_scores = iter(scores)

    def step_loss(idx, noise):
        logits = model(x[idx])
        loss = F.cross_entropy(logits, y[idx])
        return loss, ((logits.argmax(1) == y[idx]).sum() if classifies else None)

    def validate():
        return {"val_acc": next(epoch_scores), "epoch_weight": float(model.weight.detach().sum())}

    spec = StageSpec(
        name="toy",
        model=model,
        params=list(model.parameters()),
        set_modes=model.train,
        step_loss=step_loss,
        validate=validate,
        score_key="val_acc",
        higher_is_better=True,
        n_train=len(x),
        epochs=epochs,
        batch_size=16,
        lr=0.1,
        keep_best_epoch=keep_best_epoch,
        classifies=classifies,
    )
    return spec, model


def test_fit_logs_every_epoch_and_restores_the_best_one():
    spec, model = toy_spec([0.5, 0.9, 0.7])
    rows = []
    summary = fit(spec, seed=0, log=rows.append)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(0 <= r["train_acc"] <= 1 and r["loss"] > 0 for r in rows)
    assert summary["best_epoch"] == 2 and summary["val_acc"] == 0.9
    assert abs(float(model.weight.detach().sum()) - rows[1]["epoch_weight"]) < 1e-6  # the weights of epoch 2


def test_fit_keeps_the_last_epoch_when_told():
    spec, model = toy_spec([0.5, 0.9, 0.7], keep_best_epoch=False)
    rows = []
    assert fit(spec, seed=0, log=rows.append)["best_epoch"] == 3
    assert abs(float(model.weight.detach().sum()) - rows[2]["epoch_weight"]) < 1e-6


def test_a_stage_that_does_not_classify_reports_no_train_accuracy():
    spec, _ = toy_spec([0.1, 0.2], classifies=False, epochs=2)
    rows = []
    fit(spec, seed=0, log=rows.append)
    assert [r["train_acc"] for r in rows] == [None, None]


def test_same_seed_same_weights():
    weights = []
    for _ in range(2):
        torch.manual_seed(1)  # the same initial weights; the loop's own streams come from `seed`
        spec, model = toy_spec([0.1, 0.2, 0.3])
        fit(spec, seed=7, log=lambda r: None)
        weights.append(model.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
