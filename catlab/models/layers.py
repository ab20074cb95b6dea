"""Building blocks shared by the CAT generator and the discriminators.

Read top to bottom: fixed position tables (2-D sin-cos, 2-D RoPE), norms, attention with QK-norm,
the SwiGLU feed-forward, and the patch <-> token reshapes. Shapes in comments: B batch, T tokens,
D width, H heads, Dh = D // H head width, n = tokens per side of a grid, p = patch size.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- fixed position tables ------------------------------------------------------------------------
def sincos_1d(pos: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(N,) positions -> (N, dim) sin-cos features (half sin, half cos); dim must be even."""
    freqs = base ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))  # (dim/2,)
    angles = pos.double()[:, None] * freqs[None]                                  # (N, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()                  # (N, dim)


def grid_coords(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major coordinates of an n x n grid: (ys, xs), each (n*n,)."""
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return ys.reshape(-1), xs.reshape(-1)


def sincos_2d(n: int, dim: int) -> torch.Tensor:
    """MAE/DiT 2-D sin-cos table for an n x n grid: (n*n, dim); half the channels code y, half x."""
    if dim % 4:
        raise ValueError(f"sin-cos width must be a multiple of 4, got {dim}")
    ys, xs = grid_coords(n)
    return torch.cat([sincos_1d(ys, dim // 2), sincos_1d(xs, dim // 2)], dim=1)    # (n*n, dim)


def rope_2d(n: int, head_dim: int, base: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D rotary tables for an n x n grid: (cos, sin), each (n*n, head_dim).

    Channel pairs (i, i + Dh/2) rotate together (rotate-half convention). The first Dh/4 pairs
    rotate with the x coordinate, the last Dh/4 with y. Base 100 suits grids of a few dozen tokens.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
    ys, xs = grid_coords(n)
    freqs = base ** (-torch.arange(head_dim // 4, dtype=torch.float64) / (head_dim // 4))  # (Dh/4,)
    angles = torch.cat([xs.double()[:, None] * freqs, ys.double()[:, None] * freqs], 1)     # (T, Dh/2)
    angles = torch.cat([angles, angles], dim=1)                                              # (T, Dh)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, Dh), cos/sin (T, Dh) -> rotated x (B, H, T, Dh)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


# ---- norms and modulation -------------------------------------------------------------------------
def rms(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Parameter-free RMS normalisation over the last dim."""
    return F.rms_norm(x, (x.shape[-1],), eps=eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, T, D), shift/scale (B, D) -> x * (1 + scale) + shift."""
    return x * (1 + scale[:, None]) + shift[:, None]


# ---- attention and feed-forward -------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention with QK-norm (RMSNorm per head on q and k), optional 2-D RoPE
    and an optional boolean mask (True = may attend). Uses F.scaled_dot_product_attention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.proj = nn.Linear(width, width)

    def forward(self, x, rope=None, mask=None):                                  # x (B, T, D)
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                            # each (B, H, T, Dh)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)             # (B, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))                    # (B, T, D)


def swiglu_hidden(width: int) -> int:
    """Hidden width round(8/3 * width): 3 matrices of width x hidden cost 8 * width^2 MACs, like a 4x MLP."""
    return round(8 * width / 3)


class SwiGLU(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        hidden = swiglu_hidden(width)
        self.w12 = nn.Linear(width, 2 * hidden)                                   # gate and value, fused
        self.w3 = nn.Linear(hidden, width)

    def forward(self, x):                                                          # (B, T, D)
        a, b = self.w12(x).chunk(2, dim=-1)                                        # (B, T, hidden) x 2
        return self.w3(F.silu(a) * b)                                              # (B, T, D)


# ---- patches <-> tokens ---------------------------------------------------------------------------
def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, n*p, n*p) -> (B, n*n, C*p*p), row-major over the grid."""
    B, C, S, _ = x.shape
    n = S // p
    x = x.reshape(B, C, n, p, n, p).permute(0, 2, 4, 1, 3, 5)                      # (B, n, n, C, p, p)
    return x.reshape(B, n * n, C * p * p)


def unpatchify(x: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """(B, n*n, p*p*C) -> (B, C, n*p, n*p); the inverse layout of a head's Linear output."""
    B, T, _ = x.shape
    n = math.isqrt(T)
    x = x.reshape(B, n, n, p, p, channels).permute(0, 5, 1, 3, 2, 4)               # (B, C, n, p, n, p)
    return x.reshape(B, channels, n * p, n * p)


def init_linear(m: nn.Module) -> None:
    """Xavier-uniform weights, zero biases, for every nn.Linear under m (DiT/ViT style)."""
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            nn.init.xavier_uniform_(mod.weight)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
