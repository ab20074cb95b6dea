"""`catlab analyze RUN_DIR|STUDY [--metrics ...] [--n N] [--profile cpu|gpu]`.

    analyze("runs/3f9c0a1b2d-s0")              # evaluate_run -> <run_dir>/analysis.csv, prints a table
    analyze("ablation-consistency", studies=STUDIES)  # evaluate_study on studies/<study>/ -> table.csv, summary.csv,
                                               # tests.csv, drift.csv, curve.csv; prints the summary

studies: the registry ({name: Study}) the caller passes in (the CLI passes experiments.STUDIES), for study
names and their claims: the analysis never imports it.
--metrics mixes quality metrics (fid kid prc isc, and shape: the colour-blind shape classifier's accuracy,
shape_acc, on `shapes` runs) and distances for the diagnostics (l2 l1 lpips-domain lpips-alex ...); a group
left out is skipped. Default: fid kid shape, and l2 lpips-domain (+ lpips-alex when the AlexNet weights are
on disk). Offline it runs on the domain extractor and prints one notice per missing
weights file (Inception from catlab.metrics, AlexNet from here), naming where to put it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch

from analysis.run_eval import evaluate_run
from analysis.study import evaluate_study
from catlab.errors import UserError
from catlab.profiles import analysis_options

QUALITY = ("fid", "kid", "prc", "isc", "shape")   # shape: shape_acc, `shapes` runs only
DISTANCES = ("l2", "l1", "lpips-domain", "lpips-alex", "lpips-vgg", "lpips-squeeze")
STUDY_ROOT = Path("studies")


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


def resolve_target(target: str, known: dict) -> tuple[str, Path]:
    """("run", run_dir) for a dir with config.json; ("study", studies/<name>) for a study name or dir."""
    p = Path(target)
    if (p / "config.json").is_file():
        return "run", p
    if (p / "cells.csv").is_file():
        return "study", p
    study_dir = STUDY_ROOT / target
    if target in known or (study_dir / "cells.csv").is_file():
        if not (study_dir / "cells.csv").is_file():
            raise UserError(f"study {target} has no results yet ({study_dir / 'cells.csv'} is missing); "
                            f"run `catlab ablate {target}` first")
        return "study", study_dir
    names = ", ".join(known) or "none registered"
    raise UserError(f"target must be a run dir (with config.json) or a study ({names}), but got target={target!r}")


def _fmt(x) -> str:
    return "" if pd.isna(x) else f"{x:.4g}"


def compact(df: pd.DataFrame, index, value: str = "value") -> str:
    """Rows = index columns, one column per stage (s1..sK)."""
    if df.empty:
        return "(no rows)"
    wide = df.pivot_table(index=index, columns="stage", values=value, aggfunc="first", sort=False)
    wide.columns = [f"s{c}" for c in wide.columns]
    return wide.map(_fmt).to_string()


def analyze(target: str, metrics=None, n: int | None = None, profile: str = "cpu",
            studies: dict | None = None) -> int:
    """Evaluate a run dir or a study; write its tables; print a compact one. Returns the exit code (0)."""
    studies = studies or {}
    opts = analysis_options(profile)
    n = opts["n"] if n is None else n
    if n < 2:
        raise UserError(f"--n must be >= 2, but got n={n}")
    kind, path = resolve_target(target, studies)
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
    spec = studies.get(path.name.split("@", 1)[0])
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
