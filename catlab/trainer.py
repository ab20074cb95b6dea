"""The one CAT trainer: `train(cfg, hooks)`.

Variants are resolved once, in `make_phases`: the loop runs a list of phases (D main, lazy D
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

import json
import math
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from catlab import checkpoint as ckpt
from catlab import distributed, tracking
from catlab.config import Config, save_config
from catlab.data import Batcher, build_dataset, pyramid
from catlab.errors import RunFailed, UserError
from catlab.losses import ADVERSARIAL, REGULARISERS, consistency, get_distance, scale_weights
from catlab.models import build_discriminator, build_generator
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


@dataclass
class State:
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    batcher: Batcher
    rng: distributed.StepRNG
    step: int = 0
    images_seen: int = 0
    latest: dict = field(default_factory=dict)   # every stat's latest value: lazy phases (D_reg) log their last


@dataclass
class Phase:
    name: str
    every: int
    fn: Callable  # (step, real_pyramid, y) -> dict of detached scalar tensors


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


def build_state(cfg: Config, num_classes: int, channels: int, batcher: Batcher, device,
                rng: distributed.StepRNG | None = None) -> State:
    G, G_ema = (build_generator(cfg.model, num_classes, cfg.data.resolution, channels,
                                resampler=cfg.data.resampler).to(device) for _ in range(2))
    D = build_discriminator(cfg.model, num_classes, cfg.data.resolution, channels).to(device)
    G_ema.load_state_dict(G.state_dict())
    G_ema.eval().requires_grad_(False)
    t = cfg.train

    def adamw(net, lr):
        lr = lr * 768 / net.width if t.width_lr else lr
        return torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.0, 0.99), weight_decay=0.0,
                                 foreach=True)      # bitwise the for-loop's update, in fewer kernels
    rng = rng or distributed.StepRNG(cfg.seed, device=device)
    return State(G, D, G_ema, adamw(G, t.lr_g), adamw(D, t.lr_d), batcher, rng)


def _update(opt, loss, params, clip: float) -> torch.Tensor:
    params = list(params)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    distributed.all_reduce_grads(params)                  # mean over ranks; no-op in one process
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    opt.step()
    return norm


def _per_scale(prefix: str, v: torch.Tensor) -> dict:
    return {f"{prefix}_s{i + 1}": x for i, x in enumerate(v.detach())}


def make_phases(cfg: Config, s: State, autocast) -> list[Phase]:
    """Resolve every variant once: losses, weights, regulariser, distance, compiled forwards."""
    d_loss_fn, g_loss_fn = ADVERSARIAL[cfg.loss.adversarial]
    rc, cc, clip = cfg.loss.reg, cfg.loss.consistency, cfg.train.grad_clip
    distance = get_distance(cc.distance)
    weights = lambda logits: scale_weights(cfg.loss.scale_weights, logits.shape[1]).to(logits)  # noqa: E731
    G, D = (torch.compile(s.G, dynamic=False), torch.compile(s.D, dynamic=False)) if cfg.train.compile \
        else (s.G, s.D)                                   # same parameters; state_dicts stay uncompiled
    D_reg = s.D if rc.kind == "exact" else D              # compiled graphs have no double backward

    shared: dict = {}                                     # train.fakes=shared: this step's (z, y) -> G

    def fakes(step, y, grad: bool, full: bool = False):
        """This step's fake stages. fresh: a new z at every call; shared: one G forward (with grad) per
        step, detached for D's phases and reused by G's (the D update does not change G)."""
        if cfg.train.fakes == "fresh":
            z = s.rng.z(y.shape[0], s.G.z_dim)            # this rank's rows of the global batch's z
            with torch.set_grad_enabled(grad), autocast():
                return G(z, y, full=full)
        if shared.get("step") != step:
            z = s.rng.z(y.shape[0], s.G.z_dim)
            with autocast():
                shared.update(step=step, out=G(z, y, full=True))
        scaled, full_images = shared["out"]
        if grad:
            shared.clear()                                # G's phase is the last to use them
            return (scaled, full_images) if full else scaled
        return [x.detach() for x in scaled]

    def d_main(step, real, y):
        fake = fakes(step, y, grad=False)
        s.D.requires_grad_(True)
        with autocast():
            logits = D([torch.cat([r, f]) for r, f in zip(real, fake)], torch.cat([y, y])).float()
        lr, lf = logits.chunk(2)
        per_scale = d_loss_fn(lr, lf)
        loss = (weights(lr) * per_scale).sum()
        norm = _update(s.opt_d, loss, s.D.parameters(), clip)
        return {"d_loss": loss.detach(), "grad_norm_d": norm, **_per_scale("d_loss", per_scale),
                **_per_scale("d_real", lr.mean(0)), **_per_scale("d_fake", lf.mean(0))}

    def d_reg(step, real, y):
        penalty = REGULARISERS[rc.kind]
        with autocast():
            loss = penalty(D_reg, real, y, rc.gamma, sigma=rc.sigma, fraction=rc.fraction)
            if rc.r2:
                loss = loss + penalty(D_reg, fakes(step, y, grad=False), y, rc.gamma, sigma=rc.sigma,
                                      fraction=rc.fraction)
        _update(s.opt_d, loss.float() * rc.every, s.D.parameters(), clip)
        return {"d_reg": loss.detach()}

    def g_main(step, real, y):
        s.D.requires_grad_(False)
        scaled, full = fakes(step, y, grad=True, full=True)
        with autocast():
            with torch.no_grad():
                lr = D(real, y).float()
            lf = D(scaled, y).float()
        per_scale = g_loss_fn(lr, lf)
        adv = (weights(lf) * per_scale).sum()
        cons, dist = consistency([x.float() for x in full], [x.float() for x in scaled], cc, step, distance,
                                 cfg.data.resampler)
        norm = _update(s.opt_g, adv + cons, s.G.parameters(), clip)
        return {"g_loss": adv.detach(), "cons": cons.detach(), "grad_norm_g": norm,
                **_per_scale("g_adv", per_scale), **_per_scale("cons_dist", dist)}

    use_reg = rc.kind != "none" and rc.gamma > 0
    return [Phase("D", 1, d_main)] + ([Phase("D_reg", rc.every, d_reg)] if use_reg else []) + \
        [Phase("G", 1, g_main)]


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, step: int, decay: float, warmup: int) -> None:
    beta = min(decay, (1 + step) / (10 + step)) if step < warmup else decay
    torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1 - beta)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


# ---- the loop -----------------------------------------------------------------------------------
class Interrupt:
    """Ctrl-C while the loop runs: the first SIGINT asks the run to stop at the end of its step (`asked`);
    a second one raises KeyboardInterrupt at once. Installed in the main thread only (signals live there).
    stop_fn (Hooks.stop_fn) asks too: a grid's worker processes stop when the grid is interrupted."""

    def __init__(self, stop_fn: Callable | None = None):
        self.requested, self.stop_fn, self._previous = False, stop_fn, None
        self.stopped = False                              # the loop stopped on it

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def asked(self, log_step: bool) -> bool:
        """Stop now? Every step in one process; under torchrun at log steps, on rank 0's word."""
        mine = self.requested or bool(self.stop_fn and self.stop_fn())
        if not distributed.active():
            return mine
        return bool(distributed.agree(mine)) if log_step else False


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


