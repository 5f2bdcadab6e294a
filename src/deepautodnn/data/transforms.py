"""Training images on the device: uint8 tensors, normalised per batch, shifted and erased in batches."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class TrainingData:
    """uint8 images (N, 1, H, W) and int64 labels on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def to_device_data(images: np.ndarray, labels: np.ndarray, train_idx, val_idx, device) -> TrainingData:
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    tr, va = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    return TrainingData(x[tr].to(device), y[tr].to(device), x[va].to(device), y[va].to(device))


def to_float(x_u8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    x = x_u8.float().div_(255.0)  # uint8 [0, 255] -> float [0, 1], the paper's sigmoid range
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def augment_batch(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to `max_shift` pixels (zero fill) and horizontal flip, batched."""
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # (B, C, H+2s, W+2s)
    oy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen, device=gen.device).to(x.device)
    ox = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen, device=gen.device).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    cidx = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[bidx, cidx, rows, cols]  # (B, C, H, W)
    flip = torch.rand(b, generator=gen, device=gen.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def erase_batch(
    x: torch.Tensor,
    gen: torch.Generator,
    prob: float,
    area: tuple[float, float] = (0.02, 0.25),
    aspect: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Random erasing (Zhong et al., 2020), batched: with probability `prob` per image, zero one
    rectangle covering `area` of the image with an aspect ratio in `aspect` (log-uniform)."""
    b, _, h, w = x.shape

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(b, generator=gen, device=gen.device)

    frac = uniform(*area)
    ratio = torch.exp(uniform(math.log(aspect[0]), math.log(aspect[1])))
    eh = (torch.sqrt(frac * ratio) * h).round().clamp(1, h)  # (B,) rectangle height in pixels
    ew = (torch.sqrt(frac / ratio) * w).round().clamp(1, w)
    y0 = (uniform(0, 1) * (h - eh + 1)).floor()
    x0 = (uniform(0, 1) * (w - ew + 1)).floor()
    hit = uniform(0, 1) < prob
    rows = torch.arange(h, device=gen.device)[None, :]  # (1, H)
    cols = torch.arange(w, device=gen.device)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])  # (B, H)
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])  # (B, W)
    erase = (in_rows[:, :, None] & in_cols[:, None, :] & hit[:, None, None]).to(x.device)  # (B, H, W)
    return x.masked_fill(erase[:, None], 0.0)
