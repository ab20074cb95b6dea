"""`catlab search STUDY --trials N [--storage URL] [--workers N] [--objective fid|fid+misalignment] [--timeout S]
[--profile cpu|gpu] [KEY=VALUE ...]`: Optuna over a study's search space (docs/architecture.md, "The search")."""
from __future__ import annotations

import math
import time
from pathlib import Path

from catlab.config import load_config, parse_overrides
from catlab.errors import UserError
from catlab.profiles import get_profile
from experiments import STUDIES, Study
from experiments.grid import get_study, one_of, positive_int, study_dir
from experiments.search_report import write_outputs
from experiments.search_worker import Plan, formatted
from experiments.storage import budget_lock, counts, open_storage, resolve, warn_parallel
from experiments.worker import preflight, run_workers, shared_parent, threads_for, work

# The budget of one trial and its evaluation sizes are the profile's (catlab.profiles: search, search_eval).
OBJECTIVES = {"fid": ("minimize",), "fid+misalignment": ("minimize", "minimize")}
PRUNERS = ("median", "hyperband", "none")
SET_BY_SEARCH = ("run.root", "run.experiment")
OUT_ROOT = Path("reports") / "out"


def search_name(study: str, objective: str = "fid") -> str:
    """The Optuna study, MLflow experiment and output folder: search-<study> (-pareto for two objectives)."""
    return f"search-{study}" + ("" if objective == "fid" else "-pareto")


def make_plan(st: Study, name, trials, workers, objective, timeout, overrides, profile, pruner, n_eval, n_step,
              eval_every, heartbeat, storage) -> tuple[Plan, object, dict]:
    """The plan every worker follows, the first trial's config (a probe through the space) and the user's overrides;
    every option is checked first."""
    import optuna
    if st.space is None:
        raise UserError(f"study must declare a search space (space=...), but got study={st.name!r} without one")
    positive_int("--trials", trials)
    positive_int("--workers", workers)
    positive_int("heartbeat", heartbeat)
    one_of("--objective", objective, OBJECTIVES)
    if timeout is not None and not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise UserError(f"--timeout must be a number of seconds > 0, but got timeout={timeout!r}")
    one_of("--profile", profile, st.profiles)
    if not isinstance(pruner, optuna.pruners.BasePruner):
        one_of("pruner", pruner, PRUNERS)
    user = parse_overrides(list(overrides) if not isinstance(overrides, dict) else overrides)
    for key in SET_BY_SEARCH:
        if key in user:
            raise UserError(f"{key} is set by the search ({study_dir(name) / 'runs'} and experiment {name}), "
                            f"but got {key}={user[key]}")
    above = {**user, "run.root": str(study_dir(name) / "runs"), "run.experiment": name}
    if workers > 1 and "run.progress" not in user:
        above["run.progress"] = False                      # bars of parallel workers would interleave
    below = {**st.base, **st.profiles[profile], **get_profile(profile).search}
    ev = {**get_profile(profile).search_eval, **{k: v for k, v in (("n_eval", n_eval), ("n_step", n_step)) if v}}
    for key in ("n_eval", "n_step"):
        if isinstance(ev[key], bool) or not isinstance(ev[key], int) or ev[key] < 2:
            raise UserError(f"{key} must be an int >= 2, but got {key}={ev[key]!r}")
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    searched = st.space(probe)
    clash = sorted(set(searched) & set(user))
    if clash:
        raise UserError(f"{clash[0]} is searched by the space of {st.name}; drop the override, "
                        f"but got {clash[0]}={user[clash[0]]}")
    cfg = load_config({**below, **searched, **above})
    preflight([cfg], data=False)                           # the device, a tracking URI that can never work
    t = cfg.train
    every = eval_every or max(t.log_every, math.ceil(t.steps / 5 / t.log_every) * t.log_every)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1 or every % t.log_every:
        raise UserError(f"eval_every must be a multiple of train.log_every={t.log_every}, but got eval_every={every!r}")
    from catlab.metrics.fidelity import protocol_name, resolve_extractor
    short = resolve_extractor(ev["extractor"], cfg.data.name)[0]
    K = cfg.model.stages
    names = [protocol_name("fid", short, ev["n_eval"], K)] + (["discrepancy_l2_mean"] if objective != "fid" else [])
    plan = Plan(st.name if STUDIES.get(st.name) is st else st, name, objective, trials, below, above,
                resolve(storage, st.name), names, protocol_name("fid", short, ev["n_step"], K), t.steps,
                ev["n_eval"], ev["n_step"], every, ev["extractor"], pruner, int(heartbeat),
                time.time() + timeout if timeout else None, threads_for(workers))
    return plan, cfg, user


def reference_stats(cfg, plan: Plan) -> None:
    """The data and the FID reference statistics (computed once here, so parallel workers only read them)."""
    from analysis.inputs import cache_root, real_pyramid
    from catlab.metrics.fidelity import quality, reference_key
    key = reference_key(cfg.data.name, cfg.data.resampler, cfg.data.resolution)
    for n in sorted({plan.n_eval, plan.n_step}):
        real = real_pyramid(cfg.data, n, [cfg.data.resolution])
        quality(real, real, metrics=("fid",), extractor=plan.extractor, cache_key=key, cache_root=cache_root())


