"""A study's grid across machines: `catlab ablate STUDY --storage URL [--workers N]`.

    ablate("ablation-consistency", storage="/shared/optuna/abl.journal")   # on every machine; -> 0 or 1

Every cell of the grid is one trial of an Optuna study with one categorical parameter, `cell` (the cell names),
kept in a shared storage: a journal file on a disk every machine sees, or PostgreSQL (experiments/storage.py: the
same storages, locks, worker liveness and re-queueing of a dead worker's trials as `catlab search`). The Optuna
study is ablate-<study>-<profile>-<hash>, the hash of the grid (every cell's name and config hash), so --seeds and
overrides that change a config make another study, and run.* overrides do not.

The storage holds the grid as a queue. A worker (experiments.worker.work with a GridPlan) starts the trial that
waits in the queue, or, when none waits, queues the first cell that has no trial yet: trial k of the first pass
holds cell k, so an interrupted grid leaves complete seeds behind, as the local grid does. A dead worker's trial
is re-queued with its cell, and each start of the command re-queues, once, the cells that had failed before it.
A trial that got a cell another trial already holds (RUNNING or COMPLETE: a race the lock cannot rule out on
servers without one) ends PRUNED without training. A cell trains through experiments.worker.run_cell, as in the
local grid: the same run dir <hash>-s<seed> (a FINISHED one is skipped, a partly run one resumes from its
checkpoint), the same nested MLflow run under the study's parent (its id in the Optuna study's user_attrs, per
tracking URI). A failed cell ends FAIL and the grid goes on. A worker with nothing left to start waits for the
cells of other workers (and takes over those of a worker that dies), then every command writes cells.csv and
study.json from the storage, prints the summary and exits 1 if any cell failed. One of them (the first to see
the whole grid final, or a command that found nothing to run) runs the analysis and the report, when every
finished cell's run dir is on its disk, and ends the MLflow parent run. Workers on a journal file need a disk
whose flock works across machines; the run dirs are locked the same way.
"""
from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass

from catlab import rundir
from catlab.errors import RunFailed, UserError
from experiments.grid import Cell, build_grid, command, print_grid, study_dir
from experiments.outputs import finish_grid, print_summary, save_grid
from experiments.storage import Liveness, StorageSpec, budget_lock, open_storage, reap, resolve, run_workers
from experiments.worker import holding, mlflow_for, on_stale, preflight, run_cell, shared_parent, threads_for, work

HEARTBEAT_S = 60    # RDB storages: seconds between a trial's heartbeats (stale after 2x)
STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "RUNNING": "RUNNING", "WAITING": "PENDING"}


# ---- the grid as the storage holds it -------------------------------------------------------------------------
def cell_of(t) -> str | None:
    """The cell of a trial (a queued one holds it in its fixed params until it runs)."""
    return t.params.get("cell") or (t.system_attrs.get("fixed_params") or {}).get("cell")


def cell_trials(study, names: list[str]) -> dict:
    """{cell: its trial}: a COMPLETE one, else the latest; duplicates (PRUNED) do not count; untried cells absent."""
    out = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        name = cell_of(t)
        if name in names and t.state.name != "PRUNED" and (name not in out or out[name].state.name != "COMPLETE"):
            out[name] = t
    return out


def pending(study, names: list[str]) -> tuple[list[str], bool, bool]:
    """(the cells without a trial, a trial waits in the queue, some cell is still running). A queued twin of a
    cell that another trial holds counts too: it is started, and pruned at once."""
    trials = cell_trials(study, names)
    queued = any(t.state.name == "WAITING" for t in study.get_trials(deepcopy=False))
    return [n for n in names if n not in trials], queued, any(t.state.name == "RUNNING" for t in trials.values())


def cell_results(study, names: list[str]) -> dict:
    """{cell: {status, reason, mlflow_run_id}} for outputs.cell_rows (untried cells: PENDING)."""
    res = {}
    for name, t in cell_trials(study, names).items():
        a = t.user_attrs
        reason = a.get("reason", "") if t.state.name == "COMPLETE" else a.get("reason") or a.get("error", "")
        res[name] = {"status": STATUS.get(t.state.name, t.state.name), "reason": reason or "",
                     "mlflow_run_id": a.get("mlflow_run_id")}
    return res


