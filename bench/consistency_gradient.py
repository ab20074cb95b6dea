"""How strong is the consistency term? Its gradient against the adversarial gradient at G's outputs.

For a trained run (its checkpoint: G, D) and a batch, computes for every stage k the norm of
d L / d xhat_k (xhat_k = the accumulated full-resolution output of stage k) for
  - the adversarial G loss (scale-weighted, as in training), and
  - the consistency loss at lambda = 1 (the run's distance, stage weights, anchor and compare_at).
The ratio cons / adv tells which lambda makes the term matter: lambda * ratio ~ 1 means the consistency
term pulls on stage k as hard as the discriminator does.

    python bench/consistency_gradient.py RUN_DIR [--batch 64] [--seeds 3]
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from catlab.checkpoint import run_config, safe_load
from catlab.data import Batcher, build_dataset, pyramid
from catlab.losses import ADVERSARIAL, consistency, scale_weights
from catlab.models import build_discriminator, build_generator


def gradient_norms(run_dir: str, batch: int = 64, seed: int = 0) -> list[dict]:
    cfg = run_config(run_dir)
    state = safe_load(f"{run_dir}/ckpt/last.pt")
    data = build_dataset(cfg.data)
    G = build_generator(cfg.model, data.num_classes, cfg.data.resolution, resampler=cfg.data.resampler)
    D = build_discriminator(cfg.model, data.num_classes, cfg.data.resolution)
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    D.requires_grad_(False)
    torch.manual_seed(seed)
    real, y = next(Batcher(data, batch, seed=seed))
    real = pyramid(real, G.scales, cfg.data.resampler)
    scaled, full = G(torch.randn(batch, G.z_dim), y, full=True)
    _, g_loss = ADVERSARIAL[cfg.loss.adversarial]
    rows = []
    lf = D(scaled, y)
    adv = (scale_weights(cfg.loss.scale_weights, lf.shape[1]) * g_loss(D(real, y), lf)).sum()
    cons_cfg = dataclasses.replace(cfg.loss.consistency, weight=1.0, warmup=0)
    cons, _ = consistency(full, scaled, cons_cfg, step=1)
    g_adv = torch.autograd.grad(adv, full, retain_graph=True, allow_unused=True)
    g_cons = torch.autograd.grad(cons, full, allow_unused=True)
    for k, (a, c) in enumerate(zip(g_adv, g_cons), start=1):
        na = a.norm().item() if a is not None else 0.0
        nc = c.norm().item() if c is not None else 0.0
        rows.append({"stage": k, "adv": na, "cons_at_lambda_1": nc, "ratio": nc / na if na else float("nan")})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    print(f"{'seed':>4s} {'stage':>5s} {'|dL_adv/dx|':>12s} {'|dL_cons/dx| (lambda=1)':>24s} {'ratio':>8s}")
    for seed in range(args.seeds):
        for r in gradient_norms(args.run_dir, args.batch, seed):
            print(f"{seed:4d} {r['stage']:5d} {r['adv']:12.3e} {r['cons_at_lambda_1']:24.3e} {r['ratio']:8.3f}")


if __name__ == "__main__":
    main()
