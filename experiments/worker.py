"""The run engine that the local grid, the grid across machines and `catlab search` share: the checks before
any run, the MLflow parent run, the worker loop that trains one cell per trial, and its processes."""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import time
from contextlib import contextmanager
from multiprocessing.connection import wait

from catlab import rundir
from catlab.errors import RunFailed, UserError
from experiments.storage import FileLock, Liveness, StorageSpec, budget_lock, open_storage, reap, requeue_stale

POLL_S = 2.0        # how often a worker that waits for the trials of others looks at the storage again
_STOP = None        # in a spawned worker process: the parent's stop event (set when it is interrupted)


def threads_for(workers: int) -> int | None:
    """Torch threads per worker process: the cores split between them (None: one process, torch's default)."""
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None


def preflight(cfgs, data: bool = True) -> None:
    """Before any run: check the devices and tracking URIs, and (data=True) load once the data read from disk."""
    from catlab.data import build_dataset
    from catlab.tracking import check_uri
    from catlab.trainer import pick_device
    for device in sorted({c.train.device for c in cfgs}):
        pick_device(device)
    for uri in sorted({c.run.tracking_uri for c in cfgs if c.run.mlflow}):
        check_uri(uri)                    # a tracking URI whose scheme can never work
    seen = []
    for c in cfgs if data else ():
        if c.data.name != "shapes" and c.data not in seen:   # generated data cannot be missing
            seen.append(c.data)
            build_dataset(c.data)


def mlflow_for(cfg):
    """The MLflow client of a config's tracking URI (None with run.mlflow=false)."""
    from catlab.tracking import MLflow
    return MLflow(cfg.run.tracking_uri) if cfg.run.mlflow else None


def shared_parent(study, spec: StorageSpec, name: str, ml, key: str, experiment: str, tags: dict,
                  params: dict) -> str | None:
    """The MLflow parent run named in the Optuna study's user_attrs[key] (resumed), else a new one; under the
    storage's lock, so that concurrent first starts on any machine agree on one. None without MLflow."""
    if ml is None:
        return None
    with budget_lock(spec, name):
        known = study.user_attrs.get(key)
        if known and ml.exists(known):            # (a run id of another store is simply not found)
            ml.resume(known)
            return known
        pid = ml.create_run(experiment, experiment, tags)
        if pid:
            ml.log_params(pid, params)
            study.set_user_attr(key, pid)
        return pid


def on_stale(ml, run_id_of, why: str, tell, tags: dict | None = None):
    """For a dead worker's trial: its MLflow run ends KILLED with `why`, tell(trial), and the trial is re-queued."""
    def callback(study, t) -> None:
        run_id = run_id_of(t)
        if ml is not None and run_id:
            if tags:
                ml.set_tags(run_id, tags)
            ml.end(run_id, "KILLED", why)
        tell(t)
        requeue_stale(study, t)
    return callback


@contextmanager
def holding(trial, lock, cfg):
    """Release the storage's lock (the trial exists now), record the run dir and config hash on the trial, and
    hold the run dir's lock (a twin trial waits). Yields the run dir."""
    run_dir = rundir.path_of(cfg)
    lock.release()
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("config_hash", cfg.hash())
    with FileLock(rundir.lock_path(run_dir)):
        yield run_dir


