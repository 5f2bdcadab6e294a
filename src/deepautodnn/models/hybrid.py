"""The DeepAutoDNN networks (paper Sec. III, Fig. 1, Tables I and III).

`ConvAutoencoder` learns the compact code without labels (Algorithm 1 step 2), `DeepClassifier`
is the deep fully-connected network on that code (step 3), and `DeepAutoDNN` chains the encoder
and the classifier; softmax over its logits gives the class probabilities (step 4).
Inputs are float images in [0, 1], shape (B, 1, 28, 28).

The package's one way to do each inference job lives here, where every layer may import it:
`predict_proba_u8` (uint8 images -> probabilities) and `reconstruction_error` (per-image MSE).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deepautodnn.config import EMBEDDING_SPACES, Config, ModelConfig
from deepautodnn.utils.runtime import seed_everything


class Encoder(nn.Module):
    """Blocks of Conv2D -> BatchNorm -> ReLU (one or more) [-> MaxPool], then dropout on the code."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        prev = cfg.in_channels
        for channels, pool in zip(cfg.encoder_channels, cfg.encoder_pool):
            for _ in range(cfg.encoder_convs_per_block):
                layers += [
                    nn.Conv2d(prev, channels, 3, padding=1, bias=False),  # BN supplies the bias
                    nn.BatchNorm2d(channels),
                    nn.ReLU(inplace=True),
                ]
                prev = channels
            if pool:
                layers.append(nn.MaxPool2d(2))  # halves H and W
        layers.append(nn.Dropout(cfg.ae_dropout))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, 1, 28, 28) -> (B, C, H', W'), e.g. (B, 128, 14, 14)


