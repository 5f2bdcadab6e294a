"""Small torch networks rebuilt from the Table IV comparators the paper cites.

Each takes float images (B, 1, 28, 28) in [0, 1] and returns logits (B, 10). They follow the
cited papers' shapes where those are given and stay small enough to train on a 2-core CPU.
"""

from __future__ import annotations

import torch
from torch import nn


class RowLSTM(nn.Module):
    """LSTM over image rows [19]: 28 time steps of 28 pixels, the last hidden state classifies."""

    def __init__(self, hidden: int = 128, layers: int = 2, num_classes: int = 10):
        super().__init__()
        self.lstm = nn.LSTM(28, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        rows = x.squeeze(1)  # (B, 1, 28, 28) -> (B, 28 rows, 28 pixels)
        out, _ = self.lstm(rows)  # (B, 28, hidden)
        return self.head(out[:, -1])  # (B, num_classes)


def _conv_relu_pool(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.ReLU(inplace=True), nn.MaxPool2d(2))


class ConvNet(nn.Module):
    """A plain ConvNet [13]: two conv/pool blocks and a dense layer with dropout."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(_conv_relu_pool(1, 32, 3), _conv_relu_pool(32, 64, 3))  # (B, 64, 7, 7)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))


class CNNSVM(nn.Module):
    """CNN-SVM [14]: Agarap's two 5x5 conv/pool blocks and a dense layer, topped by a linear layer
    trained with the squared hinge loss, i.e. an L2-SVM learned jointly with the features."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(_conv_relu_pool(1, 32, 5), _conv_relu_pool(32, 64, 5))  # (B, 64, 7, 7)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.svm = nn.Linear(512, num_classes)  # scores; no softmax

    def forward(self, x):
        return self.svm(self.embed(self.features(x)))


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x):
        return torch.relu(x + self.body(x))  # the skip connection


class CNNBatchNormSkip(nn.Module):
    """CNN2 + BatchNorm + Skip [7]: two conv stages with batch norm, each with a residual block."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(1, 32),
            _ResidualBlock(32),
            nn.MaxPool2d(2),  # (B, 32, 14, 14)
            _conv_bn_relu(32, 64),
            _ResidualBlock(64),
            nn.MaxPool2d(2),  # (B, 64, 7, 7)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class SmallVGG(nn.Module):
    """A VGG-style net [12], scaled to 28x28: three stages of two 3x3 conv-BN-ReLU, then pooling."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), num_classes: int = 10):
        super().__init__()
        layers, c_in = [], 1
        for width in widths:
            layers += [_conv_bn_relu(c_in, width), _conv_bn_relu(width, width), nn.MaxPool2d(2)]
            c_in = width
        self.features = nn.Sequential(*layers)  # (B, 128, 3, 3) for 28x28 input
        side = 28 // 2 ** len(widths)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(256, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))
