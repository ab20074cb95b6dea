"""Per-scale FID / KID / IS / precision-recall through torch-fidelity 0.4.0.

    res = quality(fake_by_scale, real_by_scale, metrics=("fid", "kid"), cache_key="shapes-area")
    res["fid_domain_1k_s4"]        # stage 4's samples against the real images at stage 4's scale
    res.info["fid_extractor"]      # "domain" or "inception"

Each stage k (1..K) is scored against the real images resampled to that stage's size: pass both as lists
of uint8 (N, 3, s_k, s_k) tensors, coarse to fine. Samples are materialised into a Dataset (no generator
wrapper: torch-fidelity's crashes on NumPy >= 1.24). Small images are upsampled by the extractor itself
(Inception resizes to 299 internally, the domain extractor to 32).

Extractors (extractor="auto" picks Inception when its weights are on disk, else the domain CNN):
- "inception": torch-fidelity's `inception-v3-compat`, weights from $CATLAB_INCEPTION_WEIGHTS or
  $TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth (never downloaded).
  Features: "2048" (FID/KID/PRC), "logits_unbiased" (IS).
- "domain": `catlab-domain`, registered here (DomainFeatureExtractor). Features: "pool" (the 128-d
  global-average-pooled last conv layer, unit RMS on the training set; FID/KID/PRC) and "logits" (the
  shapes classifier; IS). Computed in float64, so no metric depends on the batch size.
FEATURE_LAYERS holds this table; it is passed explicitly to torch-fidelity.

Metric names state the protocol: {metric}_{extractor}_{n}_s{stage}, n written in thousands when it is a
multiple of 1000 (fid_domain_5k_s4, kid_inception_10k_s1) and raw otherwise (fid_domain_512_s4).
Metrics: fid, kid, kid_std, isc, isc_std, precision, recall, f_score. KID uses subsets of
min(kid_subset_size, n, M) samples; when that is all n samples, kid_std is 0 (every subset is the same).

Reference statistics and features are cached by torch-fidelity (input2_cache_name) under cache_root
(default $CATLAB_CACHE/fidelity, else $TORCH_HOME/fidelity_cache). The cache name covers the caller's
key (dataset, resampler), the scale, the extractor and its weights digest, the number of real images,
a digest of the real images and CACHE_VERSION.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torch_fidelity import calculate_metrics
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from catlab.errors import UserError
from catlab.metrics.extractor import extractor_for, file_digest, load_domain_extractor

CACHE_VERSION = 1
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
DOMAIN_NAME = "catlab-domain"
METRICS = ("fid", "kid", "prc", "isc")
FEATURE_LAYERS = {              # the protocol: which feature each metric reads, per torch-fidelity extractor
    "inception-v3-compat": {"fid": "2048", "kid": "2048", "prc": "2048", "isc": "logits_unbiased"},
    DOMAIN_NAME: {"fid": "pool", "kid": "pool", "prc": "pool", "isc": "logits"},
}
_NOTICE_SHOWN = False           # the offline notice is printed once per process
_FOREIGN_SHOWN: set = set()     # data sets scored with another data set's extractor (noticed once)


# ---- the domain extractor, as torch-fidelity sees it ------------------------------------------------
class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity adapter of the domain CNN: uint8 (B, 3, H, W) in; features "pool" and "logits" out.

    feature_extractor_weights_path: a domain_extractor.pt (default: the packaged one).
    feature_extractor_internal_dtype: "float64" (default) or "float32". Features come out in this dtype.
        float64 makes every metric independent of the batch size (float32 convolutions round differently
        for some batch sizes, e.g. a last batch of 1, which moves FID by ~1e-6); the network is small.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None,
                 feature_extractor_internal_dtype=None, **kwargs):
        super().__init__(name, features_list)
        # (not torch-fidelity's text_to_dtype: in 0.4.0 it maps "float64" to torch.float32)
        dtypes = {None: torch.float64, "float64": torch.float64, "float32": torch.float32}
        if feature_extractor_internal_dtype not in dtypes:
            raise ValueError(f"feature_extractor_internal_dtype must be float32 or float64, "
                             f"got {feature_extractor_internal_dtype!r}")
        self.dtype = dtypes[feature_extractor_internal_dtype]
        # a private copy: torch-fidelity moves and casts it
        shared = load_domain_extractor(feature_extractor_weights_path)
        self.net = type(shared)(shared.num_classes, shared.widths)
        self.net.load_state_dict(shared.state_dict())
        self.net.to(self.dtype).requires_grad_(False).eval()

    @staticmethod
    def get_provided_features_list():
        return "pool", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "pool", "kid": "pool", "prc": "pool"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        pool, logits = self.net(x.to(self.dtype) / 127.5 - 1.0)
        feats = {"pool": pool, "logits": logits}
        return tuple(feats[k] for k in self.features_list)


if DOMAIN_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(DOMAIN_NAME, DomainFeatureExtractor)


# ---- inputs -------------------------------------------------------------------------------------------
class UInt8Images(Dataset):
    """A uint8 (N, 3, H, W) tensor as a torch-fidelity input (one image per item)."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise UserError(f"images must be uint8 (N, 3, H, W), but got images={images.dtype} "
                            f"{tuple(images.shape)}")
        self.images = images.detach().cpu().contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def inception_weights_path() -> Path | None:
    """$CATLAB_INCEPTION_WEIGHTS (must exist when set), else the torch hub cache file, else None."""
    env = os.environ.get("CATLAB_INCEPTION_WEIGHTS", "")
    if env:
        if not Path(env).is_file():
            raise UserError(f"CATLAB_INCEPTION_WEIGHTS must name an existing file, but got "
                            f"CATLAB_INCEPTION_WEIGHTS={env!r}")
        return Path(env)
    hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return hub if hub.is_file() else None


