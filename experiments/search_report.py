"""The outputs of a search under reports/out/<search name>/: trials.csv, best.json and the plots
(docs/architecture.md, "The search", lists them); written by search() once its workers are done."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from catlab.files import atomic_text

IMPORTANCE_MIN = 4          # fANOVA on fewer COMPLETE trials says little; skip the plot with a note


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def trial_record(t, names: list[str]) -> dict:
    return {"number": t.number, **{n: _clean(v) for n, v in zip(names, t.values or [])}, "params": t.params,
            "run_dir": t.user_attrs.get("run_dir"), "config_hash": t.user_attrs.get("config_hash"),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id")}


def best(study, names: list[str]) -> dict:
    """{"best": record} (single objective) or {"pareto_front": [records]} (multi), None-safe when nothing is done."""
    from optuna.trial import TrialState
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(names) == 1:
        return {"best": trial_record(study.best_trial, names) if done else None}
    front = sorted(study.best_trials, key=lambda t: t.values) if done else []
    return {"pareto_front": [trial_record(t, names) for t in front]}


def _save(ax, out: Path, stem: str, written: list[str]) -> None:
    import matplotlib.pyplot as plt
    fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
    fig.set_size_inches(7.0, 4.5)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"{stem}.{ext}", dpi=150)
    plt.close(fig)
    written.append(f"{stem}.png")


def plots(study, out: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """Draw what the study supports; returns (PNG file names written, notes on what was skipped)."""
    import matplotlib
    matplotlib.use("Agg")
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis
    matplotlib.rcParams["pdf.fonttype"] = 42
    matplotlib.rcParams["ps.fonttype"] = 42
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    written, notes = [], []
    if not done:
        return written, ["no COMPLETE trial yet: no plots"]
    multi = len(names) > 1
    target = (lambda t: t.values[0]) if multi else None
    kw = {"target": target, "target_name": names[0]}
    params = {k for t in done for k in t.params}
    jobs = [("history", lambda: vis.plot_optimization_history(study, **kw), None)]
    if not multi:
        has_steps = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
        jobs.append(("intermediate", lambda: vis.plot_intermediate_values(study),
                     None if has_steps else "intermediate: skipped, no trial reported an intermediate value"))
    few = f"importances: skipped, {len(done)} COMPLETE trial(s) (needs >= {IMPORTANCE_MIN})"
    jobs.append(("importances", lambda: vis.plot_param_importances(study, **kw),
                 few if len(done) < IMPORTANCE_MIN else None if params else "importances: skipped, no parameters"))
    jobs.append(("parallel_coordinate", lambda: vis.plot_parallel_coordinate(study, **kw),
                 None if params else "parallel_coordinate: skipped, no parameters"))
    if multi:
        jobs.append(("pareto_front", lambda: vis.plot_pareto_front(study, target_names=names), None))
    for stem, draw, skip in jobs:
        if skip:
            notes.append(skip)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _save(draw(), out, stem, written)
        except (ValueError, RuntimeError, ZeroDivisionError, optuna.exceptions.OptunaError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            notes.append(f"{stem}: skipped ({first})")
    return written, notes


def write_outputs(study, out: Path, names: list[str], info: dict) -> dict:
    """trials.csv, best.json and the plots under `out`; returns best.json's content."""
    out.mkdir(parents=True, exist_ok=True)
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    written, notes = plots(study, out, names)
    doc = {**info, "objectives": names, **best(study, names), "plots": written, "notes": notes}
    atomic_text(out / "best.json", json.dumps(doc, indent=2, default=str) + "\n")
    return doc
