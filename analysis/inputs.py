"""What an evaluation feeds in: a run's samples on its fixed inputs, and the real images they are compared to.

    G, cfg = load_generator(run_dir)
    stages = generate(G, *fixed_inputs(run_dir, n, cfg.seed, G.z_dim, G.num_classes))   # K (n, C, s_k, s_k)
    real = real_pyramid(cfg.data, n, [x.shape[-1] for x in stages])                       # uint8 per size

Samples: the EMA generator on fixed (z, y) that depend on the run seed only (catlab.rundir.fixed_inputs),
so two arms with the same seed see the same z. The real images are a fixed subset of the dataset, the same
for every run, resampled to each scale with the run's resampler and cached beside torch-fidelity's
reference statistics (cache_root), so a second evaluation builds no dataset.
Latent runs (data.name=latents:PATH): run_decoder gives the run's decoder; the real latent pyramid is
decoded to pixels, keyed by the decoder, so it never mixes with a pixel dataset's.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from catlab.checkpoint import atomic_save, safe_load
from catlab.data.latents import decode_to_pixels
from catlab.errors import UserError

REAL_SEED = 0                     # the real subset: one per dataset and n, shared by every run and seed
_REAL: dict[str, list[torch.Tensor]] = {}   # in-process memo of real pyramids (a study builds its data once)


def cache_root() -> Path:
    """Where the metrics package caches reference statistics (and where the real subsets go)."""
    env = os.environ.get("CATLAB_CACHE", "")
    return Path(env) / "fidelity" if env else Path(torch.hub._get_torch_home()) / "fidelity_cache"


@torch.no_grad()
def generate(G, z: torch.Tensor, y: torch.Tensor, batch: int = 256) -> list[torch.Tensor]:
    """The K stage images of G for (z, y): (N, z_dim), (N,) -> K float tensors (N, C, s_k, s_k) on G's device.

    Chunks of `batch` samples, no grad; every sample only depends on its own (z, y), so the result does
    not depend on `batch` (up to float rounding of the matmuls).
    """
    if len(z) == 0 or len(z) != len(y):
        raise UserError(f"z and y must hold the same number (>= 1) of samples, but got z={len(z)}, y={len(y)}")
    device = next(G.parameters()).device
    parts = [G(z[i:i + batch].to(device), y[i:i + batch].to(device)) for i in range(0, len(z), batch)]
    return [torch.cat([p[k].float() for p in parts]) for k in range(len(parts[0]))]


def is_pixel_distance(name: str) -> bool:
    """lpips-* distances need RGB pixels in [-1, 1]; l2 / l1 work on anything (latents too)."""
    return name.startswith("lpips")


def run_decoder(cfg, device: str = "cpu"):
    """(latent, decoder): whether the run trains on latents:PATH, and its decoder (None without one: the
    one-line notice is printed by catlab.data.latents.load_decoder)."""
    from catlab.data import latents
    if not latents.is_latent(cfg.data.name):
        return False, None
    return True, latents.decoder_for(cfg.data, device=device)


def real_pyramid(data_cfg, n: int, sizes: list[int], decoder=None) -> list[torch.Tensor]:
    """n real images (a fixed random subset; all when the dataset is smaller) as uint8 (M, 3, s, s) per size.

    decoder (latent runs): the real latents are resampled to each latent size in sizes (what D saw) and
    decoded to pixels (M, 3, f s, f s). Cached in memory and under cache_root(): keyed by the data config
    (minus where it lives), n, sizes and the decoder's ident (decoder, its files, scale factor).
    """
    from catlab.data import build_dataset, resample, to_float, to_uint8
    spec = {k: v for k, v in vars(data_cfg).items() if k not in ("root", "download")}
    if decoder is not None:
        spec["decoder"] = decoder.ident
    key = hashlib.sha256(json.dumps([spec, n, list(sizes), REAL_SEED], sort_keys=True).encode()).hexdigest()[:12]
    if key in _REAL:
        return _REAL[key]
    path = cache_root() / f"catlab-real-{key}.pt"
    if path.exists():
        _REAL[key] = safe_load(path)["images"]
        return _REAL[key]
    data = build_dataset(data_cfg)
    idx = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(REAL_SEED))[:n]
    if decoder is not None:
        x = data.images[idx.sort().values].float()           # (M, C, R, R) latents, as trained
        _REAL[key] = decode_to_pixels([resample(x, s, data_cfg.resampler) for s in sizes], decoder)[0]
    else:
        x = to_float(data.images[idx.sort().values])         # (M, C, R, R)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        _REAL[key] = [to_uint8(resample(x, s, data_cfg.resampler)) for s in sizes]
    atomic_save({"images": _REAL[key], "spec": spec, "n": n}, path, shared=True)   # workers race to fill it
    return _REAL[key]
