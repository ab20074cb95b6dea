"""`make bench`: the trainer's speed, as ratios measured in one run (machines are noisy).

Prints a table and writes bench/out/bench.json with:
  - the median step time of `tiny` and `small`, consistency on and off (the real trainer, timed per step
    through its step hook);
  - trainer step / a bare forward-backward loop on the same model and batch (same losses, no EMA, no
    stats, no regulariser on either side);
  - MFU: the step's FLOPs (torch.utils.flop_counter) / step time, against the GEMM peak measured in this
    run (a large square matmul), for fp32 and bf16;
  - peak RSS;
  - what users feel (--cell, on by default): the default cell's img/s per core (the cpu recipe with no
    overrides, one torch thread, as `catlab ablate --workers 2` runs it), its MFU against the same run's
    one-thread GEMM peak, the wall time of a 2-cell grid (`catlab ablate ablation-consistency --seeds 1`,
    --cell-steps steps, analysis and report included) and the analysis seconds per run (`catlab analyze`
    of that grid once its kept results are removed).
With --gpu (or on a machine with CUDA) it also times a B/2-shaped model in bf16 on the GPU.

    python bench/bench.py [--steps 20] [--threads N] [--sizes tiny small] [--batch 32] [--gpu]
                          [--no-cell] [--cell-steps 60]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from catlab.config import load_config
from catlab.data import build_dataset, pyramid
from catlab.losses import consistency, rpgan_d, rpgan_g
from catlab.models import build_discriminator, build_generator
from catlab.trainer import Hooks, train

OUT = Path(__file__).resolve().parent / "out"


def gemm_peak(dtype: torch.dtype, device: str = "cpu", n: int = 1024, reps: int = 10) -> float:
    """Achieved FLOP/s of an n x n x n matmul: the machine's practical GEMM peak for this dtype."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def trainer_steps(overrides: list[str], steps: int) -> list[float]:
    """Per-step wall times of the real trainer (first 3 steps dropped as warm-up)."""
    root = Path(tempfile.mkdtemp(prefix="catlab-bench-"))
    cfg = load_config(["run.mlflow=false", "run.progress=false", f"run.root={root}", f"train.steps={steps + 3}",
                       "train.ckpt_every=100000", "train.sample_every=100000", "train.log_every=100000",
                       "data.n=2048"] + overrides)
    stamps: list[float] = []
    try:
        train(cfg, Hooks(step_fn=lambda step, state: stamps.append(time.perf_counter())))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [b - a for a, b in zip(stamps, stamps[1:])][2:]


def bare_loop(overrides: list[str], steps: int, device: str = "cpu", dtype=None):
    """The same D and G updates written plainly: returns (per-step times, FLOPs of one step)."""
    cfg = load_config(overrides)
    data = build_dataset(cfg.data)
    G = build_generator(cfg.model, data.num_classes, cfg.data.resolution).to(device)
    D = build_discriminator(cfg.model, data.num_classes, cfg.data.resolution).to(device)
    opt_g = torch.optim.AdamW(G.parameters(), lr=1e-4, betas=(0.0, 0.99), weight_decay=0.0)
    opt_d = torch.optim.AdamW(D.parameters(), lr=1e-4, betas=(0.0, 0.99), weight_decay=0.0)
    b = cfg.train.batch
    real = data.images[:b].to(device).float() / 127.5 - 1
    y = data.labels[:b].to(device)
    amp = (lambda: torch.autocast(device, dtype=dtype)) if dtype else (lambda: torch.autocast(device, enabled=False))

    def step():
        reals = pyramid(real, G.scales)
        with amp():
            with torch.no_grad():
                fake = G(torch.randn(b, G.z_dim, device=device), y)
            logits = D([torch.cat([r, f]) for r, f in zip(reals, fake)], torch.cat([y, y])).float()
        lr, lf = logits.chunk(2)
        opt_d.zero_grad(set_to_none=True)
        rpgan_d(lr, lf).mean().backward()
        opt_d.step()
        with amp():
            scaled, full = G(torch.randn(b, G.z_dim, device=device), y, full=True)
            with torch.no_grad():
                lr = D(reals, y).float()
            loss = rpgan_g(lr, D(scaled, y).float()).mean()
        cons, _ = consistency([x.float() for x in full], [x.float() for x in scaled], cfg.loss.consistency, 1)
        opt_g.zero_grad(set_to_none=True)
        (loss + cons).backward()
        opt_g.step()

    for _ in range(3):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times, counter.get_total_flops()


