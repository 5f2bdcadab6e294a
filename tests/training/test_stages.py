import math

import pytest
import torch
from torch import nn

from deepautodnn.config import TrainConfig, get_preset
from deepautodnn.data.transforms import TrainingData
from deepautodnn.models.hybrid import DeepAutoDNN
from deepautodnn.training.loop import Precision
from deepautodnn.training.stages import _frozen_features, reconstruction_mse, train_autoencoder, train_classifier
from tests.helpers.models import TINY, random_u8, small_model


def _synthetic(n=256, labels=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g) if labels is None else labels
    return TrainingData(x[:200], y[:200], x[200:], y[200:])


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
    # A float32 run caches float32 codes: the same codes as recomputing them, up to the last bits
    # that a different convolution batch size may change. (float16 codes differed by up to 5e-3.)
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bf16", [False, True])
def test_feature_cache_keeps_the_precision_it_is_computed_in(bf16):
    model, x_u8 = DeepAutoDNN(TINY).eval(), random_u8(40).unsqueeze(1)
    prec = Precision(TrainConfig(bf16=bf16), torch.device("cpu"))
    feats = _frozen_features(model, x_u8, prec, cache_limit_gib=1.0)
    assert feats.dtype == (torch.float16 if prec.bf16 else torch.float32)
    if not prec.bf16:
        with torch.inference_mode():
            direct = model.forward_features(x_u8.float() / 255.0)
        torch.testing.assert_close(feats, direct, rtol=0, atol=1e-6)
    too_small = math.prod(feats.shape) * feats.dtype.itemsize / 2**30 * 0.99
    assert _frozen_features(model, x_u8, prec, cache_limit_gib=too_small) is None


def test_nonfinite_loss_stops_with_clear_message():
    model = DeepAutoDNN(TINY)
    with torch.no_grad():
        model.classifier.layers[-1].bias.fill_(float("nan"))
    tcfg = TrainConfig(dnn_epochs=1, dnn_batch_size=50)
    with pytest.raises(FloatingPointError, match="stage dnn, epoch 1"):
        train_classifier(model, _synthetic(), tcfg, stage="dnn", seed=0, device=torch.device("cpu"), log=lambda r: None)


def test_reconstruction_mse_is_the_mean_error_over_the_set():
    model, x_u8 = small_model(), random_u8(10).unsqueeze(1)
    x = x_u8.float() / 255.0
    with torch.inference_mode():
        direct = nn.functional.mse_loss(model.reconstruct(x), x).item()  # over every pixel of the set
    prec = Precision(get_preset("paper").train, torch.device("cpu"))
    assert reconstruction_mse(model, x_u8, prec, batch_size=3) == pytest.approx(direct, rel=1e-6)
    assert reconstruction_mse(model, x_u8[:0], prec) is None
