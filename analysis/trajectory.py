"""Over training: drift, the three diagnostics and quality at every EMA snapshot, one generation each.

    parts = run_trajectory("runs/3f9c0a1b2d-s0")      # {"drift": df, "diagnostics": df, "curve": df}
    parts["diagnostics"]    # step, metric (discrepancy_l2, rewrite_l2, direction_l2), stage 1..K-1, value
    parts["curve"]          # step, images_seen, metric (fid_domain_256, shape_acc), stage 1..K, value
    parts["drift"]          # step, stage, drift, drift_ratio, drift_corr, move_cos, distance (analysis.drift)

Every snapshot's generator samples the run's fixed (z, y) (catlab.rundir.fixed_inputs) once; the parts
that ask for the same number of samples share that generation, and each part is computed by the same
functions as on its own (analysis.drift.stage_moves, analysis.measures.diagnostics / scale_quality /
shape_rows), so its numbers are those of a separate pass. Each part is kept in <run_dir>/analysis/
(analysis.memo) under its own key: a second call computes only the parts that changed.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from analysis.drift import COLUMNS as DRIFT_COLUMNS, stage_moves
from analysis.cells import per_cell, read_cells
from analysis.inputs import generate, run_decoder
from analysis.measures import diagnostics, extractor_id, scale_quality, shape_rows
from analysis.memo import fingerprint, memo, memo_path
from catlab.checkpoint import load_generator, run_config, snapshots
from catlab.distances import get_distance
from catlab.errors import UserError
from catlab.rundir import EVAL_N, fixed_inputs

PARTS = ("drift", "diagnostics", "curve")
COLUMNS = {"drift": DRIFT_COLUMNS, "diagnostics": ["step", "metric", "stage", "value"],
           "curve": ["step", "images_seen", "metric", "stage", "value"]}


def _specs(run_dir: Path, snaps, cfg, parts, n, drift_distance, distances, metrics, shape, extractor, device):
    """Per part: its memo spec and the number of samples it needs."""
    base = {"snaps": [fingerprint(p) for _, p in snaps], "device": torch.device(device).type}
    out = {}
    if "drift" in parts:
        out["drift"] = ({**base, "distance": drift_distance, "n": n["drift"]}, n["drift"])
    if "diagnostics" in parts:
        out["diagnostics"] = ({**base, "distances": list(distances), "n": n["diagnostics"],
                               "resampler": cfg.data.resampler}, n["diagnostics"])
    if "curve" in parts:
        spec = {**base, "n": n["curve"], "metrics": list(metrics), "shape": shape,
                "extractor": extractor_id(extractor, metrics, shape, cfg.data.name)}
        out["curve"] = (spec, n["curve"])
    return out


def run_trajectory(run_dir, parts=PARTS, n: int | dict = EVAL_N, drift_distance: str = "l2",
                   distances=("l2",), metrics=("fid",), shape: bool = True, extractor: str = "auto",
                   batch: int = 256, device: str = "cpu", reuse: bool = True) -> dict[str, pd.DataFrame]:
    """The requested parts over a run's EMA snapshots (module docstring). n: samples, one for all parts or
    {part: n}. metrics: quality metrics for the curve (() for none); shape: add shape_acc to the curve on
    data with a shape classifier. Runs with fewer than two snapshots give an empty drift table."""
    run_dir = Path(run_dir)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise UserError(f"parts must be among {', '.join(PARTS)}, but got parts={bad}")
    snaps = snapshots(run_dir)
    if not snaps and "curve" in parts:
        raise UserError(f"run dir must hold EMA snapshots (snapshots/ema_*.pt), but got none in {run_dir}")
    cfg = run_config(run_dir)
    n = {p: n for p in PARTS} if isinstance(n, int) else {p: n.get(p, EVAL_N) for p in PARTS}
    latent, decoder = run_decoder(cfg, device)
    metrics = tuple(metrics)
    if latent and decoder is None:                           # no pixels, no quality (the notice said so)
        metrics = ()
    from catlab.metrics.shape_classifier import SCORERS
    shape = cfg.data.name if shape and cfg.data.name in SCORERS else False
    specs = _specs(run_dir, snaps, cfg, parts, n, drift_distance, distances, metrics, shape, extractor, device)
    if latent:
        for spec, _ in specs.values():
            spec["decoder"] = decoder.ident if decoder is not None else None

    computed: dict[str, pd.DataFrame] = {}
    todo = [p for p, (spec, _) in specs.items()
            if not (reuse and memo_path(run_dir, f"trajectory-{p}", spec).is_file())]

    def compute_all() -> None:
        """One pass over the snapshots for every part not read back, one generation per sample count."""
        rows = {p: [] for p in todo}
        d = get_distance(drift_distance) if "drift" in todo else None
        prev, inputs = None, {}
        for step, path in snaps:
            G, scfg = load_generator(run_dir, snapshot=path, device=device)
            stages = {}
            for m in sorted({specs[p][1] for p in todo}):
                inputs.setdefault(m, fixed_inputs(run_dir, m, scfg.seed, G.z_dim, G.num_classes))
                stages[m] = generate(G, *inputs[m], batch)
            if "drift" in todo:
                cur = stages[specs["drift"][1]]
                if prev is not None:
                    rows["drift"] += [{"step": step, **r, "distance": drift_distance}
                                      for r in stage_moves(cur, prev, d, scfg.data.resampler, batch)]
                prev = cur
            if "diagnostics" in todo:
                x = stages[specs["diagnostics"][1]]
                rows["diagnostics"] += [{"step": step, "metric": m, "stage": k, "value": v}
                                        for m, k, v in diagnostics(x, distances, scfg.data.resampler, batch)]
            if "curve" in todo and (metrics or shape):
                m = specs["curve"][1]
                x, y = stages[m], inputs[m][1]
                q = scale_quality(x, scfg.data, m, metrics, extractor, decoder)[0] if metrics else []
                q += shape_rows(x, y, batch, shape) if shape else []
                rows["curve"] += [{"step": step, "images_seen": step * scfg.train.batch, "metric": name,
                                   "stage": k, "value": v} for name, k, v in q]
        for p in todo:
            computed[p] = pd.DataFrame(rows[p], columns=COLUMNS[p])

    out = {}
    for part, (spec, _) in specs.items():
        def compute(part=part):
            if part not in computed:
                compute_all()
            return computed[part]
        out[part] = memo(run_dir, f"trajectory-{part}", spec, compute, reuse)
    return out


# ---- the parts on their own (the drift and curve tables of a run, and drift.csv of a study) ----------------
def run_drift(run_dir, distance: str = "l2", n: int = EVAL_N, batch: int = 256, device: str = "cpu",
              reuse: bool = True) -> pd.DataFrame:
    """Drift of every stage between consecutive EMA snapshots of a run: one row per (step > first, stage).
    Columns: step (the later snapshot), stage (1..K), drift, drift_ratio, drift_corr, move_cos, distance."""
    return run_trajectory(run_dir, ("drift",), n, distance, batch=batch, device=device, reuse=reuse)["drift"]


def quality_curve(run_dir, n: int = 1000, metrics=("fid",), extractor: str = "auto", batch: int = 256,
                  device: str = "cpu", write: bool = True, reuse: bool = True) -> pd.DataFrame:
    """Quality per scale at every EMA snapshot (fig 5): rows step, images_seen (= step * batch), metric,
    stage, value; written to <run_dir>/curve.csv. Same fixed (z, y) and real subset at every step."""
    df = run_trajectory(run_dir, ("curve",), n, metrics=metrics, shape=False, extractor=extractor, batch=batch,
                        device=device, reuse=reuse)["curve"]
    if write:
        df.to_csv(Path(run_dir) / "curve.csv", index=False)
    return df


def study_drift(study_dir, distance: str = "l2", n: int = EVAL_N, batch: int = 256, device: str = "cpu",
                progress: bool = True, write: bool = True, reuse: bool = True) -> pd.DataFrame:
    """run_drift over a study's FINISHED cells -> drift.csv (cell, seed, <axes>, step, stage, drift, ...)."""
    study_dir = Path(study_dir)
    cells, axes = read_cells(study_dir)
    df = per_cell(cells, axes, lambda r: run_drift(r, distance, n, batch, device, reuse), f"drift {study_dir.name}",
                  progress)
    if write:
        df.to_csv(study_dir / "drift.csv", index=False)
    return df
