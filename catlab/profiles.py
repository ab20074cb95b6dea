"""The profiles, defined once: what `--profile cpu|gpu` means to every command.

    PROFILES["cpu"].train       # config overrides every study starts from (experiments.common.profiles)
    analysis_options("gpu")     # samples per evaluation, chunk, device (the CPU where there is no CUDA)

train
  cpu (the default): the embedded `shapes` data and the `tiny` model with the config's defaults, which
      are the cpu recipe (the scale-wise conv D, coarse-heavy scale weights, 1200 steps, batch 16, lr 2e-3,
      no R1/R2, lambda 3; docs/cpu-recipe.md): about 3 min per cell on one core, so a 3-seed, 2-arm
      study takes about 12 min on 2 cores.
  gpu: CIFAR-10 (downloaded once with data.download=true; or pass data.name=imagefolder:PATH), the `S`
      model with CAT's ViT discriminator and uniform scale weights, GAT's lr rule (2e-4 * 768 / width),
      approximate R1/R2 (gamma 0.1), bf16, EMA 0.999, batch 128, 20k steps, and the paper's lambda 0.1
      (not calibrated: no GPU was at hand).
analysis: n samples per evaluation, curve_n per snapshot, chunk, device; curve_fid: FID at every snapshot
  (on the cpu only shape_acc: FID per snapshot costs 4 x curve_n float64 feature extractions per snapshot,
  most of a cell's analysis).
search: the budget of one search trial (a study's `search_base`, when it has one, goes on top). cpu: a
  demonstration budget -- `make search` (8 trials, 2 workers) in about 12 min on 2 busy cores; the ranking
  after 60 steps is a hint, not a result: pass train.steps=1200 data.n=10000 (the cpu recipe) for a real
  CPU search. search_eval: samples of the final FID (n_eval) and of the pruning FID (n_step), extractor.
"""
from __future__ import annotations

from dataclasses import dataclass

from catlab.errors import UserError


@dataclass(frozen=True)
class Profile:
    train: dict
    analysis: dict
    search: dict
    search_eval: dict


PROFILES: dict[str, Profile] = {
    "cpu": Profile(
        train={"data.name": "shapes", "model.size": "tiny"},
        analysis={"n": 500, "curve_n": 256, "batch": 256, "device": "cpu", "curve_fid": False},
        search={"data.n": 2000, "train.steps": 60, "train.batch": 16, "train.log_every": 10,
                "train.ckpt_every": 30, "train.sample_every": 60},
        search_eval={"n_eval": 500, "n_step": 128, "extractor": "domain"}),
    "gpu": Profile(
        train={
            "data.name": "cifar10", "data.download": True, "data.n": 0,
            "model.size": "S", "model.discriminator": "scalewise", "loss.scale_weights": "uniform",
            "train.device": "cuda", "train.precision": "bf16", "train.fakes": "fresh",
            "train.steps": 20000, "train.batch": 128,
            "loss.reg.kind": "approx", "loss.reg.gamma": 0.1, "loss.consistency.weight": 0.1,
            "train.width_lr": True, "train.lr_g": 2e-4, "train.lr_d": 2e-4, "train.ema": 0.999,
            "train.log_every": 50, "train.ckpt_every": 2000, "train.sample_every": 2000,
        },
        analysis={"n": 10000, "batch": 1024, "device": "cuda", "curve_fid": True},
        search={},
        search_eval={"n_eval": 10000, "n_step": 2000, "extractor": "auto"}),
}
DEFAULT = "cpu"


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise UserError(f"profile must be one of {', '.join(PROFILES)}, but got profile={name!r}")
    return PROFILES[name]


def analysis_options(name: str = DEFAULT) -> dict:
    """n, batch and device of a profile's analysis (gpu falls back to the CPU where there is no CUDA)."""
    opts = dict(get_profile(name).analysis)
    if opts["device"] == "cuda":
        import torch
        if not torch.cuda.is_available():
            opts["device"] = "cpu"
    return opts
