"""Run a study: `catlab ablate STUDY [--profile cpu|gpu] [--seeds N] [--workers N] [--dry-run] [--storage URL]
[KEY=VALUE ...]`. With --storage, machines share the grid through Optuna (experiments/grid_storage.py).

    ablate("ablation-consistency", overrides=["train.steps=200"])   # -> 0, or 1 if any cell failed

1. Validate everything first: the study, the options, every cell's Config, the data and the device.
2. One MLflow parent run per study (reused when study.json names one that still exists), a nested run
   per cell (tags: study, cell, seed, <axis>: <label>, profile).
3. Cells run one after another (each with its tqdm bar) or in N spawned worker processes. A FINISHED
   cell with the same config hash is skipped, a partly run one resumes from its checkpoint, a failed one
   is recorded FAILED with its reason and the grid goes on. Re-running the same command resumes the grid.
   Ctrl-C stops the running cells at the end of their step (a checkpoint each, KILLED with the reason),
   starts no other, marks the parent run KILLED and exits 130; a second Ctrl-C stops them at once.
4. cells.csv and study.json, then the analysis (analysis.quality), the report (reports.build), a summary.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm.auto import tqdm

from catlab.errors import RunFailed, UserError
from experiments import outputs
from experiments.grid import (STUDIES_ROOT, Cell, build_grid, check_options, command, get_study, print_grid,
                              study_dir)


# ---- one cell (also the worker entry point: top level, picklable arguments) ------------------------
_STOP = None      # in a worker process: the grid's stop event (set when the grid is interrupted)


def init_worker(stop) -> None:
    """A worker process of the grid: Ctrl-C is the parent's to handle (it sets `stop`); the trainer
    listens to it (Hooks.stop_fn) and to its own SIGINT handler while a cell trains."""
    import signal
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def read_info(run_dir) -> dict:
    """A cell's run.json ({} when absent or unreadable)."""
    from catlab.trainer import read_info as read
    try:
        return read(Path(run_dir))
    except (OSError, ValueError):
        return {}


def finished_info(run_dir, cfg) -> dict | None:
    """run.json of a cell that already finished with this config (the trainer's own skip rule)."""
    info = read_info(run_dir)
    done = info.get("status") == "FINISHED" and info.get("step") == cfg.train.steps \
        and info.get("config_hash") == cfg.hash() and (run_dir / "ckpt" / "last.pt").exists()
    return info if done else None


def run_cell(cfg_dict: dict, parent_run_id: str | None, tags: dict, threads: int | None = None,
             start_line: str | None = None) -> dict:
    """Train one cell; never raises for a failed run: returns {status, reason, step, mlflow_run_id, seconds}."""
    import torch
    from catlab.config import from_dict
    from catlab.trainer import train
    if threads:
        torch.set_num_threads(threads)
    if start_line:
        print(start_line, flush=True)
    cfg, t0 = from_dict(cfg_dict), time.time()
    run_dir = Path(cfg.run.root) / cfg.run_name()
    from catlab.trainer import Hooks
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
        info = read_info(run_dir)
        out.update(step=info.get("step", 0), mlflow_run_id=info.get("mlflow_run_id"))
    return {**out, "seconds": time.time() - t0}


def killed(run_dir) -> dict:
    """The result of a cell that Ctrl-C stopped, from its run.json."""
    info = read_info(run_dir)
    return {"status": "KILLED", "reason": info.get("reason") or "interrupted by the user",
            "step": info.get("step", 0), "mlflow_run_id": info.get("mlflow_run_id")}


# ---- validation before anything runs ----------------------------------------------------------------
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


# ---- MLflow: the study's parent run ----------------------------------------------------------------
def open_parent(study, profile: str, overrides: list[str], cells: list[Cell], previous: dict):
    """(MLflow client, parent run id, created?); reuses study.json's parent for the same profile/overrides."""
    cfg = cells[0].cfg
    if not cfg.run.mlflow:
        return None, None, False
    from catlab.tracking import MLflow
    ml = MLflow(cfg.run.tracking_uri)
    key = sorted(o for o in overrides if not o.startswith("run."))
    pid = previous.get("parent_run_id")
    same = previous.get("profile") == profile and \
        sorted(o for o in previous.get("overrides", []) if not o.startswith("run.")) == key
    exists = bool(pid) and ml.exists(pid)      # (a run id of another store is simply not found)
    if exists and same:
        ml.resume(pid)
        return ml, pid, False
    if exists and ml.status(pid) == "RUNNING":  # a killed grid of another profile/overrides: close it
        ml.end(pid, "KILLED", "superseded by a run of the study with another profile or overrides")
    pid = ml.create_run(study.name, study.name, {"study": study.name, "profile": profile, "kind": "study"})
    if pid:
        ml.log_params(pid, {"study": study.name, "profile": profile, "axes": ",".join(study.axes),
                            "overrides": " ".join(overrides) or "none"})
    return ml, pid, True


