"""`catlab ablate STUDY [--profile P] [--seeds N] [--workers N] [--dry-run] [--storage URL] [KEY=VALUE ...]`:
run a study's grid, here or across machines (docs/architecture.md, "The run engine")."""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from catlab.rundir import is_finished, last_checkpoint, read_info
from experiments.grid import Cell, build_grid, check_options, command, get_study, print_grid, study_dir
from experiments.grid_storage import GridPlan, cell_results, claim_finish, open_study, optuna_name, pending
from experiments.outputs import finish_grid, print_summary, read_study_json, save_grid
from experiments.storage import resolve, warn_parallel
from experiments.worker import mlflow_for, preflight, run_workers, shared_parent, threads_for, work


def reap_orphans(ml, study: str, pid: str, cells: list[Cell]) -> None:
    """Mark KILLED the child runs left RUNNING by a killed grid whose run dir never recorded them."""
    known = {read_info(c.run_dir, strict=False).get("mlflow_run_id") for c in cells}
    try:
        runs = ml.runs(study, f"tags.mlflow.parentRunId = '{pid}' and attributes.status = 'RUNNING'")
    except Exception:  # noqa: BLE001 -- MLflow down: nothing to reap
        return
    for run_id in runs.get("run_id", []):
        if run_id not in known:
            ml.end(run_id, "KILLED", "orphaned by an interrupted grid")


def _last_step(run_dir) -> int:
    """The last step a cell logged in metrics.jsonl, for the grid's progress bar."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = f.read().decode(errors="ignore").strip().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


def ablate(study: str, profile: str = "cpu", seeds: int | None = None, workers: int = 1,
           dry_run: bool = False, overrides=(), storage: str | None = None) -> int:
    """Run (or with dry_run, print) a study's grid. Returns 0, or 1 if a cell failed or the grid is not done."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    st = get_study(study)
    n_seeds = check_options(st, profile, seeds, workers)
    overrides = list(overrides)
    spec = resolve(storage, st.name) if storage else None
    cells = build_grid(st, profile, n_seeds, overrides)
    name = optuna_name(st.name, profile, cells) if spec else "grid"
    cmd = command(st.name, profile, n_seeds, overrides) + (f" --storage {spec}" if spec else "")
    if dry_run:
        print_grid(st, profile, cells)
        print("dry run: nothing trained. " + (f"Cells would be trials of the Optuna study {name} in {spec}" if spec
                                              else f"Run it with: {cmd}"))
        return 0
    if spec:
        warn_parallel(spec, workers)
    sdir = study_dir(st.name, profile, overrides)
    known = None if spec else read_study_json(sdir / "study.json").get("parent_run_id")
    before = {} if spec else {c.name: info for c in cells if (info := is_finished(c.run_dir, c.cfg))}
    tmp = None if spec else tempfile.TemporaryDirectory(prefix="catlab-grid-")   # the local grid's private journal
    todo = cells if spec else [c for c in cells if c.name not in before]
    threads = threads_for(workers)
    plan = GridPlan([dataclasses.replace(c, cfg=c.cfg.override({"run.progress": False})) for c in cells]
                    if threads else cells, profile, spec or resolve(str(Path(tmp.name) / "grid.journal"), st.name),
                    name, None, threads, None if spec else [c.name for c in todo],
                    shared=spec is not None)                       # bars of parallel workers interleave
    identity = {"study": st.name, "profile": profile, "seeds": n_seeds, "cells": [c.name for c in cells],
                "overrides": sorted(o for o in overrides if not o.startswith("run."))}
    grid, retried = open_study(plan, identity)
    preflight([c.cfg for c in cells])
    ml = mlflow_for(cells[0].cfg)
    key = f"mlflow_parent_run_id {ml.uri}" if ml else ""
    if known:
        grid.set_user_attr(key, known)
    where = {"storage": str(spec), "optuna_study": name} if spec else {}
    plan.parent_run_id = pid = shared_parent(
        grid, plan.storage, name, ml, key, st.name, {"study": st.name, "profile": profile, "kind": "study", **where},
        {"study": st.name, "profile": profile, "axes": ",".join(st.axes), "overrides": " ".join(overrides) or "none",
         **({"storage": str(spec)} if spec else {})})
    sdir.mkdir(parents=True, exist_ok=True)
    for c in cells:
        child = before.get(c.name, {}).get("mlflow_run_id")
        if pid and pid != known and child and ml.exists(child):   # a new parent adopts the old children
            ml.set_tags(child, {"mlflow.parentRunId": pid, **c.tags(profile)})

    def save() -> list[dict]:
        done = {n: {"status": "FINISHED", "reason": "", "mlflow_run_id": i.get("mlflow_run_id")}
                for n, i in before.items()}
        return save_grid(sdir, st, cells, {**done, **cell_results(grid, plan.names)}, {
            "profile": profile, "overrides": overrides, "command": cmd, "parent_run_id": pid,
            "tracking_uri": ml.uri if ml else None, **where})
    rows = save()
    again = not any(pending(grid, plan.names))          # nothing to run: the analysis and the summary again
    if spec:
        n_done = sum(r["status"] == "FINISHED" for r in rows)
        print(f"{st.name} (profile {profile}): {len(cells)} cells as trials of {name} in {spec}; {n_done} finished"
              + (f", {len(retried)} failed before and re-queued" if retried else "")
              + f"; {workers} worker process(es) here; outputs in {sdir}", flush=True)
    else:
        if pid and ml:
            reap_orphans(ml, st.name, pid, cells)
        print(f"{st.name} (profile {profile}): {len(cells)} cells, {len(before)} already finished, "
              f"{len(plan.names)} to run; outputs in {sdir}", flush=True)
        if plan.names and threads:
            print(f"{len(plan.names)} cells on {workers} worker processes, {threads} torch thread(s) each", flush=True)
    bar = tqdm(total=sum(c.cfg.train.steps for c in todo), unit="step", desc="grid", dynamic_ncols=True,
               disable=not threads or again)

    def poll() -> None:
        bar.n = sum(min(_last_step(c.run_dir), c.cfg.train.steps) for c in todo)
        bar.refresh()
    try:
        codes = run_workers(work, plan, workers, "grid", poll) if not again else []
    except KeyboardInterrupt:
        save()
        if ml and pid and spec is None:
            ml.end(pid, "KILLED", "interrupted by the user")
        raise
    finally:
        bar.close()
    rows = save()
    final = not any(pending(grid, plan.names))
    failed = [r for r in rows if r["status"] != "FINISHED"]
    if claim_finish(grid, plan, again):
        missing = [r["cell"] for r in rows if r["status"] == "FINISHED"
                   and not last_checkpoint(r["run_dir"]).exists()]
        if missing:
            print(f"analysis: skipped here: the run dirs of {', '.join(missing)} are not on this disk; copy "
                  f"{study_dir(st.name) / 'runs'} here, then: catlab analyze {sdir.name}")
        finish_grid(st, sdir, profile, rows, ml, pid, analysis=not missing)
    elif final:
        print("analysis: left to the command that saw the grid final first")
    if tmp is not None:
        tmp.cleanup()
    print_summary(st, sdir, rows, ml, pid)
    if spec:
        print(f"storage: {spec} (Optuna study {name})")
    if not final or any(codes):
        print(f"{len(failed)} of {len(rows)} cells did not finish"
              + (f" (worker exit codes {codes})" if any(codes) else "") + f"; run the same command again: {cmd}")
    elif failed:
        print(f"{len(failed)} of {len(rows)} cells did not finish: " + ", ".join(r["cell"] for r in failed))
    return 1 if failed or not final else 0