# ---- run dirs, checkpoints, entry point ---------------------------------------------------------
def prepare_run_dir(cfg: Config, run_dir: str | Path | None) -> Path:
    """<run.root>/<hash>-s<seed>, or the given dir; refuse a dir that holds another config."""
    run_dir = Path(run_dir) if run_dir else Path(cfg.run.root) / cfg.run_name()
    existing = run_dir / "config.json"
    if existing.exists():
        old = ckpt.run_config(run_dir).hash()
        if old != cfg.hash():
            raise UserError(f"--run-dir {run_dir} holds a run of config {old}, but this config hashes to "
                            f"{cfg.hash()}; use another run dir, or the same config to resume")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, existing)
    except OSError as e:
        raise UserError(f"--run-dir {run_dir} cannot be written ({e.strerror})") from None
    return run_dir


def read_info(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_info(run_dir: Path, info: dict) -> None:
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(run_dir / "run.json")


def eval_set(cfg: Config, run_dir: Path, z_dim: int, num_classes: int, n: int = 256) -> dict:
    """The fixed (z, y) of a run, a function of the seed only: arms of a study share it."""
    path = run_dir / "eval_set.pt"
    if not path.exists():
        g = torch.Generator().manual_seed(10_000 + cfg.seed)
        ckpt.atomic_save({"z": torch.randn(n, z_dim, generator=g),
                          "y": torch.arange(n) % num_classes}, path)
    return ckpt.safe_load(path)


def pack(s: State, cfg: Config, meta: dict) -> dict:
    return {"G": s.G.state_dict(), "D": s.D.state_dict(), "G_ema": s.G_ema.state_dict(),
            "opt_g": s.opt_g.state_dict(), "opt_d": s.opt_d.state_dict(), "step": s.step,
            "images_seen": s.images_seen, "rng": ckpt.rng_state(), "data": s.batcher.state_dict(),
            "latest": {k: float(v) for k, v in s.latest.items()},
            "config_hash": cfg.hash(), "meta": meta}


def unpack(s: State, state: dict, cfg: Config, path: Path) -> None:
    if state.get("config_hash") != cfg.hash():
        raise UserError(f"checkpoint {path} belongs to config {state.get('config_hash')}, "
                        f"not {cfg.hash()}; delete it or use another run dir")
    try:
        for name in ("G", "D", "G_ema", "opt_g", "opt_d"):
            getattr(s, name).load_state_dict(state[name])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"checkpoint {path} does not fit this model ({type(e).__name__}); "
                        "delete it to start over") from None
    s.step, s.images_seen = state["step"], state["images_seen"]
    s.latest = {k: torch.tensor(v) for k, v in state.get("latest", {}).items()}
    world = state["data"].get("world", 1)
    if world != s.batcher.world:
        raise UserError(f"checkpoint {path} was written by a run on {world} rank(s), but this run has "
                        f"{s.batcher.world}; resume with torchrun --nproc_per_node {world} (or start a new run dir)")
    s.batcher.load_state_dict(state["data"])
    ckpt.set_rng_state(state["rng"])                  # python/numpy; torch is reseeded per step (StepRNG)


