"""One run's evaluation: per-scale quality and the three diagnostics of its EMA generator, a tidy table.

    df = evaluate_run("runs/3f9c0a1b2d-s0", n=1000)      # rows: fid_domain_1k / 1..K, discrepancy_l2 / 1..K-1 ...
    df.attrs["info"]["fid_extractor"]                      # "domain" (offline) or "inception"
    evaluate_cell(run_dir, EvalSettings())                 # + the tables over training (analysis.trajectory)

Samples and real images: analysis.inputs; measurements: analysis.measures; the table is kept in the run dir
(analysis.memo). Latent runs (data.name=latents:PATH): l2/l1 diagnostics work on the latents (latent space);
pixel metrics (FID/KID/PRC/IS and the lpips-* diagnostics) decode the fake stages and the real latent
pyramid to pixels with the run's decoder ($CATLAB_VAE, catlab.data.latents), each stage at its own scale
(s_k -> 8 s_k px), and are skipped without one (one notice line).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from analysis.inputs import cache_root, generate, is_pixel_distance, run_decoder
from analysis.measures import diagnostics, extractor_id, scale_quality, shape_rows
from analysis.memo import fingerprint, memo
from catlab.checkpoint import load_generator, run_config, safe_load
from catlab.data.latents import decode_to_pixels
from catlab.errors import UserError
from catlab.profiles import analysis_options
from catlab.rundir import EVAL_N, fixed_inputs, last_checkpoint, read_info

DIAG_N = 256  # the diagnostics use the run's fixed evaluation set (eval_set.pt), as the training hook does


def _cache_files() -> set[str]:
    root = cache_root()
    return set(os.listdir(root)) if root.is_dir() else set()


def evaluate_run(run_dir, n: int = 1000, metrics=("fid", "kid", "shape"), distances=("l2", "lpips-domain"),
                 extractor: str = "auto", batch: int = 256, device: str = "cpu", log: bool = True,
                 reuse: bool = True) -> pd.DataFrame:
    """Per-scale quality and the three diagnostics of a run's EMA generator: tidy (metric, stage, value).

    metrics: subset of catlab.metrics' fid, kid, prc, isc (() skips quality); names like fid_domain_1k,
        stage = scale 1..K; and "shape": shape_acc per stage (`shapes` runs; skipped on other data).
        distances: names for the diagnostics (discrepancy_l2, rewrite_lpips-domain,
        direction_l2 ...; stage 1..K-1). df.attrs["info"]: step, n, fid_extractor, cache_hits (reference
        statistics found in the cache, per scale), reused (read back from <run_dir>/analysis/), latent,
        decoder (its ident, latent runs), skipped (shape on data other than shapes; what a latent run
        without a decoder left out), ...
    Latent runs: l2/l1 diagnostics on the latents; quality and lpips-* on decoded pixels, or skipped
    (with one notice line) when there is no decoder ($CATLAB_VAE).
    log: send freshly computed rows to the run's MLflow run at the run's final step.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise UserError(f"n must be an int >= 2, but got n={n!r}")
    run_dir = Path(run_dir)
    metrics, distances = tuple(metrics or ()), tuple(distances or ())
    cfg = run_config(run_dir)
    latent, decoder = run_decoder(cfg, device)
    skipped = ()
    from catlab.metrics.shape_classifier import SCORERS
    shape = cfg.data.name if "shape" in metrics and cfg.data.name in SCORERS else False
    if "shape" in metrics and not shape:
        skipped = ("shape",)
    metrics = tuple(m for m in metrics if m != "shape")
    if latent and decoder is None:                           # no pixels: latent-space diagnostics only
        skipped += metrics + tuple(d for d in distances if is_pixel_distance(d))
        metrics, distances = (), tuple(d for d in distances if not is_pixel_distance(d))
    spec = {"ckpt": fingerprint(last_checkpoint(run_dir)), "n": n, "diag_n": DIAG_N, "metrics": metrics,
            "distances": distances,
            "shape": shape, "extractor": extractor_id(extractor, metrics, shape, cfg.data.name),
            "device": torch.device(device).type}
    if latent:
        spec["decoder"] = decoder.ident if decoder is not None else None

    def compute() -> pd.DataFrame:
        G, _ = load_generator(run_dir, device=device)
        step = int(read_info(run_dir).get("step") or safe_load(last_checkpoint(run_dir))["step"])
        z, y = fixed_inputs(run_dir, n, cfg.seed, G.z_dim, G.num_classes)
        stages = generate(G, z, y, batch)
        diag = [x[:DIAG_N] for x in stages]
        near = tuple(d for d in distances if not (latent and is_pixel_distance(d)))
        rows = diagnostics(diag, near, cfg.data.resampler, batch)
        rows += shape_rows(stages, y, batch, shape) if shape else []
        pixels = None
        if latent and (metrics or len(near) < len(distances)):   # decode once: all n for quality, else DIAG_N
            pixels, head = decode_to_pixels(stages if metrics else diag, decoder, keep=DIAG_N, batch=batch)
            far = tuple(d for d in distances if d not in near)
            rows += diagnostics(head, far, cfg.data.resampler, batch, direction=not near)
        info = {"run_dir": str(run_dir), "step": step, "n": n, "fid_extractor": None, "cache_hits": [],
                "latent": latent, "decoder": decoder.ident if decoder is not None else None,
                "skipped": list(skipped)}
        if metrics:
            before = _cache_files()
            q_rows, q_info = scale_quality(stages, cfg.data, n, metrics, extractor, decoder, pixels)
            rows += q_rows
            info.update(q_info, cache_hits=[bool(c) and any(f.startswith(c) for f in before)
                                            for c in q_info.get("cache_names", [])])
        df = pd.DataFrame(rows, columns=["metric", "stage", "value"])
        df.attrs["info"] = info
        return df
    df = memo(run_dir, "eval", spec, compute, reuse)
    if log and not df.attrs["info"]["reused"]:
        df.attrs["info"]["mlflow_run_id"] = log_run_metrics(run_dir, cfg, df, df.attrs["info"]["step"])
    return df


