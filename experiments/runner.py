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
4. cells.csv and study.json, then the analysis (analysis.study), the report (reports.build), a summary.
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm.auto import tqdm

from catlab.rundir import is_finished, read_info
from experiments.grid import Cell, build_grid, check_options, command, get_study, print_grid, study_dir
from experiments.outputs import finish_grid, print_summary, read_study_json, save_grid
from experiments.worker import init_worker, killed, mlflow_for, open_parent, preflight, run_cell, threads_for


# ---- MLflow: the study's parent run ----------------------------------------------------------------
def study_parent(study, profile: str, overrides: list[str], cells: list[Cell], previous: dict):
    """(MLflow client, parent run id, created?); reuses study.json's parent (study.json sits in the outputs dir
    of this profile and these overrides, so it names this grid's parent)."""
    ml = mlflow_for(cells[0].cfg)
    if ml is None:
        return None, None, False
    pid = previous.get("parent_run_id")
    new = open_parent(ml, study.name, pid, {"study": study.name, "profile": profile, "kind": "study"},
                      {"study": study.name, "profile": profile, "axes": ",".join(study.axes),
                       "overrides": " ".join(overrides) or "none"})
    return ml, new, new != pid


def reap_orphans(ml, study: str, pid: str, cells: list[Cell]) -> None:
    """Child runs left RUNNING by a killed grid whose run dir never recorded them: mark them KILLED."""
    known = {read_info(c.run_dir, strict=False).get("mlflow_run_id") for c in cells}
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


def _result(fut) -> dict:
    try:
        return fut.result()
    except BrokenProcessPool as e:
        return {"status": "FAILED", "reason": f"worker process died ({e})", "seconds": 0.0}


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
    threads = threads_for(workers)
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
                    bar.clear()
                    done(futures[fut], _result(fut))
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
                    res = _result(fut)
                    if futures[fut].name not in recorded:
                        done(futures[fut], res)
            raise


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
    preflight([c.cfg for c in cells])

    sdir = study_dir(st.name, profile, overrides)
    sdir.mkdir(parents=True, exist_ok=True)
    ml, pid, created = study_parent(st, profile, overrides, cells, read_study_json(sdir / "study.json"))
    results: dict[str, dict] = {}

    def save() -> list[dict]:
        return save_grid(sdir, st, cells, results, {
            "profile": profile, "overrides": overrides,
            "command": command(st.name, profile, n_seeds, overrides), "parent_run_id": pid,
            "tracking_uri": ml.uri if ml else None})

    todo = []
    for c in cells:   # finished cells are skipped here, without building their data
        info = is_finished(c.run_dir, c.cfg)
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
    finish_grid(st, sdir, profile, rows, ml, pid)
    print_summary(st, sdir, rows, ml, pid)
    if failed:
        print(f"{len(failed)} of {len(rows)} cells did not finish: " + ", ".join(r["cell"] for r in failed))
    return 1 if failed else 0
