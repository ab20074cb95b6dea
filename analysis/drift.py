"""Drift over training: how each stage's output on the fixed eval set moves between EMA snapshots.

    rows = stage_moves(cur, prev, d)     # per stage: drift, drift_ratio, drift_corr, move_cos
    (per run and per study: analysis.trajectory.run_drift / study_drift, drift.csv)

For consecutive snapshots t-1, t and stage k (x_k at its own scale s_k, on the run's fixed (z, y)), with
d a per-sample distance (L2 = mean squared by default; any name catlab.distances knows):

    drift        = mean_i d(x_k(t)_i, x_k(t-1)_i)                  how far stage k moved
    drift_ratio  = drift_k / drift_K                                its share of the final stage's move
                                                                    (NaN when the final stage did not move)
    drift_corr   = Pearson correlation over samples i of d_k,i      do the same samples move at stage k
                   and d_K,i                                        and at the final stage? (NaN if constant)
    move_cos     = mean_i cos(dx_k,i, R_{s_k}(dx_K,i)),             do they move the same way?
                   dx = x(t) - x(t-1), flattened per sample         (0 for a sample that did not move)

Stages that train together have drift_corr and move_cos near 1; a stage that wanders on its own has them
near 0. For k = K, drift_ratio = drift_corr = move_cos = 1 whenever the final stage moved.
"""
from __future__ import annotations

import math
import torch

COLUMNS = ["step", "stage", "drift", "drift_ratio", "drift_corr", "move_cos", "distance"]
_ZERO = 1e-24


# ---- building blocks ----------------------------------------------------------------------------------
def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Correlation of two (B,) vectors in float64; NaN when either is constant."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = float((a * a).sum() * (b * b).sum())
    return float((a * b).sum()) / math.sqrt(den) if den > _ZERO else math.nan


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine of flattened (B, ...) tensors, float64; 0 where either vector is zero."""
    u, v = u.flatten(1).double(), v.flatten(1).double()
    uu, vv = (u * u).sum(1), (v * v).sum(1)
    ok = (uu > _ZERO) & (vv > _ZERO)
    cos = (u * v).sum(1) / torch.sqrt(torch.where(ok, uu * vv, torch.ones_like(uu)))
    return torch.where(ok, cos.clamp(-1, 1), torch.zeros_like(cos))


def per_sample(d, a: torch.Tensor, b: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """d over chunks of `batch` samples: (N, ...) x 2 -> (N,) float64 on the CPU."""
    with torch.no_grad():
        return torch.cat([d(a[i:i + batch], b[i:i + batch]).reshape(-1).double().cpu()
                          for i in range(0, len(a), batch)])


def stage_moves(cur: list[torch.Tensor], prev: list[torch.Tensor], d, resampler: str = "area",
                batch: int = 256) -> list[dict]:
    """drift, drift_ratio, drift_corr, move_cos of every stage between two sets of stage images."""
    from catlab.data import resample
    per = [per_sample(d, a, b, batch) for a, b in zip(cur, prev)]            # K x (N,)
    final_move = (cur[-1] - prev[-1]).float()                                  # (N, C, R, R)
    final = float(per[-1].mean())
    out = []
    for k, (a, b) in enumerate(zip(cur, prev)):
        drift = float(per[k].mean())
        move = cosine((a - b).float(), resample(final_move, a.shape[-1], resampler)).mean()
        out.append({"stage": k + 1, "drift": drift,
                    "drift_ratio": drift / final if final > 0 else math.nan,
                    "drift_corr": pearson(per[k], per[-1]), "move_cos": float(move)})
    return out
