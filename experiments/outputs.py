"""After a grid, local or across machines: cells.csv and study.json (docs/architecture.md gives their columns),
the analysis, the report, the parent run closed, and the closing summary."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from catlab.files import atomic_text
from catlab.text import text_table
from experiments.grid import STUDIES_ROOT

STAT_COLS = {"metric", "stage", "n", "mean", "std", "ci_low", "ci_high", "method"}
TEST_COLS = {"axis", "a", "b", "n_pairs", "mean_a", "mean_b", "mean_diff", "sd_diff", "t", "p_ttest", "p_wilcoxon",
             "cohen_dz", "hedges_g_av", "significant", "note"}
DIAGNOSTICS = ("discrepancy", "rewrite", "direction")


def cell_rows(cells, results: dict) -> list[dict]:
    """One row per cell; `results` maps a cell name to {status, reason, mlflow_run_id} (absent: PENDING)."""
    rows = []
    for c in cells:
        r = results.get(c.name, {})
        rows.append({"cell": c.name, "seed": c.seed, **c.arm, "run_dir": str(c.run_dir),
                     "status": r.get("status", "PENDING"), "reason": r.get("reason", ""),
                     "config_hash": c.cfg.hash(), "mlflow_run_id": r.get("mlflow_run_id") or ""})
    return rows


def write_cells_csv(path: Path, rows: list[dict]) -> None:
    import io
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    atomic_text(path, buf.getvalue())


def read_study_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _num(x) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def status_table(rows: list[dict], axes: list[str]) -> str:
    """Per arm: how many cells finished / failed / are pending."""
    arms: dict[str, dict] = {}
    for r in rows:
        arm = ",".join(f"{a}={r[a]}" for a in axes)
        counts = arms.setdefault(arm, {"FINISHED": 0, "FAILED": 0, "other": 0})
        counts[r["status"] if r["status"] in counts else "other"] += 1
    return text_table(["arm", "finished", "failed", "other"],
                  [[a, *(str(v) for v in c.values())] for a, c in arms.items()])


def claims_table(study_dir: Path) -> str | None:
    """The verdicts of claims.csv as text (analysis.claims.claims_text), or None without one."""
    path = study_dir / "claims.csv"
    if not path.exists():
        return None
    import pandas as pd
    from analysis.claims import claims_text
    return claims_text(pd.read_csv(path))


def _selected(df):
    """The rows worth a line: the diagnostics (less those that hold by definition), final-scale FID/KID/shape_acc."""
    from analysis.claims import drop_by_definition
    df = drop_by_definition(df)
    metric = df["metric"].astype(str)
    diag = metric.str.startswith(DIAGNOSTICS)
    fid = metric.str.startswith(("fid", "kid", "shape_acc")) & ~metric.str.contains("_std")
    if "stage" in df.columns:
        last = df.groupby("metric")["stage"].transform("max")
        fid &= df["stage"] == last
    return df[diag | fid]


def _row_key(r) -> str:
    stage = r.get("stage")
    return f"{r['metric']}" + ("" if stage is None or (isinstance(stage, float) and math.isnan(stage))
                               else f" s{int(stage)}")


def _wide(df, column, cell, order=()) -> str:
    """A text table with a row per metric (and stage) and a column per column(r), holding cell(r) (else "-")."""
    cells: dict[str, dict[str, str]] = {}
    for _, r in df.iterrows():
        cells.setdefault(_row_key(r), {})[column(r)] = cell(r)
    rank = {c: i for i, c in enumerate(order)}
    cols = sorted(dict.fromkeys(column(r) for _, r in df.iterrows()), key=lambda c: rank.get(c, len(rank)))
    return text_table(["metric", *cols], [[k, *(v.get(c, "-") for c in cols)] for k, v in cells.items()])


def quality_tables(study_dir: Path, arm_order: list[str] | None = None) -> str | None:
    """mean +/- 95 % CI half-width per arm (columns, sorted by arm_order) and metric/stage (rows), then the
    paired p-values. Arms are named by their labels ("on") or, with several axes, "axis=label,..."."""
    import pandas as pd
    path = study_dir / "summary.csv"
    if not path.exists():
        return None
    summary = _selected(pd.read_csv(path))
    if summary.empty:
        return f"{path}: no diagnostic or FID rows"
    axes = [c for c in summary.columns if c not in STAT_COLS]
    arm = (lambda r: ",".join(f"{c}={r[c]}" for c in axes)) if len(axes) > 1 else \
        (lambda r: str(r[axes[0]])) if axes else (lambda r: "all")
    out = ["mean ± 95 % CI half-width (n seeds per arm; summary.csv)",
           _wide(summary, arm, lambda r: f"{_num(r['mean'])} ± {_num((r['ci_high'] - r['ci_low']) / 2)}",
                 arm_order or ())]
    tpath = study_dir / "tests.csv"
    tests = pd.read_csv(tpath) if tpath.exists() else pd.DataFrame()
    if not tests.empty and {"metric", "a", "b", "p_ttest"} <= set(tests.columns):
        extra = [c for c in tests.columns if c not in TEST_COLS | {"metric", "stage"}]
        wilcoxon = "p_wilcoxon" in tests.columns
        out += ["paired p-values, t-test / Wilcoxon (tests.csv)",
                _wide(_selected(tests), lambda r: f"{r['a']} vs {r['b']}" + "".join(f" [{c}={r[c]}]" for c in extra),
                      lambda r: _num(r["p_ttest"]) + (f" / {_num(r['p_wilcoxon'])}" if wilcoxon else ""))]
    return "\n".join(out)


def _safely(step: str, redo: str, fn, *args, **kwargs) -> None:
    """One step after the runs; a failure prints one line that says how to redo it."""
    try:
        fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        print(f"{step}: failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              f"redo it with: {redo} --debug")


def analyse(study: str, profile: str, claims=()) -> None:
    """Analyse studies/<study> (study: the outputs dir name, e.g. ablation-consistency@1f3a9c2e)."""
    from analysis.study import evaluate_study
    _safely("analysis", f"catlab analyze {study}", evaluate_study, STUDIES_ROOT / study, profile=profile,
            claims=claims)


def build_report(study: str, profile: str) -> None:
    from reports.build import report
    _safely("report", f"catlab report {study}", report, study, figures_only=False, profile=profile)


def save_grid(sdir: Path, study, cells, results: dict, info: dict) -> list[dict]:
    """cells.csv and study.json from the cells' results; returns the rows."""
    rows = cell_rows(cells, results)
    write_cells_csv(sdir / "cells.csv", rows)
    atomic_text(sdir / "study.json", json.dumps({"study": study.name, **info, "axes": study.axes, "cells": rows},
                                                indent=2) + "\n")
    return rows


