"""Image scales: the sizes of a K-scale pyramid, the resampling operator, and uint8 <-> [-1, 1] floats."""
from __future__ import annotations

import torch
import torch.nn.functional as F

RESAMPLERS = ("area", "bilinear")


def scale_sizes(resolution: int, K: int) -> list[int]:
    """Sizes of the K scales, coarse to fine: resolution / 2**(K-1-k). (32, K=4) -> [4, 8, 16, 32]."""
    if K < 1 or resolution >> (K - 1) < 1 or resolution % (1 << (K - 1)):
        raise ValueError(f"cannot split resolution {resolution} into {K} scales that halve")
    return [resolution >> (K - 1 - k) for k in range(K)]


def resample(x: torch.Tensor, size: int, mode: str = "area") -> torch.Tensor:
    """Resample float images (B, C, H, W) (or (C, H, W)) to size x size.

    Downsampling: mode="area" averages pixel blocks (F.interpolate area); mode="bilinear" is antialiased
    bilinear. Upsampling always uses bilinear (align_corners=False, antialias=False). Same size: identity.
    """
    if mode not in RESAMPLERS:
        raise ValueError(f"resample mode must be one of {', '.join(RESAMPLERS)}, got {mode!r}")
    if x.dim() == 3:
        return resample(x[None], size, mode)[0]
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if size > h or size > w:                                   # upsampling
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if mode == "area":
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def pyramid(x: torch.Tensor, sizes: list[int], mode: str = "area") -> list[torch.Tensor]:
    """The images at each size (coarse to fine), each resampled directly from the full-resolution x."""
    return [resample(x, s, mode) for s in sizes]


def to_float(u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return u8.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (rounded, clamped)."""
    return ((x.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
