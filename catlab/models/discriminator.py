"""Discriminators: three ways to feed one shared ViT trunk the K stage images, and a convolutional one.

    scalewise  (CAT): per-scale token groups [CLS_k, tokens_k], k = 1..K, in one sequence; a
               block-diagonal mask keeps attention inside each group, so logit k sees only image k.
    aggregated: the same network without the mask (the scales attend to each other; CAT fig. 7).
    concat     (GAT): all stages upsampled (bilinear, align_corners=False) to the final size,
               concatenated on channels (K*C), one token grid, one CLS -> one logit.
    scalewise-conv (the cpu recipe's default): one small CNN per scale, so logit k sees only image k, as
               in scalewise; its locality lets it tell silhouettes apart within a CPU budget
               (docs/cpu-recipe.md). Every scale's CNN starts at width/2 channels and doubles them to width
               at each halving. train.channels_last (the default) runs its convolutions in channels_last.
    scalewise-conv-lean (tried for speed, not adopted: docs/cpu-recipe.md): the same CNNs with channels set
               by the resolution (width * 8 / s, at most width: 16 at 32 px, 32 at 16 px, 64 below for width 64), the
               usual GAN-D schedule. The 32-px CNN, most of D's arithmetic, costs 2.6x less.
    scalewise-conv-capped: scalewise-conv with at most width * 8 / s channels per map: only the 32-px CNN
               changes (16 @ 32 px, 32 @ 16 px), about half of D's arithmetic.
               The gpu profile uses the ViT.

Scale k of size s_k uses patch p_k = clamp(s_k // 4, 1, d_patch); 32 px with d_patch 4 gives patches
1, 2, 4, 4 and 16, 16, 16, 64 tokens. Output: CLS -> RMSNorm -> Linear scalar + <embed(y), h> (projection
conditioning). B batch, T tokens, D width, K stages, C channels.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from catlab.errors import UserError
from catlab.models.generator import SIZES, scale_sizes
from catlab.models.layers import Attention, SwiGLU, init_linear, patchify, sincos_2d


def d_patch_size(scale: int, d_patch: int) -> int:
    return max(1, min(scale // 4, d_patch))


# ---- the trunk ----------------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-norm ViT block: RMSNorm, attention with QK-norm, RMSNorm, SwiGLU; plain residuals."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(width, eps=1e-6), nn.RMSNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.mlp = SwiGLU(width)

    def forward(self, x, mask=None):                                               # (B, T, D)
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.mlp(self.norm2(x))


class Trunk(nn.Module):
    def __init__(self, depth: int, width: int, heads: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.RMSNorm(width, eps=1e-6)

    def forward(self, x, mask=None):                                               # (B, T, D)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class PatchEmbed(nn.Module):
    """(B, C, n*p, n*p) -> (B, n*n, D): patchify, Linear, plus the fixed 2-D sin-cos table of the grid."""

    def __init__(self, size: int, patch: int, channels: int, width: int):
        super().__init__()
        self.patch, self.tokens = patch, (size // patch) ** 2
        self.proj = nn.Linear(channels * patch * patch, width)
        self.register_buffer("pos", sincos_2d(size // patch, width), persistent=False)  # (T, D)

    def forward(self, x):
        return self.proj(patchify(x, self.patch)) + self.pos                     # (B, T, D)


class ProjectionOutput(nn.Module):
    """h (B, K, D) normed CLS features -> logits (B, K) = Linear(h) + <embed(y), h>."""

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(width, 1)
        self.embed = nn.Embedding(num_classes, width)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, h, y):
        return self.linear(h).squeeze(-1) + (self.embed(y)[:, None] * h).sum(-1)    # (B, K)


def _check_inputs(images, sizes, channels):
    if len(images) != len(sizes):
        raise ValueError(f"expected {len(sizes)} stage images, got {len(images)}")
    for img, s in zip(images, sizes):
        if img.shape[1:] != (channels, s, s):
            raise ValueError(f"expected a stage image of shape (B, {channels}, {s}, {s}), got {tuple(img.shape)}")


# ---- scale-wise (masked) and aggregated (unmasked) ---------------------------------------------
class ScalewiseDiscriminator(nn.Module):
    """One shared ViT over K token groups; logits (B, K). masked=False gives the aggregated variant."""

    masked = True

    def __init__(self, resolution: int = 32, channels: int = 3, num_classes: int = 10, *, depth: int = 4,
                 width: int = 64, heads: int = 4, stages: int = 4, d_patch: int = 4):
        super().__init__()
        self.resolution, self.channels, self.num_stages, self.width = resolution, channels, stages, width
        self.num_classes = max(1, num_classes)
        self.scales = scale_sizes(resolution, stages)
        self.patches = [d_patch_size(s, d_patch) for s in self.scales]
        if any(s % p for s, p in zip(self.scales, self.patches)):
            raise UserError(f"model.d_patch must give patches clamp(s // 4, 1, d_patch) that divide every scale "
                            f"{self.scales}, but got d_patch={d_patch}")
        self.embeds = nn.ModuleList(PatchEmbed(s, p, channels, width) for s, p in zip(self.scales, self.patches))
        self.cls = nn.Parameter(torch.zeros(stages, width))                       # (K, D)
        self.scale_embed = nn.Parameter(torch.zeros(stages, width))               # (K, D)
        # Token layout: [CLS_1, tokens_1, CLS_2, tokens_2, ...]; group k starts at starts[k].
        lengths = [1 + e.tokens for e in self.embeds]
        self.starts = [sum(lengths[:k]) for k in range(stages)]
        group = torch.tensor([k for k, n in enumerate(lengths) for _ in range(n)])    # (T,) scale of token
        self.register_buffer("mask", group[:, None] == group[None, :], persistent=False)  # (T, T) bool
        self.trunk = Trunk(depth, width, heads)
        self.out = ProjectionOutput(width, self.num_classes)
        init_linear(self.trunk)
        for e in self.embeds:
            init_linear(e)
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.scale_embed, std=0.02)

    def tokens(self, images):
        """K images -> (B, T, D), each group [CLS_k, patch tokens_k] + scale embedding k."""
        groups = []
        for k, (embed, img) in enumerate(zip(self.embeds, images)):
            tok = embed(img)                                                       # (B, T_k, D)
            cls = self.cls[k].expand(tok.shape[0], 1, -1)                          # (B, 1, D)
            groups.append(torch.cat([cls, tok], dim=1) + self.scale_embed[k])      # (B, 1 + T_k, D)
        return torch.cat(groups, dim=1)                                            # (B, T, D)

    def forward(self, images: list[torch.Tensor], y: torch.Tensor | None = None) -> torch.Tensor:
        _check_inputs(images, self.scales, self.channels)
        x = self.tokens(images)                                                    # (B, T, D)
        if y is None:
            y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        x = self.trunk(x, self.mask if self.masked else None)                      # (B, T, D)
        h = x[:, self.starts]                                                      # (B, K, D) the CLS tokens
        return self.out(h, y)                                                      # (B, K)


class AggregatedDiscriminator(ScalewiseDiscriminator):
    """The scale-wise network without the block-diagonal mask: every token attends to every scale."""

    masked = False


# ---- GAT-style channel concatenation ------------------------------------------------------------
class ConcatDiscriminator(nn.Module):
    """Stages upsampled (bilinear) to the final size, concatenated on channels; one CLS; logits (B, 1)."""

    def __init__(self, resolution: int = 32, channels: int = 3, num_classes: int = 10, *, depth: int = 4,
                 width: int = 64, heads: int = 4, stages: int = 4, d_patch: int = 4):
        super().__init__()
        if resolution % d_patch:
            raise UserError(f"model.d_patch must divide data.resolution={resolution}, but got d_patch={d_patch}")
        self.resolution, self.channels, self.num_stages, self.width = resolution, channels, stages, width
        self.num_classes = max(1, num_classes)
        self.scales = scale_sizes(resolution, stages)
        self.embed = PatchEmbed(resolution, d_patch, stages * channels, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))                         # (1, 1, D)
        self.trunk = Trunk(depth, width, heads)
        self.out = ProjectionOutput(width, self.num_classes)
        init_linear(self.trunk)
        init_linear(self.embed)
        nn.init.normal_(self.cls, std=0.02)

    def forward(self, images: list[torch.Tensor], y: torch.Tensor | None = None) -> torch.Tensor:
        _check_inputs(images, self.scales, self.channels)
        R = self.resolution
        up = [img if img.shape[-1] == R else
              F.interpolate(img, size=(R, R), mode="bilinear", align_corners=False) for img in images]
        x = self.embed(torch.cat(up, dim=1))                                       # (B, T, D)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)            # (B, 1 + T, D)
        if y is None:
            y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        h = self.trunk(x)[:, :1]                                                   # (B, 1, D)
        return self.out(h, y)                                                      # (B, 1)


# ---- scale-wise convolutional ---------------------------------------------------------------------
def doubling(size: int, width: int, first: int | None) -> int:
    """scalewise-conv: width/2 channels at the input, doubling (up to width) at each halving."""
    return max(1, width // 2) if first is None else min(2 * first, width)


def by_resolution(size: int, width: int, first: int | None) -> int:
    """scalewise-conv-lean: the channels of a map of `size` px are width * 8 / size, in [8, width]."""
    return max(8, min(width, width * 8 // size))


def capped(size: int, width: int, first: int | None) -> int:
    """scalewise-conv-capped: `doubling`, but never more than width * 8 / size channels (at least 8): only
    the 32-px CNN changes (16 and 32 channels at 32 and 16 px instead of 32 and 64)."""
    return min(doubling(size, width, first), max(8, width * 8 // size))


class ScaleCNN(nn.Module):
    """One scale's features: 3x3 conv, then 4x4 stride-2 convs down to 4 px, LeakyReLU(0.2) after each,
    mean pool -> (B, c). channels(size, width, previous or None) sets each map's channels: `doubling`
    (width/2 at the input, doubling up to width) or `by_resolution`."""

    def __init__(self, size: int, channels: int, width: int, rule=doubling):
        super().__init__()
        c = rule(size, width, None)
        layers: list[nn.Module] = [nn.Conv2d(channels, c, 3, padding=1), nn.LeakyReLU(0.2)]
        while size > 4:
            c2 = rule(size // 2, width, c)
            layers += [nn.Conv2d(c, c2, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c, size = c2, size // 2
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.width = c

    def forward(self, x):                                                          # (B, C, s, s)
        return self.net(x)                                                         # (B, width)


class ConvScalewiseDiscriminator(nn.Module):
    """K independent CNNs, one per scale, each with its own projection output; logits (B, K).
    Model size sets the width (depth and heads are the ViT's and unused; so is d_patch)."""

    rule = staticmethod(doubling)

    def __init__(self, resolution: int = 32, channels: int = 3, num_classes: int = 10, *, depth: int = 4,
                 width: int = 64, heads: int = 4, stages: int = 4, d_patch: int = 4):
        super().__init__()
        self.resolution, self.channels, self.num_stages, self.width = resolution, channels, stages, width
        self.num_classes = max(1, num_classes)
        self.scales = scale_sizes(resolution, stages)
        self.nets = nn.ModuleList(ScaleCNN(s, channels, width, self.rule) for s in self.scales)
        self.outs = nn.ModuleList(ProjectionOutput(net.width, self.num_classes) for net in self.nets)

    def forward(self, images: list[torch.Tensor], y: torch.Tensor | None = None) -> torch.Tensor:
        _check_inputs(images, self.scales, self.channels)
        if y is None:
            y = torch.zeros(images[0].shape[0], dtype=torch.long, device=images[0].device)
        return torch.cat([out(net(img)[:, None], y)                                # (B, 1) per scale
                          for net, out, img in zip(self.nets, self.outs, images)], dim=1)   # (B, K)


class LeanConvScalewiseDiscriminator(ConvScalewiseDiscriminator):
    """The scale-wise CNNs with channels set by the resolution (by_resolution)."""

    rule = staticmethod(by_resolution)


class CappedConvScalewiseDiscriminator(ConvScalewiseDiscriminator):
    """The scale-wise CNNs with channels capped by the resolution (capped): a cheaper 32-px CNN."""

    rule = staticmethod(capped)


DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "scalewise": ScalewiseDiscriminator,
    "aggregated": AggregatedDiscriminator,
    "concat": ConcatDiscriminator,
    "scalewise-conv": ConvScalewiseDiscriminator,
    "scalewise-conv-lean": LeanConvScalewiseDiscriminator,
    "scalewise-conv-capped": CappedConvScalewiseDiscriminator,
}


def build_discriminator(model_cfg, num_classes: int, resolution: int, channels: int = 3) -> nn.Module:
    """The discriminator model_cfg.discriminator names, sized by model_cfg.d_size (or model_cfg.size)."""
    shape = SIZES[model_cfg.d_size or model_cfg.size]
    cls = DISCRIMINATORS[model_cfg.discriminator]
    return cls(resolution, channels, num_classes, depth=shape["depth"], width=shape["width"],
               heads=shape["heads"], stages=model_cfg.stages, d_patch=model_cfg.d_patch)
