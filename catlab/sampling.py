"""`catlab sample RUN_DIR --n N --out DIR [--stage k] [--seed S]`: uint8 PNGs from a run's EMA generator.

    sample("runs/3f9c0a1b2d-s0", n=64, out="samples/")     # 00000_class0.png ... (stage K by default)

Sample i gets class i mod num_classes and z from a generator seeded by `seed`. Latent runs decode with the
run's decoder ($CATLAB_VAE); without one the stage's latents go to latents_stage<k>.npz (divided by the
scale factor) instead.
"""
from __future__ import annotations

from pathlib import Path

from catlab.errors import UserError


def sample(run_dir, n: int, out, stage: int | None = None, seed: int = 0) -> int:
    """Write n samples of stage `stage` (1..K; default K) to `out`; returns 0."""
    import numpy as np
    import torch
    from catlab.checkpoint import load_generator
    from catlab.data import latents, to_uint8
    from catlab.samples import save_png
    if n < 1:
        raise UserError(f"--n must be >= 1, but got n={n}")
    G, cfg = load_generator(run_dir)
    k = G.num_stages if stage is None else stage
    if not 1 <= k <= G.num_stages:
        raise UserError(f"--stage must be in 1..{G.num_stages}, but got stage={stage}")
    latent = latents.is_latent(cfg.data.name)
    scale_factor = latents.read_scale_factor(cfg.data.name[len(latents.PREFIX):]) if latent else 1.0
    decoder = latents.load_decoder(scale_factor) if latent else None
    num_classes = G.num_classes
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out} cannot be written ({e.strerror})") from None
    g = torch.Generator().manual_seed(seed)
    written, raw, labels = 0, [], []
    for start in range(0, n, 256):
        b = min(256, n - start)
        z = torch.randn(b, G.z_dim, generator=g)
        y = (torch.arange(start, start + b)) % num_classes
        with torch.no_grad():
            x = G(z, y)[k - 1]
        if latent and decoder is None:
            raw.append(x.float() / scale_factor)
            labels.append(y)
            continue
        imgs = to_uint8((decoder(x) if decoder is not None else x).clamp(-1, 1))
        for i in range(b):
            save_png(imgs[i], out / f"{start + i:05d}_class{int(y[i])}.png")
            written += 1
    if raw:
        path = out / f"latents_stage{k}.npz"
        lat = torch.cat(raw)
        np.savez(path, latents=lat.numpy(), labels=torch.cat(labels).numpy(),
                 scale_factor=np.float32(scale_factor), seed=np.int64(seed), stage=np.int64(k))
        print(f"wrote {len(lat)} latents ({'x'.join(map(str, lat.shape[1:]))}, stage {k}, divided by the scale "
              f"factor {scale_factor:g}) to {path}")
        return 0
    print(f"wrote {written} PNGs ({imgs.shape[-1]}x{imgs.shape[-1]}, stage {k}) to {out}")
    return 0