def interleaved(runs: dict, steps: int, rounds: int = 2) -> dict:
    """Median step time of each run over `rounds` rounds of steps // rounds steps, the order reversed every
    round and one untimed warm-up first, so that a noisy machine's drift hits every run alike."""
    runs["bare"](3)
    times: dict = {name: [] for name in runs}
    for r in range(rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            times[name] += runs[name](max(3, steps // rounds))
    return {name: statistics.median(v) for name, v in times.items()}


def default_cell(steps: int, grid_steps: int) -> dict:
    """The default cell on one thread (img/s, MFU), then a 2-cell grid and its analysis in a scratch dir."""
    torch.set_num_threads(1)
    peak = gemm_peak(torch.float32)
    flops = bare_loop([], 1)[1]
    step = statistics.median(trainer_steps([], steps))
    cfg = load_config([])
    out = {"cell_img_per_s_per_core": cfg.train.batch / step, "cell_step_s": step,
           "cell_mfu_fp32": flops / step / peak, "gemm_peak_1thread_gflops": peak / 1e9}
    root = Path(tempfile.mkdtemp(prefix="catlab-bench-grid-"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "catlab.cli"]
    try:
        t = time.perf_counter()
        subprocess.run(cli + ["ablate", "ablation-consistency", "--seeds", "1", "--workers", "2",
                              f"train.steps={grid_steps}", "run.mlflow=false"], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out["grid_2cells_wall_s"] = time.perf_counter() - t
        sdir = next(p for p in (root / "studies").iterdir() if p.name.startswith("ablation-consistency@"))
        for kept in (root / "studies" / "ablation-consistency" / "runs").glob("*/analysis"):
            shutil.rmtree(kept)                              # analyse from scratch
        t = time.perf_counter()
        subprocess.run(cli + ["analyze", sdir.name], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out["analysis_s_per_run"] = (time.perf_counter() - t) / 2
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["grid_steps"] = grid_steps
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    p.add_argument("--batch", type=int, default=32, help="batch of every timed step (the cpu recipe trains at 16)")
    p.add_argument("--gpu", action="store_true", help="also run the GPU section (needs CUDA)")
    p.add_argument("--no-cell", action="store_true", help="skip the default cell, 2-cell grid and analysis")
    p.add_argument("--cell-steps", type=int, default=60, help="train.steps of the 2-cell grid")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    res = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {args.threads} threads, "
           f"torch {torch.__version__}", "steps": args.steps, "batch": args.batch, "rows": []}
    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    res["gemm_peak_gflops"] = {k: v / 1e9 for k, v in peaks.items()}
    for size in args.sizes:
        row = {"size": size}
        # The transformer GAN (CAT's ViT D), whose step the targets are about; not the cpu recipe's conv D.
        base = [f"model.size={size}", f"train.batch={args.batch}", "loss.reg.kind=none",
                "model.discriminator=scalewise"]
        flops = bare_loop(base, 1)[1]
        t = interleaved({
            "on": lambda n: trainer_steps(base, n),
            "off": lambda n: trainer_steps(base + ["loss.consistency.weight=0"], n),
            "reg": lambda n: trainer_steps(base + ["loss.reg.kind=approx"], n),
            "bare": lambda n: bare_loop(base, n)[0],
            "bf16": lambda n: bare_loop(base, n, dtype=torch.bfloat16)[0]}, args.steps)
        row.update(step_s=t["on"], step_cons_off_s=t["off"], step_with_reg_s=t["reg"], bare_s=t["bare"],
                   trainer_over_bare=t["on"] / t["bare"], cons_on_over_off=t["on"] / t["off"],
                   step_gflop=flops / 1e9, mfu_fp32=flops / t["bare"] / peaks["fp32"],
                   mfu_bf16=flops / t["bf16"] / peaks["bf16"])
        res["rows"].append(row)
    if not args.no_cell:
        res["cell"] = default_cell(args.steps, args.cell_steps)
    if args.gpu or torch.cuda.is_available():
        res["gpu"] = gpu_section(args.steps)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    OUT.mkdir(exist_ok=True)
    (OUT / "bench.json").write_text(json.dumps(res, indent=2) + "\n")
    print_table(res)


def gpu_section(steps: int) -> dict:
    """A B/2-shaped model (depth 12, width 768, 256 tokens) in bf16 with TF32 on: MFU vs the bf16 GEMM peak."""
    if not torch.cuda.is_available():
        return {"error": "no CUDA device"}
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    peak = gemm_peak(torch.bfloat16, "cuda", n=8192, reps=20)
    overrides = ["model.size=B", "model.discriminator=scalewise", "model.patch=2", "train.batch=64", "data.n=256"]
    times, flops = bare_loop(overrides, steps, device="cuda", dtype=torch.bfloat16)
    step = statistics.median(times)
    return {"device": torch.cuda.get_device_name(), "model": "B/2 (G and D), 32 px, batch 64",
            "gemm_peak_tflops_bf16": peak / 1e12, "step_s": step, "step_tflop": flops / 1e12,
            "mfu_bf16": flops / step / peak}


def print_table(res: dict) -> None:
    print(f"catlab bench  {res['date']}  {res['machine']}  batch {res['batch']}")
    print(f"GEMM peak: fp32 {res['gemm_peak_gflops']['fp32']:.1f} GFLOP/s, bf16 {res['gemm_peak_gflops']['bf16']:.1f} GFLOP/s")
    head = f"{'size':6s} {'step s':>8s} {'cons off s':>10s} {'+reg s':>8s} {'bare s':>8s} {'trainer/bare':>12s} " \
           f"{'cons on/off':>11s} {'GFLOP':>7s} {'MFU fp32':>8s} {'MFU bf16':>8s}"
    print(head)
    for r in res["rows"]:
        print(f"{r['size']:6s} {r['step_s']:8.3f} {r['step_cons_off_s']:10.3f} {r['step_with_reg_s']:8.3f} "
              f"{r['bare_s']:8.3f} {r['trainer_over_bare']:12.3f} {r['cons_on_over_off']:11.3f} "
              f"{r['step_gflop']:7.2f} {r['mfu_fp32']:8.1%} {r['mfu_bf16']:8.1%}")
    if "cell" in res:
        c = res["cell"]
        print(f"default cell (1 thread, batch 16): {c['cell_img_per_s_per_core']:.1f} img/s per core, step "
              f"{c['cell_step_s']:.3f} s, MFU {c['cell_mfu_fp32']:.1%} of {c['gemm_peak_1thread_gflops']:.0f} GFLOP/s; "
              f"2-cell grid ({c['grid_steps']} steps, 2 workers, analysis and report) {c['grid_2cells_wall_s']:.0f} s; "
              f"analysis {c['analysis_s_per_run']:.1f} s per run")
    if "gpu" in res:
        print("GPU:", json.dumps(res["gpu"]))
    print(f"peak RSS {res['peak_rss_mb']:.0f} MB  -> {OUT / 'bench.json'}")


if __name__ == "__main__":
    main()