def open_search(plan: Plan, storage, identity: dict):
    """Create or load the Optuna study, and check that it searches the same thing as this command."""
    import optuna
    with budget_lock(plan.storage, plan.name):
        study = optuna.create_study(study_name=plan.name, storage=storage, load_if_exists=True,
                                    directions=list(OBJECTIVES[plan.objective]))
        old = study.user_attrs.get("catlab")
        if old is None:
            study.set_user_attr("catlab", identity)
        elif old != identity:
            diff = sorted(k for k in identity if old.get(k) != identity[k])
            raise UserError(f"--storage {plan.storage} holds {plan.name} with another {diff[0]} "
                            f"({old.get(diff[0])}); use the same options to resume, or another --storage, "
                            f"but got {diff[0]}={identity[diff[0]]}")
    return study


def finish(study, plan: Plan, ml, pid, codes: list[int], started: float) -> int:
    c = counts(study)
    out = OUT_ROOT / plan.name
    doc = write_outputs(study, out, plan.names, {"search": plan.name, "storage": str(plan.storage), "counts": c,
                                                "mlflow_parent_run_id": pid, "tracking_uri": ml.uri if ml else None})
    reached = c["COMPLETE"] >= plan.trials
    rec = doc.get("best") or (doc.get("pareto_front") or [None])[0]
    if ml is not None and pid:
        if rec:
            ml.log_metrics(pid, [(n, rec[n], c["COMPLETE"]) for n in plan.names if rec.get(n) is not None])
            ml.set_tags(pid, {f"best.{k}": v for k, v in rec["params"].items()} | {"best.trial": rec["number"]})
        for name in ["best.json", "trials.csv", *doc["plots"]]:
            ml.log_artifact(pid, out / name, "search")
        if reached:
            ml.end(pid, "FINISHED")
    print(f"\n{plan.name}: {c['COMPLETE']} COMPLETE, {c['PRUNED']} PRUNED, {c['FAIL']} FAIL of {plan.trials} wanted "
          f"({(time.time() - started) / 60:.1f} min)")
    for r in ([doc["best"]] if doc.get("best") else doc.get("pareto_front", [])):
        vals = formatted({n: r[n] for n in plan.names if r.get(n) is not None})
        print(f"{'best' if plan.objective == 'fid' else 'pareto'}: trial {r['number']} {vals}  {formatted(r['params'])}"
              f"  ({r['run_dir']})")
    print(f"outputs: {out}/ ({', '.join(['trials.csv', 'best.json', *doc['plots']])})")
    for note in doc["notes"]:
        print(f"  note: {note}")
    print(f"storage: {plan.storage}" + ("" if reached else "  (run the same command again to continue)"))
    if ml is not None:
        print(f"MLflow:  {ml.uri}  (experiment {plan.name}, parent run {pid})")
    dead = [i + 1 for i, code in enumerate(codes) if code and code < 0]
    if dead:
        print(f"worker(s) {dead} were killed; their trials ended FAIL and were re-queued")
    timed_out = plan.deadline is not None and time.time() >= plan.deadline
    if not reached and timed_out:
        print(f"timeout: no trial started after the deadline; {c['COMPLETE']} of {plan.trials} COMPLETE")
    return 0 if reached or (timed_out and not any(code and code > 0 for code in codes)) else 1


def search(study, trials: int, storage: str | None = None, workers: int = 1, objective: str = "fid",
           timeout: float | None = None, overrides=(), profile: str = "cpu", *, pruner="median",
           n_eval: int | None = None, n_step: int | None = None, eval_every: int | None = None,
           heartbeat: int = 60) -> int:
    """Run (or resume) an Optuna search until `trials` trials are COMPLETE. Returns 0, or 1 when it fell short.

    study: a registered study name (or a Study). pruner: median | hyperband | none | an optuna pruner.
    n_eval / n_step: samples of the final FID / of the pruning FID (default: the profile's search_eval); eval_every: steps
    between pruning evaluations (a multiple of train.log_every; default about steps / 5). heartbeat: seconds
    between the heartbeats of RDB storages (a trial is stale after 2x)."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    st = study if isinstance(study, Study) else get_study(study)
    name = search_name(st.name, objective)
    plan, cfg, user = make_plan(st, name, trials, workers, objective, timeout, overrides, profile, pruner, n_eval,
                          n_step, eval_every, heartbeat, storage)
    warn_parallel(plan.storage, workers)
    started, ml = time.time(), plan.mlflow()
    identity = {"study": st.name, "profile": profile, "objective": objective, "metrics": plan.names,
                "overrides": sorted(f"{k}={v}" for k, v in user.items() if not k.startswith("run."))}
    study_obj = open_search(plan, open_storage(plan.storage, plan.heartbeat), identity)
    reference_stats(cfg, plan)
    plan.parent_run_id = pid = shared_parent(study_obj, plan.storage, plan.name, ml, "mlflow_parent_run_id", plan.name,
                        {"kind": "search", "study": st.name, "objective": objective, "storage": str(plan.storage)},
                        {**identity, "overrides": " ".join(identity["overrides"]) or "none"})
    c = counts(study_obj)
    prune = "none (pruning is single-objective only)" if plan.multi else \
        pruner if isinstance(pruner, str) else type(pruner).__name__
    print(f"{name}: {trials} COMPLETE trials wanted, {c['COMPLETE']} done; {workers} worker process(es); "
          f"objective {' + '.join(plan.names)}; pruner {prune}; storage {plan.storage}; "
          f"runs under {plan.above['run.root']}", flush=True)
    codes = run_workers(work, plan, workers, "search") if c["COMPLETE"] < trials else []
    return finish(study_obj, plan, ml, pid, codes, started)
