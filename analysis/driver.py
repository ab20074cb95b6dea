"""`catlab analyze RUN_DIR|STUDY [--metrics ...] [--n N] [--profile cpu|gpu]`.

    analyze("runs/3f9c0a1b2d-s0")              # evaluate_run -> <run_dir>/analysis.csv, prints a table
    analyze("ablation-consistency")            # evaluate_study on studies/<study>/ -> table.csv, summary.csv,
                                               # tests.csv, drift.csv, curve.csv; prints the summary

--metrics mixes quality metrics (fid kid prc isc, and shape: the colour-blind shape classifier's accuracy,
shape_acc, on `shapes` runs) and distances for the diagnostics (l2 l1 lpips-domain lpips-alex ...); a group
left out is skipped. Default: fid kid shape, and l2 lpips-domain (+ lpips-alex when the AlexNet weights are
on disk). Offline it runs on the domain extractor and prints one notice per missing
weights file (Inception from catlab.metrics, AlexNet from here), naming where to put it.

Also here, the thin study plumbing that analysis.quality and analysis.drift share: read_cells (cells.csv),
per_cell (a per-run table for every cell, labelled), study_tests (paired tests per 2-valued axis), and the
MLflow sinks (log_run_metrics: a run's own MLflow run; log_study: the study's parent run).
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import torch

from catlab.errors import UserError

QUALITY = ("fid", "kid", "prc", "isc", "shape")   # shape: shape_acc, `shapes` runs only
DISTANCES = ("l2", "l1", "lpips-domain", "lpips-alex", "lpips-vgg", "lpips-squeeze")
# samples per evaluation, chunk, device; curve_fid: FID at every snapshot (on the cpu only shape_acc: FID per
# snapshot costs 4 x curve_n float64 feature extractions per snapshot, most of a cell's analysis)
PROFILES = {"cpu": {"n": 500, "curve_n": 256, "batch": 256, "device": "cpu", "curve_fid": False},
            "gpu": {"n": 10000, "batch": 1024, "device": "cuda", "curve_fid": True}}
STUDY_ROOT = Path("studies")
CELL_COLUMNS = ("cell", "seed", "run_dir", "status", "reason", "config_hash", "mlflow_run_id")


# ---- choices ------------------------------------------------------------------------------------------
def profile_options(profile: str = "cpu") -> dict:
    """n, batch and device of a profile (gpu falls back to the CPU where there is no CUDA)."""
    if profile not in PROFILES:
        raise UserError(f"profile must be one of {', '.join(PROFILES)}, but got profile={profile!r}")
    opts = dict(PROFILES[profile])
    if opts["device"] == "cuda" and not torch.cuda.is_available():
        opts["device"] = "cpu"
    return opts


def alexnet_path() -> Path:
    from catlab.metrics.lpips_distance import TRUNK_FILES
    return Path(torch.hub.get_dir()) / "checkpoints" / TRUNK_FILES["alex"]


def default_distances() -> tuple[str, ...]:
    """l2 and lpips-domain, plus lpips-alex when torchvision's AlexNet file is on disk (else one notice)."""
    path = alexnet_path()
    if path.is_file():
        return ("l2", "lpips-domain", "lpips-alex")
    print(f"catlab: no AlexNet weights at {path}; the diagnostics use l2 and lpips-domain "
          "(put alexnet-owt-7be5be79.pth there for lpips-alex)", file=sys.stderr)
    return ("l2", "lpips-domain")


def split_metrics(metrics) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """--metrics -> (quality metrics, distances); None -> the defaults."""
    if not metrics:
        return ("fid", "kid", "shape"), default_distances()
    bad = [m for m in metrics if m not in QUALITY + DISTANCES]
    if bad:
        raise UserError(f"--metrics must name quality metrics ({', '.join(QUALITY)}) or distances "
                        f"({', '.join(DISTANCES)}), but got metrics={bad[0]!r}")
    from catlab.metrics.lpips_distance import TRUNK_FILES, trunk_weights_path
    for m in metrics:                                        # a missing trunk fails now, not after sampling
        if m.startswith("lpips-") and m[6:] in TRUNK_FILES:
            trunk_weights_path(m[6:])
    return tuple(m for m in metrics if m in QUALITY), tuple(m for m in metrics if m in DISTANCES)


def studies() -> dict:
    try:
        from experiments import STUDIES
    except ImportError:
        return {}
    return STUDIES


