"""FLOPs/params of every size, and (with --step-time) the wall time of one CPU trainer step.

    .venv/bin/python bench/flops.py                 # table: generator and D GFLOPs (MACs) and params
    .venv/bin/python bench/flops.py --step-time     # median of 20 D+G steps of tiny, batch 32, 32x32

The step is the whole trainer step with a plain softplus (non-saturating) loss: D forward on real and
fake, backward, optimiser step; G forward, D forward (D weights frozen), backward, optimiser step.
No regulariser, no EMA. The machine's other load shows in the spread: read the median and the min.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from catlab.models import SIZES, DISCRIMINATORS, Generator, generator_stats, discriminator_stats, scale_sizes
from catlab.models.generator import resample


def table() -> None:
    print(f"{'size':6} {'G GFLOPs':>9} {'G params':>12} {'D GFLOPs':>9} {'D params':>12}"
          "   (G: 256 tokens = 32x32x4 latents, patch 2; D: scalewise on 4..32 px, 4 channels)")
    for size in SIZES:
        g, d = generator_stats(size), discriminator_stats(size)
        print(f"{size:6} {g['gflops']:9.2f} {g['params']:12,} {d['gflops']:9.2f} {d['params']:12,}")


def step_time(size: str, d_size: str, kind: str, batch: int, resolution: int, patch: int, d_patch: int,
              steps: int, warmup: int, profile: bool) -> None:
    torch.manual_seed(0)
    G = Generator(resolution, 3, 10, **SIZES[size], patch=patch, stages=4)
    D = DISCRIMINATORS[kind](resolution, 3, 10, **SIZES[d_size], stages=4, d_patch=d_patch)
    opt_g = torch.optim.AdamW(G.parameters(), lr=1e-3, betas=(0.0, 0.99), weight_decay=0.0)
    opt_d = torch.optim.AdamW(D.parameters(), lr=1e-3, betas=(0.0, 0.99), weight_decay=0.0)
    sizes = scale_sizes(resolution, 4)
    real = torch.rand(batch, 3, resolution, resolution) * 2 - 1
    y = torch.randint(0, 10, (batch,))
    real_pyr = [resample(real, s) for s in sizes]

    def one_step():
        z = torch.randn(batch, G.z_dim)
        with torch.no_grad():
            fake = G(z, y)
        logits = D([torch.cat([r, f]) for r, f in zip(real_pyr, fake)], torch.cat([y, y]))   # (2B, K)
        d_loss = F.softplus(-logits[:batch]).mean() + F.softplus(logits[batch:]).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)                  # G step: no weight gradients for D
        g_loss = F.softplus(-D(G(torch.randn(batch, G.z_dim), y), y)).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)

    for _ in range(warmup):
        one_step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        one_step()
        times.append(time.perf_counter() - t)
    print(f"G {size} / D {d_size} {kind}, batch {batch}, {resolution}px, G patch {patch}, D patch {d_patch}, "
          f"threads {torch.get_num_threads()}: median {statistics.median(times):.3f} s/step "
          f"(min {min(times):.3f}, max {max(times):.3f}, {steps} steps)")
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof
        with prof(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(3):
                one_step()
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step-time", action="store_true", help="time CPU trainer steps instead of the table")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--d-size", default="")
    ap.add_argument("--discriminator", default="scalewise", choices=tuple(DISCRIMINATORS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--d-patch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    if a.step_time:
        step_time(a.size, a.d_size or a.size, a.discriminator, a.batch, a.resolution, a.patch, a.d_patch,
                  a.steps, a.warmup, a.profile)
    else:
        table()


if __name__ == "__main__":
    main()