def log_run_metrics(run_dir: Path, cfg, df: pd.DataFrame, step: int) -> str | None:
    """Send the rows to the run's own MLflow run (run.json mlflow_run_id) as <metric>_s<stage> at `step`."""
    from catlab.tracking import MLflow
    run_id = read_info(run_dir).get("mlflow_run_id")
    if not run_id or not cfg.run.mlflow:
        return None
    rows = [(f"{r.metric}_s{r.stage}", float(r.value), step) for r in df.itertuples() if math.isfinite(r.value)]
    MLflow(cfg.run.tracking_uri).log_metrics(run_id, rows)
    return run_id


# ---- a study's cell: the run, and over training --------------------------------------------------------
@dataclass(frozen=True)
class EvalSettings:
    """What one cell's evaluation computes (evaluate_cell): the same settings give the same memo keys, so a
    cell evaluated by its worker right after training is read back by the study's analysis."""
    n: int = 500
    metrics: tuple = ("fid", "kid", "shape")
    distances: tuple = ("l2", "lpips-domain")
    extractor: str = "auto"
    batch: int = 256
    device: str = "cpu"
    drift: bool = True
    curve: bool = True
    curve_n: int = 256
    curve_fid: bool = True          # the first quality metric at every snapshot (else shape_acc only)


def eval_settings(profile: str = "cpu", **changes) -> EvalSettings:
    """The settings of a profile (catlab.profiles: n, batch, device, curve_n, curve_fid), with changes (None
    values are ignored)."""
    opts = analysis_options(profile)
    base = {k: opts[k] for k in ("n", "batch", "device") if k in opts}
    base["curve_n"] = opts.get("curve_n", base.get("n", 500))
    base["curve_fid"] = opts.get("curve_fid", True)
    base.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in changes.items() if v is not None})
    return EvalSettings(**base)


def evaluate_cell(run_dir, es: EvalSettings, reuse: bool = True) -> dict[str, pd.DataFrame]:
    """One cell of a study: {"table": evaluate_run, "diagnostics"/"drift"/"curve": analysis.trajectory}."""
    from analysis.trajectory import run_trajectory
    table = evaluate_run(run_dir, es.n, es.metrics, es.distances, es.extractor, es.batch, es.device, reuse=reuse)
    first = tuple(m for m in es.metrics if m != "shape")[:1] if es.curve_fid else ()
    parts = (("drift",) if es.drift else ()) + ("diagnostics",) + \
        (("curve",) if es.curve and (first or "shape" in es.metrics) else ())
    sizes = {"drift": EVAL_N, "diagnostics": DIAG_N, "curve": es.curve_n}
    out = run_trajectory(run_dir, parts, sizes, distances=("l2",), metrics=first, shape="shape" in es.metrics,
                         extractor=es.extractor, batch=es.batch, device=es.device, reuse=reuse)
    return {"table": table, **out}
