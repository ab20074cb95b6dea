"""Cross-scale misalignment diagnostics of a multi-scale generator (CAT-NOTES, "The three diagnostics").

For stage images x_1 .. x_K (coarse to fine, x_k at its own scale s_k) and R_s = resampling to scale s with
the pyramid's operator, for k = 1 .. K-1:

    discrepancy_k = d(x_k, R_{s_k}(x_K))                     distance to the final output
    rewrite_k     = d(x_k, R_{s_k}(x_{k+1}))                 how much stage k+1 changes stage k
    direction_k   = cos(R_{s_k}(x_{k+1}) - x_k,              does the next update point toward
                        R_{s_k}(x_K)     - x_k)              the final image?  (flattened per sample)

Every diagnostic is computed per sample and then averaged over the batch. The cosine of a zero vector is
defined as 0 (a stage that does not move, or one that already equals the final image, has no direction).
For k = K-1, x_{k+1} = x_K, so rewrite == discrepancy and direction == 1 (or 0 when x_k == R(x_K)).

    res = cross_scale_metrics(G(z, y), distance="l2")
    res["discrepancy"]          # [K-1 floats], stage 1 first
    metrics_frame(res, arm="cat", seed=0)   # tidy rows: metric, stage, value, arm, seed
"""
from __future__ import annotations

from typing import Callable

import torch

from catlab.data.pyramid import RESAMPLERS
from catlab.distances import get_distance
from catlab.errors import UserError

METRICS = ("discrepancy", "rewrite", "direction")
_ZERO = 1e-12   # squared norms (float64) at or below this count as a zero vector: cosine 0


# ----------------------------------------------------------------------------------------------------------
# Building blocks: resampling, cosine (distances: catlab.distances)
# ----------------------------------------------------------------------------------------------------------

def _resample(x: torch.Tensor, size: int, mode: str = "area") -> torch.Tensor:
    """R_size(x), the pyramid's own operator (catlab.data.resample). (B, C, H, W) -> (B, C, size, size)."""
    from catlab.data import resample
    return resample(x, size, mode)


def _cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cosine of the flattened samples, in float64: (B, ...) x 2 -> (B,); 0 where either vector is zero.

    dot / sqrt(|u|^2 |v|^2) is exactly 1 for u == v and -1 for u == -v (correctly rounded sqrt of a square).
    """
    u, v = u.flatten(1).double(), v.flatten(1).double()
    dot, uu, vv = (u * v).sum(1), (u * u).sum(1), (v * v).sum(1)   # (B,)
    ok = (uu > _ZERO) & (vv > _ZERO)
    cos = dot / torch.sqrt(torch.where(ok, uu * vv, torch.ones_like(uu)))
    return torch.where(ok, cos.clamp(-1.0, 1.0), torch.zeros_like(cos))


def _check_stages(stages) -> None:
    if not isinstance(stages, (list, tuple)) or len(stages) < 2:
        raise UserError(f"stages must be a list of K >= 2 tensors (B, C, s_k, s_k), but got "
                        f"stages={type(stages).__name__} of length {len(stages) if hasattr(stages, '__len__') else '?'}")
    first = stages[0]
    for k, x in enumerate(stages):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[:2] != first.shape[:2] \
                or x.shape[-1] != x.shape[-2]:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UserError(f"stages must be square (B, C, s, s) tensors with one B and C, but got "
                            f"stages[{k}]={shape} (stages[0]={tuple(first.shape)})")
        if k and x.shape[-1] < stages[k - 1].shape[-1]:
            raise UserError(f"stages must go coarse to fine, but got sizes="
                            f"{[int(s.shape[-1]) for s in stages]}")


# ----------------------------------------------------------------------------------------------------------
# The diagnostics
# ----------------------------------------------------------------------------------------------------------

def _per_sample(stages, d: Callable, resampler: str) -> dict[str, torch.Tensor]:
    """The three diagnostics per sample: {metric: (B, K-1) float64}, computed on one batch."""
    final = stages[-1]                                         # (B, C, s_K, s_K)
    cols = {m: [] for m in METRICS}
    for k in range(len(stages) - 1):
        x, s = stages[k], stages[k].shape[-1]                  # (B, C, s_k, s_k)
        target = _resample(final, s, resampler)                # R_{s_k}(x_K)
        nxt = _resample(stages[k + 1], s, resampler)           # R_{s_k}(x_{k+1})
        cols["discrepancy"].append(d(x, target).reshape(-1).double())
        last = k + 2 == len(stages)                           # x_{k+1} is x_K: nxt is target, the same d
        cols["rewrite"].append(cols["discrepancy"][-1] if last else d(x, nxt).reshape(-1).double())
        cols["direction"].append(_cosine(nxt - x, target - x))
    return {m: torch.stack(v, 1).cpu() for m, v in cols.items()}   # (B, K-1)


def cross_scale_metrics(stages, distance: str | Callable = "l2", per_sample: bool = False,
                        resampler: str = "area", batch_size: int | None = None) -> dict:
    """Discrepancy, rewrite and direction of stages 1..K-1 (module docstring has the definitions).

    stages: K tensors (B, C, s_k, s_k), coarse to fine, float images in [-1, 1].
    distance: "l2" (mean squared over C, H, W), "l1" (mean absolute), a name from the catlab.losses /
        catlab.metrics DISTANCES registries (e.g. lpips-alex, lpips-domain), or a callable d(a, b) -> (B,).
    resampler: R's operator, "area" (the pyramid's default) or "bilinear" (antialias=False).
    batch_size: compute in chunks of this many samples (per-sample values are concatenated before the
        batch mean, so the result equals the unchunked one).
    Runs under torch.no_grad(). Returns {"discrepancy": [K-1 floats], "rewrite": [...], "direction": [...]}
    (batch means, stage 1 first); per_sample=True adds "per_sample": {metric: (B, K-1) float64 tensor}.
    """
    _check_stages(stages)
    if resampler not in RESAMPLERS:
        raise UserError(f"resampler must be one of {', '.join(RESAMPLERS)}, but got resampler={resampler!r}")
    B = stages[0].shape[0]
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"batch_size must be a positive int or None, but got batch_size={batch_size!r}")
    if B == 0:
        raise UserError("stages must hold at least one sample, but got B=0")
    d = get_distance(distance)
    step = B if batch_size is None else batch_size
    with torch.no_grad():
        chunks = [_per_sample([x[i:i + step] for x in stages], d, resampler) for i in range(0, B, step)]
    ps = {m: torch.cat([c[m] for c in chunks], 0) for m in METRICS}         # (B, K-1)
    out: dict = {m: [float(v) for v in ps[m].mean(0)] for m in METRICS}
    if per_sample:
        out["per_sample"] = ps
    return out


def metrics_frame(result: dict, **labels):
    """Tidy rows of a cross_scale_metrics result: columns metric, stage (1..K-1), value, then the labels.

    metrics_frame(res, arm="cat", seed=0, distance="l2") -> one row per (metric, stage).
    """
    import pandas as pd

    rows = [{"metric": m, "stage": k + 1, "value": float(v), **labels}
            for m in METRICS for k, v in enumerate(result[m])]
    return pd.DataFrame(rows, columns=["metric", "stage", "value", *labels])