def finish_grid(study, sdir: Path, profile: str, rows: list[dict], ml, pid, analysis: bool = True) -> None:
    """The analysis and the report (when a cell finished); the parent run ends, FAILED if a cell did not finish."""
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
    print(status_table(rows, list(study.axes)))
    try:
        arms = [",".join(f"{a}={v}" for a, v in arm.items()) if len(arm) > 1 else next(iter(arm.values()))
                for arm in study.arms()]
        tables = quality_tables(sdir, arms)
    except Exception as e:  # noqa: BLE001 -- a summary the analysis shaped differently: say so, go on
        tables = f"(could not read {sdir / 'summary.csv'}: {type(e).__name__}: {e})"
    if tables:
        print(f"\n== {study.name}: quality and diagnostics\n{tables}")
    claims = claims_table(sdir)
    if claims:
        print(f"\n== {study.name}: claims (paired by seed; {sdir / 'claims.csv'})\n{claims}")
    html = os.path.join("reports", "out", sdir.name, "index.html")
    print(f"\nreport:  {html if os.path.exists(html) else '(none written)'}")
    if ml is not None:
        from catlab.tracking import default_uri
        print(f"MLflow:  {ml.uri}  (experiment {study.name}, parent run {pid})")
        print("open it: make mlflow-ui" if ml.uri == default_uri() and "MLFLOW_TRACKING_URI" not in os.environ
              else f"open it: mlflow ui --backend-store-uri {ml.uri}")