def resolve_target(target: str) -> tuple[str, Path]:
    """("run", run_dir) for a dir with config.json; ("study", studies/<name>) for a study name or dir."""
    p = Path(target)
    if (p / "config.json").is_file():
        return "run", p
    if (p / "cells.csv").is_file():
        return "study", p
    known = studies()
    study_dir = STUDY_ROOT / target
    if target in known or (study_dir / "cells.csv").is_file():
        if not (study_dir / "cells.csv").is_file():
            raise UserError(f"study {target} has no results yet ({study_dir / 'cells.csv'} is missing); "
                            f"run `catlab ablate {target}` first")
        return "study", study_dir
    names = ", ".join(known) or "none registered"
    raise UserError(f"target must be a run dir (with config.json) or a study ({names}), but got target={target!r}")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# ---- studies: cells.csv in, per-cell tables, tests, the parent MLflow run --------------------------------
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


def study_tests(table: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Paired tests (by seed) between the two labels of every 2-valued axis, per metric x stage."""
    from analysis.stats import paired_tests
    out = []
    for axis in axes:
        if table[axis].nunique() != 2:
            continue
        others = [a for a in axes if a != axis]
        res = paired_tests(table, axis, pair_col="seed", by=[*others, "metric", "stage"])
        out.append(res.assign(axis=axis)[["axis", *res.columns]])
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def log_run_metrics(run_dir: Path, cfg, df: pd.DataFrame, step: int) -> str | None:
    """Send the rows to the run's own MLflow run (run.json mlflow_run_id) as <metric>_s<stage> at `step`."""
    from catlab.tracking import MLflow
    run_id = _read_json(Path(run_dir) / "run.json").get("mlflow_run_id")
    if not run_id or not cfg.run.mlflow:
        return None
    rows = [(f"{r.metric}_s{r.stage}", float(r.value), step) for r in df.itertuples() if math.isfinite(r.value)]
    MLflow(cfg.run.tracking_uri).log_metrics(run_id, rows)
    return run_id


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


# ---- printing -----------------------------------------------------------------------------------------
def _fmt(x) -> str:
    return "" if pd.isna(x) else f"{x:.4g}"


def compact(df: pd.DataFrame, index, value: str = "value") -> str:
    """Rows = index columns, one column per stage (s1..sK)."""
    if df.empty:
        return "(no rows)"
    wide = df.pivot_table(index=index, columns="stage", values=value, aggfunc="first", sort=False)
    wide.columns = [f"s{c}" for c in wide.columns]
    return wide.map(_fmt).to_string()


# ---- the command --------------------------------------------------------------------------------------
def analyze(target: str, metrics=None, n: int | None = None, profile: str = "cpu") -> int:
    """Evaluate a run dir or a study; write its tables; print a compact one. Returns the exit code (0)."""
    from analysis.quality import evaluate_run, evaluate_study
    opts = profile_options(profile)
    n = opts["n"] if n is None else n
    if n < 2:
        raise UserError(f"--n must be >= 2, but got n={n}")
    kind, path = resolve_target(target)
    quality, distances = split_metrics(metrics)
    if kind == "run":
        df = evaluate_run(path, n=n, metrics=quality, distances=distances, batch=opts["batch"],
                          device=opts["device"])
        df.to_csv(path / "analysis.csv", index=False)
        info = df.attrs["info"]
        latent = ""
        if info.get("latent"):                               # latent run: decoded pixels, or latent space only
            dec = info.get("decoder")
            latent = f", decoder {dec['decoder']}" if dec else ", no decoder: latent-space diagnostics only"
        print(f"{path} (step {info['step']}, n={n}, extractor {info['fid_extractor'] or '-'}{latent})")
        print(compact(df, "metric"))
        print(f"wrote {path / 'analysis.csv'}")
        return 0
    spec = studies().get(path.name.split("@", 1)[0])
    table = evaluate_study(path, n=n, metrics=quality, distances=distances, batch=opts["batch"],
                           claims=getattr(spec, "claims", ()),
                           device=opts["device"], profile=profile)
    info = table.attrs["info"]
    summary = info["summary"]
    print(f"{path}: {table['cell'].nunique()} cells, n={n}, extractor {info['fid_extractor'] or '-'}; "
          "mean over seeds")
    print(compact(summary, ["metric", *info["axes"]], "mean"))
    if info.get("claims") is not None:
        from analysis.claims import claims_text
        print(f"claims (paired by seed; {path / 'claims.csv'})\n{claims_text(info['claims'])}")
    written = [f for f in ("table.csv", "summary.csv", "tests.csv", "claims.csv", "drift.csv", "curve.csv",
                           "diagnostics_curve.csv")
               if (path / f).exists()]
    print(f"wrote {', '.join(str(path / f) for f in written)}")
    return 0
