"""What studies share: the two profiles, the consistency on/off arms, and search-space building blocks.

Profiles
  cpu (the default): the embedded `shapes` data and the `tiny` model with the config's defaults, which
      are the cpu recipe (the scale-wise conv D, coarse-heavy scale weights, 1200 steps, batch 16, lr 2e-3,
      no R1/R2, lambda 3; README "The cpu recipe"): about 3 min per cell on one core, so a 3-seed, 2-arm
      study takes about 12 min on 2 cores.
  gpu: CIFAR-10 (downloaded once with data.download=true; or pass data.name=imagefolder:PATH), the `S`
      model with CAT's ViT discriminator and uniform scale weights, GAT's lr rule (2e-4 * 768 / width), approximate R1/R2 (gamma 0.1), bf16, EMA 0.999,
      batch 128, 20k steps, and the paper's lambda 0.1 (not calibrated: no GPU was at hand).

The "on" arm of every consistency axis is the profile's lambda (cpu: the config default, calibrated by
ablation-consistency-weight; gpu: 0.1); "off" is lambda = 0.

Search spaces get an Optuna `trial` passed in (optuna is never imported here). Parameter names are the
config keys, so `space(trial)` returns overrides directly.
"""
from __future__ import annotations

from catlab.config import STAGE_WEIGHT_PRESETS
from experiments import Claim

# ---- profiles -----------------------------------------------------------------------------------
CPU = {"data.name": "shapes", "model.size": "tiny"}
GPU = {
    "data.name": "cifar10", "data.download": True, "data.n": 0,
    "model.size": "S", "model.discriminator": "scalewise", "loss.scale_weights": "uniform",
    "train.device": "cuda", "train.precision": "bf16", "train.fakes": "fresh",
    "train.steps": 20000, "train.batch": 128,
    "loss.reg.kind": "approx", "loss.reg.gamma": 0.1, "loss.consistency.weight": 0.1,
    "train.width_lr": True, "train.lr_g": 2e-4, "train.lr_d": 2e-4, "train.ema": 0.999,
    "train.log_every": 50, "train.ckpt_every": 2000, "train.sample_every": 2000,
}


def profiles(cpu: dict | None = None, gpu: dict | None = None) -> dict:
    """{"cpu": CPU + cpu, "gpu": GPU + gpu}: the shared profiles with a study's own additions."""
    return {"cpu": {**CPU, **(cpu or {})}, "gpu": {**GPU, **(gpu or {})}}


# ---- arms ---------------------------------------------------------------------------------------
ON: dict = {}                                   # the profile's lambda
OFF = {"loss.consistency.weight": 0.0}
CONSISTENCY = {"on": ON, "off": OFF}


def consistency_claims(axis: str = "consistency", on: str = "on", off: str = "off") -> tuple:
    """CAT's claims for an on/off comparison [paper figs 4, 6]: at every intermediate stage discrepancy and
    rewrite are lower and direction alignment is higher with consistency; final quality is not worse."""
    return (Claim("discrepancy_l2", axis, on, off, "lower"), Claim("rewrite_l2", axis, on, off, "lower"),
            Claim("direction_l2", axis, on, off, "higher"),
            Claim("fid", axis, on, off, "lower", "not-worse", "final"),
            Claim("shape_acc", axis, on, off, "higher", "not-worse", "final"))


# ---- search-space building blocks: each returns overrides ------------------------------------------
def lam(trial, low: float = 1e-3, high: float = 10.0) -> dict:
    """lambda_cons, log-uniform (the paper's 0.1 sits inside; 0 is the off arm, not a search point)."""
    return {"loss.consistency.weight": trial.suggest_float("loss.consistency.weight", low, high, log=True)}


def stage_weights(trial) -> dict:
    key = "loss.consistency.stage_weights"
    return {key: trial.suggest_categorical(key, list(STAGE_WEIGHT_PRESETS))}


def lrs(trial, low: float = 1e-4, high: float = 3e-3) -> dict:
    return {k: trial.suggest_float(k, low, high, log=True) for k in ("train.lr_g", "train.lr_d")}


def gamma(trial, low: float = 1e-3, high: float = 10.0) -> dict:
    return {"loss.reg.gamma": trial.suggest_float("loss.reg.gamma", low, high, log=True)}


def anchor(trial) -> dict:
    return {"loss.consistency.detach_anchor":
            trial.suggest_categorical("loss.consistency.detach_anchor", [False, True]),
            "loss.consistency.compare_at":
            trial.suggest_categorical("loss.consistency.compare_at", ["full", "own-scale"])}
