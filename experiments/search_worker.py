"""What a search's workers follow: the Plan of its trials (experiments.worker.work runs them on the shared storage),
and a trial's pruning evaluations and objective (docs/architecture.md, "The search")."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from catlab import rundir
from catlab.errors import RunFailed, UserError
from experiments.storage import StorageSpec, counts
from experiments.worker import holding, mlflow_for, on_stale


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
    parent_run_id: str | None = None
    plain = (RunFailed, UserError)  # what a trial raised is recorded as its message (else prefixed by its type)
    streak = 3                      # FAIL trials in a row stop a worker

    @property
    def multi(self) -> bool:
        return self.objective != "fid"

    def config(self, trial):
        from catlab.config import load_config
        from experiments import STUDIES
        study = STUDIES[self.study] if isinstance(self.study, str) else self.study
        return load_config({**self.below, **study.space(trial), **self.above})

    def stop_line(self, n: int) -> str:
        return f"{n} trials failed in a row: this worker stops (see the reasons above)"

    def mlflow(self):
        from catlab.config import load_config
        return mlflow_for(load_config({k: v for k, v in self.above.items() if k.startswith("run.")}))

    def load_kwargs(self) -> dict:
        return {"pruner": make_pruner(self, self.steps)}

    def on_stale(self, ml, say):
        def run_id(t):                                    # its own attr is set when the run ends: read run.json
            run_dir = t.user_attrs.get("run_dir")
            return t.user_attrs.get("mlflow_run_id") or \
                (rundir.read_info(Path(run_dir), strict=False).get("mlflow_run_id") if run_dir else None)
        return on_stale(ml, run_id, "its search worker died",
                        lambda t: say(f"trial {t.number} fail: its worker died; re-queued with the same parameters"),
                        {"trial_state": "FAIL"})

    def next_action(self, study):
        c = counts(study)
        return 0 if c["COMPLETE"] >= self.trials else "run" if c["COMPLETE"] + c["RUNNING"] < self.trials else "wait"

    def run(self, trial, w):
        import optuna
        from catlab.trainer import pick_device
        trial.set_user_attr("worker", w.liveness.tag)
        cfg = self.config(trial)
        tags = {"trial": trial.number, "study": self.name, "kind": "trial"}
        if trial.user_attrs.get("number") is not None:   # a re-queued trial inherits the user attrs of the dead one
            tags["retry_of"] = trial.user_attrs["number"]
            trial.set_user_attr("retry_of", trial.user_attrs["number"])
        trial.set_user_attr("number", trial.number)
        with holding(trial, w.lock, cfg) as run_dir:
            try:
                res = w.run_cell(cfg, self.parent_run_id, tags, hooks=pruning_hooks(trial, self))
            finally:                                      # (Ctrl-C too)
                info = rundir.read_info(run_dir)
                if info.get("mlflow_run_id"):
                    trial.set_user_attr("mlflow_run_id", info["mlflow_run_id"])
        if res["status"] not in ("FINISHED", "KILLED") or res.get("interrupted"):
            raise RunFailed(res["reason"])
        trial.set_user_attr("steps", res["step"])
        if res["status"] == "KILLED":
            raise optuna.TrialPruned(res["reason"])
        values = evaluate(run_dir, self, pick_device(cfg.train.device).type)
        return values if self.multi else values[0]

    def done(self, t, w) -> bool:
        """The MLflow bridge: the trial's own (nested) run gets what train() did not log (its state, parameters and
        objective values); then say how the trial ended. True for a FAIL."""
        run_id, state = t.user_attrs.get("mlflow_run_id"), t.state.name
        if w.ml is not None and run_id:
            w.ml.set_tags(run_id, {"trial": t.number, "study": self.name, "trial_state": state})
            w.ml.log_params(run_id, {f"trial.{k}": v for k, v in t.params.items()})
            if t.values:
                w.ml.log_metrics(run_id, [(n, v, t.user_attrs.get("steps", 0)) for n, v in zip(self.names, t.values)])
        took = f"{t.duration.total_seconds():.0f}s" if t.duration else "?"
        vals = formatted(dict(zip(self.names, t.values or [])))
        if state == "PRUNED" and t.intermediate_values:
            step = max(t.intermediate_values)
            vals = f"at step {step}: {self.step_name}={t.intermediate_values[step]:.4g}"
        reason = f" -- {t.user_attrs['error']}" if state == "FAIL" and t.user_attrs.get("error") else ""
        w.say(f"trial {t.number} {state.lower()} {vals} in {took} [{formatted(t.params)}]{reason}")
        return state == "FAIL"


def formatted(values: dict) -> str:
    """"k=v k=v" with floats to 4 significant digits."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


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
