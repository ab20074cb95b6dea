"""The one CAT trainer: `train(cfg, hooks)`.

Variants are resolved once, in `catlab.phases.make_phases`: the loop runs a list of phases (D main, lazy D
regularisation, G main with consistency) and never asks which model, loss or ablation it runs.
Resume is running the same command again: the run dir is <run.root>/<config hash>-s<seed>, and its
checkpoint holds every piece of state (randomness is a function of (seed, rank, step), see StepRNG).
Optuna and the diagnostics plug in through `Hooks`; this module imports neither.
Under torchrun each rank runs this same loop on batch / world samples; catlab.distributed averages
the grads and the stats, and only rank 0 writes. train.compile=true compiles G's and D's forward for
the phases; the uncompiled modules stay in State (checkpoints, EMA, samples).
Ctrl-C (SIGINT) ends a run at the end of its step: a checkpoint, the run KILLED with the reason, then
KeyboardInterrupt for the caller (the CLI exits 130); a second Ctrl-C stops at once and keeps the last
checkpoint. A checkpoint that cannot be read resumes from the one before it (catlab.checkpoint).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from catlab import checkpoint as ckpt
from catlab import distributed, rundir, tracking
from catlab.config import Config
from catlab.data import Batcher, build_dataset, pyramid
from catlab.errors import RunFailed, UserError
from catlab.interrupt import Interrupt
from catlab.phases import (State, autocast_for, build_state,  # noqa: F401 -- build_state: bench's name
                           make_phases, update_ema)
from catlab.samples import save_stage_grid


@dataclass
class Hooks:
    progress_fn: Callable | None = None  # (step, stats, ctx), every log step: evaluations, pruning reports
    abort_fn: Callable | None = None     # (step) -> reason | None; a reason stops the run as KILLED
    step_fn: Callable | None = None      # (step, state) after every step; tests inject faults here
    stop_fn: Callable | None = None      # () -> bool after every step; True stops the run like Ctrl-C


@dataclass
class RunResult:
    run_dir: Path
    status: str          # FINISHED | FAILED | KILLED
    reason: str
    step: int
    stats: dict = field(default_factory=dict)
    mlflow_run_id: str | None = None


class Context:
    """What hooks may touch: the EMA generator, the fixed evaluation set, and report()."""

    def __init__(self, state: State, cfg: Config, run_dir: Path, eval_set: dict, autocast):
        self.state, self.cfg, self.run_dir, self.autocast = state, cfg, run_dir, autocast
        self.eval_z, self.eval_y = eval_set["z"], eval_set["y"]

    @torch.no_grad()
    def sample(self, z: torch.Tensor, y: torch.Tensor, full: bool = False):
        with self.autocast():
            out = self.state.G_ema(z, y, full=full)
        return [x.float() for x in out] if not full else tuple([x.float() for x in o] for o in out)

    def report(self, name: str, value: float) -> None:
        tracking.report(name, value, self.state.step)


# ---- building -----------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device must be auto or cpu on a machine without CUDA, but got device='cuda'")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


# ---- the loop -----------------------------------------------------------------------------------
def _loop(cfg: Config, s: State, phases, ctx: Context, hooks: Hooks, tracker, bar, save, grid,
          interrupt: Interrupt) -> tuple[str, str]:
    t, window = cfg.train, (time.perf_counter(), s.step)
    scales, world = s.G.scales, s.batcher.world
    while s.step < t.steps:
        s.rng.begin(s.step)
        real, y = next(s.batcher)
        real = pyramid(real, scales, cfg.data.resampler)
        stats = {}
        for phase in phases:
            if s.step % phase.every == 0:
                stats.update(phase.fn(s.step, real, y))
        stats = distributed.mean_stats(stats)             # the global batch's stats, on every rank
        s.latest.update(stats)
        update_ema(s.G_ema, s.G, s.step, t.ema, t.ema_warmup)
        s.step, s.images_seen = s.step + 1, s.images_seen + y.shape[0] * world
        bad = [k for k in ("d_loss", "g_loss", "cons", "d_reg") if k in stats and not torch.isfinite(stats[k])]
        if bad:
            raise RunFailed(f"non-finite {bad[0]} at step {s.step}")
        if hooks.step_fn:
            hooks.step_fn(s.step, s)
        if s.step % t.log_every == 0 or s.step == t.steps:
            stats = {k: float(v) for k, v in s.latest.items()}
            stats["img_per_s"] = (s.step - window[1]) * y.shape[0] * world / (time.perf_counter() - window[0])
            stats["images_seen"] = s.images_seen
            window = (time.perf_counter(), s.step)
            for k, v in stats.items():
                tracker.log(k, v, s.step)
            bar.set_postfix(d=f"{stats['d_loss']:.3f}", g=f"{stats['g_loss']:.3f}",
                            cons=f"{stats['cons']:.4f}", img_s=f"{stats['img_per_s']:.0f}", refresh=False)
            if hooks.progress_fn:
                hooks.progress_fn(s.step, stats, ctx)
            reason = distributed.agree(hooks.abort_fn(s.step) if hooks.abort_fn else None)
            if reason:
                save(s)
                return "KILLED", reason
        if s.step % t.sample_every == 0 or s.step == t.steps:
            grid(s.step)
        if s.step % t.ckpt_every == 0 or s.step == t.steps:
            save(s)
        if interrupt.asked(s.step % t.log_every == 0) and s.step < t.steps:
            save(s, snapshot=False)                       # (none twice at one step: see save)
            interrupt.stopped = True
            return "KILLED", f"interrupted by the user (Ctrl-C) at step {s.step}"
        bar.update(1)
    return "FINISHED", ""


# ---- the run dir, entry point ---------------------------------------------------------
def _setup_run_dir(cfg: Config, run_dir, meta: dict) -> tuple[Path, dict, dict]:
    """Rank 0's part of the start: the run dir, its run.json and the fixed evaluation set."""
    run_dir = rundir.prepare(cfg, run_dir)
    return run_dir, rundir.read_info(run_dir), rundir.eval_set(run_dir, cfg.seed, cfg.model.z_dim, meta["num_classes"])