def requeue_failed(study, names: list[str]) -> list[str]:
    """Queue one more trial for each cell whose trial FAILED (call under the lock, after reap)."""
    failed = [(n, t) for n, t in cell_trials(study, names).items() if t.state.name == "FAIL"]
    for name, t in failed:
        study.enqueue_trial({"cell": name}, user_attrs={"retry_of": t.number})
    return [n for n, _ in failed]


# ---- a worker's plan: one cell, one trial ----------------------------------------------------------------------
@dataclass
class GridPlan:
    """What a worker of the grid needs (picklable: it travels to spawned worker processes)."""
    cells: list                      # the grid's Cells, in its order
    profile: str
    storage: StorageSpec
    name: str                        # the Optuna study
    parent_run_id: str | None = None
    threads: int | None = None       # torch threads of a spawned worker
    heartbeat = HEARTBEAT_S
    deadline = None
    plain = (Exception,)             # what a trial raised is recorded as its message

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cells]

    @property
    def streak(self) -> int:
        return 2 * len(self.cells) + 1   # trials in a row that trained no cell (twins, or none): never expected

    def stop_line(self, n: int) -> str:
        return f"{n} trials in a row trained no cell: this worker stops"

    def mlflow(self):
        return mlflow_for(self.cells[0].cfg)

    def load_kwargs(self) -> dict:
        return {}

    def on_stale(self, ml, say):
        """A dead worker's trial: its cell's MLflow run ends KILLED (the retry resumes it); the cell is re-queued."""
        cells = {c.name: c for c in self.cells}

        def run_id(t):
            c = cells.get(cell_of(t))
            return rundir.read_info(c.run_dir, strict=False).get("mlflow_run_id") if c else None
        return on_stale(ml, run_id, "its grid worker died",
                        lambda t: say(f"trial {t.number} ({cell_of(t)}) fail: its worker died; re-queued"))

    def next_action(self, study):
        untried, queued, running = pending(study, self.names)
        if untried and not queued:
            study.enqueue_trial({"cell": untried[0]})      # the grid's order: the first cell without a trial
        return "run" if untried or queued else "wait" if running else 0

    def run(self, trial, w) -> float:
        import optuna
        names = self.names
        name = trial.suggest_categorical("cell", names)
        trial.set_user_attr("worker", w.liveness.tag)
        twin = [t.number for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number
                and cell_of(t) == name and t.state.name in ("RUNNING", "COMPLETE")]
        if twin:
            trial.set_user_attr("duplicate_of", twin[0])
            w.lock.release()
            raise optuna.TrialPruned(f"{name} is held by trial {twin[0]}")
        w.current = (name, trial.number)
        c, k = self.cells[names.index(name)], names.index(name) + 1
        tags = {**c.tags(self.profile), "trial": trial.number, "optuna_study": self.name}
        with holding(trial, w.lock, c.cfg):
            info = rundir.is_finished(c.run_dir, c.cfg)
            if info:                                        # FINISHED with this config hash: nothing to train
                res = {"status": "FINISHED", "reason": "already finished", "step": info.get("step"),
                       "mlflow_run_id": info.get("mlflow_run_id"), "seconds": 0.0}
                if w.ml is not None and self.parent_run_id and res["mlflow_run_id"] \
                        and w.ml.exists(res["mlflow_run_id"]):
                    w.ml.set_tags(res["mlflow_run_id"], {"mlflow.parentRunId": self.parent_run_id, **tags})
            else:
                start = f"[{k}/{len(names)}] start {name} -> {c.run_dir}"
                res = run_cell(c.cfg, self.parent_run_id, tags, self.threads, w.say(start, False))
        for key in ("status", "reason", "step", "mlflow_run_id", "seconds"):
            if res.get(key) is not None:
                trial.set_user_attr(key, res[key])
        if res["status"] != "FINISHED":
            raise RunFailed(res.get("reason") or f"the run ended {res['status']}")
        return float(res["seconds"])

    def done(self, t, w) -> bool:
        """Say how the trial ended; True when it trained no cell (a twin, or none)."""
        name, a, names = cell_of(t), t.user_attrs, self.names
        k = f"[{names.index(name) + 1}/{len(names)}]" if name in names else ""
        if "duplicate_of" in a:
            w.say(f"{k} skipped {name}: held by trial {a['duplicate_of']}")
        else:
            reason = a.get("reason") or a.get("error") or ""
            status = STATUS.get(t.state.name, t.state.name).lower()
            w.say(f"{k} {status} {name} in {a.get('seconds', 0):.0f}s" + (f" -- {reason}" if reason else ""))
        return "duplicate_of" in a or name not in names

    def interrupted(self, w) -> None:
        """Ctrl-C: the trial ended FAIL; queue its cell again, for this grid's other workers."""
        if w.current:
            w.study.enqueue_trial({"cell": w.current[0]}, user_attrs={"retry_of": w.current[1]})


