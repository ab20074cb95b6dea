"""Config is data: frozen dataclasses, `a.b=value` overrides, validation, a stable short hash.

    cfg = load_config(["loss.consistency.weight=0.3", "train.steps=400"])
    cfg.hash()          # '3f9c0a1b2d' -- names the run dir together with the seed
    cfg.to_dict()       # nested plain dict; save_config / load_config_json round-trip it

Every section validates itself in __post_init__, so a Config that exists is a valid one. Errors are
`UserError`s with one line that names the field and what was expected (`... but got weight=-1.0`).
The `run` section is bookkeeping (where to write, whether to track); it is not part of the hash.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from catlab.checks import _choice, _fail, _positive, _unit, parse_weights  # noqa: F401 -- parse_weights: losses'
from catlab.errors import UserError
from catlab.files import atomic_text

STAGE_WEIGHT_PRESETS = ("paper", "uniform", "coarse-heavy")
SCALE_WEIGHT_PRESETS = ("uniform", "coarse-heavy", "fine-heavy", "final-only")


@dataclass(frozen=True)
class DataConfig:
    name: str = "shapes"            # shapes | cifar10 | mnist | imagefolder:PATH | latents:PATH
    resolution: int = 32            # final image size; the K scales are resolution / 2**(K-1-k)
    n: int = 10000                  # images to generate (shapes) or to keep (others; 0 = all)
    resampler: str = "area"         # pyramid operator: area | bilinear
    download: bool = False          # let torchvision download cifar10/mnist when absent
    root: str = ""                  # where cifar10/mnist live; "" = $CATLAB_DATA or ./data

    def __post_init__(self):
        from catlab.data import check_dataset_name  # late: the registry imports this module
        check_dataset_name(self.name)
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            _fail("data.resolution", "a power of two >= 4", self.resolution)
        _positive("data.n", self.n, zero_ok=True)
        _choice("data.resampler", self.resampler, ("area", "bilinear"))


@dataclass(frozen=True)
class ModelConfig:
    size: str = "tiny"              # generator size: tiny | small | S | B | M | H
    stages: int = 4                 # K stage heads, at equal depth intervals
    discriminator: str = "scalewise-conv"  # scalewise-conv | scalewise | aggregated | concat (cpu recipe: conv)
    d_size: str = ""                # discriminator size; "" = same as size
    patch: int = 4                  # generator patch size at the final resolution
    d_patch: int = 4                # largest D patch; scale s uses clamp(s // 4, 1, d_patch)
    z_dim: int = 64

    def __post_init__(self):
        from catlab.models import SIZES, DISCRIMINATORS
        _choice("model.size", self.size, tuple(SIZES))
        if self.d_size:
            _choice("model.d_size", self.d_size, tuple(SIZES))
        if not 1 <= self.stages <= 8:
            _fail("model.stages", "an int in [1, 8]", self.stages)
        _choice("model.discriminator", self.discriminator, tuple(DISCRIMINATORS))
        for key in ("patch", "d_patch", "z_dim"):
            _positive(f"model.{key}", getattr(self, key))


@dataclass(frozen=True)
class ConsistencyConfig:
    weight: float = 3.0             # lambda; 0 turns the term off. 3: calibrated for the cpu recipe (README)
    distance: str = "l2"            # l2 | l1 | lpips-domain
    stage_weights: str = "paper"    # paper | uniform | coarse-heavy | comma list of K-1 numbers
    detach_anchor: bool = False     # stop the gradient through the final output (the anchor)
    compare_at: str = "full"        # full: full-resolution outputs; own-scale: R_{s_k}(final) vs x_k
    warmup: int = 0                 # steps of linear ramp of lambda from 0

    def __post_init__(self):
        _positive("loss.consistency.weight", self.weight, zero_ok=True)
        _choice("loss.consistency.distance", self.distance, ("l2", "l1", "lpips-domain"))
        _choice("loss.consistency.compare_at", self.compare_at, ("full", "own-scale"))
        _positive("loss.consistency.warmup", self.warmup, zero_ok=True)


@dataclass(frozen=True)
class RegConfig:
    # approx: ((D(x) - D(x + sigma n)) / sigma)^2 ; exact: |grad D|^2 ; none. Off by default: in 300 CPU
    # steps R1/R2 only slows D (README, "The cpu recipe"); the gpu profile turns GAT's approx, gamma 0.1 on.
    kind: str = "none"
    gamma: float = 0.1
    sigma: float = 0.01
    fraction: float = 0.25          # share of the batch the regulariser sees
    every: int = 4                  # lazy interval (the loss is scaled by it)
    r2: bool = True                 # also regularise D on fakes

    def __post_init__(self):
        _choice("loss.reg.kind", self.kind, ("approx", "exact", "none"))
        _positive("loss.reg.gamma", self.gamma, zero_ok=True)
        _positive("loss.reg.sigma", self.sigma)
        if not (0 < self.fraction <= 1):
            _fail("loss.reg.fraction", "in (0, 1]", self.fraction)
        _positive("loss.reg.every", self.every)


@dataclass(frozen=True)
class LossConfig:
    adversarial: str = "rpgan"      # rpgan | hinge | ns
    scale_weights: str = "coarse-heavy"  # uniform | coarse-heavy | fine-heavy | final-only | comma list of K
    reg: RegConfig = field(default_factory=RegConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)

    def __post_init__(self):
        _choice("loss.adversarial", self.adversarial, ("rpgan", "hinge", "ns"))


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1200               # cpu recipe: about 2 min on 2 cores (README, "The cpu recipe")
    batch: int = 16                 # cpu recipe: at equal compute, 16 x more steps beat 32 (README)
    lr_g: float = 2e-3
    lr_d: float = 2e-3
    width_lr: bool = False          # lr = base * 768 / width (GAT)
    grad_clip: float = 1.0          # 0 = off
    ema: float = 0.99               # EMA decay of G per step
    ema_warmup: int = 100           # decay ramps as min(ema, (1 + t) / (10 + t)) over the first steps
    precision: str = "fp32"         # fp32 | bf16 (autocast, CPU and CUDA)
    ckpt_every: int = 100
    log_every: int = 10
    sample_every: int = 100         # sample grid every N steps (and at the end)
    device: str = "auto"            # auto | cpu | cuda
    compile: bool = False           # torch.compile the networks (GPU profile)
    fakes: str = "shared"           # shared: one G forward per step (cpu recipe, docs/cpu-recipe.md); fresh: a new z
                                    # for D's and G's phases
    channels_last: bool = True      # the conv D's weights (so its convolutions) in channels_last: about 1.1x a
                                    # CPU step, equal to contiguous up to float rounding (docs/bench.md)

    def __post_init__(self):
        for key in ("steps", "batch", "ckpt_every", "log_every", "sample_every"):
            _positive(f"train.{key}", getattr(self, key))
        for key in ("lr_g", "lr_d"):
            _positive(f"train.{key}", getattr(self, key))
        _positive("train.grad_clip", self.grad_clip, zero_ok=True)
        _unit("train.ema", self.ema, closed_right=False)
        _positive("train.ema_warmup", self.ema_warmup, zero_ok=True)
        _choice("train.precision", self.precision, ("fp32", "bf16"))
        _choice("train.device", self.device, ("auto", "cpu", "cuda"))
        _choice("train.fakes", self.fakes, ("fresh", "shared"))


@dataclass(frozen=True)
class RunConfig:
    """Bookkeeping only: not hashed, does not change results."""
    root: str = "runs"              # run dirs are <root>/<hash>-s<seed>
    mlflow: bool = True
    tracking_uri: str = ""          # "" = $MLFLOW_TRACKING_URI or sqlite:///<repo>/mlflow.db
    experiment: str = "catlab"
    progress: bool = True


@dataclass(frozen=True)
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        k = self.model.stages
        parse_weights(self.loss.consistency.stage_weights, k - 1, STAGE_WEIGHT_PRESETS,
                      "loss.consistency.stage_weights") if k > 1 else None
        parse_weights(self.loss.scale_weights, k, SCALE_WEIGHT_PRESETS, "loss.scale_weights")
        if self.data.resolution >> (k - 1) < 2:
            _fail("model.stages", f"small enough that the coarsest scale of a {self.data.resolution}-px "
                  "image is >= 2 px", k)
        if self.data.resolution % self.model.patch:
            _fail("model.patch", f"a divisor of data.resolution={self.data.resolution}", self.model.patch)

    # ---- data in, data out ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable 10-hex hash of everything that changes results (all but `run`)."""
        return dict_hash(self.to_dict())

    def run_name(self) -> str:
        return f"{self.hash()}-s{self.seed}"

    def flat(self) -> dict[str, object]:
        return flatten(self.to_dict())

    def override(self, overrides: typing.Iterable[str] | dict) -> "Config":
        return apply_overrides(self, overrides)


