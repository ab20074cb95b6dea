"""`catlab analyze RUN_DIR|STUDY [--metrics ...] [--n N] [--profile cpu|gpu]`.

    analyze("runs/3f9c0a1b2d-s0")              # evaluate_run -> <run_dir>/analysis.csv, prints a table
    analyze("ablation-consistency")            # evaluate_study on studies/<study>/ -> table.csv, summary.csv,
                                               # tests.csv, drift.csv, curve.csv; prints the summary

--metrics mixes quality metrics (fid kid prc isc) and distances for the diagnostics (l2 l1 lpips-domain
lpips-alex ...); a group left out is skipped. Default: fid kid, and l2 lpips-domain (+ lpips-alex when the
AlexNet weights are on disk). Offline it runs on the domain extractor and prints one notice per missing
weights file (Inception from catlab.metrics, AlexNet from here), naming where to put it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch

from catlab.errors import UserError

QUALITY = ("fid", "kid", "prc", "isc")
DISTANCES = ("l2", "l1", "lpips-domain", "lpips-alex", "lpips-vgg", "lpips-squeeze")
PROFILES = {"cpu": {"n": 1000, "batch": 256, "device": "cpu"},
            "gpu": {"n": 10000, "batch": 1024, "device": "cuda"}}
STUDY_ROOT = Path("studies")


# ---- choices ------------------------------------------------------------------------------------------
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
        return ("fid", "kid"), default_distances()
    bad = [m for m in metrics if m not in QUALITY + DISTANCES]
    if bad:
        raise UserError(f"--metrics must name quality metrics ({', '.join(QUALITY)}) or distances "
                        f"({', '.join(DISTANCES)}), but got metrics={bad[0]!r}")
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


# ---- printing -----------------------------------------------------------------------------------------
def _fmt(x) -> str:
    return "" if pd.isna(x) else f"{x:.4g}"


def compact(df: pd.DataFrame, index, value: str = "value") -> str:
    """Rows = index columns, one column per stage (s1..sK)."""
    wide = df.pivot_table(index=index, columns="stage", values=value, aggfunc="first", sort=False)
    wide.columns = [f"s{c}" for c in wide.columns]
    return wide.map(_fmt).to_string()


# ---- the command --------------------------------------------------------------------------------------
def analyze(target: str, metrics=None, n: int | None = None, profile: str = "cpu") -> int:
    """Evaluate a run dir or a study; write its tables; print a compact one. Returns the exit code (0)."""
    if profile not in PROFILES:
        raise UserError(f"profile must be one of {', '.join(PROFILES)}, but got profile={profile!r}")
    opts = dict(PROFILES[profile])
    if opts["device"] == "cuda" and not torch.cuda.is_available():
        opts["device"] = "cpu"
    n = opts["n"] if n is None else n
    if n < 2:
        raise UserError(f"--n must be >= 2, but got n={n}")
    kind, path = resolve_target(target)
    quality, distances = split_metrics(metrics)
    from analysis.quality import evaluate_run, evaluate_study
    if kind == "run":
        df = evaluate_run(path, n=n, metrics=quality, distances=distances, batch=opts["batch"],
                          device=opts["device"])
        df.to_csv(path / "analysis.csv", index=False)
        info = df.attrs["info"]
        print(f"{path} (step {info['step']}, n={n}, extractor {info['fid_extractor'] or '-'})")
        print(compact(df, "metric"))
        print(f"wrote {path / 'analysis.csv'}")
        return 0
    table = evaluate_study(path, n=n, metrics=quality, distances=distances, batch=opts["batch"],
                           device=opts["device"], curve=bool(quality))
    info = table.attrs["info"]
    summary = info["summary"]
    print(f"{path}: {table['cell'].nunique()} cells, n={n}, extractor {info['fid_extractor'] or '-'}; "
          "mean over seeds")
    print(compact(summary, ["metric", *info["axes"]], "mean"))
    written = [f for f in ("table.csv", "summary.csv", "tests.csv", "drift.csv", "curve.csv")
               if (path / f).exists()]
    print(f"wrote {', '.join(str(path / f) for f in written)}")
    return 0
