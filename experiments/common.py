"""What studies share: the two profiles, the consistency on/off arms, and search-space building blocks.

Profiles: catlab.profiles defines them (what cpu and gpu set, for training, analysis and search);
profiles() gives a study the training overrides, plus its own additions.

The "on" arm of every consistency axis is the profile's lambda (cpu: the config default, calibrated by
ablation-consistency-weight; gpu: 0.1); "off" is lambda = 0.

Search spaces get an Optuna `trial` passed in (optuna is never imported here). Parameter names are the
config keys, so `space(trial)` returns overrides directly.
"""
from __future__ import annotations

from catlab.config import STAGE_WEIGHT_PRESETS
from catlab.profiles import PROFILES
from experiments import Claim


# ---- profiles -----------------------------------------------------------------------------------
def profiles(cpu: dict | None = None, gpu: dict | None = None) -> dict:
    """{"cpu": cpu profile + cpu, "gpu": gpu profile + gpu}: the shared profiles with a study's own additions."""
    extra = {"cpu": cpu or {}, "gpu": gpu or {}}
    return {name: {**p.train, **extra.get(name, {})} for name, p in PROFILES.items()}


# ---- arms ---------------------------------------------------------------------------------------
ON: dict = {}                                   # the profile's lambda
OFF = {"loss.consistency.weight": 0.0}
CONSISTENCY = {"on": ON, "off": OFF}
# ablation-consistency's cpu recipe: calibration-consistency's pick (lambda = 30), with lambda ramped in over
# the first 150 steps, adopted by a rule read on new seeds (docs/cpu-recipe.md, 2026-12-04)
CPU_RECIPE = {"data.name": "layouts", "train.steps": 300, "loss.consistency.weight": 30.0,
              "loss.consistency.warmup": 150}


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


def warmup(trial, high: int = 300) -> dict:
    """Steps of the linear ramp of lambda from 0 (0: none)."""
    return {"loss.consistency.warmup": trial.suggest_int("loss.consistency.warmup", 0, high)}


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
