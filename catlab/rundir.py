"""The run dir: where one training run keeps everything, and the files that say what it did.

    <run.root>/<config hash>-s<seed>/       path_of(cfg)
        config.json        the Config (catlab.config.save_config)
        run.json           status, reason, step, config_hash, mlflow_run_id, ... (read_info / write_info)
        eval_set.pt        the fixed (z, y) of the seed, shared by every arm of a study (eval_set)
        metrics.jsonl      one line per logged step (catlab.tracking)
        ckpt/last.pt       every piece of state (catlab.checkpoint); ckpt/prev.pt, the one before
        snapshots/ema_<step>.pt, samples/*.png, analysis/*.json
    <run.root>/<config hash>-s<seed>.lock  lock_path(run_dir): held while a grid worker or a trial trains it

A run is finished (is_finished) when run.json says FINISHED at train.steps for this config and its last
checkpoint is there: the trainer, the grids and the search skip it by this one rule.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from catlab.checkpoint import atomic_save, run_config, safe_load
from catlab.config import save_config
from catlab.errors import UserError
from catlab.files import atomic_text

EVAL_N = 256          # the size of eval_set.pt
EVAL_SEED = 10_000    # eval_set.pt is drawn from seed EVAL_SEED + run seed: a function of the seed only
MORE_SEED = 20_000    # inputs past EVAL_N (analysis at n > 256) come from seed MORE_SEED + run seed


def path_of(cfg) -> Path:
    """<run.root>/<config hash>-s<seed>."""
    return Path(cfg.run.root) / cfg.run_name()


def lock_path(run_dir) -> Path:
    """<run.root>/<name>.lock: held (catlab's file lock) by the process that trains the run, so that a twin
    trial or cell of the same config, on a shared disk too, waits for it."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + ".lock")


def last_checkpoint(run_dir) -> Path:
    return Path(run_dir) / "ckpt" / "last.pt"


# ---- run.json -------------------------------------------------------------------------------------
def read_info(run_dir, strict: bool = True) -> dict:
    """run.json ({} when absent); strict=False also gives {} for one that cannot be read."""
    path = Path(run_dir) / "run.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        if strict:
            raise
        return {}


def write_info(run_dir, info: dict) -> None:
    """run.json, atomically (a temp file, then rename)."""
    atomic_text(Path(run_dir) / "run.json", json.dumps(info, indent=2) + "\n")


def is_finished(run_dir, cfg) -> dict | None:
    """run.json of a run that already finished with this config, else None."""
    info = read_info(run_dir, strict=False)
    done = info.get("status") == "FINISHED" and info.get("step") == cfg.train.steps \
        and info.get("config_hash") == cfg.hash() and last_checkpoint(run_dir).exists()
    return info if done else None


# ---- the fixed evaluation set -----------------------------------------------------------------------
def draw_eval_set(seed: int, z_dim: int, num_classes: int, n: int = EVAL_N) -> dict:
    """{"z": (n, z_dim), "y": (n,)} of a seed: every arm with this seed sees the same inputs."""
    g = torch.Generator().manual_seed(EVAL_SEED + seed)
    return {"z": torch.randn(n, z_dim, generator=g), "y": torch.arange(n) % num_classes}


def eval_set(run_dir, seed: int, z_dim: int, num_classes: int) -> dict:
    """The run's eval_set.pt, written on first use."""
    path = Path(run_dir) / "eval_set.pt"
    if not path.exists():
        atomic_save(draw_eval_set(seed, z_dim, num_classes), path)
    return safe_load(path)


def fixed_inputs(run_dir, n: int, seed: int, z_dim: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n of the run's fixed (z, y): eval_set.pt (or the same draw when it is absent), extended past
    EVAL_N from a generator seeded by MORE_SEED + seed."""
    path = Path(run_dir) / "eval_set.pt"
    ev = safe_load(path) if path.exists() else draw_eval_set(seed, z_dim, num_classes)
    z, y = ev["z"], ev["y"]
    if n > len(z):
        g = torch.Generator().manual_seed(MORE_SEED + seed)
        z = torch.cat([z, torch.randn(n - len(z), z_dim, generator=g)])
        y = torch.cat([y, torch.arange(len(y), n) % num_classes])
    return z[:n], y[:n]


# ---- the trainer's start ------------------------------------------------------------------------------
def prepare(cfg, run_dir: str | Path | None) -> Path:
    """<run.root>/<hash>-s<seed>, or the given dir; refuse a dir that holds another config."""
    run_dir = Path(run_dir) if run_dir else path_of(cfg)
    existing = run_dir / "config.json"
    if existing.exists():
        old = run_config(run_dir).hash()
        if old != cfg.hash():
            raise UserError(f"--run-dir {run_dir} holds a run of config {old}, but this config hashes to "
                            f"{cfg.hash()}; use another run dir, or the same config to resume")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, existing)
    except OSError as e:
        raise UserError(f"--run-dir {run_dir} cannot be written ({e.strerror})") from None
    return run_dir
