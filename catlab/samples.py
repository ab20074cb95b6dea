"""Sample grids and PNG export.

A stage grid has one row per stage and one column per (z, y), the same (z, y) in every row; each
stage's image is upsampled (nearest) to the final size, so what a stage changes can be seen by eye.

Latent runs (data.name=latents:PATH): with a decoder ($CATLAB_VAE, see catlab.data.latents) the grid
shows each stage decoded to pixels at its own scale. Without one it is a preview of the latents, not
pixels: the first 3 latent channels as RGB, normalised per sample (one column) by the min and max of its
final stage, so that every stage of a sample goes through the same map and stages stay comparable.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from catlab.data import to_uint8
from catlab.errors import UserError


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


def latent_preview(stages: list[torch.Tensor]) -> list[torch.Tensor]:
    """K latent stages (N, C, s_k, s_k) -> K (N, 3, s_k, s_k) in [-1, 1]: the first 3 channels (repeated
    when C < 3), mapped per sample by the min and max of its final stage (all stages by the same map)."""
    first = [x.float()[:, [i % x.shape[1] for i in range(3)]] for x in stages]
    last = first[-1].flatten(1)
    lo, hi = last.min(1).values.view(-1, 1, 1, 1), last.max(1).values.view(-1, 1, 1, 1)
    scale = (hi - lo).clamp_min(1e-8)
    return [((x - lo) / scale * 2 - 1).clamp(-1, 1) for x in first]


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
    """The run's sample grid at `step`, from the EMA generator on the first n of the fixed eval set.

    Latent runs: decoded when $CATLAB_VAE is set, else latent_preview (see the module docstring)."""
    device = next(ctx.state.G_ema.parameters()).device
    stages = ctx.sample(ctx.eval_z[:n].to(device), ctx.eval_y[:n].to(device))
    path, scale = ctx.run_dir / "samples" / f"grid_{step:06d}.png", 4
    from catlab.data import latents
    if latents.is_latent(ctx.cfg.data.name):
        decoder = None
        if os.environ.get(latents.VAE_ENV):
            try:
                decoder = latents.decoder_for(ctx.cfg.data, device=device)
            except UserError as e:                           # a preview must not stop the run
                latents.notice(f"sample grids show latent channels: {e}")
        if decoder is None:
            stages = latent_preview(stages)
        else:
            stages = latents.decode_stages([x.float() for x in stages], decoder)
            scale = max(1, 128 // stages[-1].shape[-1])
    return save_png(stage_grid(stages), path, scale=scale)
