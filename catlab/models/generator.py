"""The CAT generator (after GAT, "Scalable GANs with Transformers"), read top to bottom.

    positions (T, D) --proj--> tokens (B, T, D) --block 1..depth--> ... heads after blocks
    round(i * depth / K), i = 1..K; head_k: norm, modulation from w, Linear -> patch pixels, unpatchify.
    Stage outputs accumulate: xhat_k = sum_{j <= k} head_j (full resolution), then stage k is
    resampled to its scale s_k = resolution / 2**(K-1-k) with catlab.data.pyramid.resample (data.resampler:
    area, or antialiased bilinear; identity at full size), the operator of the real pyramid.

T = (resolution / patch)^2 tokens on a fixed grid, D = width, B batch, C channels, R resolution.
No output tanh: the outputs are unbounded; the init makes the final image's std about 0.5 (heads
each about 0.5 / sqrt(K)), so they start inside the [-1, 1] data range and the loss keeps them there.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from catlab.data.pyramid import RESAMPLERS, resample, scale_sizes   # the one resampler (G, reals, losses, analysis)
from catlab.errors import UserError
from catlab.models.layers import (Attention, SwiGLU, init_linear, modulate, rms, rope_2d, sincos_2d,
                                  unpatchify)

def head_positions(depth: int, stages: int) -> list[int]:
    """Block count after which each stage head sits: round(i * depth / K), at least 1."""
    return [max(1, math.floor(i * depth / stages + 0.5)) for i in range(1, stages + 1)]


# ---- mapping network: (z, y) -> w --------------------------------------------------------------
class Mapping(nn.Module):
    """z (B, z_dim) and a class embedding, each RMS-normalised, concatenated, 2-layer MLP -> w (B, D)."""

    def __init__(self, z_dim: int, num_classes: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, width)
        self.mlp = nn.Sequential(nn.Linear(z_dim + width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, z, y):
        h = torch.cat([rms(z), rms(self.embed(y))], dim=1)                        # (B, z_dim + D)
        return self.mlp(h)                                                         # (B, D)


# ---- modulated transformer block ----------------------------------------------------------------
class Block(nn.Module):
    """adaLN-zero block: RMSNorm, shift/scale from w, attention (QK-norm, 2-D RoPE), gated residual;
    the same for the SwiGLU FFN. The modulation Linear starts at zero, so every gate starts closed."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = Attention(width, heads)
        self.mlp = SwiGLU(width)
        self.ada = nn.Linear(width, 6 * width)                                     # w -> 6 x (B, D)

    def forward(self, x, c, rope):                                                 # x (B, T, D), c (B, D)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(c).chunk(6, dim=1)
        x = x + gate_a[:, None] * self.attn(modulate(rms(x), shift_a, scale_a), rope=rope)
        x = x + gate_m[:, None] * self.mlp(modulate(rms(x), shift_m, scale_m))
        return x                                                                   # (B, T, D)


# ---- stage head ---------------------------------------------------------------------------------
class Head(nn.Module):
    """RMSNorm, shift/scale from w, Linear -> p*p*C pixels per token, unpatchify -> (B, C, R, R)."""

    def __init__(self, width: int, patch: int, channels: int):
        super().__init__()
        self.patch, self.channels = patch, channels
        self.ada = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, patch * patch * channels)

    def forward(self, x, c):                                                       # x (B, T, D), c (B, D)
        shift, scale = self.ada(c).chunk(2, dim=1)                                 # (B, D) x 2
        pix = self.out(modulate(rms(x), shift, scale))                             # (B, T, p*p*C)
        return unpatchify(pix, self.patch, self.channels)                          # (B, C, R, R)


