"""Metrics: per-scale FID/KID/IS/PRC (torch-fidelity), LPIPS distances, the domain feature extractor.

    from catlab.metrics import quality, perceptual_distance, PERCEPTUAL, load_domain_extractor

- fidelity.py        quality(fake_by_scale, real_by_scale, ...) -> {fid_domain_1k_s4: ..., ...}
- lpips_distance.py  lpips_distance(name) -> d(a, b) -> (B,) (exported here as `perceptual_distance`);
                     PERCEPTUAL (= DISTANCES): lazy lpips-alex / lpips-vgg / lpips-squeeze / lpips-domain
- extractor.py       the domain CNN (domain_extractor.pt), trained by `python -m catlab.metrics.train_extractor`
- shape_classifier.py  shape_accuracy(images, labels): a colour-blind shape CNN (shape_classifier.pt), trained by
                     `python -m catlab.metrics.shape_classifier`; are a `shapes` run's samples recognisable?

Names resolve lazily, so importing the light parts does not import torch-fidelity. Note that
`catlab.metrics.lpips_distance` is the submodule (the function of that name lives inside it).
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("extractor", "fidelity", "lpips_distance", "shape_classifier", "train_extractor")
_WHERE = {
    "quality": "fidelity", "QualityResult": "fidelity", "reference_key": "fidelity", "METRICS": "fidelity",
    "DomainFeatureExtractor": "fidelity", "inception_weights_path": "fidelity", "protocol_name": "fidelity",
    "perceptual_distance": "lpips_distance", "PERCEPTUAL": "lpips_distance", "DISTANCES": "lpips_distance",
    "DomainLPIPS": "lpips_distance", "DomainNet": "extractor", "load_domain_extractor": "extractor",
    "shape_accuracy": "shape_classifier", "load_shape_classifier": "shape_classifier",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"catlab.metrics.{name}")
    if name in _WHERE:
        return getattr(importlib.import_module(f"catlab.metrics.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'catlab.metrics' has no attribute {name!r}")
