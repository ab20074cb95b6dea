"""The grid as an Optuna storage holds it: one trial per cell, a categorical parameter `cell`.

    trials = cell_trials(study, names)      # {cell: its trial}: a COMPLETE one, else the latest
    can_start, running = pending(study, names)
"""
from __future__ import annotations

STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "RUNNING": "RUNNING", "WAITING": "PENDING"}


def grid_sampler(names: list[str]):
    """GridSampler over `cell`. Its grid is shuffled by the seed; put it back in the grid's order (trial k of the
    first pass gets cell k), so an interrupted grid leaves complete seeds behind, as the local grid does.

    Optuna has no public setting for this order, hence the write to `_all_grids` (skipped when another Optuna
    shapes it otherwise: the seed's order then stands). The public ways change what is pinned or stored:
    enqueueing every cell in order adds WAITING trials to the storage and leaves this sampler's own order
    shuffled (tests/test_ablate_storage.py pins it); a space pre-permuted so that the shuffle lands in order
    relies on the same private shuffle, and GridSampler, which compares a trial's stored space element by
    element, would take the trials of existing journals for another space."""
    import optuna
    sampler = optuna.samplers.GridSampler({"cell": names}, seed=0)
    if isinstance(getattr(sampler, "_all_grids", None), list) and len(sampler._all_grids) == len(names):
        sampler._all_grids = [(n,) for n in names]
    return sampler


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


def pending(study, names: list[str]) -> tuple[bool, bool]:
    """(a trial can be started now: a cell is untried or a trial is queued, some cell is still running).
    A queued twin of a cell that another trial holds counts too: it is started, and pruned at once."""
    trials = cell_trials(study, names)
    queued = any(t.state.name == "WAITING" for t in study.get_trials(deepcopy=False))
    return len(trials) < len(names) or queued, any(t.state.name == "RUNNING" for t in trials.values())


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
