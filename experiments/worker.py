"""What the grid across machines and the search share: the MLflow parent run, and the loop of a worker.

    pid = shared_parent(study, spec, "search-...", ml, key, experiment, tags, params)
    stale = on_stale(ml, run_id_of, "its search worker died", lambda t: say(...))
    study, lock, liveness = open_worker(spec, name, heartbeat, stale, threads, sampler=..., pruner=...)
    code = worker_loop(study, lock, liveness, stale, next_action, recorded(run, plain), done, after)

A worker, under the storage's lock: reap the trials of dead workers (FAIL, then `stale` re-queues them),
ask what to do (next_action: "run" a trial, "wait" for other workers' trials, or an exit code), and start one
trial (study.optimize(n_trials=1), whose objective releases the lock once its trial exists; `done` sees it
end). After a trial, `after()` may stop the worker with an exit code (a streak of failed or idle trials).
"""
from __future__ import annotations

import time
from contextlib import contextmanager

from catlab import rundir
from experiments.search_storage import Liveness, StorageSpec, budget_lock, open_storage, reap, requeue_stale

POLL_S = 2.0        # how often a worker that waits for the trials of others looks at the storage again


def open_parent(ml, experiment: str, known: str | None, tags: dict, params: dict, remember=None) -> str | None:
    """The MLflow parent run of a grid or a search: `known` when the store still has it (resumed), else a new
    run with these tags and params, whose id goes to remember(pid). None without MLflow."""
    if ml is None:
        return None
    if known and ml.exists(known):            # (a run id of another store is simply not found)
        ml.resume(known)
        return known
    pid = ml.create_run(experiment, experiment, tags)
    if pid:
        ml.log_params(pid, params)
        if remember is not None:
            remember(pid)
    return pid


def shared_parent(study, spec: StorageSpec, name: str, ml, key: str, experiment: str, tags: dict,
                  params: dict) -> str | None:
    """The parent run named in the Optuna study's user_attrs[key], else a new one; under the storage's lock, so
    concurrent first starts, even on other machines, agree on one."""
    if ml is None:
        return None
    with budget_lock(spec, name):
        return open_parent(ml, experiment, study.user_attrs.get(key), tags, params,
                           lambda pid: study.set_user_attr(key, pid))


def mlflow_for(cfg):
    """The MLflow client of a config's tracking URI (None with run.mlflow=false)."""
    from catlab.tracking import MLflow
    return MLflow(cfg.run.tracking_uri) if cfg.run.mlflow else None


def say_for(index: int):
    """print() with the worker's label when there are several: say(msg) prints; say(msg, False) returns it."""
    def say(msg: str, now: bool = True) -> str:
        line = f"[worker {index}] {msg}" if index else msg
        return print(line, flush=True) or line if now else line
    return say


def on_stale(ml, run_id_of, why: str, tell, tags: dict | None = None):
    """The callback for a dead worker's trial: its MLflow run (run_id_of(trial)) ends KILLED with `why` (the
    retry resumes it), tell(trial) says so, and the trial is re-queued."""
    def callback(study, t) -> None:
        run_id = run_id_of(t)
        if ml is not None and run_id:
            if tags:
                ml.set_tags(run_id, tags)
            ml.end(run_id, "KILLED", why)
        tell(t)
        requeue_stale(study, t)
    return callback


def open_worker(spec: StorageSpec, name: str, heartbeat: int, stale, threads: int | None, **load):
    """(Optuna study, budget lock, this worker's liveness), with torch's threads set for this worker."""
    import optuna
    if threads:
        import torch
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=open_storage(spec, heartbeat, stale), **load)
    return study, budget_lock(spec, name), Liveness(spec)


def recorded(run, plain=(Exception,)):
    """The objective: run(trial), with the first line of what it raised kept as the trial's user attr `error`
    (the message of a `plain` exception, else prefixed by its type); a pruned trial is not an error."""
    import optuna

    def objective(trial):
        try:
            return run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:  # noqa: BLE001 -- recorded on the trial, which ends FAIL; the worker goes on
            msg = str(e).strip()
            text = msg if msg and isinstance(e, plain) else f"{type(e).__name__}: {msg}" if msg else type(e).__name__
            trial.set_user_attr("error", text.splitlines()[0][:300])
            raise
    return objective


@contextmanager
def holding(trial, lock, cfg):
    """The trial holds its run: the storage's lock released (its trial exists, RUNNING: other workers may ask
    now), its run dir and config hash kept in its user attrs, and the run dir locked (a twin trial of the same
    config, on a shared disk too, waits). Yields the run dir."""
    run_dir = rundir.path_of(cfg)
    lock.release()
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("config_hash", cfg.hash())
    with rundir.held(run_dir):
        yield run_dir


def worker_loop(study, lock, liveness: Liveness, stale, next_action, objective, done, after,
                deadline: float | None = None) -> int:
    """Run trials until next_action() gives an exit code, after() does, or the deadline passes (0)."""
    try:
        while deadline is None or time.time() < deadline:
            with lock:
                reap(study, liveness, stale)
                action = next_action()
                if action == "run":
                    study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[done])
            if action == "wait":
                time.sleep(POLL_S)
            elif action != "run":
                return action
            else:
                code = after()
                if code is not None:
                    return code
        return 0
    finally:
        liveness.close()
