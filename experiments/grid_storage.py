"""A study's grid across machines: `catlab ablate STUDY --storage URL [--workers N]`.

    ablate("ablation-consistency", storage="/shared/optuna/abl.journal")   # on every machine; -> 0 or 1

Every cell of the grid is one trial of an Optuna study with a GridSampler over one categorical parameter,
`cell` (the cell names, in the grid's seed-by-seed order), kept in a shared storage: a journal file on a disk
every machine sees, or PostgreSQL (experiments/search_storage.py: the same storages, locks, worker liveness and
re-queueing of a dead worker's trials as `catlab search`). The Optuna study is ablate-<study>-<profile>-<hash>,
the hash of the grid (every cell's name and config hash), so --seeds and overrides that change a config make
another study, and run.* overrides do not.

A worker, under the storage's lock: reap the trials of dead workers (FAIL, re-queued with the same cell), and
while a cell has no trial yet or a trial waits in the queue, start one (study.optimize(n_trials=1): the grid
point is taken, then the lock is released). A trial that got a cell another trial already holds (RUNNING or
COMPLETE: a race the lock cannot rule out on servers without one) ends PRUNED without training. A cell trains
through experiments.cell.run_cell, as in the local grid: the same run dir <hash>-s<seed> (a FINISHED one is
skipped, a partly run one resumes from its checkpoint), the same nested MLflow run under the study's parent
(its id in the Optuna study's user_attrs, per tracking URI). A failed cell ends FAIL and the grid goes on; each
start of the command re-queues, once, the cells that had failed before it. A worker with nothing left to
start waits for the cells of other workers (and takes over those of a worker that dies), then every command
writes cells.csv and study.json from the storage, prints the summary and exits 1 if any cell failed. One of
them (the first to see the whole grid final, or a command that found nothing to run) runs the analysis and
the report, when every finished cell's run dir is on its disk, and ends the MLflow parent run. Workers on a
journal file need a disk whose flock works across machines; the run dirs are locked the same way.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass

from catlab import rundir
from catlab.errors import RunFailed, UserError
from experiments.cell import preflight, run_cell, threads_for
from experiments.grid import Cell, build_grid, command, get_study, print_grid, study_dir
from experiments.grid_trials import STATUS, cell_of, cell_results, cell_trials, grid_sampler, pending, requeue_failed
from experiments.search_storage import Liveness, StorageSpec, budget_lock, open_storage, reap, resolve, run_workers
from experiments.worker import holding, mlflow_for, on_stale, open_worker, recorded, say_for, shared_parent, \
    worker_loop
from experiments.wrapup import finish_grid, print_summary, save_grid

HEARTBEAT_S = 60    # RDB storages: seconds between a trial's heartbeats (stale after 2x)


@dataclass
class GridPlan:
    """What a worker needs (picklable: it travels to spawned worker processes)."""
    study: str
    profile: str
    seeds: int
    overrides: list
    storage: StorageSpec
    name: str                        # the Optuna study
    parent_run_id: str | None = None
    threads: int | None = None       # torch threads of a spawned worker

    def cells(self) -> list[Cell]:
        cells = build_grid(get_study(self.study), self.profile, self.seeds, self.overrides)
        if self.threads:                 # bars of parallel workers would interleave
            for c in cells:
                c.cfg = c.cfg.override({"run.progress": False})
        return cells


def optuna_name(study: str, profile: str, cells: list[Cell]) -> str:
    grid = "\n".join(f"{c.name} {c.cfg.hash()}" for c in cells)
    return f"ablate-{study}-{profile}-{hashlib.sha256(grid.encode()).hexdigest()[:8]}"


def open_grid(spec: StorageSpec):
    """The storage, with a one-line UserError naming --storage for what cannot be opened."""
    try:
        return open_storage(spec, HEARTBEAT_S)
    except OSError as e:
        raise UserError(f"--storage must be a journal file in a writable folder (or a database URL like "
                        f"postgresql://user@host/db), but got storage={str(spec)!r} ({e.strerror or e})") from None


def stale_cells(cells: dict, ml, say):
    """A dead worker's trial: its cell's MLflow run ends KILLED (the retry resumes it); the cell is re-queued."""
    def run_id(t):
        c = cells.get(cell_of(t))
        return rundir.read_info(c.run_dir, strict=False).get("mlflow_run_id") if c else None
    return on_stale(ml, run_id, "its grid worker died",
                    lambda t: say(f"trial {t.number} ({cell_of(t)}) fail: its worker died; re-queued"))


# ---- one cell: one trial --------------------------------------------------------------------------------------
def run_trial(trial, plan: GridPlan, cells: dict, names: list[str], lock, liveness: Liveness, ml, say,
              current: dict) -> float:
    import optuna
    name = trial.suggest_categorical("cell", names)
    trial.set_user_attr("worker", liveness.tag)
    current["cell"] = name
    twin = [t.number for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number
            and cell_of(t) == name and t.state.name in ("RUNNING", "COMPLETE")]
    if twin:
        trial.set_user_attr("duplicate_of", twin[0])
        untried = [n for n in names if n not in cell_trials(trial.study, names)]
        if untried:                                     # the sampler raced: make sure the grid still moves on
            trial.study.enqueue_trial({"cell": untried[0]})
        lock.release()
        current.clear()
        raise optuna.TrialPruned(f"{name} is held by trial {twin[0]}")
    c, k = cells[name], names.index(name) + 1
    tags = {**c.tags(plan.profile), "trial": trial.number, "optuna_study": plan.name}
    with holding(trial, lock, c.cfg):
        info = rundir.is_finished(c.run_dir, c.cfg)
        if info:                                        # FINISHED with this config hash: nothing to train
            res = {"status": "FINISHED", "reason": "already finished", "step": info.get("step"),
                   "mlflow_run_id": info.get("mlflow_run_id"), "seconds": 0.0}
            if ml is not None and plan.parent_run_id and res["mlflow_run_id"] and ml.exists(res["mlflow_run_id"]):
                ml.set_tags(res["mlflow_run_id"], {"mlflow.parentRunId": plan.parent_run_id, **tags})
        else:
            start = f"[{k}/{len(names)}] start {name} -> {c.run_dir}"
            res = run_cell(c.cfg.to_dict(), plan.parent_run_id, tags, plan.threads, say(start, False))
    for key in ("status", "reason", "step", "mlflow_run_id", "seconds"):
        if res.get(key) is not None:
            trial.set_user_attr(key, res[key])
    if res["status"] != "FINISHED":
        raise RunFailed(res.get("reason") or f"the run ended {res['status']}")
    return float(res["seconds"])


def work(plan: GridPlan, index: int = 0) -> int:
    """Start cells until none is left to start, then wait for the running ones (and take over a dead worker's).
    0, or 1 when trial after trial trains no cell (the sampler hands out held cells, or none)."""
    say = say_for(index)
    cell_list = plan.cells()
    cells, names = {c.name: c for c in cell_list}, [c.name for c in cell_list]
    ml = mlflow_for(cell_list[0].cfg)
    stale = stale_cells(cells, ml, say)
    study, lock, liveness = open_worker(plan.storage, plan.name, HEARTBEAT_S, stale, plan.threads,
                                        sampler=grid_sampler(names))
    idle, current = {"n": 0}, {}      # trials in a row that trained no cell (a twin, or none); the running one

    def done(study, t) -> None:
        current.clear()
        name, a = cell_of(t), t.user_attrs
        k = f"[{names.index(name) + 1}/{len(names)}]" if name in names else ""
        idle["n"] = idle["n"] + 1 if "duplicate_of" in a or name not in names else 0
        if "duplicate_of" in a:
            say(f"{k} skipped {name}: held by trial {a['duplicate_of']}")
        else:
            reason = a.get("reason") or a.get("error") or ""
            status = STATUS.get(t.state.name, t.state.name).lower()
            say(f"{k} {status} {name} in {a.get('seconds', 0):.0f}s" + (f" -- {reason}" if reason else ""))

    def run(trial):
        current.update(number=trial.number)
        return run_trial(trial, plan, cells, names, lock, liveness, ml, say, current)

    def next_action():
        can_start, running = pending(study, names)
        return "run" if can_start else "wait" if running else 0

    def after():
        if idle["n"] > 2 * len(names):            # never expected: the sampler keeps failing us
            say(f"{idle['n']} trials in a row trained no cell: this worker stops")
            return 1
        return None
    try:
        return worker_loop(study, lock, liveness, stale, next_action, recorded(run), done, after)
    except KeyboardInterrupt:             # the trial ended FAIL: queue its cell again, for this grid's other workers
        if current.get("cell"):
            study.enqueue_trial({"cell": current["cell"]}, user_attrs={"retry_of": current["number"]})
        raise


# ---- the command ----------------------------------------------------------------------------------------------
def open_study(spec: StorageSpec, name: str, names: list[str], identity: dict, cells: list[Cell]):
    """Create or load the grid's Optuna study; under the lock, reap dead workers' cells and re-queue failed ones."""
    import optuna
    storage = open_grid(spec)
    with budget_lock(spec, name):
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                    sampler=grid_sampler(names), direction="minimize")
        if "catlab" not in study.user_attrs:
            study.set_user_attr("catlab", identity)
        liveness = Liveness(spec)
        try:
            reap(study, liveness, stale_cells({c.name: c for c in cells}, None, print))
        finally:
            liveness.close()
        retried = requeue_failed(study, names)
    return study, retried


def claim_finish(study, spec: StorageSpec, name: str, names: list[str], again: bool) -> bool:
    """True for one command per final state of the grid (and for a command that found it final: again=True):
    it runs the analysis and ends the MLflow parent."""
    with budget_lock(spec, name):
        can_start, running = pending(study, names)
        mark = len(study.get_trials(deepcopy=False))
        if can_start or running or (study.user_attrs.get("finished_at_trials") == mark and not again):
            return False
        study.set_user_attr("finished_at_trials", mark)
        return True


def ablate_shared(st, profile: str, n_seeds: int, workers: int, dry_run: bool, overrides: list,
                  storage: str) -> int:
    """`catlab ablate STUDY --storage URL`: pull the grid's cells from a shared Optuna storage (see the top)."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = resolve(storage, st.name)
    cells = build_grid(st, profile, n_seeds, overrides)
    names, name = [c.name for c in cells], optuna_name(st.name, profile, cells)
    if dry_run:
        print_grid(st, profile, cells)
        print(f"dry run: nothing trained. Cells would be trials of the Optuna study {name} in {spec}")
        return 0
    if spec.kind == "sqlite" and workers > 1:
        print("catlab: warning: sqlite storage locks under parallel workers; use a journal file or PostgreSQL "
              "with --workers > 1", file=sys.stderr)
    identity = {"study": st.name, "profile": profile, "seeds": n_seeds, "cells": names,
                "overrides": sorted(o for o in overrides if not o.startswith("run."))}
    study, retried = open_study(spec, name, names, identity, cells)
    preflight(cells)
    ml = mlflow_for(cells[0].cfg)
    key = f"mlflow_parent_run_id {ml.uri}" if ml else ""
    pid = shared_parent(study, spec, name, ml, key, st.name,
                        {"study": st.name, "profile": profile, "kind": "study", "storage": str(spec),
                         "optuna_study": name},
                        {"study": st.name, "profile": profile, "axes": ",".join(st.axes),
                         "overrides": " ".join(overrides) or "none", "storage": str(spec)})
    sdir = study_dir(st.name, profile, overrides)
    cmd = f"{command(st.name, profile, n_seeds, overrides)} --storage {spec}"

    def save() -> list[dict]:
        return save_grid(sdir, st, cells, cell_results(study, names), {
            "profile": profile, "overrides": overrides, "command": cmd,
            "parent_run_id": pid, "tracking_uri": ml.uri if ml else None, "storage": str(spec), "optuna_study": name})
    rows = save()
    again = not any(pending(study, names))          # nothing to run: the analysis and the summary, as locally
    n_done = sum(r["status"] == "FINISHED" for r in rows)
    print(f"{st.name} (profile {profile}): {len(cells)} cells as trials of {name} in {spec}; {n_done} finished"
          + (f", {len(retried)} failed before and re-queued" if retried else "")
          + f"; {workers} worker process(es) here; outputs in {sdir}", flush=True)
    plan = GridPlan(st.name, profile, n_seeds, list(overrides), spec, name, pid, threads_for(workers))
    try:
        codes = run_workers(work, plan, workers, "grid")
    except KeyboardInterrupt:
        save()
        raise
    rows = save()
    final = not any(pending(study, names))
    failed = [r for r in rows if r["status"] != "FINISHED"]
    if claim_finish(study, spec, name, names, again):
        missing = [r["cell"] for r in rows if r["status"] == "FINISHED"
                   and not rundir.last_checkpoint(r["run_dir"]).exists()]
        if missing:
            print(f"analysis: skipped here: the run dirs of {', '.join(missing)} are not on this disk; copy "
                  f"{study_dir(st.name) / 'runs'} here, then: catlab analyze {sdir.name}")
        finish_grid(st, sdir, profile, rows, ml, pid, analysis=not missing)
    elif final:
        print("analysis: left to the command that saw the grid final first")
    print_summary(st, sdir, rows, ml, pid)
    print(f"storage: {spec} (Optuna study {name})")
    if not final or any(codes):
        print(f"{len(failed)} of {len(rows)} cells did not finish"
              + (f" (worker exit codes {codes})" if any(codes) else "") + f"; run the same command again: {cmd}")
    elif failed:
        print(f"{len(failed)} of {len(rows)} cells did not finish: " + ", ".join(r["cell"] for r in failed))
    return 1 if failed or not final else 0