# ---- the generator ------------------------------------------------------------------------------
class Generator(nn.Module):
    def __init__(self, resolution: int = 32, channels: int = 3, num_classes: int = 10, *, depth: int = 4,
                 width: int = 64, heads: int = 4, patch: int = 4, stages: int = 4, z_dim: int = 64,
                 resampler: str = "area"):
        super().__init__()
        if resolution % patch:
            raise UserError(f"model.patch must be a divisor of data.resolution={resolution}, but got patch={patch}")
        if resolution >> (stages - 1) < 1:
            raise UserError(f"model.stages must leave a coarsest scale >= 1 px, but got stages={stages}")
        if resampler not in RESAMPLERS:
            raise UserError(f"data.resampler must be one of {', '.join(RESAMPLERS)}, but got resampler={resampler!r}")
        self.resolution, self.channels, self.patch = resolution, channels, patch
        self.z_dim, self.num_stages, self.width, self.depth = z_dim, stages, width, depth
        self.num_classes = max(1, num_classes)       # 0 = unconditional: one class, y may be None
        self.scales = scale_sizes(resolution, stages)
        self.resampler = resampler
        self.head_after = head_positions(depth, stages)
        n = resolution // patch                                                   # grid side; T = n*n

        self.register_buffer("pos", sincos_2d(n, width), persistent=False)         # (T, D)
        cos, sin = rope_2d(n, width // heads)
        self.register_buffer("rope_cos", cos, persistent=False)                    # (T, Dh)
        self.register_buffer("rope_sin", sin, persistent=False)                    # (T, Dh)
        self.pos_proj = nn.Linear(width, width)
        self.mapping = Mapping(z_dim, self.num_classes, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.heads = nn.ModuleList(Head(width, patch, channels) for _ in range(stages))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        init_linear(self)
        nn.init.normal_(self.mapping.embed.weight, std=1.0)
        for block in self.blocks:                  # adaLN-zero: all gates (and shifts/scales) start at 0
            nn.init.zeros_(block.ada.weight)
            nn.init.zeros_(block.ada.bias)
        gain = 0.5 / math.sqrt(self.num_stages)    # each head's output std ~ gain; the sum's ~ 0.5
        for head in self.heads:
            # Small random modulation: samples differ from step 0 even though the trunk starts as identity.
            nn.init.normal_(head.ada.weight, std=1.0 / math.sqrt(self.width))
            nn.init.normal_(head.out.weight, std=gain / math.sqrt(self.width))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, full: bool = False):
        """z (B, z_dim), y (B,) int64 -> K images (B, C, s_k, s_k), coarse to fine.
        full=True: (scale_images, full_images), full_images the K accumulated (B, C, R, R)."""
        B = z.shape[0]
        if y is None:
            y = torch.zeros(B, dtype=torch.long, device=z.device)
        w = self.mapping(z, y)                                                     # (B, D)
        c = F.silu(w)                                                              # conditioning, (B, D)
        x = self.pos_proj(self.pos).unsqueeze(0).expand(B, -1, -1)                 # (B, T, D)
        rope = (self.rope_cos, self.rope_sin)
        full_images, acc, k = [], None, 0
        for i, block in enumerate(self.blocks, start=1):
            x = block(x, c, rope)                                                  # (B, T, D)
            while k < self.num_stages and self.head_after[k] == i:
                out = self.heads[k](x, c)                                          # (B, C, R, R)
                acc = out if acc is None else acc + out                            # xhat_k = sum_{j<=k}
                full_images.append(acc)
                k += 1
        scale_images = [resample(img, s, self.resampler) for img, s in zip(full_images, self.scales)]
        return (scale_images, full_images) if full else scale_images


def build_generator(model_cfg, num_classes: int, resolution: int, channels: int = 3,
                    resampler: str = "area") -> Generator:
    """The generator that model_cfg (a catlab.config.ModelConfig) names, at this data shape."""
    shape = SIZES[model_cfg.size]
    return Generator(resolution, channels, num_classes, depth=shape["depth"], width=shape["width"],
                     heads=shape["heads"], patch=model_cfg.patch, stages=model_cfg.stages,
                     z_dim=model_cfg.z_dim, resampler=resampler)


# ---- size variants (the generator's; D uses the same table, via model.d_size) ------------------
SIZES: dict[str, dict] = {
    "tiny": dict(depth=4, width=64, heads=4),      # CPU default
    "small": dict(depth=8, width=128, heads=4),
    "S": dict(depth=12, width=384, heads=6),
    "B": dict(depth=12, width=768, heads=12),
    "M": dict(depth=24, width=768, heads=12),      # CAT-M/2: 261M params, 46 GFLOPs at 256 tokens
    "H": dict(depth=32, width=1280, heads=16),     # CAT-H/2: 960M params, 167 GFLOPs at 256 tokens
}
