"""The `paper` preset must stay the paper: Tables I and III, Algorithm 1 (see docs/paper.md)."""

import pytest

from deepautodnn.config import Config, ModelConfig, get_preset


def test_paper_preset_matches_tables_i_and_iii():
    cfg = get_preset("paper")
    m, t = cfg.model, cfg.train
    # Table I
    assert (m.image_size, m.in_channels) == (28, 1)
    assert (t.ae_epochs, t.ae_batch_size, t.ae_lr) == (15, 32, 1e-3)
    assert m.ae_dropout > 0  # Sec. III-B: dropout in the autoencoder too
    # Table III
    assert m.latent_shape == (128, 14, 14)
    assert len(m.dnn_hidden) + 1 == 7
    assert (t.dnn_epochs, t.dnn_batch_size, t.dnn_lr) == (120, 64, 1e-3)
    assert m.dnn_dropout == 0.5
    # Algorithm 1: encoder frozen after stage 1; plain Adam, no tricks the paper lacks.
    assert t.finetune_epochs == 0
    assert t.weight_decay == 0 and t.label_smoothing == 0 and not t.augment
    assert t.schedule == "constant" and not t.bf16


def test_presets_are_fresh_copies():
    a = get_preset("fast")
    a.train.ae_epochs = 99
    assert get_preset("fast").train.ae_epochs != 99


def test_config_round_trips_through_json_dict():
    cfg = get_preset("fast")
    import json

    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown config fields"):
        Config.from_dict({"model": {"bogus": 1}})


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="same length"):
        ModelConfig(encoder_channels=(8, 16), encoder_pool=(True,))
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(image_size=28, encoder_channels=(8, 8, 8), encoder_pool=(True, True, True))
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("best-ever")


def test_fast_resolves_to_its_float32_variant_without_bf16():
    from deepautodnn.config import FLOAT32_VARIANTS, resolve_preset

    assert resolve_preset("fast", bf16=True).preset == "fast"
    lean = resolve_preset("fast", bf16=False)
    assert lean.preset == "fast-fp32" and not lean.train.bf16
    assert lean.to_dict() == get_preset("fast-fp32").to_dict()
    # Still the hybrid: autoencoder pretraining, a DNN on the code, end-to-end fine-tuning.
    assert lean.train.ae_epochs > 0 and lean.train.dnn_epochs > 0 and lean.train.finetune_epochs > 0
    for name in ("paper", "best", "fast-fp32"):  # presets without a variant are what they say
        assert name not in FLOAT32_VARIANTS
        assert resolve_preset(name, bf16=False).preset == resolve_preset(name, bf16=True).preset == name
