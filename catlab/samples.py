"""Sample grids and PNG export.

A stage grid has one row per stage and one column per (z, y), the same (z, y) in every row; each
stage's image is upsampled (nearest) to the final size, so what a stage changes can be seen by eye.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from catlab.data import to_uint8


def upsample_nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="nearest")


def stage_grid(stages: list[torch.Tensor], pad: int = 1) -> torch.Tensor:
    """stages: K tensors (N, C, s_k, s_k) in [-1, 1] -> uint8 image (C, K*(R+pad)+pad, N*(R+pad)+pad)."""
    size = stages[-1].shape[-1]
    rows = torch.stack([upsample_nearest(x.float(), size) for x in stages])  # (K, N, C, R, R)
    k, n, c, r, _ = rows.shape
    canvas = torch.full((c, k * (r + pad) + pad, n * (r + pad) + pad), 255, dtype=torch.uint8)
    tiles = to_uint8(rows.clamp(-1, 1).cpu())
    for i in range(k):
        for j in range(n):
            top, left = pad + i * (r + pad), pad + j * (r + pad)
            canvas[:, top:top + r, left:left + r] = tiles[i, j]
    return canvas


def save_png(img: torch.Tensor, path: Path, scale: int = 1) -> Path:
    """uint8 (C, H, W) -> PNG; scale > 1 enlarges with nearest neighbours (for viewing tiny images)."""
    arr = img.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr[..., :3])
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path)
    return path


def save_stage_grid(ctx, step: int, n: int = 12) -> Path:
    """The run's sample grid at `step`, from the EMA generator on the first n of the fixed eval set."""
    device = next(ctx.state.G_ema.parameters()).device
    stages = ctx.sample(ctx.eval_z[:n].to(device), ctx.eval_y[:n].to(device))
    return save_png(stage_grid(stages), ctx.run_dir / "samples" / f"grid_{step:06d}.png", scale=4)
