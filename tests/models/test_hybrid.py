import pytest
import torch
from torch import nn

from deepautodnn.config import ModelConfig, get_preset
from deepautodnn.models.hybrid import DeepAutoDNN, predict_proba_u8, reconstruction_error
from tests.helpers.models import SMALL, random_u8, small_model


@pytest.mark.parametrize("preset,latent", [("paper", (128, 14, 14)), ("fast", (128, 7, 7)), ("best", (256, 7, 7))])
def test_shapes(preset, latent):
    cfg = get_preset(preset).model
    model = DeepAutoDNN(cfg).eval()
    x = torch.rand(4, 1, 28, 28)
    assert cfg.latent_shape == latent
    assert model.forward_features(x).shape == (4, *latent)
    assert model(x).shape == (4, 10)
    recon = model.reconstruct(x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    proba = model.predict_proba(x)
    torch.testing.assert_close(proba.sum(1), torch.ones(4))


def test_paper_classifier_has_seven_dense_layers_with_dropout_half():
    model = DeepAutoDNN(get_preset("paper").model)
    dense = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
    drops = [m for m in model.classifier.modules() if isinstance(m, nn.Dropout)]
    assert len(dense) == 7
    assert dense[0].in_features == 14 * 14 * 128 and dense[-1].out_features == 10
    assert len(drops) == 6 and all(d.p == 0.5 for d in drops)
    # The encoder is Conv -> BN -> ReLU -> MaxPool blocks; the decoder upsamples back.
    kinds = [type(m) for m in model.encoder.layers]
    assert kinds[:4] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert any(isinstance(m, nn.Dropout) for m in model.encoder.layers)
    assert any(isinstance(m, nn.Upsample) for m in model.autoencoder.decoder.layers)
    assert isinstance(model.autoencoder.decoder.layers[-1], nn.Sigmoid)


@pytest.mark.parametrize("preset", ["paper", "fast"])
def test_every_parameter_gets_a_finite_gradient(preset):
    torch.manual_seed(0)
    model = DeepAutoDNN(get_preset(preset).model).train()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(model(x), y) + nn.functional.mse_loss(model.reconstruct(x), x)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_convs_per_block_stack_conv_bn_relu_before_each_pool():
    model = DeepAutoDNN(get_preset("best").model)
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256]
    with pytest.raises(ValueError, match="encoder_convs_per_block"):
        ModelConfig(encoder_convs_per_block=0)


def test_the_proba_path_is_softmax_of_the_logits_on_images_over_255():
    model, x_u8 = small_model(), random_u8(50)
    with torch.inference_mode():
        expected = torch.softmax(model(x_u8.unsqueeze(1).float() / 255.0), dim=1)  # (50, 10)
    # One chunk: the very same forward pass, so the very same numbers, from either input shape.
    assert torch.equal(predict_proba_u8(model, x_u8, batch_size=64), expected)
    assert torch.equal(predict_proba_u8(model, x_u8.unsqueeze(1).numpy(), batch_size=64), expected)
    # Chunks: kernels may change with the batch size, at float32 rounding only.
    torch.testing.assert_close(predict_proba_u8(model, x_u8, batch_size=7), expected, rtol=1e-5, atol=1e-6)
    assert predict_proba_u8(model, x_u8[:0]).shape == (0, SMALL.num_classes)
    with pytest.raises(TypeError, match="uint8"):
        predict_proba_u8(model, x_u8.float())


def test_reconstruction_error_is_the_per_image_mse():
    model, x_u8 = small_model(), random_u8(6)
    x = x_u8.unsqueeze(1).float() / 255.0  # (6, 1, 28, 28)
    with torch.inference_mode():
        recon = model.reconstruct(x)
    direct = torch.stack([nn.functional.mse_loss(r, xi) for r, xi in zip(recon, x)])  # (6,)
    torch.testing.assert_close(reconstruction_error(x, recon), direct)
    torch.testing.assert_close(reconstruction_error(x[:, 0], recon[:, 0]), direct)  # (N, H, W) too
    cl = torch.channels_last
    torch.testing.assert_close(reconstruction_error(x.contiguous(memory_format=cl), recon.to(memory_format=cl)), direct)
    assert (reconstruction_error(x, x) == 0).all() and (direct > 0).all()
