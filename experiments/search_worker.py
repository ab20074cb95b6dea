"""One search worker: take trials from the shared storage until the study holds N COMPLETE ones.

A trial: space(trial) overrides -> Config -> catlab.trainer.train (its own run dir <hash>-s<seed>, nested MLflow
run under the search's parent) with Hooks that evaluate a cheap final-scale FID every `every` steps
(trial.report) and stop the run when trial.should_prune() -> the EMA generator's final-scale FID on n fixed
(z, y) of the seed (and, for fid+misalignment, the mean L2 discrepancy over stages 1..K-1).

The loop, under the budget lock: reap trials of dead workers (FAIL, re-queued with the same parameters), count
COMPLETE and RUNNING trials, and start one more only while COMPLETE + RUNNING < N (the objective releases the
lock once its trial exists). While the budget is taken by trials of other workers it waits, so a worker that
dies mid-trial is replaced by the survivors. Three FAIL trials in a row stop a worker (a broken config fails
every trial the same way).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from catlab import rundir
from catlab.errors import RunFailed, UserError
from experiments.search_storage import Liveness, StorageSpec, counts
from experiments.worker import holding, mlflow_for, on_stale, open_worker, recorded, say_for, worker_loop


@dataclass
class Plan:
    """Everything a worker needs (picklable: it travels to spawned worker processes)."""
    study: object                   # a registered study's name, or the Study itself (in-process workers)
    name: str                       # the Optuna study and the MLflow experiment: search-<study>[-pareto]
    objective: str                  # fid | fid+misalignment
    trials: int                     # COMPLETE trials wanted
    below: dict                     # overrides under the space: study base + profile + search budget
    above: dict                     # overrides over the space: the user's and the fixed run.* keys
    storage: StorageSpec
    names: list                     # objective metric names: [fid_domain_500_s4] (+ discrepancy_l2_mean)
    step_name: str                  # the pruning evaluation's metric: fid_domain_128_s4
    steps: int                      # train.steps of the trials (for the pruner's warm-up and Hyperband)
    n_eval: int
    n_step: int
    every: int
    extractor: str
    pruner: object = "median"       # median | hyperband | none | an optuna pruner
    heartbeat: int = 60
    deadline: float | None = None
    threads: int | None = None
    log: list = field(default_factory=list)

    @property
    def multi(self) -> bool:
        return self.objective != "fid"

    def get_study(self):
        from experiments.grid import get_study
        return get_study(self.study) if isinstance(self.study, str) else self.study

    def config(self, trial):
        from catlab.config import load_config
        return load_config({**self.below, **self.get_study().space(trial), **self.above})


def make_pruner(plan: Plan, steps: int):
    import optuna
    if plan.multi or plan.pruner in (None, "none"):
        return optuna.pruners.NopPruner()
    if isinstance(plan.pruner, optuna.pruners.BasePruner):
        return plan.pruner
    if plan.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=plan.every, max_resource=steps, reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=steps // 2, interval_steps=1)


# ---- evaluations (analysis' building blocks: fixed inputs, generation, per-scale FID) ---------------------
def final_fid(stages, cfg, n: int, extractor: str) -> float:
    from analysis.measures import scale_quality
    rows, _ = scale_quality(stages[-1:], cfg.data, n, ("fid",), extractor)
    return rows[0][2]


def evaluate(run_dir: Path, plan: Plan, device: str) -> list[float]:
    """[FID] or [FID, mean L2 discrepancy] of the run's EMA generator on n fixed (z, y)."""
    from analysis.inputs import generate
    from analysis.measures import diagnostics
    from catlab.checkpoint import load_generator
    from catlab.rundir import fixed_inputs
    G, cfg = load_generator(run_dir, device=device)
    stages = generate(G, *fixed_inputs(run_dir, plan.n_eval, cfg.seed, G.z_dim, G.num_classes))
    values = [final_fid(stages, cfg, plan.n_eval, plan.extractor)]
    if plan.multi:
        rows = [v for m, _, v in diagnostics(stages, ("l2",), cfg.data.resampler) if m == "discrepancy_l2"]
        values.append(sum(rows) / len(rows))
    if not all(math.isfinite(v) for v in values):
        raise RunFailed(f"the objective is not finite ({', '.join(f'{n}={v}' for n, v in zip(plan.names, values))})")
    return values


def pruning_hooks(trial, plan: Plan):
    """progress_fn: the cheap FID every plan.every steps (reported to MLflow, and to the trial when single-objective);
    abort_fn: a reason when the pruner says so after a new report (never at the last step)."""
    from analysis.inputs import generate
    from catlab.rundir import fixed_inputs
    from catlab.trainer import Hooks
    fresh = {}

    def progress_fn(step, stats, ctx):
        if step % plan.every and step != ctx.cfg.train.steps:
            return
        G = ctx.state.G_ema
        z, y = fixed_inputs(ctx.run_dir, plan.n_step, ctx.cfg.seed, G.z_dim, G.num_classes)
        value = final_fid(generate(G, z, y), ctx.cfg, plan.n_step, plan.extractor)
        ctx.report(plan.step_name, value)
        if not plan.multi:
            trial.report(value, step)
            if step < ctx.cfg.train.steps:
                fresh[step] = value

    def abort_fn(step):
        if step in fresh and trial.should_prune():
            return f"pruned at step {step} ({plan.step_name}={fresh[step]:.4g})"
        fresh.pop(step, None)
        return None
    return Hooks(progress_fn=progress_fn, abort_fn=abort_fn)


