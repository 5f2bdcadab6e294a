"""Small networks and settings the tests train or run in seconds, shared so they stay one definition."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from deepautodnn.config import Config, ModelConfig, TrainConfig
from deepautodnn.models.hybrid import DeepAutoDNN

TINY = ModelConfig(encoder_channels=(8, 16), encoder_pool=(True, True), dnn_hidden=(32,))  # trains in seconds
SMALL = ModelConfig(encoder_channels=(4, 8), encoder_pool=(True, True), dnn_hidden=(16,))  # runs, not trained
ONE_EPOCH_PER_STAGE = ["--ae-epochs", "1", "--dnn-epochs", "1", "--finetune-epochs", "1"]  # `train` arguments


def tiny_config(finetune_epochs: int = 1) -> Config:
    """TINY for one epoch of each stage (and `finetune_epochs` of fine-tuning), batch 128, augmented."""
    train = TrainConfig(
        ae_epochs=1,
        ae_batch_size=128,
        dnn_epochs=1,
        dnn_batch_size=128,
        finetune_epochs=finetune_epochs,
        finetune_batch_size=128,
        augment=True,
    )
    return Config(model=TINY, train=train, preset="tiny")


def small_model(seed: int = 0) -> DeepAutoDNN:
    torch.manual_seed(seed)
    return DeepAutoDNN(SMALL).eval()


def random_u8(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()
