"""Quality and misalignment of trained runs and studies: tidy tables (metric, stage, value).

    df = evaluate_run("runs/3f9c0a1b2d-s0", n=1000)      # rows: fid_domain_1k / 1..K, discrepancy_l2 / 1..K-1 ...
    df.attrs["info"]["fid_extractor"]                      # "domain" (offline) or "inception"
    evaluate_study("studies/ablation-consistency")         # table.csv, summary.csv, tests.csv, drift.csv
    (over training, at every EMA snapshot: analysis.trajectory)

Samples: the EMA generator on fixed (z, y) that depend on the run seed only (eval_set.pt, 256 samples, then
more drawn from a generator seeded by the run seed), so two arms with the same seed see the same z.
Quality: stage k's n samples against n real images (a fixed subset of the dataset, the same for every run)
resampled to s_k with the run's resampler, through catlab.metrics' quality(). Reference statistics are
cached by torch-fidelity (input2_cache_name); the real subset itself is cached beside them, so a second
evaluation builds no dataset and extracts no real features (the fakes and diagnostics are still computed).
Shape accuracy (`shapes` runs): stage k's n samples through catlab.metrics.shape_classifier, a colour-blind
CNN; shape_acc is the fraction classified as the class they were generated for (chance 0.1).
Diagnostics: analysis.misalignment.cross_scale_metrics per distance on the same samples.
Latent runs (data.name=latents:PATH): l2/l1 diagnostics work on the latents (latent space); pixel metrics
(FID/KID/PRC/IS and the lpips-* diagnostics) decode the fake stages and the real latent pyramid to pixels
with the run's decoder ($CATLAB_VAE, catlab.data.latents), each stage at its own scale (s_k -> 8 s_k px),
and are skipped without one (one notice line). Decoded references are keyed by the decoder and the
scale factor, so they never mix with a pixel dataset's.
Results: each run's table is kept in <run_dir>/analysis/<kind>-<key>.json, keyed by everything that
changes it (checkpoint size and mtime, n, metrics, distances, extractor weights digests); evaluating an
unchanged run again reads it back (reuse=False recomputes, still with the cached reference statistics).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from analysis.misalignment import METRICS as DIAGNOSTICS, cross_scale_metrics, resolve_distance
from catlab.checkpoint import atomic_save, load_generator, run_config, safe_load, snapshots
from catlab.data.latents import decode_to_pixels
from catlab.errors import UserError

EVAL_N = 256                      # the size of a run's eval_set.pt
REAL_SEED = 0                     # the real subset: one per dataset and n, shared by every run and seed
MEMO_VERSION = 2                  # bump when a change in analysis changes results
_REAL: dict[str, list[torch.Tensor]] = {}   # in-process memo of real pyramids (a study builds its data once)


# ---- building blocks ----------------------------------------------------------------------------------
def distance_fn(name: str):
    """d(a, b) -> (B,) by name: analysis.misalignment's registry, else catlab.metrics' perceptual ones."""
    try:
        return resolve_distance(name)
    except UserError:
        from catlab.metrics import lpips_distance as lp      # catlab.metrics.DISTANCES may not list it yet
        if name in lp.PERCEPTUAL:
            return lp.PERCEPTUAL[name]
        raise


def _metrics_api():
    """(quality, reference_key) from catlab.metrics (its package exports, else the fidelity module)."""
    try:
        from catlab.metrics import quality, reference_key
    except ImportError:
        from catlab.metrics.fidelity import quality, reference_key
    return quality, reference_key


def cache_root() -> Path:
    """Where the metrics package caches reference statistics (and where the real subsets go)."""
    env = os.environ.get("CATLAB_CACHE", "")
    return Path(env) / "fidelity" if env else Path(torch.hub._get_torch_home()) / "fidelity_cache"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


@torch.no_grad()
def generate(G, z: torch.Tensor, y: torch.Tensor, batch: int = 256) -> list[torch.Tensor]:
    """The K stage images of G for (z, y): (N, z_dim), (N,) -> K float tensors (N, C, s_k, s_k) on G's device.

    Chunks of `batch` samples, no grad; every sample only depends on its own (z, y), so the result does
    not depend on `batch` (up to float rounding of the matmuls).
    """
    if len(z) == 0 or len(z) != len(y):
        raise UserError(f"z and y must hold the same number (>= 1) of samples, but got z={len(z)}, y={len(y)}")
    device = next(G.parameters()).device
    parts = [G(z[i:i + batch].to(device), y[i:i + batch].to(device)) for i in range(0, len(z), batch)]
    return [torch.cat([p[k].float() for p in parts]) for k in range(len(parts[0]))]


def fixed_inputs(run_dir: Path, n: int, seed: int, z_dim: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n of the run's fixed (z, y): eval_set.pt, extended past 256 from a generator seeded by the seed."""
    path = Path(run_dir) / "eval_set.pt"
    if path.exists():
        ev = safe_load(path)
        z, y = ev["z"], ev["y"]
    else:                                                    # as the trainer draws it (a function of the seed)
        g = torch.Generator().manual_seed(10_000 + seed)
        z, y = torch.randn(EVAL_N, z_dim, generator=g), torch.arange(EVAL_N) % num_classes
    if n > len(z):
        g = torch.Generator().manual_seed(20_000 + seed)
        z = torch.cat([z, torch.randn(n - len(z), z_dim, generator=g)])
        y = torch.cat([y, torch.arange(len(y), n) % num_classes])
    return z[:n], y[:n]


