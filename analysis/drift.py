"""Drift over training: how each stage's output on the fixed eval set moves between EMA snapshots.

    df = run_drift("runs/3f9c0a1b2d-s0")               # rows: step, stage, drift, drift_ratio, ...
    study_drift("studies/ablation-consistency")         # drift.csv: cell, seed, <axes>, step, stage, drift, ...

For consecutive snapshots t-1, t and stage k (x_k at its own scale s_k, on the run's fixed (z, y)), with
d a per-sample distance (L2 = mean squared by default; any name analysis.quality.distance_fn knows):

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
from pathlib import Path

import pandas as pd
import torch

from analysis.driver import per_cell, read_cells
from analysis.quality import EVAL_N, distance_fn, fingerprint, fixed_inputs, generate, memo
from catlab.checkpoint import load_generator, snapshots

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


# ---- one run, one study -------------------------------------------------------------------------------
def run_drift(run_dir, distance: str = "l2", n: int = EVAL_N, batch: int = 256, device: str = "cpu",
              reuse: bool = True) -> pd.DataFrame:
    """Drift of every stage between consecutive EMA snapshots of a run: one row per (step > first, stage).

    Columns: step (the later snapshot), stage (1..K), drift, drift_ratio, drift_corr, move_cos, distance.
    Runs with fewer than two snapshots give an empty table. Kept in <run_dir>/analysis/ (analysis.quality.memo).
    """
    run_dir = Path(run_dir)
    snaps = snapshots(run_dir)
    spec = {"snaps": [fingerprint(p) for _, p in snaps], "distance": distance, "n": n,
            "device": torch.device(device).type}

    def compute() -> pd.DataFrame:
        d = distance_fn(distance)
        rows, prev, inputs = [], None, None
        for step, path in snaps:
            G, cfg = load_generator(run_dir, snapshot=path, device=device)
            inputs = inputs or fixed_inputs(run_dir, n, cfg.seed, G.z_dim, G.num_classes)
            cur = generate(G, *inputs, batch)
            if prev is not None:
                rows += [{"step": step, **r, "distance": distance}
                         for r in stage_moves(cur, prev, d, cfg.data.resampler, batch)]
            prev = cur
        return pd.DataFrame(rows, columns=COLUMNS)
    return memo(run_dir, f"drift-{distance}", spec, compute, reuse)


def study_drift(study_dir, distance: str = "l2", n: int = EVAL_N, batch: int = 256, device: str = "cpu",
                progress: bool = True, write: bool = True, reuse: bool = True) -> pd.DataFrame:
    """run_drift over a study's FINISHED cells -> drift.csv (cell, seed, <axes>, step, stage, drift, ...)."""
    study_dir = Path(study_dir)
    cells, axes = read_cells(study_dir)
    df = per_cell(cells, axes, lambda r: run_drift(r, distance, n, batch, device, reuse), f"drift {study_dir.name}",
                  progress)
    if write:
        df.to_csv(study_dir / "drift.csv", index=False)
    return df
