"""`catlab sync RUN_DIR`: send a run's JSONL metrics, params and sample grids to MLflow (after an outage).

    sync_run("runs/3f9c0a1b2d-s0")      # -> 0; a second call sends nothing
"""
from __future__ import annotations

import json
from pathlib import Path

from catlab import rundir
from catlab.tracking import MLflow, check_uri, run_tags


def _jsonl_rows(path: Path) -> list[tuple[str, float, int]]:
    """(name, value, step) of every whole line of metrics.jsonl (a torn last line is skipped)."""
    rows = []
    for ln in path.read_text().splitlines() if path.exists() else []:
        try:
            d = json.loads(ln)
            rows.append((str(d["name"]), float(d["value"]), int(d["step"])))
        except (ValueError, KeyError, TypeError):
            continue
    return rows


def sync_run(run_dir: str | Path) -> int:
    """Replay a run dir into MLflow: metrics.jsonl, the config as params, config.json and the sample grids.

    Continues the run's own MLflow run (run.json mlflow_run_id) when the store has it, else creates one
    (and records its id in run.json, so that a resumed run goes on logging there). Only what the MLflow
    run lacks is sent (metric values by (name, step), params, artifacts by name), so syncing twice sends
    nothing the second time. The final status of run.json is set on the MLflow run. Returns 0; an MLflow
    that cannot be reached raises RunFailed (exit 1), a dir that is not a run dir a UserError (exit 2).
    """
    from catlab.checkpoint import run_config
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)                                   # UserError unless a run dir
    check_uri(cfg.run.tracking_uri)                             # UserError for a scheme that cannot work
    info = rundir.read_info(run_dir)
    rows = _jsonl_rows(run_dir / "metrics.jsonl")
    ml = MLflow(cfg.run.tracking_uri, strict=True)
    run_id = info.get("mlflow_run_id")
    if run_id and ml.exists(run_id):
        how = "continued"
    else:
        run_id = ml.create_run(cfg.run.experiment, run_dir.name, run_tags(cfg, run_dir, {"synced": "true"}))
        how = "created"
        info["mlflow_run_id"] = run_id
        rundir.write_info(run_dir, info)
    run = ml._call("get_run", run_id)

    have = ml.logged(run_id, sorted({r[0] for r in rows}))     # (name, step) already in MLflow
    send = [r for r in rows if (r[0], r[2]) not in have]
    ml.log_metrics(run_id, send)
    params = {k: v for k, v in cfg.flat().items() if k not in run.data.params}
    ml.log_params(run_id, params)
    sent_files = []
    listed = {f.path for f in ml._call("list_artifacts", run_id)}
    if "config.json" not in listed:
        ml.log_artifact(run_id, run_dir / "config.json")
        sent_files.append("config.json")
    listed = {f.path for f in ml._call("list_artifacts", run_id, "samples")}
    for png in sorted((run_dir / "samples").glob("*.png")):
        if f"samples/{png.name}" not in listed:
            ml.log_artifact(run_id, png, "samples")
            sent_files.append(f"samples/{png.name}")
    status = info.get("status")
    if status in ("FINISHED", "FAILED", "KILLED") and run.info.status != status:
        ml.end(run_id, status, info.get("reason", ""))

    steps = sorted({r[2] for r in send})
    print(f"synced {run_dir} to {ml.uri} (experiment {cfg.run.experiment}, run {run_id}, {how})")
    print(f"  metrics    {len(send)} values of {len({r[0] for r in send})} names"
          + (f", steps {steps[0]}..{steps[-1]}" if steps else "") + f" ({len(rows) - len(send)} already there)")
    print(f"  params     {len(params)} ({len(cfg.flat()) - len(params)} already there)")
    print(f"  artifacts  {len(sent_files)}" + (f": {', '.join(sent_files)}" if sent_files else ""))
    print(f"  status     {status or 'unknown'}" + (" (set)" if status and run.info.status != status else ""))
    return 0
