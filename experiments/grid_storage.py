"""A study's grid as trials of an Optuna study, one per cell: the GridPlan its workers follow, and the grid as
the storage holds it (docs/architecture.md, "The run engine")."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from catlab import rundir
from catlab.errors import RunFailed, UserError
from experiments.grid import Cell
from experiments.storage import Liveness, StorageSpec, budget_lock, open_storage, reap
from experiments.worker import holding, mlflow_for, on_stale

HEARTBEAT_S = 60    # RDB storages: seconds between a trial's heartbeats (stale after 2x)
STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "RUNNING": "RUNNING", "WAITING": "PENDING"}


def cell_of(t) -> str | None:
    """The cell of a trial (a queued one holds it in its fixed params until it runs)."""
    return t.params.get("cell") or (t.system_attrs.get("fixed_params") or {}).get("cell")


def cell_trials(study, names: list[str]) -> dict:
    """{cell: its trial}: a COMPLETE one, else the latest that is not a PRUNED twin (untried cells absent)."""
    out = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        name = cell_of(t)
        if name in names and t.state.name != "PRUNED" and (name not in out or out[name].state.name != "COMPLETE"):
            out[name] = t
    return out


def pending(study, names: list[str]) -> tuple[list[str], bool, bool]:
    """(the cells without a trial, a trial waits in the queue, some cell is still running)."""
    trials = cell_trials(study, names)
    queued = any(t.state.name == "WAITING" for t in study.get_trials(deepcopy=False))
    return [n for n in names if n not in trials], queued, any(t.state.name == "RUNNING" for t in trials.values())


def status_of(t) -> str:
    """A cell's status from its trial (a FAIL trial that Ctrl-C stopped: KILLED, or PENDING if not started)."""
    if t.state.name == "FAIL" and t.user_attrs.get("status") in ("KILLED", "PENDING"):
        return t.user_attrs["status"]
    return STATUS.get(t.state.name, t.state.name)


def cell_results(study, names: list[str]) -> dict:
    """{cell: {status, reason, mlflow_run_id}} for outputs.cell_rows (untried cells: PENDING)."""
    res = {}
    for name, t in cell_trials(study, names).items():
        a = t.user_attrs
        reason = a.get("reason", "") if t.state.name == "COMPLETE" else a.get("reason") or a.get("error", "")
        res[name] = {"status": status_of(t), "reason": reason or "", "mlflow_run_id": a.get("mlflow_run_id")}
    return res


def requeue_failed(study, names: list[str]) -> list[str]:
    """Queue one more trial for each cell whose trial FAILED (call under the lock, after reap)."""
    failed = [(n, t) for n, t in cell_trials(study, names).items() if t.state.name == "FAIL"]
    for name, t in failed:
        study.enqueue_trial({"cell": name}, user_attrs={"retry_of": t.number})
    return [n for n, _ in failed]


@dataclass
class GridPlan:
    """What a worker of the grid needs (picklable, for spawned worker processes)."""
    cells: list                      # the grid's Cells, in its order
    profile: str
    storage: StorageSpec
    name: str                        # the Optuna study
    parent_run_id: str | None = None
    threads: int | None = None       # torch threads of a spawned worker
    todo: list | None = None         # the names of the cells to run (None: every cell)
    shared: bool = True              # a storage other commands may share (False: the local grid's private journal)
    heartbeat = HEARTBEAT_S
    deadline = None
    plain = (Exception,)             # what a trial raised is recorded as its message

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cells] if self.todo is None else self.todo

    def index(self, name: str) -> str:
        names = [c.name for c in self.cells]
        return f"[{names.index(name) + 1}/{len(names)}]" if name in names else ""

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
        c = next(c for c in self.cells if c.name == name)
        tags = {**c.tags(self.profile), **({"trial": trial.number, "optuna_study": self.name} if self.shared else {})}
        with holding(trial, w.lock, c.cfg):
            info = rundir.is_finished(c.run_dir, c.cfg)
            if info:                                        # FINISHED with this config hash: nothing to train
                res = {"status": "FINISHED", "reason": "already finished", "step": info.get("step"),
                       "mlflow_run_id": info.get("mlflow_run_id"), "seconds": 0.0}
                if w.ml is not None and self.parent_run_id and res["mlflow_run_id"] \
                        and w.ml.exists(res["mlflow_run_id"]):
                    w.ml.set_tags(res["mlflow_run_id"], {"mlflow.parentRunId": self.parent_run_id, **tags})
            else:
                start = f"{self.index(name)} start {name} -> {c.run_dir}"
                res = w.run_cell(c.cfg, self.parent_run_id, tags, w.say(start, False))
        for key in ("status", "reason", "step", "mlflow_run_id", "seconds"):
            if res.get(key) is not None:
                trial.set_user_attr(key, res[key])
        if res.get("interrupted") and self.shared:     # Ctrl-C: the cell again, for this grid's other workers
            trial.study.enqueue_trial({"cell": name}, user_attrs={"retry_of": trial.number})
        if res["status"] != "FINISHED":
            raise RunFailed(res.get("reason") or f"the run ended {res['status']}")
        return float(res["seconds"])

    def done(self, t, w) -> bool:
        """Say how the trial ended; True when it trained no cell."""
        name, a, k = cell_of(t), t.user_attrs, self.index(cell_of(t))
        if "duplicate_of" in a:
            w.say(f"{k} skipped {name}: held by trial {a['duplicate_of']}")
        else:
            reason = a.get("reason") or a.get("error") or ""
            s = a.get("seconds", 0)
            w.say(f"{k} {status_of(t).lower()} {name} in " + (f"{s:.0f}s" if s < 90 else f"{s / 60:.1f}min")
                  + (f" -- {reason}" if reason else ""))
        return "duplicate_of" in a or name not in self.names


def optuna_name(study: str, profile: str, cells: list[Cell]) -> str:
    grid = "\n".join(f"{c.name} {c.cfg.hash()}" for c in cells)
    return f"ablate-{study}-{profile}-{hashlib.sha256(grid.encode()).hexdigest()[:8]}"


def open_study(plan: GridPlan, identity: dict):
    """Create or load the grid's Optuna study; under the lock, reap dead workers' cells, re-queue failed ones."""
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
    """True for one command per final state of the grid (or again=True): it runs the analysis."""
    with budget_lock(plan.storage, plan.name):
        mark = len(study.get_trials(deepcopy=False))
        if any(pending(study, plan.names)) or (study.user_attrs.get("finished_at_trials") == mark and not again):
            return False
        study.set_user_attr("finished_at_trials", mark)
        return True
