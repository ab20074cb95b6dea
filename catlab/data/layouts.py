"""`layouts`: the embedded procedural dataset whose coarse scale is a choice (no files, deterministic).

In `shapes` a class fixes the shape, its colour and its texture, and what a sample varies (position, size,
colour jitter) is a small continuous move that the coarsest scale settles: a later stage has no other
plausible image to drift to. Here a class fixes only the *silhouette* (and its fine texture), and every
sample makes discrete coarse choices that the class does not decide:

  count     1, 2 or 3 objects, all of the class's shape;
  slots     which of the four quadrants they sit in (a random order of the quadrants, the first `count`);
  colour    one of six bold hues per object, independent of the class;
  pose      a quarter-turn rotation per object (0, 90, 180 or 270 degrees);
  jitter    about a pixel of position and 20 % of size per object, and a dark two-colour background.

At 4 px an image is a few colour blobs in some quadrants; at 16-32 px the blobs become the class's
silhouettes with a 1-px outline and the class texture. So a coarse stage has to commit to a layout
(which quadrants, which colours), and a later stage can draw another plausible layout instead: the
cross-scale misalignment that CAT's consistency loss is about. Whether a sample shows its class is scored
by catlab.metrics.shape_classifier (weights trained on `layouts`, luminance only).

Labels cycle 0..C-1, and the random parameters come in blocks of 1024 samples seeded by (seed, block),
as in `shapes`, so the first n images do not depend on data.n.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from catlab.data.base import ImageSet, register
from catlab.data.shapes import CLASS_NAMES, SHAPES, TEXTURES, _hsv_to_rgb, block_params, paint, render_set

HUES = torch.tensor([                          # (6, 3) object colours, RGB in [0, 1], shared by all classes
    [230, 40, 40],    # red
    [250, 215, 30],   # yellow
    [50, 190, 70],    # green
    [60, 220, 230],   # cyan
    [40, 90, 235],    # blue
    [225, 60, 220],   # magenta
]) / 255.0
MAX_OBJECTS = 3
QUADRANTS = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])   # (4, 2) centres / R
PERMUTATIONS = torch.tensor(list(itertools.permutations(range(4))))  # (24, 4)
N_PARAMS = 32                                  # uniform draws per sample
# parameter columns: 0 count, 1 slot order, 2-7 jitter (x, y per object), 8-10 size, 11-13 hue,
# 14-16 pose, 17-19 brightness, 20-24 background (hue, saturation, two values, angle), 25-26 texture phase


def layout_params(n: int, seed: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    return block_params(n, seed, num_classes, N_PARAMS, 2)              # stream 2: not the shapes blocks


def counts(p: torch.Tensor) -> torch.Tensor:
    """Objects per sample (n,) in 1..MAX_OBJECTS."""
    return 1 + (p[:, 0] * MAX_OBJECTS).long().clamp(max=MAX_OBJECTS - 1)


def render(c: int, p: torch.Tensor, resolution: int) -> torch.Tensor:
    """Draw images (n, 3, R, R) in [0, 1] of class c from parameters (n, N_PARAMS)."""
    n, R = p.shape[0], resolution
    unit = max(R // 32, 1)                                              # texture cell size in px
    coords = torch.arange(R, dtype=torch.float32) + 0.5                 # pixel centres

    # background: a muted, dark two-colour gradient
    hue, sat = p[:, 20], 0.1 + 0.3 * p[:, 21]
    c0 = _hsv_to_rgb(hue, sat, 0.12 + 0.2 * p[:, 22])                   # (n, 3)
    c1 = _hsv_to_rgb((hue + 0.15) % 1.0, sat, 0.12 + 0.2 * p[:, 23])
    angle = 2 * math.pi * p[:, 24]
    gx = coords[None, None, :] - R / 2                                  # (1, 1, R)
    gy = coords[None, :, None] - R / 2                                  # (1, R, 1)
    t = (gx * torch.cos(angle)[:, None, None] + gy * torch.sin(angle)[:, None, None]) / R + 0.5
    img = c0[:, :, None, None] * (1 - t.clamp(0, 1)[:, None]) + c1[:, :, None, None] * t.clamp(0, 1)[:, None]

    X = (torch.arange(R)[None, None, :] + (p[:, 25] * 6).long()[:, None, None]) // unit   # (n, 1, R)
    Y = (torch.arange(R)[None, :, None] + (p[:, 26] * 6).long()[:, None, None]) // unit   # (n, R, 1)
    order = PERMUTATIONS[(p[:, 1] * len(PERMUTATIONS)).long().clamp(max=len(PERMUTATIONS) - 1)]   # (n, 4)
    count = counts(p)
    for j in range(MAX_OBJECTS):
        present = (count > j)[:, None, None]                            # (n, 1, 1)
        centre = QUADRANTS[order[:, j]] * R + 0.03 * R * (2 * p[:, 2 + 2 * j:4 + 2 * j] - 1)  # (n, 2) px
        half = R * (0.17 + 0.04 * p[:, 8 + j])                          # (n,) half-size in px
        dx = coords[None, None, :] - centre[:, 0, None, None]           # (n, 1, R)
        dy = coords[None, :, None] - centre[:, 1, None, None]           # (n, R, 1)
        turn = (p[:, 14 + j] * 4).long().clamp(max=3)                   # (n,) quarter turns
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[turn][:, None, None]
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[turn][:, None, None]
        u = (cos * dx + sin * dy) / half[:, None, None]                 # (n, R, R) rotated shape coords
        v = (-sin * dx + cos * dy) / half[:, None, None]
        mask = SHAPES[c](u, v) & present                                # (n, R, R) bool
        outline = F.max_pool2d(mask[:, None].float(), 3, stride=1, padding=1)[:, 0].bool() & ~mask
        tex = TEXTURES[c](X, Y, torch.sqrt(dx * dx + dy * dy) / unit).float().expand(n, R, R)
        fg = HUES[(p[:, 11 + j] * len(HUES)).long().clamp(max=len(HUES) - 1)] * (0.8 + 0.2 * p[:, 17 + j:18 + j])
        img = paint(img, mask, outline, fg, tex)
    return img


def make_layouts(n: int, resolution: int = 32, seed: int = 0, chunk: int = 2048) -> ImageSet:
    """n layouts images at `resolution` (uint8), deterministic from `seed`. Rendered class by class."""
    return render_set("layouts", render, *layout_params(n, seed, len(CLASS_NAMES)), resolution, chunk)


@register("layouts")
def layouts(data_cfg, seed: int = 0) -> ImageSet:
    """Embedded procedural layouts: 10 silhouette classes, 1-3 objects in free quadrants, free colours."""
    return make_layouts(data_cfg.n or 10000, data_cfg.resolution, seed)