# ---- one trial ------------------------------------------------------------------------------------------
def run_trial(trial, plan: Plan, lock, liveness: Liveness, parent_run_id):
    import optuna
    from catlab.trainer import pick_device, train
    trial.set_user_attr("worker", liveness.tag)
    cfg = plan.config(trial)
    tags = {"trial": trial.number, "study": plan.name, "kind": "trial"}
    if trial.user_attrs.get("number") is not None:       # a re-queued trial inherits the user attrs of the dead one
        tags["retry_of"] = trial.user_attrs["number"]
        trial.set_user_attr("retry_of", trial.user_attrs["number"])
    trial.set_user_attr("number", trial.number)
    with holding(trial, lock, cfg) as run_dir:
        try:
            result = train(cfg, pruning_hooks(trial, plan), run_dir, parent_run_id=parent_run_id, tags=tags)
        finally:
            info = rundir.read_info(run_dir)
            if info.get("mlflow_run_id"):
                trial.set_user_attr("mlflow_run_id", info["mlflow_run_id"])
    trial.set_user_attr("steps", result.step)
    if result.status == "KILLED":
        raise optuna.TrialPruned(result.reason)
    if result.status != "FINISHED":
        raise RunFailed(f"the run ended {result.status}: {result.reason}")
    values = evaluate(run_dir, plan, pick_device(cfg.train.device).type)
    return values if plan.multi else values[0]


# ---- MLflow bridge: what the trial's own (nested) run holds beyond what train() logged ----------------------
def mlflow_client(plan: Plan):
    from catlab.config import load_config
    return mlflow_for(load_config({k: v for k, v in plan.above.items() if k.startswith("run.")}))


def after_trial(plan: Plan, ml, say):
    def callback(study, t) -> None:
        run_id, state = t.user_attrs.get("mlflow_run_id"), t.state.name
        if ml is not None and run_id:
            ml.set_tags(run_id, {"trial": t.number, "study": plan.name, "trial_state": state})
            ml.log_params(run_id, {f"trial.{k}": v for k, v in t.params.items()})
            if t.values:
                ml.log_metrics(run_id, [(n, v, t.user_attrs.get("steps", 0)) for n, v in zip(plan.names, t.values)])
        took = f"{t.duration.total_seconds():.0f}s" if t.duration else "?"
        vals = " ".join(f"{n}={v:.4g}" for n, v in zip(plan.names, t.values or []))
        if state == "PRUNED" and t.intermediate_values:
            step = max(t.intermediate_values)
            vals = f"at step {step}: {plan.step_name}={t.intermediate_values[step]:.4g}"
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        reason = f" -- {t.user_attrs['error']}" if state == "FAIL" and t.user_attrs.get("error") else ""
        say(f"trial {t.number} {state.lower()} {vals} in {took} [{params}]{reason}")
    return callback


# ---- the worker loop ------------------------------------------------------------------------------------
def work(plan: Plan, index: int = 0) -> int:
    """Run trials until the study holds plan.trials COMPLETE ones (or the deadline); 0, or 1 after FAIL streaks."""
    say = say_for(index)
    ml = mlflow_client(plan)
    stale = on_stale(ml, lambda t: t.user_attrs.get("mlflow_run_id"), "its search worker died",
                     lambda t: say(f"trial {t.number} fail: its worker died; re-queued with the same parameters"),
                     {"trial_state": "FAIL"})
    study, lock, liveness = open_worker(plan.storage, plan.name, plan.heartbeat, stale, plan.threads,
                                        pruner=make_pruner(plan, plan.steps))
    parent = study.user_attrs.get("mlflow_parent_run_id")
    report, last, fails = after_trial(plan, ml, say), {}, {"n": 0}

    def done(study, t) -> None:
        report(study, t)
        last["state"] = t.state.name

    def next_action():
        c = counts(study)
        return 0 if c["COMPLETE"] >= plan.trials else "run" if c["COMPLETE"] + c["RUNNING"] < plan.trials else "wait"

    def after():
        fails["n"] = fails["n"] + 1 if last.pop("state", "FAIL") == "FAIL" else 0
        if fails["n"] >= 3:
            say("3 trials failed in a row: this worker stops (see the reasons above)")
            return 1
        return None
    return worker_loop(study, lock, liveness, stale, next_action,
                       recorded(lambda trial: run_trial(trial, plan, lock, liveness, parent), (RunFailed, UserError)),
                       done, after, plan.deadline)