def domain_short(data: str | None, trained_on: str) -> str:
    """The extractor's name in metric names: "domain" on its own data, "domain-<its data>" elsewhere."""
    return "domain" if data is None or trained_on == data else f"domain-{_safe(trained_on)}"


def resolve_extractor(extractor: str = "auto", data: str | None = None) -> tuple[str, str, Path]:
    """-> (short name for metric names, torch-fidelity extractor name, weights path).

    data: the data set being scored (a data.name); it picks the domain extractor trained on it
    (catlab.metrics.extractor.extractor_for), and names the metric after the extractor's own data set
    when there is none for it (fid_domain-shapes_500_s4), with one notice line."""
    global _NOTICE_SHOWN
    if extractor not in ("auto", "inception", "domain"):
        raise UserError(f"extractor must be one of auto, inception, domain, but got extractor={extractor!r}")
    if extractor in ("auto", "inception"):
        path = inception_weights_path()
        if path is not None:
            return "inception", "inception-v3-compat", path
        where = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
        if extractor == "inception":
            raise UserError(f"extractor=inception needs the Inception weights at {where} "
                            "(or a path in CATLAB_INCEPTION_WEIGHTS), but got none")
        if not _NOTICE_SHOWN:
            print(f"catlab: no Inception weights at {where} (or $CATLAB_INCEPTION_WEIGHTS); "
                  "FID/KID/IS/PRC use the domain extractor (*_domain_* names)", file=sys.stderr)
            _NOTICE_SHOWN = True
    weights, trained_on = extractor_for(data)
    short = domain_short(data, trained_on)
    if short != "domain" and data not in _FOREIGN_SHOWN:
        _FOREIGN_SHOWN.add(data)
        hint = "" if data.startswith("latents:") else \
            f" Train one: python -m catlab.metrics.train_extractor --data {data}"
        print(f"catlab: no domain extractor trained on {data}; FID/KID use the one trained on {trained_on} "
              f"(*_{short}_* names), which is not a quality measure of this data.{hint}", file=sys.stderr)
    return short, DOMAIN_NAME, weights


def count_name(n: int) -> str:
    """5000 -> '5k', 10000 -> '10k', 512 -> '512', 1500 -> '1500'."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def protocol_name(metric: str, short: str, n: int, stage: int) -> str:
    return f"{metric}_{short}_{count_name(n)}_s{stage}"


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


def reference_key(dataset: str, resampler: str = "area", resolution: int | None = None) -> str:
    """A cache key for the real images of a dataset (safe as a file name): 'shapes-r32-area'."""
    return _safe(f"{dataset}-r{resolution}-{resampler}" if resolution else f"{dataset}-{resampler}")


def _data_digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:10]


def reference_cache_name(cache_key: str, size: int, short: str, weights: Path, real: torch.Tensor) -> str:
    """The input2_cache_name of one scale's real images."""
    return (f"catlab-v{CACHE_VERSION}-{_safe(cache_key)}-{size}px-{short}{file_digest(weights, 8)}"
            f"-n{len(real)}-{_data_digest(real)}")


class QualityResult(dict):
    """{metric name: float}, plus `.info` (extractor, sizes, cache names) that is not a metric."""

    def __init__(self, values: dict, info: dict):
        super().__init__(values)
        self.info = info