class NullTracker:
    """The sinks of ranks other than 0: they log nothing."""
    run_id = None

    def log(self, *args, **kwargs): ...
    def artifact(self, *args, **kwargs): ...
    def tag(self, *args, **kwargs): ...
    def flush(self): ...
    def finish(self, *args, **kwargs): ...


def _setup_run_dir(cfg: Config, run_dir, meta: dict) -> tuple[Path, dict, dict]:
    """Rank 0's part of the start: the run dir, its run.json and the fixed evaluation set."""
    run_dir = prepare_run_dir(cfg, run_dir)
    return run_dir, read_info(run_dir), eval_set(cfg, run_dir, cfg.model.z_dim, meta["num_classes"])


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
    last = run_dir / "ckpt" / "last.pt"
    if info.get("status") == "FINISHED" and info.get("step") == cfg.train.steps and last.exists():
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
        unpack(s, state, cfg, path)
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else None
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    ctx = Context(s, cfg, run_dir, evals, autocast)
    saved_before = int(info.get("step") or 0)         # > s.step when resumed from prev.pt
    info.update(meta, config_hash=cfg.hash(), status="RUNNING", reason="", step=s.step, world=env.world)
    tracker = tracking.RunTracker(run_dir, cfg, info, s.step, parent_run_id,
                                  {**(tags or {}), "device": device.type, "world": env.world}, saved_before) \
        if main else NullTracker()
    info["mlflow_run_id"] = tracker.run_id
    write = (lambda **kw: write_info(run_dir, {**info, **kw})) if main else (lambda **kw: None)
    write()
    tracking.activate(tracker)
    if not main:                                      # evaluations and pruning run on rank 0 only
        hooks = Hooks(step_fn=hooks.step_fn)

    saved = {"step": s.step}

    def save(state: State, snapshot: bool = True) -> None:
        """last.pt (the one it replaces kept as prev.pt), the EMA snapshot, then MLflow and run.json."""
        if not main or saved["step"] == state.step:      # once per step: prev.pt stays an older one
            return
        ckpt.atomic_save(pack(state, cfg, meta), last, previous=last.with_name(ckpt.PREVIOUS))
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
