"""A study's cells as the analysis reads them: cells.csv in, one labelled table per cell out.

    cells, axes = read_cells("studies/ablation-consistency")   # the FINISHED cells, their axis columns
    table = per_cell(cells, axes, lambda run_dir: evaluate_run(run_dir), "analyze")
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from catlab.errors import UserError

CELL_COLUMNS = ("cell", "seed", "run_dir", "status", "reason", "config_hash", "mlflow_run_id")


def _locate(study_dir: Path, p: str) -> Path:
    for cand in (Path(p), study_dir / p, study_dir / "runs" / Path(p).name):
        if (cand / "config.json").exists():
            return cand
    return Path(p)


def read_cells(study_dir) -> tuple[pd.DataFrame, list[str]]:
    """The FINISHED cells of a study (cells.csv; run_dir resolved, seed int) and its axis columns."""
    study_dir = Path(study_dir)
    path = study_dir / "cells.csv"
    if not path.exists():
        raise UserError(f"study dir must hold cells.csv (run `catlab ablate` first), but got {study_dir}")
    cells = pd.read_csv(path, dtype=str, keep_default_na=False)
    axes = [c for c in cells.columns if c not in CELL_COLUMNS]
    cells = cells[cells["status"] == "FINISHED"].copy()
    if cells.empty:
        raise UserError(f"{path} must list FINISHED cells, but got none (status column)")
    cells["seed"] = cells["seed"].astype(int)
    cells["run_dir"] = [str(_locate(study_dir, p)) for p in cells["run_dir"]]
    return cells.reset_index(drop=True), axes


def per_cell(cells: pd.DataFrame, axes: list[str], fn, desc: str, progress: bool = True) -> pd.DataFrame:
    """fn(run_dir) -> DataFrame for every cell, labelled with cell, seed and the axis columns, concatenated."""
    from tqdm.auto import tqdm
    frames = []
    for row in tqdm(cells.to_dict("records"), desc=desc, unit="run", disable=not progress, dynamic_ncols=True):
        df = fn(Path(row["run_dir"]))
        labels = {"cell": row["cell"], "seed": row["seed"], **{a: row[a] for a in axes}}
        frames.append(df.assign(**labels)[[*labels, *df.columns]])
    return pd.concat(frames, ignore_index=True)