# ---- the command ----------------------------------------------------------------------------------------------
def optuna_name(study: str, profile: str, cells: list[Cell]) -> str:
    grid = "\n".join(f"{c.name} {c.cfg.hash()}" for c in cells)
    return f"ablate-{study}-{profile}-{hashlib.sha256(grid.encode()).hexdigest()[:8]}"


def open_study(plan: GridPlan, identity: dict):
    """Create or load the grid's Optuna study; under the lock, reap dead workers' cells and re-queue failed ones.
    A storage that cannot be opened is a one-line UserError naming --storage."""
    import optuna
    spec = plan.storage
    try:
        storage = open_storage(spec, HEARTBEAT_S)
    except OSError as e:
        raise UserError(f"--storage must be a journal file in a writable folder (or a database URL like "
                        f"postgresql://user@host/db), but got storage={str(spec)!r} ({e.strerror or e})") from None
    with budget_lock(spec, plan.name):
        study = optuna.create_study(study_name=plan.name, storage=storage, load_if_exists=True, direction="minimize")
        if "catlab" not in study.user_attrs:
            study.set_user_attr("catlab", identity)
        liveness = Liveness(spec)
        try:
            reap(study, liveness, plan.on_stale(None, print))
        finally:
            liveness.close()
        retried = requeue_failed(study, plan.names)
    return study, retried


def claim_finish(study, plan: GridPlan, again: bool) -> bool:
    """True for one command per final state of the grid (and for a command that found it final: again=True):
    it runs the analysis and ends the MLflow parent."""
    with budget_lock(plan.storage, plan.name):
        mark = len(study.get_trials(deepcopy=False))
        if any(pending(study, plan.names)) or (study.user_attrs.get("finished_at_trials") == mark and not again):
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
    threads = threads_for(workers)
    plan = GridPlan([dataclasses.replace(c, cfg=c.cfg.override({"run.progress": False})) for c in cells]
                    if threads else cells, profile, spec, name, None, threads)   # bars of parallel workers interleave
    identity = {"study": st.name, "profile": profile, "seeds": n_seeds, "cells": names,
                "overrides": sorted(o for o in overrides if not o.startswith("run."))}
    study, retried = open_study(plan, identity)
    preflight([c.cfg for c in cells])
    ml = mlflow_for(cells[0].cfg)
    key = f"mlflow_parent_run_id {ml.uri}" if ml else ""
    plan.parent_run_id = pid = shared_parent(
        study, spec, name, ml, key, st.name,
        {"study": st.name, "profile": profile, "kind": "study", "storage": str(spec), "optuna_study": name},
        {"study": st.name, "profile": profile, "axes": ",".join(st.axes), "overrides": " ".join(overrides) or "none",
         "storage": str(spec)})
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
    try:
        codes = run_workers(work, plan, workers, "grid")
    except KeyboardInterrupt:
        save()
        raise
    rows = save()
    final = not any(pending(study, names))
    failed = [r for r in rows if r["status"] != "FINISHED"]
    if claim_finish(study, plan, again):
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
