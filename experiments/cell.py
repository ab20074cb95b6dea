"""One cell of a grid, trained: the cell runner every grid uses (local, and across machines with --storage).

    res = run_cell(cell.cfg.to_dict(), parent_run_id, cell.tags(profile))   # never raises for a failed run
    res["status"]       # FINISHED | FAILED | KILLED | PENDING (not started: the grid was interrupted)

A FINISHED cell with the same config hash is skipped by the trainer (catlab.rundir.is_finished), a partly run
one resumes from its checkpoint, a failed one comes back FAILED with its reason. In a spawned worker process
(init_worker) Ctrl-C is the grid's to handle: it sets the stop event, which the trainer checks every step.
"""
from __future__ import annotations

import os
import time

from catlab.errors import RunFailed, UserError
from catlab.rundir import read_info
from experiments.grid import Cell

_STOP = None      # in a worker process: the grid's stop event (set when the grid is interrupted)


def threads_for(workers: int) -> int | None:
    """Torch threads per worker process: the cores split between them (None: one process, torch's default)."""
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None


def init_worker(stop) -> None:
    """A worker process of the grid: Ctrl-C is the parent's to handle (it sets `stop`); the trainer
    listens to it (Hooks.stop_fn) and to its own SIGINT handler while a cell trains."""
    import signal
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_cell(cfg_dict: dict, parent_run_id: str | None, tags: dict, threads: int | None = None,
             start_line: str | None = None) -> dict:
    """Train one cell; never raises for a failed run: returns {status, reason, step, mlflow_run_id, seconds}."""
    import torch
    from catlab.config import from_dict
    from catlab.rundir import path_of
    from catlab.trainer import Hooks, train
    if threads:
        torch.set_num_threads(threads)
    if start_line:
        print(start_line, flush=True)
    cfg, t0 = from_dict(cfg_dict), time.time()
    run_dir = path_of(cfg)
    if _STOP is not None and _STOP.is_set():
        return {"status": "PENDING", "reason": "not started: the grid was interrupted", "seconds": 0.0}
    try:
        r = train(cfg, Hooks(stop_fn=_STOP.is_set if _STOP is not None else None), parent_run_id=parent_run_id,
                  tags=tags)
        out = {"status": r.status, "reason": r.reason, "step": r.step, "mlflow_run_id": r.mlflow_run_id}
    except KeyboardInterrupt:
        if _STOP is None:                 # in the grid's own process: the grid stops here
            raise
        out = killed(run_dir)             # a worker reports its cell KILLED (the trainer wrote why)
    except (RunFailed, UserError) as e:
        out = {"status": "FAILED", "reason": str(e).splitlines()[0] if str(e) else type(e).__name__}
    except Exception as e:  # noqa: BLE001 -- one broken cell must not stop the grid
        out = {"status": "FAILED", "reason": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
    if "mlflow_run_id" not in out:
        info = read_info(run_dir, strict=False)
        out.update(step=info.get("step", 0), mlflow_run_id=info.get("mlflow_run_id"))
    return {**out, "seconds": time.time() - t0}


def killed(run_dir) -> dict:
    """The result of a cell that Ctrl-C stopped, from its run.json."""
    info = read_info(run_dir, strict=False)
    return {"status": "KILLED", "reason": info.get("reason") or "interrupted by the user",
            "step": info.get("step", 0), "mlflow_run_id": info.get("mlflow_run_id")}


def preflight(cells: list[Cell]) -> None:
    """Data that must exist on disk is loaded once, the device and the tracking URI checked, before any cell
    starts."""
    from catlab.data import build_dataset
    from catlab.tracking import check_uri
    from catlab.trainer import pick_device
    for device in sorted({c.cfg.train.device for c in cells}):
        pick_device(device)
    for uri in sorted({c.cfg.run.tracking_uri for c in cells if c.cfg.run.mlflow}):
        check_uri(uri)                    # a tracking URI whose scheme can never work
    seen = []
    for c in cells:
        if c.cfg.data.name != "shapes" and c.cfg.data not in seen:   # generated data cannot be missing
            seen.append(c.cfg.data)
            build_dataset(c.cfg.data)
