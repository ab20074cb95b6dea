"""FLOP and parameter counts of catlab models.

GFLOPs here are multiply-accumulates (MACs) per forward pass of one sample, the DiT/fvcore
convention behind the paper's numbers (CAT-M/2 46 GFLOPs, CAT-H/2 167 GFLOPs at 256 tokens).
They come from torch.utils.flop_counter.FlopCounterMode (which counts 2 FLOPs per MAC, so we
halve it) on a meta-device forward: no memory, no compute, any size. The attention matmuls are
counted (on meta, SDPA decomposes into bmm; on CPU the fused kernel is mapped below). Norms,
activations, softmax and resampling are not counted, as in fvcore.
"""
from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from catlab.models.discriminator import DISCRIMINATORS
from catlab.models.generator import SIZES, Generator

aten = torch.ops.aten


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_CUSTOM = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}


def count_flops(fn, *args, **kwargs) -> int:
    """MACs of one call fn(*args, **kwargs) (a module or any function), summed over the whole batch."""
    with FlopCounterMode(display=False, custom_mapping=_CUSTOM) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() // 2


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_generator(size: str, tokens: int = 256, patch: int = 2, channels: int = 4, stages: int = 4,
                   num_classes: int = 1000, z_dim: int = 64) -> Generator:
    """A generator of `size` on the meta device, with `tokens` tokens (a square grid)."""
    n = math.isqrt(tokens)
    if n * n != tokens:
        raise ValueError(f"tokens must be a square number, got {tokens}")
    with torch.device("meta"):
        return Generator(n * patch, channels, num_classes, **SIZES[size], patch=patch, stages=stages,
                         z_dim=z_dim)


def generator_stats(size: str, tokens: int = 256, patch: int = 2, channels: int = 4, stages: int = 4,
                    num_classes: int = 1000, z_dim: int = 64) -> dict:
    """{'gflops': MACs / 1e9, 'macs': MACs, 'params': count}, per sample of one generator forward.

    Defaults are the paper's ImageNet-256 latent setting: 32x32x4 latents, patch 2 -> 256 tokens.
    """
    G = meta_generator(size, tokens, patch, channels, stages, num_classes, z_dim)
    z = torch.empty(1, z_dim, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    macs = count_flops(G, z, y)
    return {"gflops": macs / 1e9, "macs": macs, "params": count_params(G)}


def generator_gflops(size: str, tokens: int = 256, **kwargs) -> float:
    return generator_stats(size, tokens, **kwargs)["gflops"]


def discriminator_stats(size: str, resolution: int = 32, channels: int = 4, stages: int = 4,
                        kind: str = "scalewise", d_patch: int = 4, num_classes: int = 1000) -> dict:
    """{'gflops', 'macs', 'params'} of one discriminator forward on one sample's K stage images."""
    with torch.device("meta"):
        D = DISCRIMINATORS[kind](resolution, channels, num_classes, **SIZES[size], stages=stages,
                                 d_patch=d_patch)
    images = [torch.empty(1, channels, s, s, device="meta") for s in D.scales]
    y = torch.zeros(1, dtype=torch.long, device="meta")
    macs = count_flops(D, images, y)
    return {"gflops": macs / 1e9, "macs": macs, "params": count_params(D)}


def discriminator_gflops(size: str, resolution: int = 32, **kwargs) -> float:
    return discriminator_stats(size, resolution, **kwargs)["gflops"]