class Worker:
    """One worker of a plan (docs/architecture.md, "The run engine"); it stops after a cell that Ctrl-C stopped."""

    def __init__(self, plan, index: int = 0):
        import optuna
        if plan.threads:
            import torch
            torch.set_num_threads(plan.threads)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.plan, self.index, self.ml, self.streak, self.stopped = plan, index, plan.mlflow(), 0, False
        self.stale = plan.on_stale(self.ml, self.say)
        storage = open_storage(plan.storage, plan.heartbeat, self.stale)
        self.study = optuna.load_study(study_name=plan.name, storage=storage, **plan.load_kwargs())
        self.lock, self.liveness = budget_lock(plan.storage, plan.name), Liveness(plan.storage)

    def say(self, msg: str, now: bool = True) -> str:
        """Print msg (now=False: return it) with the worker's label when there are several."""
        line = f"[worker {self.index}] {msg}" if self.index else msg
        return print(line, flush=True) or line if now else line

    def objective(self, trial):
        """plan.run(trial, self); the first line of what it raised becomes the trial's user attr `error`."""
        import optuna
        try:
            return self.plan.run(trial, self)
        except optuna.TrialPruned:
            raise
        except Exception as e:  # noqa: BLE001 -- recorded on the trial, which ends FAIL; the worker goes on
            msg = str(e).strip()
            text = msg if msg and isinstance(e, self.plan.plain) else f"{type(e).__name__}: {msg}" if msg \
                else type(e).__name__
            trial.set_user_attr("error", text.splitlines()[0][:300])
            raise

    def run_cell(self, cfg, parent_run_id: str | None, tags: dict, start_line: str | None = None,
                 hooks=None) -> dict:
        """Train one config and return {status, reason, step, mlflow_run_id, seconds}, never raising for a failed
        run; interrupted=True when Ctrl-C or the parent's stop event stopped it."""
        from catlab.trainer import Hooks, train
        if start_line:
            print(start_line, flush=True)
        t0 = time.time()
        if _STOP is not None and _STOP.is_set():
            self.stopped = True
            return {"status": "PENDING", "reason": "not started: interrupted", "seconds": 0.0, "interrupted": True}
        if _STOP is not None:
            hooks = dataclasses.replace(hooks or Hooks(), stop_fn=_STOP.is_set)
        try:
            r = train(cfg, hooks, parent_run_id=parent_run_id, tags=tags)
            out = {"status": r.status, "reason": r.reason, "step": r.step, "mlflow_run_id": r.mlflow_run_id}
        except KeyboardInterrupt:         # the trainer stopped the run (a checkpoint, KILLED, the reason in run.json)
            out = {"status": "KILLED", "interrupted": True}
            self.stopped = True
        except (RunFailed, UserError) as e:
            out = {"status": "FAILED", "reason": str(e).splitlines()[0] if str(e) else type(e).__name__}
        except Exception as e:  # noqa: BLE001 -- one broken cell must not stop the grid
            out = {"status": "FAILED", "reason": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
        if "mlflow_run_id" not in out:    # what the run dir recorded (a KILLED run's reason too)
            info = rundir.read_info(rundir.path_of(cfg), strict=False)
            out.update(step=info.get("step", 0), mlflow_run_id=info.get("mlflow_run_id"))
            out.setdefault("reason", info.get("reason") or "interrupted by the user")
        return {**out, "seconds": time.time() - t0}

    def done(self, study, t) -> None:
        self.streak = self.streak + 1 if self.plan.done(t, self) else 0

    def loop(self) -> int:
        """Run trials until the plan gives an exit code, a streak stops the worker (1) or the deadline passes (0)."""
        plan = self.plan
        try:
            while plan.deadline is None or time.time() < plan.deadline:
                if self.stopped or (_STOP is not None and _STOP.is_set()):
                    if _STOP is None:
                        raise KeyboardInterrupt
                    return 130
                with self.lock:
                    reap(self.study, self.liveness, self.stale)
                    action = plan.next_action(self.study)
                    if action == "run":
                        self.study.optimize(self.objective, n_trials=1, catch=(Exception,), callbacks=[self.done])
                if action == "wait":
                    time.sleep(POLL_S)
                elif action != "run":
                    return action
                elif self.streak >= plan.streak:
                    self.say(plan.stop_line(self.streak))
                    return 1
            return 0
        finally:
            self.liveness.close()


def work(plan, index: int = 0) -> int:
    """The entry point of a worker (in this process, or a spawned one: run_workers)."""
    return Worker(plan, index).loop()


def _entry(work, plan, index: int, stop) -> None:
    """A spawned worker process; Ctrl-C is its parent's to handle (it sets `stop`)."""
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(work(plan, index))


def run_workers(work, plan, workers: int, label: str, poll=None) -> list[int]:
    """work(plan, 0) here when workers == 1, else work(plan, i) in processes i = 1..workers, with poll() every
    POLL_S seconds; returns the exit codes. Ctrl-C sets the stop event, then raises KeyboardInterrupt."""
    if workers == 1:
        return [work(plan, 0)]
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_entry, args=(work, plan, i + 1, stop), name=f"{label}-worker-{i + 1}")
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        while alive := [p.sentinel for p in procs if p.is_alive()]:
            wait(alive, timeout=POLL_S)
            if poll is not None:
                poll()
    except KeyboardInterrupt:
        stop.set()
        print(f"catlab: interrupted; the {label}'s running cells stop after their step and write a checkpoint "
              "(Ctrl-C again to stop them at once)", file=sys.stderr, flush=True)
        while any(p.is_alive() for p in procs):
            try:
                for p in procs:
                    p.join()
            except KeyboardInterrupt:     # a terminal's Ctrl-C reaches the workers too: they stop at once
                pass
        raise
    return [p.exitcode for p in procs]