class Decoder(nn.Module):
    """Mirror of the encoder: Conv2D -> ReLU [-> UpSampling] blocks, then a sigmoid image."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        chans, pools = cfg.encoder_channels, cfg.encoder_pool
        layers: list[nn.Module] = []
        prev = chans[-1]
        for i in reversed(range(len(chans))):
            out = chans[max(i - 1, 0)]
            layers += [nn.Conv2d(prev, out, 3, padding=1), nn.ReLU(inplace=True)]
            if pools[i]:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))  # doubles H and W
            prev = out
        layers += [nn.Conv2d(prev, cfg.in_channels, 3, padding=1), nn.Sigmoid()]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)  # (B, C, H', W') -> (B, 1, 28, 28)


class ConvAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))  # reconstruction, same shape as x


class DeepClassifier(nn.Module):
    """Flatten the code, dense ReLU layers each followed by dropout, then a linear class layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, h, w = cfg.latent_shape
        layers: list[nn.Module] = [nn.Flatten()]  # (B, C, H, W) -> (B, C*H*W)
        prev = c * h * w
        for width in cfg.dnn_hidden:
            layers += [nn.Linear(prev, width), nn.ReLU(inplace=True), nn.Dropout(cfg.dnn_dropout)]
            prev = width
        layers.append(nn.Linear(prev, cfg.num_classes))  # logits; softmax is applied outside
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)  # (B, C, H, W) -> (B, num_classes)

    def penultimate(self, z: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations, the features unknown-input detection reads."""
        return self.layers[:-1](z)  # (B, C, H, W) -> (B, D), D = dnn_hidden[-1] (or C*H*W with no hidden layer)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers[-1](features)  # (B, D) -> (B, num_classes) logits


class DeepAutoDNN(nn.Module):
    """The full framework: autoencoder (whose encoder feeds) the deep classifier."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.autoencoder = ConvAutoencoder(cfg)
        self.classifier = DeepClassifier(cfg)

    @property
    def encoder(self) -> Encoder:
        return self.autoencoder.encoder

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, 1, 28, 28) -> (B, C, H', W')

    def forward_head(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The code (B, C, H', W') -> (logits (B, num_classes), penultimate features (B, D))."""
        features = self.classifier.penultimate(z)
        return self.classifier.head(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))  # (B, 1, 28, 28) -> (B, num_classes) logits

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decoder(z)  # (B, C, H', W') -> (B, 1, 28, 28) in [0, 1]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder(x)  # (B, 1, 28, 28) -> (B, 1, 28, 28)

    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (paper Sec. III-C) for float images in [0, 1]."""
        return torch.softmax(self(x).float(), dim=1)  # (B, 1, 28, 28) -> (B, num_classes)

    def embedding_dim(self, space: str) -> int:
        c, h, w = self.config.latent_shape
        return {"code": c * h * w, "penultimate": (self.config.dnn_hidden or (c * h * w,))[-1]}[check_space(space)]

    @torch.inference_mode()
    def embed(self, images: np.ndarray | torch.Tensor, space: str = "penultimate", *, batch_size: int = 1024):
        """Search vectors for images: uint8 (N, H, W) or (N, 1, H, W), or float in [0, 1] ->
        L2-normalised float32 (N, D) on the CPU, so an inner product is a cosine similarity.
        `space` is "penultimate" (the classifier's last hidden layer) or "code" (the autoencoder's
        code, flattened)."""
        if self.training:  # dropout and batch statistics would make every call's vectors differ
            raise ValueError("model.embed needs the model in eval mode: call model.eval() first")
        x = torch.as_tensor(images)
        if x.ndim == 3:
            x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        device = next(self.parameters()).device
        out = []
        for chunk in x.split(batch_size):
            chunk = to_unit(chunk) if chunk.dtype == torch.uint8 else chunk.float()
            z = self.forward_features(chunk.to(device))  # (B, C, H', W')
            _, features = self.forward_head(z)  # (B, D)
            out.append(embedding_from(z, features, space).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.embedding_dim(space))


def check_space(space: str) -> str:
    if space not in EMBEDDING_SPACES:
        raise ValueError(f"embedding space must be one of {', '.join(EMBEDDING_SPACES)}, not {space!r}")
    return space


def embedding_from(z: torch.Tensor, features: torch.Tensor, space: str) -> torch.Tensor:
    """The one way a search vector is made: the code (B, C, H', W') or the penultimate features
    (B, D) -> L2-normalised float32 (B, D'); the graph's `embedding` output and `embed` both call it."""
    vectors = z.flatten(1) if check_space(space) == "code" else features  # (B, C*H'*W') or (B, D)
    return F.normalize(vectors.float(), dim=1)


def to_unit(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 grey values [0, 255] -> float32 [0, 1], the range the decoder's sigmoid reproduces."""
    return x_u8.float() / 255.0


@torch.inference_mode()
def predict_proba_u8(
    model: DeepAutoDNN,
    images_u8: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The one uint8 -> probabilities path: images (N, H, W) or (N, 1, H, W) -> (N, num_classes)
    float32 on the CPU. Chunks of `batch_size` go to `device` (default: the model's) so memory stays
    bounded; the caller puts the model in eval mode."""
    x = torch.as_tensor(images_u8)
    if x.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    device = next(model.parameters()).device if device is None else device
    out = [model.predict_proba(to_unit(chunk.to(device))).cpu() for chunk in x.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.config.num_classes)


def reconstruction_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """The one reconstruction error: per-image MSE between images in [0, 1] and their reconstructions,
    (N, ...) x2 -> (N,) float32, whatever the layout ((N, H, W) or (N, 1, H, W), any memory format)."""
    return (recon.float() - x.float()).square().flatten(1).mean(1)


def build_model(cfg: Config, *, seed: int, device: torch.device | str = "cpu") -> DeepAutoDNN:
    """A fresh model to train: weights drawn from `seed`, in the memory layout the preset trains in.

    The one place a trainable DeepAutoDNN is made (runs, the estimator, ablations, the benchmark), so
    the same seed gives the same initial weights everywhere."""
    seed_everything(seed)
    model = DeepAutoDNN(cfg.model)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.to(device)
