"""Diagnostics during training, through the trainer's Hooks (the trainer does not import this module).

    from analysis.hooks import diagnostics_hook
    train(cfg, Hooks(progress_fn=diagnostics_hook(every=100)))
    # metrics.jsonl / MLflow: diag_discrepancy_l2_s1, diag_rewrite_lpips-domain_s2, diag_direction_l2_s3 ...

Every `every` steps (and at the last step) the EMA generator samples the run's fixed eval set
(ctx.eval_z, ctx.eval_y: the same 256 (z, y) at every step, so the curves are not sampling noise) and
the three cross-scale diagnostics are reported per stage 1..K-1 and per distance. One forward pass of
n samples and, per perceptual distance, 2(K-1) small CNN passes: cheap next to a training step interval.
"""
from __future__ import annotations

import torch

from analysis.misalignment import METRICS, cross_scale_metrics
from catlab.data.latents import notice
from catlab.distances import get_distance
from catlab.errors import UserError


def diagnostics_hook(every: int = 100, n: int = 256, distances=("l2", "lpips-domain"), batch: int = 256):
    """A Hooks.progress_fn(step, stats, ctx) that reports diag_<diagnostic>_<distance>_s<k> every `every` steps.

    The trainer calls progress_fn on log steps only, so it fires on log steps that are multiples of `every`
    (and on the last step): pick a multiple of train.log_every. Distances are resolved on first use
    (lpips-domain loads its extractor then).
    """
    if not isinstance(every, int) or every < 1:
        raise UserError(f"every must be an int >= 1, but got every={every!r}")
    if not isinstance(n, int) or n < 1:
        raise UserError(f"n must be an int >= 1, but got n={n!r}")
    fns: dict = {}

    def progress_fn(step: int, stats: dict, ctx) -> None:
        if step % every and step != ctx.cfg.train.steps:
            return
        if not fns:
            latent = ctx.state.G_ema.channels != 3       # lpips trunks want RGB: latent runs keep l2/l1
            kept = [name for name in distances if not (latent and name.startswith("lpips"))]
            if len(kept) < len(distances):
                notice("latent run: training diagnostics use l2/l1 only (perceptual distances need pixels)")
            fns.update({name: get_distance(name) for name in kept})
        device = next(ctx.state.G_ema.parameters()).device
        z, y = ctx.eval_z[:n].to(device), ctx.eval_y[:n].to(device)
        chunks = [ctx.sample(z[i:i + batch], y[i:i + batch]) for i in range(0, len(z), batch)]
        stages = [torch.cat(parts) for parts in zip(*chunks)]             # K x (n, C, s_k, s_k)
        for i, (name, fn) in enumerate(fns.items()):
            res = cross_scale_metrics(stages, distance=fn, resampler=ctx.cfg.data.resampler, batch_size=batch)
            for metric in (METRICS if i == 0 else [m for m in METRICS if m != "direction"]):  # image-space cosine
                for k, value in enumerate(res[metric]):
                    ctx.report(f"diag_{metric}_{name}_s{k + 1}", value)

    return progress_fn
