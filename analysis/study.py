"""A study's analysis: every FINISHED cell evaluated, then the study's tables and its parent MLflow run.

    evaluate_study("studies/ablation-consistency", claims=STUDY.claims)
    # -> table.csv, summary.csv, tests.csv, claims.csv, drift.csv, curve.csv, diagnostics_curve.csv, samples.pt

The claims come from the caller (the study's declaration, experiments.Claim): the analysis never imports
the study registry.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from analysis.cells import per_cell, read_cells
from analysis.claims import drop_by_definition, verdicts
from analysis.inputs import generate
from analysis.run_eval import eval_settings, evaluate_cell
from analysis.stats import paired_tests, summarize
from catlab.checkpoint import atomic_save, load_generator, run_config
from catlab.rundir import fixed_inputs

SAMPLES_N = 8                     # fig8's (z, y): the first of the fixed eval set


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def study_tests(table: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Paired tests (by seed) between the two labels of every 2-valued axis, per metric x stage."""
    out = []
    for axis in axes:
        if table[axis].nunique() != 2:
            continue
        others = [a for a in axes if a != axis]
        res = paired_tests(table, axis, pair_col="seed", by=[*others, "metric", "stage"])
        out.append(res.assign(axis=axis)[["axis", *res.columns]])
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _mlflow_name(s: str) -> str:
    return re.sub(r"[^/\w.\- ]", "_", s.replace("=", "-").replace(",", "/"))


def log_study(study_dir: Path, summary: pd.DataFrame, axes: list[str], step: int, uri: str = "") -> str | None:
    """Summary means to the study's parent MLflow run (<arm>/<metric>_s<stage>) and the CSVs as artifacts."""
    from catlab.tracking import MLflow
    run_id = _read_json(study_dir / "study.json").get("parent_run_id")
    if not run_id:
        return None
    client = MLflow(uri)
    rows = []
    for r in summary.to_dict("records"):
        arm = ",".join(f"{a}={r[a]}" for a in axes) or "all"
        if math.isfinite(r["mean"]):
            rows.append((_mlflow_name(f"{arm}/{r['metric']}_s{r['stage']}"), float(r["mean"]), step))
    client.log_metrics(run_id, rows)
    for name in ("table.csv", "summary.csv", "tests.csv", "claims.csv", "drift.csv", "curve.csv",
                 "diagnostics_curve.csv"):
        if (study_dir / name).exists():
            client.log_artifact(run_id, study_dir / name, "analysis")
    return run_id


def write_samples(study_dir: Path, cells: pd.DataFrame, axes: list[str], device: str = "cpu") -> Path | None:
    """samples.pt for the report's fig8: the stage images of every arm's EMA generator on the first SAMPLES_N
    (z, y) of one seed that every arm has (arms of a seed share the eval set). {"z", "y", "cells": {cell: K
    tensors (n, C, s_k, s_k)}}; None (and no file) when no seed is finished in every arm."""
    arms = cells.groupby(axes)["seed"].apply(set).tolist() if axes else [set(cells["seed"])]
    common = sorted(set.intersection(*arms)) if arms else []
    if not common:
        return None
    rows = cells[cells["seed"] == common[0]]
    out, z, y = {}, None, None
    for r in rows.to_dict("records"):
        G, cfg = load_generator(r["run_dir"], device=device)
        z, y = fixed_inputs(Path(r["run_dir"]), SAMPLES_N, cfg.seed, G.z_dim, G.num_classes)
        out[r["cell"]] = [x.cpu() for x in generate(G, z, y)]
    path = Path(study_dir) / "samples.pt"
    atomic_save({"z": z, "y": y, "seed": common[0], "cells": out}, path)
    return path


def evaluate_study(study_dir, n: int | None = None, metrics=("fid", "kid", "shape"),
                   distances=("l2", "lpips-domain"),
                   extractor: str = "auto", batch: int | None = None, device: str | None = None,
                   profile: str = "cpu", drift: bool = True, curve: bool = True, curve_n: int | None = None,
                   progress: bool = True, reuse: bool = True, claims=(), curve_fid: bool | None = None) -> pd.DataFrame:
    """evaluate_cell over the FINISHED cells of cells.csv; writes table.csv, summary.csv (per arm x metric x
    stage), tests.csv (paired by seed, per 2-valued axis), and over training (analysis.trajectory, one
    generation per EMA snapshot): diagnostics_curve.csv (the L2 diagnostics on the fixed eval set),
    drift.csv (drift=True) and curve.csv (curve=True: shape_acc, and on profiles with curve_fid the first
    quality metric, at every snapshot, curve_n samples); logs the summary to the study's parent MLflow run.
    n, batch, device, curve_n default to the profile's (catlab.profiles). reuse: read unchanged
    runs' results back from their analysis/ folders (a worker evaluates its cell right after training).
    claims: the study's Claims (experiments.Claim): their verdicts go to claims.csv (analysis.claims).
    Rows that hold by definition (rewrite and direction at stage K-1) are left out of tests.csv.
    Returns the table (attrs["info"]: summary, tests, axes, runs' infos, parent_run_id, claims)."""
    es = eval_settings(profile, n=n, metrics=metrics, distances=distances, extractor=extractor, batch=batch,
                       device=device, drift=drift, curve=curve, curve_n=curve_n, curve_fid=curve_fid)
    study_dir = Path(study_dir)
    cells, axes = read_cells(study_dir)
    infos, runs = [], {}

    def one(run_dir):
        runs[str(run_dir)] = evaluate_cell(run_dir, es, reuse)
        infos.append(runs[str(run_dir)]["table"].attrs["info"])
        return runs[str(run_dir)]["table"]
    table = per_cell(cells, axes, one, f"analyze {study_dir.name}", progress)
    table.to_csv(study_dir / "table.csv", index=False)
    summary = summarize(table, by=[*axes, "metric", "stage"])
    summary.to_csv(study_dir / "summary.csv", index=False)
    tests = study_tests(drop_by_definition(table), axes)
    if len(tests):
        tests.to_csv(study_dir / "tests.csv", index=False)
    elif (study_dir / "tests.csv").exists():
        (study_dir / "tests.csv").unlink()                    # no 2-valued axis any more: no stale tests
    write_samples(study_dir, cells, axes, es.device)
    for part, name in (("diagnostics", "diagnostics_curve.csv"), ("drift", "drift.csv"), ("curve", "curve.csv")):
        if all(part in r for r in runs.values()):
            per_cell(cells, axes, lambda r: runs[str(r)][part], part, False).to_csv(study_dir / name, index=False)
    verdicts_df = verdicts(table, claims, axes) if claims else None
    if verdicts_df is not None:
        verdicts_df.to_csv(study_dir / "claims.csv", index=False)
    elif (study_dir / "claims.csv").exists():
        (study_dir / "claims.csv").unlink()
    uri = _read_json(study_dir / "study.json").get("tracking_uri") or run_config(cells["run_dir"][0]).run.tracking_uri
    parent = log_study(study_dir, summary, axes, max(i["step"] for i in infos), uri)
    table.attrs["info"] = {"fid_extractor": infos[0]["fid_extractor"], "runs": infos, "summary": summary,
                           "tests": tests, "axes": axes, "parent_run_id": parent, "claims": verdicts_df}
    return table
