"""Architecture and training settings as dataclasses, and the named presets.

`paper` follows Tables I and III and Algorithm 1 of the paper; `docs/paper.md` maps each of its
fields to the statement it implements and lists the ambiguities. Other presets are improvements
and say so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .data import CLASS_NAMES


@dataclass
class ModelConfig:
    """The DeepAutoDNN architecture: convolutional autoencoder + deep fully-connected classifier."""

    image_size: int = 28  # pixels, square input (Table I: 28x28x1)
    in_channels: int = 1  # grayscale
    encoder_channels: tuple[int, ...] = (32, 64, 128)  # one Conv-BN-ReLU block per entry
    encoder_pool: tuple[bool, ...] = (True, False, False)  # 2x2 max-pool after that block?
    encoder_convs_per_block: int = 1  # Conv-BN-ReLU layers per block (Table I: one)
    ae_dropout: float = 0.25  # dropout on the latent code while the autoencoder trains
    dnn_hidden: tuple[int, ...] = (512, 256, 256, 128, 128, 64)  # dense ReLU layers
    dnn_dropout: float = 0.5  # after every hidden dense layer (Table III)
    class_names: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self):
        self.encoder_channels = tuple(self.encoder_channels)
        self.encoder_pool = tuple(bool(p) for p in self.encoder_pool)
        self.dnn_hidden = tuple(self.dnn_hidden)
        self.class_names = tuple(self.class_names)
        if len(self.encoder_channels) != len(self.encoder_pool):
            raise ValueError("encoder_channels and encoder_pool must have the same length")
        if self.encoder_convs_per_block < 1:
            raise ValueError("encoder_convs_per_block must be >= 1")
        if self.image_size % (2 ** sum(self.encoder_pool)):
            raise ValueError(f"image_size {self.image_size} is not divisible by the pooling")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the encoder's output, the code the DNN reads."""
        side = self.image_size // 2 ** sum(self.encoder_pool)
        return (self.encoder_channels[-1], side, side)


@dataclass
class TrainConfig:
    """How the three stages train. Epoch counts of 0 skip a stage."""

    # Stage 1: autoencoder, images only (Table I).
    ae_epochs: int = 15
    ae_batch_size: int = 32
    ae_lr: float = 1e-3  # Adam; Table I gives no rate, Keras' Adam default is 1e-3
    # Stage 2: DNN on the frozen encoder's features (Table III, Algorithm 1 step 3).
    dnn_epochs: int = 120
    dnn_batch_size: int = 64
    dnn_lr: float = 1e-3
    # Stage 3: optional end-to-end fine-tuning of encoder + DNN (not in the paper).
    finetune_epochs: int = 0
    finetune_batch_size: int = 128
    finetune_lr: float = 1e-3
    # Shared settings.
    schedule: str = "constant"  # "constant" (Keras' default) or "onecycle" per stage
    weight_decay: float = 0.0  # AdamW decoupled decay; 0 is plain Adam
    label_smoothing: float = 0.0
    augment: bool = False  # random 2-pixel shift + horizontal flip; stage 3 only (stage 2 reads fixed codes)
    erase_prob: float = 0.0  # with augment: chance of random erasing per image
    val_size: int = 5000  # images carved from train for model selection
    split_seed: int = 0  # fixed, so every run validates on the same images
    keep_best_epoch: bool = True  # restore each stage's best validation epoch; False keeps the last
    bf16: bool = False  # bf16 autocast on CPUs with AVX512-BF16 and on CUDA
    channels_last: bool = False
    cache_features_gib: float = 6.0  # cache frozen-encoder features when they fit in this


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "custom"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = (set(d.get("model", {})) - model_fields) | (set(d.get("train", {})) - train_fields)
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(
            model=ModelConfig(**d.get("model", {})),
            train=TrainConfig(**d.get("train", {})),
            preset=d.get("preset", "custom"),
        )


def _paper() -> Config:
    # Every value here is from Tables I/III or explained in docs/paper.md.
    return Config(model=ModelConfig(), train=TrainConfig(), preset="paper")


def _fast() -> Config:
    # Same hybrid (conv autoencoder -> dense DNN -> softmax), sized for a 2-core CPU: a 7x7 latent,
    # one autoencoder epoch, two DNN epochs on the frozen features, then 28 epochs of end-to-end
    # fine-tuning. Chosen on validation, seed 0: 15 -> 24 epochs 93.8% -> 94.4%; random erasing
    # 94.0%; without dropout on the code (also 17% faster) and DNN dropout 0.3, 28 epochs: 94.8%.
    return Config(
        model=ModelConfig(
            encoder_channels=(32, 64, 128),
            encoder_pool=(True, True, False),
            ae_dropout=0.0,
            dnn_hidden=(256,),
            dnn_dropout=0.3,
        ),
        train=TrainConfig(
            ae_epochs=1,
            ae_batch_size=128,
            ae_lr=2e-3,
            dnn_epochs=2,
            dnn_batch_size=256,
            dnn_lr=2e-3,
            finetune_epochs=28,
            finetune_batch_size=128,
            finetune_lr=3e-3,
            schedule="onecycle",
            weight_decay=5e-4,
            label_smoothing=0.1,
            augment=True,
            bf16=True,
            channels_last=True,
        ),
        preset="fast",
    )


def _best() -> Config:
    # For a GPU: `fast` with a VGG-style encoder (two 3x3 convolutions per block, 64-128-256
    # channels, a 256x7x7 code), five autoencoder epochs, then 60 fine-tuning epochs with random
    # erasing on top of the shifts and flips. Not the paper's network; see README for its status.
    cfg = _fast()
    cfg.model = dataclasses.replace(cfg.model, encoder_channels=(64, 128, 256), encoder_convs_per_block=2,
                                    ae_dropout=0.1, dnn_hidden=(512,), dnn_dropout=0.5)
    cfg.train = dataclasses.replace(cfg.train, ae_epochs=5, finetune_epochs=60, finetune_lr=2e-3, erase_prob=0.5)
    cfg.preset = "best"
    return cfg


PRESETS = {"paper": _paper, "fast": _fast, "best": _best}


def get_preset(name: str) -> Config:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()