def reap_orphans(ml, study: str, pid: str, cells: list[Cell]) -> None:
    """Child runs left RUNNING by a killed grid whose run dir never recorded them: mark them KILLED."""
    known = {read_info(c.run_dir).get("mlflow_run_id") for c in cells}
    try:
        runs = ml.runs(study, f"tags.mlflow.parentRunId = '{pid}' and attributes.status = 'RUNNING'")
    except Exception:  # noqa: BLE001 -- MLflow down: nothing to reap
        return
    for run_id in runs.get("run_id", []):
        if run_id not in known:
            ml.end(run_id, "KILLED", "orphaned by an interrupted grid")


# ---- running the cells ----------------------------------------------------------------------------
def _last_step(run_dir) -> int:
    """The last step a cell logged (its metrics.jsonl's last line), for the grid's progress bar."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = f.read().decode(errors="ignore").strip().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


def _fmt_time(s: float) -> str:
    return f"{s:.0f}s" if s < 90 else f"{s / 60:.1f}min"


def run_cells(cells: list[Cell], todo: list[Cell], profile, pid, workers: int, on_done) -> None:
    n = len(cells)
    index = {c.name: i + 1 for i, c in enumerate(cells)}

    recorded = set()

    def done(c: Cell, res: dict) -> None:
        recorded.add(c.name)
        print(f"[{index[c.name]}/{n}] {res['status'].lower()} {c.name} in {_fmt_time(res['seconds'])}"
              + (f" -- {res['reason']}" if res.get("reason") else ""), flush=True)
        on_done(c, res)

    if workers == 1:
        for c in todo:
            start, t0 = f"[{index[c.name]}/{n}] start {c.name} -> {c.run_dir}", time.time()
            try:
                res = run_cell(c.cfg.to_dict(), pid, c.tags(profile), None, start)
            except KeyboardInterrupt:     # the trainer stopped the cell (a checkpoint, KILLED): record it
                done(c, {**killed(c.run_dir), "seconds": time.time() - t0})
                raise
            done(c, res)
        return
    import multiprocessing
    threads = max(1, (os.cpu_count() or 1) // workers)
    print(f"{len(todo)} cells on {workers} worker processes, {threads} torch thread(s) each", flush=True)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker, initargs=(stop,)) as pool:
        futures = {}
        for c in todo:
            cfg = c.cfg.override({"run.progress": False}).to_dict()   # bars of parallel cells would interleave
            start = f"[{index[c.name]}/{n}] start {c.name} -> {c.run_dir}"
            futures[pool.submit(run_cell, cfg, pid, c.tags(profile), threads, start)] = c
        bar = tqdm(total=sum(c.cfg.train.steps for c in todo), unit="step", desc="grid", dynamic_ncols=True)
        try:
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        res = fut.result()
                    except BrokenProcessPool as e:
                        res = {"status": "FAILED", "reason": f"worker process died ({e})", "seconds": 0.0}
                    bar.clear()
                    done(futures[fut], res)
                bar.n = sum(min(_last_step(c.run_dir), c.cfg.train.steps) for c in todo)
                bar.refresh()
            bar.close()
        except KeyboardInterrupt:
            stop.set()                    # running cells stop at the end of their step; queued ones do not start
            bar.close()
            print("catlab: interrupted; the running cells stop after their step and write a checkpoint "
                  "(Ctrl-C again to stop them at once)", file=sys.stderr, flush=True)
            for fut in futures:
                fut.cancel()
            for fut in futures:           # what each cell did (KILLED, or FINISHED at its last step)
                if not fut.cancelled():
                    try:
                        res = fut.result()
                    except BrokenProcessPool as e:
                        res = {"status": "FAILED", "reason": f"worker process died ({e})", "seconds": 0.0}
                    if futures[fut].name not in recorded:
                        done(futures[fut], res)
            raise


# ---- after the grid: analysis, report, summary ------------------------------------------------------
def analyse(study: str, profile: str, claims=()) -> None:
    """Analyse studies/<study> (study: the outputs dir name, e.g. ablation-consistency@1f3a9c2e)."""
    try:
        from analysis.quality import evaluate_study
    except ImportError as e:
        print(f"analysis: skipped (analysis.quality is not available: {e})")
        return
    try:
        evaluate_study(STUDIES_ROOT / study, profile=profile, claims=claims)
    except Exception as e:  # noqa: BLE001 -- the runs are safe; say how to redo the analysis
        print(f"analysis: failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              f"redo it with: catlab analyze {study} --debug")


def build_report(study: str, profile: str) -> None:
    try:
        from reports.build import report
    except ImportError as e:
        print(f"report: skipped (reports.build is not available: {e})")
        return
    try:
        report(study, figures_only=False, profile=profile)
    except Exception as e:  # noqa: BLE001
        print(f"report: failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              f"redo it with: catlab report {study} --debug")


def print_summary(study, sdir: Path, rows: list[dict], ml, pid) -> None:
    print(f"\n== {study.name}: cells ({sdir / 'cells.csv'})")
    print(outputs.status_table(rows, list(study.axes)))
    try:
        arms = [",".join(f"{a}={v}" for a, v in arm.items()) if len(arm) > 1 else next(iter(arm.values()))
                for arm in study.arms()]
        tables = outputs.quality_tables(sdir, arms)
    except Exception as e:  # noqa: BLE001 -- a summary the analysis shaped differently: say so, go on
        tables = f"(could not read {sdir / 'summary.csv'}: {type(e).__name__}: {e})"
    if tables:
        print(f"\n== {study.name}: quality and diagnostics\n{tables}")
    claims = outputs.claims_table(sdir)
    if claims:
        print(f"\n== {study.name}: claims (paired by seed; {sdir / 'claims.csv'})\n{claims}")
    html = os.path.join("reports", "out", sdir.name, "index.html")
    print(f"\nreport:  {html if os.path.exists(html) else '(none written)'}")
    if ml is not None:
        from catlab.tracking import default_uri
        print(f"MLflow:  {ml.uri}  (experiment {study.name}, parent run {pid})")
        print("open it: make mlflow-ui" if ml.uri == default_uri() and "MLFLOW_TRACKING_URI" not in os.environ
              else f"open it: mlflow ui --backend-store-uri {ml.uri}")


# ---- the command ------------------------------------------------------------------------------------
def ablate(study: str, profile: str = "cpu", seeds: int | None = None, workers: int = 1,
           dry_run: bool = False, overrides=(), storage: str | None = None) -> int:
    """Run (or with dry_run, print) a study's grid. Returns 0, or 1 if any cell failed."""
    st = get_study(study)
    n_seeds = check_options(st, profile, seeds, workers)
    overrides = list(overrides)
    if storage:                          # the cells as trials of an Optuna study on a shared storage
        from experiments.grid_storage import ablate_shared
        return ablate_shared(st, profile, n_seeds, workers, dry_run, overrides, storage)
    cells = build_grid(st, profile, n_seeds, overrides)
    if dry_run:
        print_grid(st, profile, cells)
        print(f"dry run: nothing trained. Run it with: {command(st.name, profile, n_seeds, overrides)}")
        return 0
    preflight(cells)

    sdir = study_dir(st.name, profile, overrides)
    sdir.mkdir(parents=True, exist_ok=True)
    info_path = sdir / "study.json"
    ml, pid, created = open_parent(st, profile, overrides, cells, outputs.read_study_json(info_path))
    results: dict[str, dict] = {}

    def save() -> list[dict]:
        rows = outputs.cell_rows(cells, results)
        outputs.write_cells_csv(sdir / "cells.csv", rows)
        outputs.write_study_json(info_path, {
            "study": st.name, "profile": profile, "overrides": overrides, "axes": st.axes,
            "command": command(st.name, profile, n_seeds, overrides), "parent_run_id": pid,
            "tracking_uri": ml.uri if ml else None, "cells": rows})
        return rows

    todo = []
    for c in cells:   # finished cells are skipped here, without building their data
        info = finished_info(c.run_dir, c.cfg)
        if info:
            results[c.name] = {"status": "FINISHED", "reason": "", "mlflow_run_id": info.get("mlflow_run_id")}
            child = info.get("mlflow_run_id")
            if created and pid and child and ml.exists(child):   # a new parent adopts the old children
                ml.set_tags(child, {"mlflow.parentRunId": pid, **c.tags(profile)})
        else:
            todo.append(c)
    save()
    if pid and ml:
        reap_orphans(ml, st.name, pid, cells)
    print(f"{st.name} (profile {profile}): {len(cells)} cells, {len(cells) - len(todo)} already finished, "
          f"{len(todo)} to run; outputs in {sdir}", flush=True)

    def on_done(c: Cell, res: dict) -> None:
        results[c.name] = res
        save()

    try:
        run_cells(cells, todo, profile, pid, workers, on_done)
    except KeyboardInterrupt:
        save()
        if ml and pid:
            ml.end(pid, "KILLED", "interrupted by the user")
        raise
    rows = save()
    failed = [r for r in rows if r["status"] != "FINISHED"]
    if len(failed) < len(rows):
        analyse(sdir.name, profile, st.claims)
        build_report(sdir.name, profile)
    print_summary(st, sdir, rows, ml, pid)
    if ml and pid:
        for name in ("cells.csv", "study.json"):      # the analysis logs its own tables to the parent
            if (sdir / name).exists():
                ml.log_artifact(pid, sdir / name)
        ml.set_tags(pid, {"cells": len(rows), "failed": len(failed)})
        ml.end(pid, "FAILED" if failed else "FINISHED",
               f"{len(failed)} of {len(rows)} cells failed" if failed else "")
    if failed:
        print(f"{len(failed)} of {len(rows)} cells did not finish: " + ", ".join(r["cell"] for r in failed))
    return 1 if failed else 0
