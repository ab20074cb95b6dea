"""After a grid: the analysis, the report and the summary printed to the terminal.

    analyse("ablation-consistency", "cpu", study.claims)    # analysis.study.evaluate_study
    build_report("ablation-consistency", "cpu")             # reports.build.report
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
