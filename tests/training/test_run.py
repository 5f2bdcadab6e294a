import numpy as np
import torch

from deepautodnn import load_model, train_run
from tests.helpers.models import tiny_config


def test_tiny_real_run_beats_chance_by_far(tiny_run):
    run_dir, metrics = tiny_run
    assert metrics["accuracy"] > 0.6  # chance is 0.10
    for name in (
        "config.json",
        "model.safetensors",
        "metrics.json",
        "metrics.csv",
        "report.md",
        "confusion_matrix.png",
        "training_curves.png",
    ):
        assert (run_dir / name).is_file(), name
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0] == "stage,epoch,loss,train_acc,val_acc,val_mse,lr,seconds"
    assert [r.split(",")[0] for r in rows[1:]] == ["ae", "dnn", "finetune", "finetune"]


def test_seeds_make_runs_reproducible(tmp_path, data_dir):
    quiet = dict(data_dir=data_dir, train_limit=600, echo=lambda m: None)
    cfg = tiny_config()
    cfg.train.finetune_epochs = 0
    m1 = train_run(cfg, tmp_path / "a", seed=1, **quiet)
    m2 = train_run(cfg, tmp_path / "b", seed=1, **quiet)
    m3 = train_run(cfg, tmp_path / "c", seed=2, **quiet)
    assert m1["confusion_matrix"] == m2["confusion_matrix"]
    a, c = load_model(tmp_path / "a").state_dict(), load_model(tmp_path / "c").state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert np.isfinite(m3["accuracy"])
