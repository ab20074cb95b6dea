"""Where a step of the default cell goes: each part timed alone, with the shapes of a real step.

    python bench/profile_cell.py [--threads 1] [--batch 16] [--reps 20] [KEY=VALUE ...]

The default cell is `catlab train` with no overrides (the cpu recipe), as `catlab ablate --workers 2`
runs it: one torch thread. After warm-up steps of the real trainer phases, every part of a step is timed
on its own (median of --reps repetitions): the pyramid of the real batch, G's forward and backward, D's
forward and backward per scale (D's phase: reals and fakes, weight gradients; G's phase: reals without
gradient, fakes with input gradients), the consistency term, both optimiser updates (zero_grad, clip,
AdamW), the EMA update and the per-step stats. Their sum is printed beside the measured median step of
the trainer's own phases, so what is not attributed shows. torch.profiler's top operators of 10 real steps
follow (self CPU time).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from catlab import distributed
from catlab.config import load_config
from catlab.data import Batcher, build_dataset, pyramid
from catlab.losses import ADVERSARIAL, consistency, get_distance, scale_weights
from catlab.trainer import autocast_for, build_state, make_phases, update_ema


def timed(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = load_config(["run.mlflow=false", f"train.batch={a.batch}", *a.overrides])
    data = build_dataset(cfg.data)
    b = Batcher(data, cfg.train.batch, seed=0)
    s = build_state(cfg, data.num_classes, data.channels, b, torch.device("cpu"))
    phases = make_phases(cfg, s, autocast_for(cfg, torch.device("cpu")))   # the trainer's (bf16: autocast)

    def step():
        s.rng.begin(s.step)
        real, y = next(b)
        real = pyramid(real, s.G.scales, cfg.data.resampler)
        stats = {}
        for ph in phases:
            if s.step % ph.every == 0:
                stats.update(ph.fn(s.step, real, y))
        distributed.mean_stats(stats)
        update_ema(s.G_ema, s.G, s.step, cfg.train.ema, cfg.train.ema_warmup)
        s.step += 1
        return stats

    for _ in range(10):
        stats = step()
    total = timed(step, a.reps)

    G, D, B = s.G, s.D, cfg.train.batch
    x, y = next(b)
    real = pyramid(x, G.scales, cfg.data.resampler)
    z = torch.randn(B, G.z_dim)
    d_loss, g_loss = ADVERSARIAL[cfg.loss.adversarial]
    dist = get_distance(cfg.loss.consistency.distance)
    rows = [("pyramid of the real batch", timed(lambda: pyramid(x, G.scales, cfg.data.resampler), a.reps))]
    rows.append(("G forward (with grad)", timed(lambda: G(z, y, full=True), a.reps)))

    def g_fwd_bwd():
        sc, full = G(z, y, full=True)
        (sum(v.float().mean() for v in sc) + sum(v.mean() for v in full)).backward()
    rows.append(("G backward", timed(g_fwd_bwd, a.reps) - rows[-1][1]))
    with torch.no_grad():
        fake = G(z, y)
    D.requires_grad_(True)
    for k, (net, out) in enumerate(zip(D.nets, D.outs)):
        both = torch.cat([real[k], fake[k]])
        yy = torch.cat([y, y])
        rows.append((f"D phase: D_{k + 1} forward ({both.shape[-1]} px, reals + fakes)",
                     timed(lambda: out(net(both)[:, None], yy), a.reps)))
        fb = timed(lambda: out(net(both)[:, None], yy).sum().backward(), a.reps)
        rows.append((f"D phase: D_{k + 1} backward (weights)", fb - rows[-1][1]))
    D.requires_grad_(False)
    for k, (net, out) in enumerate(zip(D.nets, D.outs)):
        with torch.no_grad():
            rows.append((f"G phase: D_{k + 1} forward of reals (no grad)", timed(lambda: out(net(real[k])[:, None], y),
                                                                                 a.reps)))
        f = fake[k].clone().requires_grad_(True)
        fwd = timed(lambda: out(net(f)[:, None], y), a.reps)
        rows.append((f"G phase: D_{k + 1} forward + backward of fakes (input grads)",
                     timed(lambda: out(net(f)[:, None], y).sum().backward(), a.reps)))
    sc, full = [v.detach().requires_grad_(True) for v in G(z, y)], None
    with torch.no_grad():
        sc2, full = G(z, y, full=True)
    full = [v.clone().requires_grad_(True) for v in full]
    rows.append(("consistency term (forward + backward)",
                 timed(lambda: consistency(full, sc2, cfg.loss.consistency, 1, dist, cfg.data.resampler)[0].backward(),
                       a.reps)))
    D.requires_grad_(True)
    for net_name, net, opt in (("G", s.G, s.opt_g), ("D", s.D, s.opt_d)):
        params = list(net.parameters())
        for q in params:
            q.grad = torch.zeros_like(q)

        def update(params=params, opt=opt):
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            opt.step()
        rows.append((f"optimiser: {net_name} clip + AdamW step", timed(update, a.reps)))
    rows.append(("EMA update", timed(lambda: update_ema(s.G_ema, s.G, s.step, cfg.train.ema, cfg.train.ema_warmup),
                                     a.reps)))
    rows.append(("stats (mean over ranks, finite checks)",
                 timed(lambda: [torch.isfinite(v) for v in distributed.mean_stats(stats).values()], a.reps)))

    attributed = sum(t for _, t in rows)
    print(f"default cell: {cfg.train.batch} images a step, {a.threads} thread(s), {cfg.model.size} G, "
          f"{cfg.model.discriminator} D, train.fakes={cfg.train.fakes}, train.channels_last="
          f"{cfg.train.channels_last}, train.precision={cfg.train.precision}, data {cfg.data.name}")
    print(f"measured step (median of {a.reps}): {total * 1e3:.1f} ms = {cfg.train.batch / total:.0f} img/s\n")
    print(f"| part | ms | share of the step |\n|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:.1f} | {100 * t / total:.1f} % |")
    print(f"| **sum of the parts** | {attributed * 1e3:.1f} | {100 * attributed / total:.1f} % |")

    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step()
    print("\ntorch.profiler, 10 steps, top operators by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
