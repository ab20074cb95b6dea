"""After a grid: its tables, the analysis, the report, the parent run closed and the summary printed.

    rows = save_grid(sdir, study, cells, results, info)   # cells.csv; study.json: info, then the cells
    finish_grid(study, sdir, "cpu", rows, ml, pid)   # analysis.study, reports.build; the parent run ends
    print_summary(study, sdir, rows, ml, pid)

The runs are safe whatever happens here: a failure prints one line that says how to redo the step.
"""
from __future__ import annotations

import os
from pathlib import Path

from experiments import outputs
from experiments.grid import STUDIES_ROOT


def analyse(study: str, profile: str, claims=()) -> None:
    """Analyse studies/<study> (study: the outputs dir name, e.g. ablation-consistency@1f3a9c2e)."""
    from analysis.study import evaluate_study
    try:
        evaluate_study(STUDIES_ROOT / study, profile=profile, claims=claims)
    except Exception as e:  # noqa: BLE001 -- the runs are safe; say how to redo the analysis
        print(f"analysis: failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              f"redo it with: catlab analyze {study} --debug")


def build_report(study: str, profile: str) -> None:
    from reports.build import report
    try:
        report(study, figures_only=False, profile=profile)
    except Exception as e:  # noqa: BLE001
        print(f"report: failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              f"redo it with: catlab report {study} --debug")


def save_grid(sdir: Path, study, cells, results: dict, info: dict) -> list[dict]:
    """cells.csv and study.json (the study's name and axis declaration, info, then the cells) from the
    cells' results; returns the rows."""
    rows = outputs.cell_rows(cells, results)
    outputs.write_cells_csv(sdir / "cells.csv", rows)
    outputs.write_study_json(sdir / "study.json", {"study": study.name, **info, "axes": study.axes, "cells": rows})
    return rows


def finish_grid(study, sdir: Path, profile: str, rows: list[dict], ml, pid, analysis: bool = True) -> None:
    """The analysis and the report (when a cell finished), then the parent run ends with cells.csv and
    study.json (the analysis logs its own tables), FAILED when a cell did not finish."""
    failed = [r for r in rows if r["status"] != "FINISHED"]
    if analysis and len(failed) < len(rows):
        analyse(sdir.name, profile, study.claims)
        build_report(sdir.name, profile)
    if ml and pid:
        for name in ("cells.csv", "study.json"):
            if (sdir / name).exists():
                ml.log_artifact(pid, sdir / name)
        ml.set_tags(pid, {"cells": len(rows), "failed": len(failed)})
        ml.end(pid, "FAILED" if failed else "FINISHED", f"{len(failed)} of {len(rows)} cells failed" if failed
               else "")


def print_summary(study, sdir: Path, rows: list[dict], ml, pid) -> None:
    print(f"\n== {study.name}: cells ({sdir / 'cells.csv'})")
    print(outputs.status_table(rows, list(study.axes)))
    try:
        arms = [",".join(f"{a}={v}" for a, v in arm.items()) if len(arm) > 1 else next(iter(arm.values()))
                for arm in study.arms()]
        tables = outputs.quality_tables(sdir, arms)
    except Exception as e:  # noqa: BLE001 -- a summary the analysis shaped differently: say so, go on
        tables = f"(could not read {sdir / 'summary.csv'}: {type(e).__name__}: {e})"
    if tables:
        print(f"\n== {study.name}: quality and diagnostics\n{tables}")
    claims = outputs.claims_table(sdir)
    if claims:
        print(f"\n== {study.name}: claims (paired by seed; {sdir / 'claims.csv'})\n{claims}")
    html = os.path.join("reports", "out", sdir.name, "index.html")
    print(f"\nreport:  {html if os.path.exists(html) else '(none written)'}")
    if ml is not None:
        from catlab.tracking import default_uri
        print(f"MLflow:  {ml.uri}  (experiment {study.name}, parent run {pid})")
        print("open it: make mlflow-ui" if ml.uri == default_uri() and "MLFLOW_TRACKING_URI" not in os.environ
              else f"open it: mlflow ui --backend-store-uri {ml.uri}")
