import numpy as np
import pytest
import torch

from deepautodnn import get_preset, load_model, train_run
from deepautodnn.config import Config, ModelConfig, TrainConfig
from deepautodnn.data.transforms import TrainingData, augment_batch, erase_batch
from deepautodnn.models.hybrid import DeepAutoDNN
from deepautodnn.training.run import RunError
from deepautodnn.training.stages import train_autoencoder, train_classifier
from deepautodnn.utils.files import read_json

TINY = ModelConfig(encoder_channels=(8, 16), encoder_pool=(True, True), dnn_hidden=(32,))


def _synthetic(n=256, labels=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g) if labels is None else labels
    return TrainingData(x[:200], y[:200], x[200:], y[200:])


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


def test_autoencoder_stage_never_reads_labels():
    tcfg = TrainConfig(ae_epochs=1, ae_batch_size=64)
    weights = []
    for labels in (None, torch.full((256,), -12345)):
        torch.manual_seed(0)
        model = DeepAutoDNN(TINY)
        train_autoencoder(
            model, _synthetic(labels=labels), tcfg, seed=0, device=torch.device("cpu"), log=lambda r: None
        )
        weights.append(model.state_dict())
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=0)


def test_dnn_stage_keeps_the_encoder_frozen():
    torch.manual_seed(0)
    model = DeepAutoDNN(TINY)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    clf_before = model.classifier.layers[1].weight.clone()
    tcfg = TrainConfig(dnn_epochs=2, dnn_batch_size=32)
    train_classifier(model, _synthetic(), tcfg, stage="dnn", seed=0, device=torch.device("cpu"), log=lambda r: None)
    for k, v in model.encoder.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # BN running stats included
    assert not torch.equal(model.classifier.layers[1].weight, clf_before)
    assert all(p.requires_grad for p in model.encoder.parameters())  # restored afterwards


def test_feature_cache_and_recompute_agree():
    results = []
    for limit in (6.0, 0.0):  # 0 GiB forces recomputation every batch
        torch.manual_seed(0)
        model = DeepAutoDNN(TINY)
        tcfg = TrainConfig(dnn_epochs=1, dnn_batch_size=50, cache_features_gib=limit)
        train_classifier(model, _synthetic(), tcfg, stage="dnn", seed=0, device=torch.device("cpu"), log=lambda r: None)
        results.append(model.classifier.layers[1].weight.clone())
    # The cache holds float16 codes, so weights agree to rounding, not bit for bit.
    diff = (results[0] - results[1]).abs()
    assert diff.mean() < 1e-5 and diff.max() < 5e-3


def test_augment_shifts_and_flips_within_bounds():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # an interior square never leaves the frame
    assert not torch.equal(out, x)
    ys = out[:, 0].sum(2).argmax(1)
    assert (ys >= 8).all() and (ys <= 12).all()


def test_random_erasing_zeroes_one_bounded_rectangle_per_chosen_image():
    x = torch.ones(400, 1, 28, 28)
    out = erase_batch(x, torch.Generator().manual_seed(0), prob=0.5)
    erased = (out == 0)[:, 0]  # (B, H, W)
    hit = erased.any((1, 2))
    assert 0.4 < hit.float().mean() < 0.6  # about `prob` of the images
    area = erased.sum((1, 2))[hit].float() / (28 * 28)
    assert area.min() > 0.005 and area.max() < 0.3  # the 2-25% area range, after rounding
    for mask in erased[hit][:50]:  # each erased region is one filled rectangle
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert torch.equal(erase_batch(x, torch.Generator().manual_seed(0), prob=0.0), x)


def test_nonfinite_loss_stops_with_clear_message():
    model = DeepAutoDNN(TINY)
    with torch.no_grad():
        model.classifier.layers[-1].bias.fill_(float("nan"))
    tcfg = TrainConfig(dnn_epochs=1, dnn_batch_size=50)
    with pytest.raises(FloatingPointError, match="stage dnn, epoch 1"):
        train_classifier(model, _synthetic(), tcfg, stage="dnn", seed=0, device=torch.device("cpu"), log=lambda r: None)


def _tiny_cfg():
    return Config(
        model=TINY,
        train=TrainConfig(
            ae_epochs=1,
            ae_batch_size=128,
            dnn_epochs=1,
            dnn_batch_size=128,
            finetune_epochs=1,
            finetune_batch_size=128,
            augment=True,
        ),
        preset="tiny",
    )


def test_resume_after_interruption_matches_uninterrupted(tmp_path, data_dir, monkeypatch):
    quiet = dict(seed=3, data_dir=data_dir, train_limit=1000, echo=lambda m: None)
    train_run(_tiny_cfg(), tmp_path / "straight", **quiet)

    import deepautodnn.training.run as runner

    real = runner.train_classifier

    def interrupted(*args, stage, **kw):
        if stage == "finetune":
            raise KeyboardInterrupt
        return real(*args, stage=stage, **kw)

    monkeypatch.setattr(runner, "train_classifier", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_run(_tiny_cfg(), tmp_path / "cut", **quiet)
    progress = read_json(tmp_path / "cut" / "checkpoints" / "progress.json")
    assert progress["completed"] == ["ae", "dnn"]
    monkeypatch.setattr(runner, "train_classifier", real)

    with pytest.raises(RunError, match="already holds a run"):
        train_run(_tiny_cfg(), tmp_path / "cut", **quiet)
    train_run(get_preset("paper"), tmp_path / "cut", resume=True, **quiet)  # config comes from the run dir
    a = load_model(tmp_path / "straight").state_dict()
    b = load_model(tmp_path / "cut").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    stages = [line.split(",")[0] for line in (tmp_path / "cut" / "metrics.csv").read_text().splitlines()[1:]]
    assert stages == ["ae", "dnn", "finetune"]


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="nothing to resume"):
        train_run(_tiny_cfg(), tmp_path / "empty", resume=True)


def test_seeds_make_runs_reproducible(tmp_path, data_dir):
    quiet = dict(data_dir=data_dir, train_limit=600, echo=lambda m: None)
    cfg = _tiny_cfg()
    cfg.train.finetune_epochs = 0
    m1 = train_run(cfg, tmp_path / "a", seed=1, **quiet)
    m2 = train_run(cfg, tmp_path / "b", seed=1, **quiet)
    m3 = train_run(cfg, tmp_path / "c", seed=2, **quiet)
    assert m1["confusion_matrix"] == m2["confusion_matrix"]
    a, c = load_model(tmp_path / "a").state_dict(), load_model(tmp_path / "c").state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert np.isfinite(m3["accuracy"])
