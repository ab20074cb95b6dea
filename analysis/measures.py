"""Measurements on generated stages: the cross-scale diagnostics, per-scale quality, shape accuracy.

    rows = diagnostics(stages, ("l2", "lpips-domain"))        # (discrepancy_l2, stage 1..K-1, value) ...
    rows, info = scale_quality(stages, cfg.data, n, ("fid", "kid"))   # (fid_domain_1k, stage 1..K, value) ...

Quality: stage k's n samples against n real images (analysis.inputs.real_pyramid) through catlab.metrics'
quality(); reference statistics are cached by torch-fidelity (input2_cache_name). Shape accuracy (`shapes`
runs): stage k's samples through catlab.metrics.shape_classifier, a colour-blind CNN (chance 0.1).
Diagnostics: analysis.misalignment.cross_scale_metrics per distance (catlab.distances).
"""
from __future__ import annotations

import hashlib
import json
import re

import torch

from analysis.inputs import cache_root, real_pyramid
from analysis.misalignment import METRICS as DIAGNOSTICS, cross_scale_metrics
from catlab.data.latents import decode_to_pixels
from catlab.distances import get_distance


def diagnostics(stages, distances, resampler: str = "area", batch: int = 256,
                direction: bool = True) -> list[tuple[str, int, float]]:
    """(f"{diagnostic}_{distance}", stage 1..K-1, value) rows for every distance name.

    direction is a cosine in image space, the same for every distance: it is reported once, under the
    first distance's name (direction_l2 by default); direction=False leaves it out."""
    rows = []
    for i, name in enumerate(distances):
        res = cross_scale_metrics(stages, distance=get_distance(name), resampler=resampler, batch_size=batch)
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
    from catlab.metrics.fidelity import quality, reference_key
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