def train(cfg: Config, hooks: Hooks | None = None, run_dir: str | Path | None = None,
          parent_run_id: str | None = None, tags: dict | None = None) -> RunResult:
    """Train one config to cfg.train.steps, resuming from the run dir's checkpoint if there is one.

    Under torchrun (WORLD_SIZE set) this process is one rank: train.batch is the global batch.
    """
    hooks = hooks or Hooks()
    env = distributed.init(pick_device(cfg.train.device))
    try:
        result = _train(cfg, hooks, env, run_dir, parent_run_id, tags)
    except BaseException:
        distributed.shutdown(env, clean=False)
        raise
    distributed.shutdown(env)
    return result


def _train(cfg: Config, hooks: Hooks, env: distributed.Env, run_dir, parent_run_id, tags) -> RunResult:
    device, main = env.device, env.main
    if cfg.run.mlflow:
        tracking.check_uri(cfg.run.tracking_uri)      # a scheme that can never work: exit 2, before any work
    if cfg.train.batch % env.world:
        raise UserError(f"train.batch must be divisible by the {env.world} ranks (it is the global batch), "
                        f"but got batch={cfg.train.batch}")
    data = build_dataset(cfg.data)                    # bad data paths fail here, before anything is written
    meta = {"num_classes": data.num_classes, "channels": data.images.shape[1]}
    run_dir, info, evals = distributed.on_main(lambda: _setup_run_dir(cfg, run_dir, meta))
    last = rundir.last_checkpoint(run_dir)
    if rundir.is_finished(run_dir, cfg):
        return RunResult(run_dir, "FINISHED", "already finished", info["step"], {}, info.get("mlflow_run_id"))
    ckpt.seed_everything(cfg.seed)                    # the same initial weights on every rank
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    batcher = Batcher(data, cfg.train.batch // env.world, seed=cfg.seed, device=device, rank=env.rank,
                      world=env.world)
    rng = distributed.StepRNG(cfg.seed, env.rank, env.world, device)
    s = build_state(cfg, meta["num_classes"], meta["channels"], batcher, device, rng)
    found = ckpt.resume_point(last.parent, announce=main)   # last.pt, or prev.pt when last.pt is damaged
    if found:
        state, path = found
        ckpt.unpack(s, state, cfg, path)
    autocast = autocast_for(cfg, device)
    ctx = Context(s, cfg, run_dir, evals, autocast)
    saved_before = int(info.get("step") or 0)         # > s.step when resumed from prev.pt
    info.update(meta, config_hash=cfg.hash(), status="RUNNING", reason="", step=s.step, world=env.world)
    tracker = tracking.RunTracker(run_dir, cfg, info, s.step, parent_run_id,
                                  {**(tags or {}), "device": device.type, "world": env.world}, saved_before) \
        if main else tracking.NullTracker()
    info["mlflow_run_id"] = tracker.run_id
    write = (lambda **kw: rundir.write_info(run_dir, {**info, **kw})) if main else (lambda **kw: None)
    write()
    tracking.activate(tracker)
    if not main:                                      # evaluations and pruning run on rank 0 only
        hooks = Hooks(step_fn=hooks.step_fn)

    saved = {"step": s.step}

    def save(state: State, snapshot: bool = True) -> None:
        """last.pt (the one it replaces kept as prev.pt), the EMA snapshot, then MLflow and run.json."""
        if not main or saved["step"] == state.step:      # once per step: prev.pt stays an older one
            return
        ckpt.atomic_save(ckpt.pack(state, cfg, meta), last, previous=last.with_name(ckpt.PREVIOUS))
        if snapshot:
            ckpt.atomic_save({"G_ema": state.G_ema.state_dict(), "meta": meta, "step": state.step},
                             run_dir / "snapshots" / f"ema_{state.step:06d}.pt")
        tracker.flush()
        write(step=state.step)
        saved["step"] = state.step

    def grid(step: int) -> None:
        if main:
            tracker.artifact(save_stage_grid(ctx, step), "samples")

    bar = tqdm(total=cfg.train.steps, initial=s.step, desc=run_dir.name, disable=not (cfg.run.progress and main),
               dynamic_ncols=True, unit="step")
    status, reason = "FAILED", ""
    interrupt = Interrupt(hooks.stop_fn)
    try:
        with interrupt:
            status, reason = _loop(cfg, s, make_phases(cfg, s, autocast), ctx, hooks, tracker, bar, save, grid,
                                   interrupt)
    except KeyboardInterrupt:  # mid-step (a second Ctrl-C): keep the last checkpoint, which resumes exactly
        status, reason = "KILLED", f"interrupted by the user mid-step {s.step + 1} (resumes from step {saved['step']})"
        raise
    except RunFailed as e:
        reason = str(e)
        raise
    except Exception as e:
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        raise RunFailed(reason) from e
    finally:
        bar.close()
        tracker.finish(status, reason)
        tracking.activate(None)
        write(status=status, reason=reason, step=s.step)
    if interrupt.requested or interrupt.stopped:           # Ctrl-C: the caller stops too (the CLI exits 130)
        if main:
            print(f"catlab: {reason}; checkpoint {last} (step {saved['step']}); run the same command again to "
                  "resume" if status == "KILLED" else f"catlab: interrupted by the user (Ctrl-C) as {run_dir} "
                  "finished", file=sys.stderr, flush=True)
        raise KeyboardInterrupt
    return RunResult(run_dir, status, reason, s.step, {}, tracker.run_id)
