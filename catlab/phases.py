"""What the trainer runs: its State, and the GAN updates as a list of phases, resolved once from the config.

    s = build_state(cfg, num_classes, channels, batcher, device)
    phases = make_phases(cfg, s, autocast)      # D main, lazy D regularisation, G main with consistency
    for ph in phases: stats = ph.fn(step, real_pyramid, y)

make_phases asks which loss, regulariser, distance and weights the config names, so the loop never does.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch

from catlab import distributed
from catlab.config import Config
from catlab.data import Batcher
from catlab.losses import ADVERSARIAL, REGULARISERS, consistency, get_distance, scale_weights
from catlab.models import build_discriminator, build_generator


@dataclass
class State:
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    batcher: Batcher
    rng: distributed.StepRNG
    step: int = 0
    images_seen: int = 0
    latest: dict = field(default_factory=dict)   # every stat's latest value: lazy phases (D_reg) log their last


@dataclass
class Phase:
    name: str
    every: int
    fn: Callable  # (step, real_pyramid, y) -> dict of detached scalar tensors


def build_state(cfg: Config, num_classes: int, channels: int, batcher: Batcher, device,
                rng: distributed.StepRNG | None = None) -> State:
    G, G_ema = (build_generator(cfg.model, num_classes, cfg.data.resolution, channels,
                                resampler=cfg.data.resampler).to(device) for _ in range(2))
    D = build_discriminator(cfg.model, num_classes, cfg.data.resolution, channels).to(device)
    if cfg.train.channels_last:                           # 4-D weights only: the conv D; a ViT D is unchanged
        D = D.to(memory_format=torch.channels_last)
    G_ema.load_state_dict(G.state_dict())
    G_ema.eval().requires_grad_(False)
    t = cfg.train

    def adamw(net, lr):
        lr = lr * 768 / net.width if t.width_lr else lr
        return torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.0, 0.99), weight_decay=0.0,
                                 foreach=True)      # bitwise the for-loop's update, in fewer kernels
    rng = rng or distributed.StepRNG(cfg.seed, device=device)
    return State(G, D, G_ema, adamw(G, t.lr_g), adamw(D, t.lr_d), batcher, rng)


def autocast_for(cfg: Config, device: torch.device) -> Callable:
    """The context the phases run their forwards in: bf16 autocast for train.precision=bf16, else nothing."""
    if cfg.train.precision != "bf16":
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def _update(opt, loss, params, clip: float) -> torch.Tensor:
    params = list(params)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    distributed.all_reduce_grads(params)                  # mean over ranks; no-op in one process
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    opt.step()
    return norm


def _per_scale(prefix: str, v: torch.Tensor) -> dict:
    return {f"{prefix}_s{i + 1}": x for i, x in enumerate(v.detach())}


def make_phases(cfg: Config, s: State, autocast) -> list[Phase]:
    """Resolve every variant once: losses, weights, regulariser, distance, compiled forwards."""
    d_loss_fn, g_loss_fn = ADVERSARIAL[cfg.loss.adversarial]
    rc, cc, clip = cfg.loss.reg, cfg.loss.consistency, cfg.train.grad_clip
    distance = get_distance(cc.distance)
    weights = lambda logits: scale_weights(cfg.loss.scale_weights, logits.shape[1]).to(logits)  # noqa: E731
    G, D = (torch.compile(s.G, dynamic=False), torch.compile(s.D, dynamic=False)) if cfg.train.compile \
        else (s.G, s.D)                                   # same parameters; state_dicts stay uncompiled
    D_reg = s.D if rc.kind == "exact" else D              # compiled graphs have no double backward

    shared: dict = {}                                     # train.fakes=shared: this step's (z, y) -> G

    def fakes(step, y, grad: bool, full: bool = False):
        """This step's fake stages. fresh: a new z at every call; shared: one G forward (with grad) per
        step, detached for D's phases and reused by G's (the D update does not change G)."""
        if cfg.train.fakes == "fresh":
            z = s.rng.z(y.shape[0], s.G.z_dim)            # this rank's rows of the global batch's z
            with torch.set_grad_enabled(grad), autocast():
                return G(z, y, full=full)
        if shared.get("step") != step:
            z = s.rng.z(y.shape[0], s.G.z_dim)
            with autocast():
                shared.update(step=step, out=G(z, y, full=True))
        scaled, full_images = shared["out"]
        if grad:
            shared.clear()                                # G's phase is the last to use them
            return (scaled, full_images) if full else scaled
        return [x.detach() for x in scaled]

    def d_main(step, real, y):
        fake = fakes(step, y, grad=False)
        s.D.requires_grad_(True)
        with autocast():
            logits = D([torch.cat([r, f]) for r, f in zip(real, fake)], torch.cat([y, y])).float()
        lr, lf = logits.chunk(2)
        per_scale = d_loss_fn(lr, lf)
        loss = (weights(lr) * per_scale).sum()
        norm = _update(s.opt_d, loss, s.D.parameters(), clip)
        return {"d_loss": loss.detach(), "grad_norm_d": norm, **_per_scale("d_loss", per_scale),
                **_per_scale("d_real", lr.mean(0)), **_per_scale("d_fake", lf.mean(0))}

    def d_reg(step, real, y):
        penalty = REGULARISERS[rc.kind]
        with autocast():
            loss = penalty(D_reg, real, y, rc.gamma, sigma=rc.sigma, fraction=rc.fraction)
            if rc.r2:
                loss = loss + penalty(D_reg, fakes(step, y, grad=False), y, rc.gamma, sigma=rc.sigma,
                                      fraction=rc.fraction)
        _update(s.opt_d, loss.float() * rc.every, s.D.parameters(), clip)
        return {"d_reg": loss.detach()}

    def g_main(step, real, y):
        s.D.requires_grad_(False)
        scaled, full = fakes(step, y, grad=True, full=True)
        with autocast():
            with torch.no_grad():
                lr = D(real, y).float()
            lf = D(scaled, y).float()
        per_scale = g_loss_fn(lr, lf)
        adv = (weights(lf) * per_scale).sum()
        cons, dist = consistency([x.float() for x in full], [x.float() for x in scaled], cc, step, distance,
                                 cfg.data.resampler)
        norm = _update(s.opt_g, adv + cons, s.G.parameters(), clip)
        return {"g_loss": adv.detach(), "cons": cons.detach(), "grad_norm_g": norm,
                **_per_scale("g_adv", per_scale), **_per_scale("cons_dist", dist)}

    use_reg = rc.kind != "none" and rc.gamma > 0
    return [Phase("D", 1, d_main)] + ([Phase("D_reg", rc.every, d_reg)] if use_reg else []) + \
        [Phase("G", 1, g_main)]


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, step: int, decay: float, warmup: int) -> None:
    beta = min(decay, (1 + step) / (10 + step)) if step < warmup else decay
    torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1 - beta)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)