def dict_hash(d: dict) -> str:
    """The hash of a config as a nested dict (its `run` section left out). For a config.json written by an
    older catlab (without keys added since), this is the hash that run was named and checkpointed with."""
    d = {k: v for k, v in d.items() if k != "run"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


# ---- overrides ----------------------------------------------------------------------------------
def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _coerce(key: str, tp, raw):
    """Turn a raw value (a string from the command line, or a JSON value) into the field's type."""
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        s = str(raw).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        _fail(key, "a bool (true/false)", raw)
    if tp is int:
        if isinstance(raw, bool):
            _fail(key, "an int", raw)
        try:
            f = float(raw)
        except (TypeError, ValueError):
            _fail(key, "an int", raw)
        if not f.is_integer():
            _fail(key, "an int", raw)
        return int(f)
    if tp is float:
        if isinstance(raw, bool):
            _fail(key, "a float", raw)
        try:
            return float(raw)
        except (TypeError, ValueError):
            _fail(key, "a float", raw)
    if tp is str:
        if isinstance(raw, (dict, list)):
            _fail(key, "a string", raw)
        return str(raw)
    raise TypeError(f"unsupported config type {tp} for {key}")


def _section_fields(cls) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _build(cls, values: dict, prefix: str = ""):
    """Build dataclass `cls` from a nested dict of raw values, coercing and rejecting unknown keys."""
    known = _section_fields(cls)
    kwargs = {}
    for name, raw in values.items():
        key = f"{prefix}{name}"
        if name not in known:
            where = f" under {prefix[:-1]}" if prefix else ""
            raise UserError(f"unknown config key {key!r}; valid keys{where}: {', '.join(known)}")
        tp = known[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(raw, dict):
                _fail(key, f"a section with keys {', '.join(_section_fields(tp))}", raw)
            kwargs[name] = _build(tp, raw, f"{key}.")
        else:
            kwargs[name] = _coerce(key, tp, raw)
    return cls(**kwargs)


def _nest(pairs: dict[str, object]) -> dict:
    out: dict = {}
    for key, value in pairs.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"config key {key!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: typing.Iterable[str] | dict) -> dict[str, object]:
    if isinstance(overrides, dict):
        return dict(overrides)
    pairs = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        pairs[key.strip()] = value.strip()
    return pairs


def apply_overrides(cfg: Config, overrides: typing.Iterable[str] | dict) -> Config:
    """Return a new validated Config with `key.sub=value` overrides applied (strings are coerced)."""
    pairs = parse_overrides(overrides)
    if not pairs:
        return cfg
    return _build(Config, _merge(cfg.to_dict(), _nest(pairs)))


def from_dict(d: dict) -> Config:
    return _build(Config, d)


def load_config(overrides: typing.Iterable[str] | dict = (), base: Config | dict | None = None) -> Config:
    """The defaults (or `base`), with overrides applied and everything validated."""
    if base is None:
        base = Config()
    elif isinstance(base, dict):
        base = from_dict(base)
    return apply_overrides(base, overrides)


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_text(path, json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")


def load_config_json(path: str | Path) -> Config:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise UserError(f"config file {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not valid JSON (not UTF-8 text)") from None
    except OSError as e:                                  # a folder, no permission
        raise UserError(f"config file {path} cannot be read ({e.strerror})") from None
    if not isinstance(d, dict):
        raise UserError(f"config file {path} must hold a JSON object")
    return from_dict(d)