# ---- per-scale quality ------------------------------------------------------------------------------
def _rename(raw: dict, short: str, n: int, stage: int) -> dict[str, float]:
    keys = {"frechet_inception_distance": "fid", "kernel_inception_distance_mean": "kid",
            "kernel_inception_distance_std": "kid_std", "inception_score_mean": "isc",
            "inception_score_std": "isc_std", "precision": "precision", "recall": "recall",
            "f_score": "f_score"}
    return {protocol_name(keys[k], short, n, stage): float(v) for k, v in raw.items() if k in keys}


def fidelity_kwargs(metrics, tf_name: str, weights: Path, n_fake: int, n_real: int, batch_size: int,
                    cuda: bool, seed: int, kid_subset_size: int, isc_splits: int) -> dict:
    """The calculate_metrics keyword arguments catlab uses (without inputs and cache settings)."""
    layers = {f"feature_layer_{m}": layer for m, layer in FEATURE_LAYERS[tf_name].items()}
    return dict(cuda=cuda, batch_size=batch_size, fid="fid" in metrics, kid="kid" in metrics,
                prc="prc" in metrics, isc="isc" in metrics, feature_extractor=tf_name, **layers,
                feature_extractor_weights_path=str(weights),
                kid_subset_size=min(kid_subset_size, n_fake, n_real), isc_splits=min(isc_splits, n_fake),
                rng_seed=seed, save_cpu_ram=True, verbose=False)


def quality(fake: list[torch.Tensor], real: list[torch.Tensor], metrics=METRICS, extractor: str = "auto",
            cache_key: str | None = None, n: int | None = None, batch_size: int = 64,
            cache_root: str | Path | None = None, cuda: bool | None = None, seed: int = 2020,
            kid_subset_size: int = 1000, isc_splits: int = 10, data: str | None = None) -> QualityResult:
    """FID/KID/IS/PRC per scale.

    fake: K uint8 tensors (N, 3, s_k, s_k), coarse to fine (stage k's samples at its own scale).
    real: K uint8 tensors (M, 3, s_k, s_k), the real images resampled to the same sizes.
    n: fake samples used per scale (the first n; default all N); all M real images are used.
    cache_key: names the real set (dataset and resampler, e.g. reference_key("shapes", "area", 32));
        None turns the reference cache off.
    data: the data set the real images come from (data.name): picks the domain extractor trained on it.
    Returns a QualityResult: {name: value} with names like fid_domain_1k_s4, and .info with
    fid_extractor ("domain" | "inception"), extractor (torch-fidelity name), n, sizes, cache_names.
    """
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise UserError(f"metrics must be a non-empty subset of {', '.join(METRICS)}, but got metrics={metrics}")
    if len(fake) != len(real) or not fake:
        raise UserError(f"real must hold one tensor per stage like fake ({len(fake)}), but got real={len(real)}")
    short, tf_name, weights = resolve_extractor(extractor, data)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cache_root is None:
        env = os.environ.get("CATLAB_CACHE", "")
        cache_root = Path(env) / "fidelity" if env else Path(torch.hub._get_torch_home()) / "fidelity_cache"
    n_fake = min(len(f) for f in fake) if n is None else n
    if n_fake < 2 or any(len(f) < n_fake for f in fake):
        raise UserError(f"n must be >= 2 and <= the samples per stage ({min(len(f) for f in fake)}), "
                        f"but got n={n_fake}")
    values, cache_names = {}, []
    for stage, (f, r) in enumerate(zip(fake, real), start=1):
        if f.shape[1:] != r.shape[1:]:
            raise UserError(f"real images of stage {stage} must be {tuple(f.shape[1:])} like the fakes, "
                            f"but got real={tuple(r.shape[1:])}")
        kw = fidelity_kwargs(metrics, tf_name, weights, n_fake, len(r), batch_size, cuda, seed,
                             kid_subset_size, isc_splits)
        name = reference_cache_name(cache_key, r.shape[-1], short, weights, r) if cache_key else None
        cache_names.append(name)
        raw = calculate_metrics(input1=UInt8Images(f[:n_fake]), input2=UInt8Images(r), cache=name is not None,
                                cache_root=str(cache_root),
                                input2_cache_name=name, **kw)
        values.update(_rename(raw, short, n_fake, stage))
    info = {"fid_extractor": short, "extractor": tf_name, "weights": str(weights), "n": n_fake,
            "n_real": [len(r) for r in real], "sizes": [f.shape[-1] for f in fake], "cache_names": cache_names,
            "cache_root": str(cache_root)}
    return QualityResult(values, info)