def is_pixel_distance(name: str) -> bool:
    """lpips-* distances need RGB pixels in [-1, 1]; l2 / l1 work on anything (latents too)."""
    return name.startswith("lpips")


def run_decoder(cfg, device: str = "cpu"):
    """(latent, decoder): whether the run trains on latents:PATH, and its decoder (None without one: the
    one-line notice is printed by catlab.data.latents.load_decoder)."""
    from catlab.data import latents
    if not latents.is_latent(cfg.data.name):
        return False, None
    return True, latents.decoder_for(cfg.data, device=device)


def real_pyramid(data_cfg, n: int, sizes: list[int], decoder=None) -> list[torch.Tensor]:
    """n real images (a fixed random subset; all when the dataset is smaller) as uint8 (M, 3, s, s) per size.

    decoder (latent runs): the real latents are resampled to each latent size in sizes (what D saw) and
    decoded to pixels (M, 3, f s, f s). Cached in memory and under cache_root(): keyed by the data config
    (minus where it lives), n, sizes and the decoder's ident (decoder, its files, scale factor).
    """
    from catlab.data import build_dataset, resample, to_float, to_uint8
    spec = {k: v for k, v in vars(data_cfg).items() if k not in ("root", "download")}
    if decoder is not None:
        spec["decoder"] = decoder.ident
    key = hashlib.sha256(json.dumps([spec, n, list(sizes), REAL_SEED], sort_keys=True).encode()).hexdigest()[:12]
    if key in _REAL:
        return _REAL[key]
    path = cache_root() / f"catlab-real-{key}.pt"
    if path.exists():
        _REAL[key] = safe_load(path)["images"]
        return _REAL[key]
    data = build_dataset(data_cfg)
    idx = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(REAL_SEED))[:n]
    if decoder is not None:
        x = data.images[idx.sort().values].float()           # (M, C, R, R) latents, as trained
        _REAL[key] = decode_to_pixels([resample(x, s, data_cfg.resampler) for s in sizes], decoder)[0]
    else:
        x = to_float(data.images[idx.sort().values])         # (M, C, R, R)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        _REAL[key] = [to_uint8(resample(x, s, data_cfg.resampler)) for s in sizes]
    atomic_save({"images": _REAL[key], "spec": spec, "n": n}, path)
    return _REAL[key]


