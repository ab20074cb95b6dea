"""How strong is the consistency term? Its gradient against the adversarial gradient, where it can act.

For a trained run (its checkpoint: G, D) and a batch, computes for every stage head j the norm of the
gradient of each loss at the head's own output h_j (the increment that stage j adds: xhat_k = sum_{j<=k}
h_j) and at the head's parameters, for
  - the adversarial G loss (scale-weighted, as in training), and
  - the consistency loss at lambda = 1 (the run's distance, stage weights, anchor and compare_at).
The ratio cons / adv tells which lambda makes the term matter: lambda * ratio ~ 1 means the consistency
term pulls on head j as hard as the discriminator does. It also reports the trunk's parameters.

What the term can move: with the anchor attached (detach_anchor=false), xhat_k - xhat_K = -sum_{j>k} h_j,
so the term does not depend on h_1 at all: head 1's rows are 0 by construction (marked), and the term
only shrinks the later heads' refinements. With detach_anchor=true it pulls h_1..h_{K-1} toward the
(fixed) final image instead, and h_K gets nothing. (Measured at the accumulated xhat_k instead, as this
probe once did, the attached term's total derivative at xhat_1 is 0 for the same reason: that was not a
measurement of weakness.)

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


def _norm(grads) -> float:
    grads = [g for g in grads if g is not None]
    return float(torch.sqrt(sum(g.pow(2).sum() for g in grads))) if grads else 0.0


def gradient_norms(run_dir: str, batch: int = 64, seed: int = 0) -> list[dict]:
    """One row per head j (and one for the trunk): |grad| of each loss at h_j and at its parameters."""
    cfg = run_config(run_dir)
    state = safe_load(f"{run_dir}/ckpt/last.pt")
    data = build_dataset(cfg.data)
    G = build_generator(cfg.model, data.num_classes, cfg.data.resolution, data.channels, cfg.data.resampler)
    D = build_discriminator(cfg.model, data.num_classes, cfg.data.resolution, data.channels)
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    D.requires_grad_(False)
    torch.manual_seed(seed)
    real, y = next(Batcher(data, batch, seed=seed))
    real = pyramid(real, G.scales, cfg.data.resampler)
    outputs: list[torch.Tensor] = []                                  # h_1..h_K, captured as G runs
    hooks = [h.register_forward_hook(lambda m, i, out: outputs.append(out)) for h in G.heads]
    scaled, full = G(torch.randn(batch, G.z_dim), y, full=True)
    for h in hooks:
        h.remove()
    _, g_loss = ADVERSARIAL[cfg.loss.adversarial]
    lf = D(scaled, y)
    adv = (scale_weights(cfg.loss.scale_weights, lf.shape[1]) * g_loss(D(real, y), lf)).sum()
    cons_cfg = dataclasses.replace(cfg.loss.consistency, weight=1.0, warmup=0)
    cons, _ = consistency(full, scaled, cons_cfg, step=1, resampler=cfg.data.resampler)
    groups = [list(head.parameters()) for head in G.heads]
    trunk = [p for name, p in G.named_parameters() if not name.startswith("heads.")]
    rows = []
    grads = {}
    for name, loss in (("adv", adv), ("cons", cons)):
        g_out = torch.autograd.grad(loss, outputs, retain_graph=True, allow_unused=True)
        g_par = torch.autograd.grad(loss, [p for grp in groups for p in grp] + trunk, retain_graph=True,
                                    allow_unused=True)
        grads[name] = (g_out, g_par)
    attached = not cfg.loss.consistency.detach_anchor
    offset = 0
    for j, grp in enumerate(groups, start=1):
        row = {"head": str(j)}
        for name in ("adv", "cons"):
            g_out, g_par = grads[name]
            row[f"{name}_out"] = _norm([g_out[j - 1]])
            row[f"{name}_params"] = _norm(g_par[offset:offset + len(grp)])
        row["ratio_out"] = row["cons_out"] / row["adv_out"] if row["adv_out"] else float("nan")
        row["note"] = "0 by construction (attached anchor)" if attached and j == 1 else \
            "0 by construction (detached anchor)" if not attached and j == len(groups) else ""
        rows.append(row)
        offset += len(grp)
    row = {"head": "trunk", "adv_out": float("nan"), "cons_out": float("nan"), "ratio_out": float("nan"), "note": ""}
    for name in ("adv", "cons"):
        row[f"{name}_params"] = _norm(grads[name][1][offset:])
    rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    print(f"{'seed':>4s} {'head':>5s} {'|dL_adv/dh|':>12s} {'|dL_cons/dh|':>13s} {'ratio':>8s} "
          f"{'|dL_adv/dθ|':>12s} {'|dL_cons/dθ|':>13s}  (cons at lambda = 1; θ = the head's parameters)")
    for seed in range(args.seeds):
        for r in gradient_norms(args.run_dir, args.batch, seed):
            print(f"{seed:4d} {r['head']:>5s} {r['adv_out']:12.3e} {r['cons_out']:13.3e} {r['ratio_out']:8.3f} "
                  f"{r['adv_params']:12.3e} {r['cons_params']:13.3e}  {r['note']}")


if __name__ == "__main__":
    main()
