"""`shapes`: the embedded procedural dataset (no files, deterministic from a dataset seed).

Every image carries information at each scale of a 4/8/16/32 pyramid:
  coarse: a smooth two-colour background gradient, the position and size of one bold shape, its colour;
  fine:   a class-specific texture inside the shape (stripes, checkers, dots, rings with 1-2 px periods)
          and a crisp 1-px dark outline.
Class c fixes the shape, the colour family and the texture; each sample jitters position, size, aspect,
colour, texture phase and the background. Labels cycle 0..C-1, and the random parameters come in blocks
of 1024 samples seeded by (seed, block), so the first n images do not depend on data.n.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from catlab.data.base import ImageSet, mix_seed, register

CLASS_NAMES = ["disc", "square", "triangle", "ring", "cross", "diamond", "star", "bar", "ellipse", "L-shape"]
PALETTE = torch.tensor([                       # (C, 3) one bold colour family per class, RGB in [0, 1]
    [230, 25, 75],    # red
    [245, 130, 48],   # orange
    [255, 225, 25],   # yellow
    [60, 180, 75],    # green
    [70, 240, 240],   # cyan
    [0, 110, 220],    # blue
    [145, 30, 180],   # purple
    [240, 50, 230],   # magenta
    [250, 250, 250],  # white
    [150, 85, 30],    # brown
]) / 255.0
BLOCK = 1024                                   # samples per parameter block
N_PARAMS = 16                                  # uniform draws per sample
TEXTURE_DEPTH = 0.5                            # textured pixels are darkened to (1 - depth) * colour
OUTLINE = 0.06                                 # outline grey level


# ---- shapes: masks from shape coordinates (u, v), the pixel offset over the half-size, y pointing down ----
def _disc(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return torch.maximum(u.abs(), v.abs()) <= 0.85


def _triangle(u, v):                           # apex up, base at v = 0.85
    return (v <= 0.85) & (u.abs() <= (v + 1.0) * 0.55)


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.5 ** 2)


def _cross(u, v):
    a, b = u.abs(), v.abs()
    return ((a <= 0.32) & (b <= 1.0)) | ((b <= 0.32) & (a <= 1.0))


def _diamond(u, v):
    return u.abs() + v.abs() <= 1.1


def _star(u, v):                               # five points, one pointing up
    r = torch.sqrt(u * u + v * v)
    theta = torch.atan2(v, u) + math.pi / 2
    return r <= 0.45 + 0.65 * ((torch.cos(5 * theta) + 1) / 2) ** 2


def _bar(u, v):                                # wide horizontal band
    return (u.abs() <= 1.15) & (v.abs() <= 0.42)


def _ellipse(u, v):                            # tall ellipse
    return (u / 0.58) ** 2 + v * v <= 1.0


def _l_shape(u, v):
    return ((u >= -0.85) & (u <= -0.25) & (v.abs() <= 0.9)) | ((u >= -0.85) & (u <= 0.85) & (v >= 0.3) & (v <= 0.9))


SHAPES = [_disc, _square, _triangle, _ring, _cross, _diamond, _star, _bar, _ellipse, _l_shape]


# ---- textures: 0/1 patterns over integer pixel coordinates X, Y (phase-shifted) and radius r ----
TEXTURES = [
    lambda X, Y, r: (Y // 2) % 2,              # horizontal stripes, period 4
    lambda X, Y, r: (X // 2) % 2,              # vertical stripes, period 4
    lambda X, Y, r: (X + Y) % 2,               # 1-px checker
    lambda X, Y, r: ((X + Y) // 2) % 2,        # diagonal stripes
    lambda X, Y, r: ((X % 3) == 0) & ((Y % 3) == 0),   # dots, period 3
    lambda X, Y, r: ((X - Y) // 2) % 2,        # anti-diagonal stripes
    lambda X, Y, r: (X // 2 + Y // 2) % 2,     # 2-px checker
    lambda X, Y, r: Y % 2,                     # 1-px horizontal lines
    lambda X, Y, r: (r / 1.5).floor() % 2,     # concentric rings
    lambda X, Y, r: X % 2,                     # 1-px vertical lines
]


# ---- building blocks -------------------------------------------------------------------------------------
def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB for (N,) tensors in [0, 1]; returns (N, 3)."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)            # (N, 3)
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def block_params(n: int, seed: int, num_classes: int, n_params: int,
                 *stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (n,) cycling through the classes and uniform parameters (n, n_params), in blocks of BLOCK
    samples seeded by (seed, block, *stream), so the first n do not depend on n (`layouts` uses stream 2)."""
    blocks = []
    for b in range((n + BLOCK - 1) // BLOCK):
        g = torch.Generator().manual_seed(mix_seed(seed, b, *stream))
        blocks.append(torch.rand(BLOCK, n_params, generator=g))
    params = torch.cat(blocks)[:n] if blocks else torch.zeros(0, n_params)
    return torch.arange(n) % num_classes, params


def shape_params(n: int, seed: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    return block_params(n, seed, num_classes, N_PARAMS)


def paint(img: torch.Tensor, mask: torch.Tensor, outline: torch.Tensor, fg: torch.Tensor,
          tex: torch.Tensor) -> torch.Tensor:
    """img (n, 3, R, R) with the object painted in: fg (n, 3) darkened by the texture tex (n, R, R) inside
    mask (n, R, R), and the OUTLINE grey on outline (n, R, R)."""
    shade = 1.0 - TEXTURE_DEPTH * tex[:, None]                          # (n, 1, R, R)
    img = torch.where(mask[:, None], fg[:, :, None, None] * shade, img)
    return torch.where(outline[:, None], torch.full_like(img, OUTLINE), img)


def render(c: int, p: torch.Tensor, resolution: int, colour: int | None = None) -> torch.Tensor:
    """Draw images (n, 3, R, R) in [0, 1] of class c from parameters (n, N_PARAMS).
    colour: draw in another class's colour family (the colour-blind shape classifier trains on these)."""
    n, R = p.shape[0], resolution
    unit = max(R // 32, 1)                                              # texture cell size in px
    # per-sample geometry
    cx, cy = R * (0.35 + 0.3 * p[:, 0]), R * (0.35 + 0.3 * p[:, 1])   # (n,) centre in px
    half = R * (0.22 + 0.11 * p[:, 2])                                  # (n,) half-size in px
    aspect = 0.9 + 0.2 * p[:, 3]
    coords = torch.arange(R, dtype=torch.float32) + 0.5                 # pixel centres
    dx = coords[None, None, :] - cx[:, None, None]                      # (n, 1, R)
    dy = coords[None, :, None] - cy[:, None, None]                      # (n, R, 1)
    u = dx / (half * aspect)[:, None, None]                             # (n, 1, R), broadcasts with v
    v = dy / (half / aspect)[:, None, None]                             # (n, R, 1)
    mask = SHAPES[c](u, v).expand(n, R, R)                              # (n, R, R) bool
    outline = F.max_pool2d(mask[:, None].float(), 3, stride=1, padding=1)[:, 0].bool() & ~mask

    # texture on integer cells with a random phase, and the radius from the centre
    X = (torch.arange(R)[None, None, :] + (p[:, 12] * 6).long()[:, None, None]) // unit   # (n, 1, R)
    Y = (torch.arange(R)[None, :, None] + (p[:, 13] * 6).long()[:, None, None]) // unit   # (n, R, 1)
    rad = torch.sqrt(dx * dx + dy * dy) / unit                          # (n, R, R)
    tex = TEXTURES[c](X, Y, rad).float().expand(n, R, R)                # (n, R, R)

    # colours: the class colour with brightness and per-channel jitter; a muted two-colour background
    fg = PALETTE[c if colour is None else colour] * (0.85 + 0.15 * p[:, 4:5]) + 0.1 * (p[:, 5:8] - 0.5)   # (n, 3)
    fg = fg.clamp(0, 1)
    hue = p[:, 8]
    sat = 0.1 + 0.3 * p[:, 9]
    c0 = _hsv_to_rgb(hue, sat, 0.2 + 0.4 * p[:, 10])                   # (n, 3)
    c1 = _hsv_to_rgb((hue + 0.15) % 1.0, sat, 0.2 + 0.4 * p[:, 11])
    angle = 2 * math.pi * p[:, 14]
    t = (dx * torch.cos(angle)[:, None, None] + dy * torch.sin(angle)[:, None, None]) / R + 0.5
    t = t.clamp(0, 1)[:, None]                                          # (n, 1, R, R)
    img = c0[:, :, None, None] * (1 - t) + c1[:, :, None, None] * t     # (n, 3, R, R)
    return paint(img, mask, outline, fg, tex)


def render_set(name: str, draw, labels: torch.Tensor, params: torch.Tensor, resolution: int,
               chunk: int = 2048) -> ImageSet:
    """An ImageSet of uint8 images drawn class by class: draw(c, params of class c, resolution) -> floats in
    [0, 1] (this module's render, and that of catlab.data.layouts)."""
    images = torch.empty(len(labels), 3, resolution, resolution, dtype=torch.uint8)
    for c in range(len(CLASS_NAMES)):
        for idx in (labels == c).nonzero()[:, 0].split(chunk):
            images[idx] = (draw(c, params[idx], resolution) * 255).round().clamp(0, 255).to(torch.uint8)
    return ImageSet(images=images, labels=labels, num_classes=len(CLASS_NAMES), name=name,
                    class_names=list(CLASS_NAMES))


def make_shapes(n: int, resolution: int = 32, seed: int = 0, chunk: int = 2048) -> ImageSet:
    """n shapes images at `resolution` (uint8), deterministic from `seed`. Rendered class by class."""
    return render_set("shapes", render, *shape_params(n, seed, len(CLASS_NAMES)), resolution, chunk)


@register("shapes")
def shapes(data_cfg, seed: int = 0) -> ImageSet:
    """Embedded procedural shapes: 10 classes, data.n images at data.resolution (default 10000 at 32 px)."""
    return make_shapes(data_cfg.n or 10000, data_cfg.resolution, seed)