def diagnostics(stages, distances, resampler: str = "area", batch: int = 256,
                direction: bool = True) -> list[tuple[str, int, float]]:
    """(f"{diagnostic}_{distance}", stage 1..K-1, value) rows for every distance name.

    direction is a cosine in image space, the same for every distance: it is reported once, under the
    first distance's name (direction_l2 by default); direction=False leaves it out."""
    rows = []
    for i, name in enumerate(distances):
        res = cross_scale_metrics(stages, distance=distance_fn(name), resampler=resampler, batch_size=batch)
        rows += [(f"{m}_{name}", k + 1, v) for m in DIAGNOSTICS if (direction and i == 0) or m != "direction"
                 for k, v in enumerate(res[m])]
    return rows


def kid_subset(n: int) -> int:
    """KID subset size: torch-fidelity's 1000, but at most n/2, so that the 100 subsets differ (at n = 1000 a
    subset of 1000 is the whole set every time: kid_std 0 and 4x the kernel cost for the same mean)."""
    return max(2, min(1000, n // 2))


def scale_quality(stages, data_cfg, n: int, metrics, extractor: str = "auto", decoder=None,
                  pixels=None) -> tuple[list, dict]:
    """(metric, stage 1..K, value) rows of catlab.metrics' quality() per scale, and its info.

    decoder (latent runs): stages are latents; the fakes (or `pixels`, their uint8 decodes when the
    caller has them) and the real latent pyramid are compared as decoded pixels."""
    from catlab.data import to_uint8
    quality, reference_key = _metrics_api()
    sizes = [x.shape[-1] for x in stages]
    real = real_pyramid(data_cfg, n, sizes, decoder)
    if decoder is None:
        fake = [to_uint8(x.cpu()) for x in stages]
        fake = [f.expand(-1, 3, -1, -1) if f.shape[1] == 1 else f for f in fake]
        key = reference_key(data_cfg.name, data_cfg.resampler, data_cfg.resolution)
    else:
        fake = pixels if pixels is not None else decode_to_pixels(stages, decoder)[0]
        tag = hashlib.sha256(json.dumps(decoder.ident, sort_keys=True).encode()).hexdigest()[:8]
        key = reference_key(f"{data_cfg.name}-vae{tag}", data_cfg.resampler, data_cfg.resolution)
    res = quality(fake, real, metrics=tuple(metrics), extractor=extractor, cache_key=key,
                  cache_root=cache_root(), kid_subset_size=kid_subset(n), data=data_cfg.name)
    rows = []
    for name, value in res.items():
        m = re.fullmatch(r"(.+)_s(\d+)", name)
        rows.append((m[1], int(m[2]), float(value)))
    return rows, dict(res.info)


def shape_rows(stages, y: torch.Tensor, batch: int = 256, data: str = "shapes") -> list:
    """(shape_acc, stage 1..K, value): catlab.metrics.shape_classifier's accuracy of each stage's samples
    against the classes they were generated for (colour-blind; chance 0.1; `shapes` and `layouts` runs)."""
    from catlab.metrics.shape_classifier import shape_accuracy
    return [("shape_acc", k + 1, shape_accuracy(x, y, batch, data=data)) for k, x in enumerate(stages)]


def fingerprint(path: Path) -> list:
    """[name, size, mtime_ns] of a checkpoint file: what says it changed."""
    if not Path(path).is_file():
        raise UserError(f"checkpoint {path} does not exist (has the run saved a checkpoint yet?)")
    st = Path(path).stat()
    return [Path(path).name, st.st_size, st.st_mtime_ns]


def extractor_id(extractor: str = "auto", metrics=("fid",), shape: str | bool = False, data: str | None = None) -> dict:
    """What the numbers depend on beyond the checkpoint: the resolved FID extractor (the one that fits
    `data`), the domain CNN and (shape: the data set's name) its shape classifier."""
    from catlab.metrics.extractor import WEIGHTS, file_digest
    out = {"domain": file_digest(WEIGHTS) if WEIGHTS.is_file() else None}
    if shape:
        from catlab.metrics.shape_classifier import scorer
        out["shape"] = file_digest(scorer("shapes" if shape is True else shape).weights)
    if metrics:
        from catlab.metrics.fidelity import resolve_extractor
        short, _, weights = resolve_extractor(extractor, data)
        out["fid"] = f"{short}-{file_digest(weights)}"
    return out


def memo_path(run_dir: Path, kind: str, spec: dict) -> Path:
    """Where memo() keeps the table of (kind, spec)."""
    key = hashlib.sha256(json.dumps([MEMO_VERSION, kind, spec], sort_keys=True, default=str).encode()).hexdigest()
    return Path(run_dir) / "analysis" / f"{kind}-{key[:12]}.json"


def memo(run_dir: Path, kind: str, spec: dict, compute, reuse: bool = True) -> pd.DataFrame:
    """compute() -> DataFrame, kept in <run_dir>/analysis/<kind>-<key>.json and read back while spec holds."""
    path = memo_path(run_dir, kind, spec)
    if reuse and path.is_file():
        saved = json.loads(path.read_text())
        df = pd.DataFrame(saved["rows"], columns=saved["columns"])
        df.attrs["info"] = {**saved["info"], "reused": True}
        return df
    df = compute()
    df.attrs.setdefault("info", {})["reused"] = False
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"spec": spec, "columns": list(df.columns), "rows": df.values.tolist(),
                                   "info": df.attrs["info"]}, default=str))
        tmp.replace(path)
    except OSError:                                          # a read-only run dir: nothing kept, nothing lost
        pass
    return df


