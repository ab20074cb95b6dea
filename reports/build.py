"""`catlab report STUDY [--figures-only]`: figures (PDF + PNG), tables (Markdown + LaTeX) and index.html.

    report("ablation-consistency")    # -> 0; writes reports/out/ablation-consistency/
                                      #    index.html, fig4/5/8.{pdf,png}, drift.{pdf,png}, table-*.{md,tex}

Inputs are the analysis tables of studies/<study>/ (reports.data), MLflow run ids (cells.csv, study.json;
their status is read back from MLflow when its store is reachable) and fig8's samples.pt, which the analysis
writes. Each builder draws only what the study's data supports and leaves a one-line note when its input
is missing; nothing is ever drawn from made-up data.
"""
from __future__ import annotations

import re
import sys
import time
import warnings
from pathlib import Path

from reports import compare, style
from reports.data import load
from reports.figures_diag import fig4, fig6, fig7
from reports.figures_samples import fig8
from reports.figures_train import diagnostics_curve, drift, fig5, heatmap, sweep
from reports.html import write_index
from reports.tables import build_tables

REPO = Path(__file__).resolve().parents[1]
OUT = Path("reports/out")
OWNED = ("fig*.pdf", "fig*.png", "drift.*", "sweep.*", "heatmap.*", "diagnostics_curve.*", "table-*.md",
         "table-*.tex", "index.html")


def _make_targets() -> set[str]:
    mk = REPO / "Makefile"
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", mk.read_text(), re.M)) if mk.exists() else set()


def _mlflow_status(sd) -> dict:
    """{run id: MLflow status} for the parent and cell runs; {} when the store is not there."""
    ids = [sd.meta.get("parent_run_id")]
    if sd.cells is not None and "mlflow_run_id" in sd.cells.columns:
        ids += list(sd.cells["mlflow_run_id"].dropna())
    ids = [str(i) for i in ids if i and str(i) != "nan"]
    if not ids:
        return {}
    from catlab.tracking import MLflow, default_uri
    uri = sd.meta.get("tracking_uri") or default_uri()      # the store the study logged to, where recorded
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return {}      # do not create an empty store by asking
    client = MLflow(uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {i: client.status(i) for i in ids}
    return {k: v for k, v in out.items() if v} if client.ok else {}


def _clean(out_dir: Path) -> None:
    """Remove what an earlier build wrote, so a figure that is now skipped does not linger."""
    for pattern in OWNED:
        for p in out_dir.glob(pattern):
            p.unlink()


BUILDERS = (("diagnostics_curve", diagnostics_curve), ("fig4", fig4), ("fig5", fig5), ("fig6", fig6), ("fig7", fig7), ("fig8", fig8), ("drift", drift),
            ("sweep", sweep), ("heatmap", heatmap))


def build_figures(sd, out_dir: Path, ctx: dict) -> tuple[list[Path], list[str]]:
    written, notes = [], []
    for name, builder in BUILDERS:
        try:
            paths, note = builder(sd, out_dir, ctx)
        except Exception as e:  # noqa: BLE001 -- one broken figure must not cost the rest of the report
            if ctx.get("strict"):
                raise
            paths, note = [], f"{name} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        written += paths
        if note:
            notes.append(note)
    return written, notes


def write_tables(tables: dict, out_dir: Path) -> list[Path]:
    paths = []
    for name, tab in tables.items():
        for ext, text in (("md", tab.markdown()), ("tex", tab.latex())):
            path = out_dir / f"table-{name}.{ext}"
            path.write_text(text)
            paths.append(path)
    return paths


def report(study: str, figures_only: bool = False, profile: str = "cpu", root: str | Path = "studies",
           out: str | Path = OUT, strict: bool = False) -> int:
    """Build the report of a study; prints the path of index.html and the files written. Returns 0.

    profile: the one the study ran with when study.json does not say (for the commands shown).

    UserError (one line, naming the command to run first) when the study is unknown or has no results.
    strict=True lets a failing figure raise instead of becoming a note (tests).
    """
    t0 = time.perf_counter()
    sd = load(study, root)
    style.apply()
    out_dir = Path(out) / study
    out_dir.mkdir(parents=True, exist_ok=True)
    _clean(out_dir)
    summ = compare.summary(sd)
    ctx = {"summary": summ, "palette": style.palette(sd.arms), "profile": profile, "strict": strict}
    figures, notes = build_figures(sd, out_dir, ctx)
    written = list(figures)
    if not figures_only:
        pairs = compare.test_pairs(sd)
        marked = compare.marks(sd, pairs, summ) if summ is not None else set()
        tables = build_tables(summ, sd.arms, marked, sd.claims)
        if not tables:
            notes.append(f"tables skipped: table.csv is missing (run `catlab analyze {study}`)")
        table_files = write_tables(tables, out_dir)
        index = write_index(sd, out_dir, tables, table_files, figures, sd.notes + notes, profile,
                            _make_targets(), _mlflow_status(sd))
        written = [index, *table_files, *figures]
        print(f"report: {index}")
    for n in sd.notes + notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"wrote {len(written)} files in {time.perf_counter() - t0:.1f} s:")
    for p in written:
        print(f"  {p}")
    return 0
