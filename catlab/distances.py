"""The distance registry: d(a, b) -> per-sample (B,) for images (B, C, H, W), by name.

    d = get_distance("l2")              # the consistency loss (catlab.losses), the diagnostics (analysis)
    get_distance("lpips-domain")        # perceptual ones are catlab.metrics' (loaded on first use)

l2 and l1 are plain tensor code; the lpips-* names resolve lazily, so asking for l2 imports no extractor.
"""
from __future__ import annotations

from typing import Callable

import torch

from catlab.errors import UserError


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample: (B, C, H, W) x 2 -> (B,)."""
    return (a - b).pow(2).flatten(1).mean(1)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per sample: (B, C, H, W) x 2 -> (B,)."""
    return (a - b).abs().flatten(1).mean(1)


PLAIN: dict[str, Callable] = {"l2": l2, "l1": l1}


def registry() -> dict[str, Callable]:
    """Every distance name: l2, l1, then catlab.metrics' perceptual ones (lazy: built on first call)."""
    from catlab.metrics.lpips_distance import PERCEPTUAL
    return {**PLAIN, **PERCEPTUAL}


def get_distance(distance: str | Callable) -> Callable:
    """A callable d(a, b) -> (B,) for a name or a callable; UserError naming the allowed names otherwise."""
    if callable(distance):
        return distance
    if isinstance(distance, str) and distance in PLAIN:           # no extractor import for l1 / l2
        return PLAIN[distance]
    reg = registry()
    if isinstance(distance, str) and distance in reg:
        return reg[distance]
    raise UserError(f"distance must be one of {', '.join(sorted(reg))} or a callable d(a, b) -> (B,), "
                    f"but got distance={distance!r}")