def _cache_files() -> set[str]:
    root = cache_root()
    return set(os.listdir(root)) if root.is_dir() else set()


# ---- one run ------------------------------------------------------------------------------------------
DIAG_N = 256  # the diagnostics use the run's fixed evaluation set (eval_set.pt), as the training hook does


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
    spec = {"ckpt": fingerprint(run_dir / "ckpt" / "last.pt"), "n": n, "diag_n": DIAG_N, "metrics": metrics,
            "distances": distances,
            "shape": shape, "extractor": extractor_id(extractor, metrics, shape, cfg.data.name),
            "device": torch.device(device).type}
    if latent:
        spec["decoder"] = decoder.ident if decoder is not None else None

    def compute() -> pd.DataFrame:
        G, _ = load_generator(run_dir, device=device)
        step = int(read_json(run_dir / "run.json").get("step") or safe_load(run_dir / "ckpt" / "last.pt")["step"])
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
        from analysis.driver import log_run_metrics
        df.attrs["info"]["mlflow_run_id"] = log_run_metrics(run_dir, cfg, df, df.attrs["info"]["step"])
    return df


# ---- studies ------------------------------------------------------------------------------------------
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
    """The settings of a profile (analysis.driver.PROFILES: n, batch, device, curve_n, curve_fid), with
    changes (None values are ignored)."""
    from analysis.driver import profile_options
    opts = profile_options(profile)
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


SAMPLES_N = 8                     # fig8's (z, y): the first of the fixed eval set


def write_samples(study_dir: Path, cells: pd.DataFrame, axes: list[str], device: str = "cpu") -> Path | None:
    """samples.pt for the report's fig8: the stage images of every arm's EMA generator on the first SAMPLES_N
    (z, y) of one seed that every arm has (arms of a seed share the eval set). {"z", "y", "cells": {cell: K
    tensors (n, C, s_k, s_k)}}; None (and no file) when no seed is finished in every arm."""
    arms = cells.groupby(axes)["seed"].apply(set).tolist() if axes else [set(cells["seed"])]
    common = sorted(set.intersection(*arms)) if arms else []
    if not common:
        return None
    rows = cells[cells["seed"] == common[0]]
    out, z, y = {}, None, None
    for r in rows.to_dict("records"):
        G, cfg = load_generator(r["run_dir"], device=device)
        z, y = fixed_inputs(Path(r["run_dir"]), SAMPLES_N, cfg.seed, G.z_dim, G.num_classes)
        out[r["cell"]] = [x.cpu() for x in generate(G, z, y)]
    path = Path(study_dir) / "samples.pt"
    atomic_save({"z": z, "y": y, "seed": common[0], "cells": out}, path)
    return path


