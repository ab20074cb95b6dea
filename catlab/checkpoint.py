"""Checkpoints: one file holds every piece of state; written atomically; loaded with weights_only=True.

    <run_dir>/ckpt/last.pt         models, EMA, optimisers, step, images seen, RNG states, data position,
                                   config hash
    <run_dir>/ckpt/prev.pt         the checkpoint before it (each save moves last.pt here): the last two
                                   are kept, so a damaged last.pt resumes from prev.pt (`resume_point`)
    <run_dir>/snapshots/ema_<step>.pt   EMA generator weights (and meta) only, for drift over training
    Both carry meta = {num_classes, channels}, so a generator can be rebuilt without its data.

Analysis loads generators through `load_generator(run_dir)`, never through trainer internals.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from catlab.config import Config, load_config_json
from catlab.errors import UserError
from catlab.files import temp_path

LAST, PREVIOUS = "last.pt", "prev.pt"


class Unreadable(UserError):
    """A checkpoint file that cannot be read back: truncated, corrupt, empty, or not a catlab dict."""

    def __init__(self, path: Path, why: str, todo: str = "delete it to start the run over"):
        super().__init__(f"checkpoint {path} {why}; {todo}")
        self.path, self.why, self.todo = path, why, todo

    def __reduce__(self):                                # picklable (worker processes send errors back)
        return type(self), (self.path, self.why, self.todo)


def atomic_save(obj, path: Path, previous: Path | None = None, shared: bool = False) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file.

    shared: several processes may write this file at once (a cache that grid or search workers fill): each
    write gets a temp file of its own, so every rename publishes a whole file and the last one wins. Without
    it the temp name is fixed (<name>.tmp), which two concurrent writers would share.

    previous: where the file being replaced goes (ckpt/prev.pt), renamed just before the new one takes its
    place; a crash between the two renames leaves previous and the temp file, and `resume_point` then
    resumes from previous. A write that fails (full disk, an error in torch.save) removes its temp file;
    one left by a killed process is never read (only <name> is) and the next save of <name> overwrites it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, shared)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def safe_load(path: Path) -> dict:
    """torch.load with weights_only=True, turning a missing or corrupt file into a one-line UserError
    (Unreadable for a file that exists but cannot be read back)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # noqa: BLE001 -- truncated zip, bad pickle, foreign object
        raise Unreadable(path, f"is unreadable or corrupt ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise Unreadable(path, f"holds a {type(obj).__name__}, not a catlab checkpoint (a dict)")
    return obj


def resume_point(ckpt_dir: Path, announce: bool = True) -> tuple[dict, Path] | None:
    """(state, path) to resume a run from: ckpt/last.pt, else ckpt/prev.pt; None when neither exists.

    A last.pt that cannot be read (truncated, corrupt), or that is missing while prev.pt exists (a save cut
    between its two renames), falls back to prev.pt with one line on stderr. With announce (rank 0) the
    damaged file is also renamed last.pt.damaged, so that the next save does not keep it as prev.pt.
    Nothing readable: a one-line Unreadable naming the file and what to do.
    """
    last, prev = ckpt_dir / LAST, ckpt_dir / PREVIOUS
    if not last.exists() and not prev.exists():
        return None
    why = "is missing"
    if last.exists():
        try:
            return safe_load(last), last
        except Unreadable as e:
            if not prev.exists():
                raise
            why = e.why
    try:
        state = safe_load(prev)
    except Unreadable as e:
        raise Unreadable(last, f"{why}, and the previous one, {prev}, {e.why}",
                         f"delete {ckpt_dir} to start the run over") from None
    if announce:
        kept = ""
        if last.exists():
            os.replace(last, last.with_name(LAST + ".damaged"))
            kept = f" (the damaged file is kept as {LAST}.damaged)"
        print(f"catlab: checkpoint {last} {why}; resuming from the previous one, {prev} "
              f"(step {state.get('step', '?')}){kept}", file=sys.stderr, flush=True)
    return state, prev


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise UserError(f"{run_dir} is not a catlab run dir (no config.json)")
    return load_config_json(path)


def saved_hash(run_dir: str | Path) -> str:
    """The hash of a run dir's config.json as written (catlab.config.dict_hash of the raw JSON)."""
    import json
    from catlab.config import dict_hash
    return dict_hash(json.loads((Path(run_dir) / "config.json").read_text()))


def load_generator(run_dir: str | Path, ema: bool = True, snapshot: str | Path | None = None,
                   device: str = "cpu"):
    """The trained generator of a run (EMA by default), in eval mode, and its Config.

    snapshot: a file under snapshots/ (EMA weights at some step) instead of the last checkpoint.
    """
    from catlab.models import build_generator
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    path = Path(snapshot) if snapshot is not None else run_dir / "ckpt" / "last.pt"
    ckpt = safe_load(path)
    saved = saved_hash(run_dir)                                  # as written (older catlab: fewer keys)
    if ckpt.get("config_hash", saved) not in (saved, cfg.hash()):   # snapshots carry no hash
        raise UserError(f"checkpoint {path} belongs to config {ckpt['config_hash']}, but {run_dir} holds "
                        f"config {saved}; it was copied from another run dir")
    try:
        G = build_generator(cfg.model, ckpt["meta"]["num_classes"], cfg.data.resolution,
                            ckpt["meta"]["channels"], resampler=cfg.data.resampler)
        G.load_state_dict(ckpt["G_ema" if ema or snapshot is not None else "G"])
    except (KeyError, TypeError, RuntimeError) as e:   # a foreign or older file: missing keys, other shapes
        raise UserError(f"checkpoint {path} does not fit the model of {run_dir}/config.json "
                        f"({type(e).__name__}); it was written by another config") from None
    return G.to(device).eval().requires_grad_(False), cfg


def snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every EMA snapshot of a run, in order."""
    paths = sorted(Path(run_dir, "snapshots").glob("ema_*.pt"))
    return [(int(p.stem.split("_")[1]), p) for p in paths]


# ---- a run's whole state: pack for a checkpoint, unpack to resume ------------------------------------
def pack(s, cfg: Config, meta: dict) -> dict:
    """Every piece of a trainer State (models, EMA, optimisers, step, RNG, data position) as one dict."""
    return {"G": s.G.state_dict(), "D": s.D.state_dict(), "G_ema": s.G_ema.state_dict(),
            "opt_g": s.opt_g.state_dict(), "opt_d": s.opt_d.state_dict(), "step": s.step,
            "images_seen": s.images_seen, "rng": rng_state(), "data": s.batcher.state_dict(),
            "latest": {k: float(v) for k, v in s.latest.items()},
            "config_hash": cfg.hash(), "meta": meta}


def unpack(s, state: dict, cfg: Config, path: Path) -> None:
    """Load a packed checkpoint into a trainer State; UserError for one of another config, model or world."""
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
    set_rng_state(state["rng"])                  # python/numpy; torch is reseeded per step (StepRNG)
