"""What the grid across machines and the search share: the MLflow parent run, and the loop of a worker.

    pid = open_parent(ml, "ablation-consistency", known_id, tags, params, remember)
    study, lock, liveness = open_worker(spec, name, heartbeat, stale, threads, sampler=..., pruner=...)
    code = worker_loop(study, lock, liveness, stale, next_action, run_one, after)

A worker, under the storage's lock: reap the trials of dead workers (FAIL, then `stale` re-queues them),
ask what to do (next_action: "run" a trial, "wait" for other workers' trials, or an exit code), and start one
trial (run_one: study.optimize(n_trials=1), whose objective releases the lock once its trial exists). After a
trial, `after()` may stop the worker with an exit code (a streak of failed or idle trials).
"""
from __future__ import annotations

import time

from experiments.search_storage import Liveness, StorageSpec, budget_lock, open_storage, reap

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


def say_for(index: int):
    """print() with the worker's label when there are several: say(msg) prints; say(msg, False) returns it."""
    def say(msg: str, now: bool = True) -> str:
        line = f"[worker {index}] {msg}" if index else msg
        return print(line, flush=True) or line if now else line
    return say


def open_worker(spec: StorageSpec, name: str, heartbeat: int, stale, threads: int | None, **load):
    """(Optuna study, budget lock, this worker's liveness), with torch's threads set for this worker."""
    import optuna
    if threads:
        import torch
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=open_storage(spec, heartbeat, stale), **load)
    return study, budget_lock(spec, name), Liveness(spec)


def worker_loop(study, lock, liveness: Liveness, stale, next_action, run_one, after,
                deadline: float | None = None) -> int:
    """Run trials until next_action() gives an exit code, after() does, or the deadline passes (0)."""
    try:
        while deadline is None or time.time() < deadline:
            with lock:
                reap(study, liveness, stale)
                action = next_action()
                if action == "run":
                    run_one()
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