def evaluate_study(study_dir, n: int | None = None, metrics=("fid", "kid", "shape"),
                   distances=("l2", "lpips-domain"),
                   extractor: str = "auto", batch: int | None = None, device: str | None = None,
                   profile: str = "cpu", drift: bool = True, curve: bool = True, curve_n: int | None = None,
                   progress: bool = True, reuse: bool = True, claims=(), curve_fid: bool | None = None) -> pd.DataFrame:
    """evaluate_cell over the FINISHED cells of cells.csv; writes table.csv, summary.csv (per arm x metric x
    stage), tests.csv (paired by seed, per 2-valued axis), and over training (analysis.trajectory, one
    generation per EMA snapshot): diagnostics_curve.csv (the L2 diagnostics on the fixed eval set),
    drift.csv (drift=True) and curve.csv (curve=True: shape_acc, and on profiles with curve_fid the first
    quality metric, at every snapshot, curve_n samples); logs the summary to the study's parent MLflow run.
    n, batch, device, curve_n default to the profile's (analysis.driver.PROFILES). reuse: read unchanged
    runs' results back from their analysis/ folders (a worker evaluates its cell right after training).
    claims: the study's Claims (experiments.Claim): their verdicts go to claims.csv (analysis.claims).
    Rows that hold by definition (rewrite and direction at stage K-1) are left out of tests.csv.
    Returns the table (attrs["info"]: summary, tests, axes, runs' infos, parent_run_id, claims)."""
    from analysis.claims import drop_by_definition, verdicts
    from analysis.driver import log_study, per_cell, read_cells, study_tests
    from analysis.stats import summarize
    from catlab.checkpoint import run_config
    es = eval_settings(profile, n=n, metrics=metrics, distances=distances, extractor=extractor, batch=batch,
                       device=device, drift=drift, curve=curve, curve_n=curve_n, curve_fid=curve_fid)
    study_dir = Path(study_dir)
    cells, axes = read_cells(study_dir)
    infos, runs = [], {}

    def one(run_dir):
        runs[str(run_dir)] = evaluate_cell(run_dir, es, reuse)
        infos.append(runs[str(run_dir)]["table"].attrs["info"])
        return runs[str(run_dir)]["table"]
    table = per_cell(cells, axes, one, f"analyze {study_dir.name}", progress)
    table.to_csv(study_dir / "table.csv", index=False)
    summary = summarize(table, by=[*axes, "metric", "stage"])
    summary.to_csv(study_dir / "summary.csv", index=False)
    tests = study_tests(drop_by_definition(table), axes)
    if len(tests):
        tests.to_csv(study_dir / "tests.csv", index=False)
    elif (study_dir / "tests.csv").exists():
        (study_dir / "tests.csv").unlink()                    # no 2-valued axis any more: no stale tests
    write_samples(study_dir, cells, axes, es.device)
    for part, name in (("diagnostics", "diagnostics_curve.csv"), ("drift", "drift.csv"), ("curve", "curve.csv")):
        if all(part in r for r in runs.values()):
            per_cell(cells, axes, lambda r: runs[str(r)][part], part, False).to_csv(study_dir / name, index=False)
    verdicts_df = verdicts(table, claims, axes) if claims else None
    if verdicts_df is not None:
        verdicts_df.to_csv(study_dir / "claims.csv", index=False)
    elif (study_dir / "claims.csv").exists():
        (study_dir / "claims.csv").unlink()
    uri = read_json(study_dir / "study.json").get("tracking_uri") or run_config(cells["run_dir"][0]).run.tracking_uri
    parent = log_study(study_dir, summary, axes, max(i["step"] for i in infos), uri)
    table.attrs["info"] = {"fid_extractor": infos[0]["fid_extractor"], "runs": infos, "summary": summary,
                           "tests": tests, "axes": axes, "parent_run_id": parent, "claims": verdicts_df}
    return table
