"""CAT losses: adversarial (per scale), R1/R2 regularisers, and the cross-scale consistency loss.

Pure functions over logits and images. Logits are (B, K): one column per scale (scale-wise D), or
(B, 1) for a D that sees all scales at once (concat). Adversarial losses return a per-scale vector
(K,) that the caller weights with `scale_weights`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from catlab.config import ConsistencyConfig, parse_weights, SCALE_WEIGHT_PRESETS, STAGE_WEIGHT_PRESETS
from catlab.distances import get_distance  # noqa: F401 -- also the trainer's and bench's name for it


# ---- adversarial losses: (real_logits, fake_logits) (B, K) -> per-scale loss (K,) ---------------
def rpgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Relativistic pairing GAN, D side: softplus(-(D(x) - D(G(z)))). Jolicoeur-Martineau 2019; as
    used per scale by GAT (Hyun et al., 2026) and R3GAN (Huang et al., 2024)."""
    return F.softplus(-(real - fake)).mean(0)


def rpgan_g(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Relativistic pairing GAN, G side: the mirror, softplus(-(D(G(z)) - D(x)))."""
    return F.softplus(-(fake - real)).mean(0)


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss, D side: relu(1 - D(x)) + relu(1 + D(G(z))). Lim & Ye 2017; Miyato et al. 2018."""
    return F.relu(1 - real).mean(0) + F.relu(1 + fake).mean(0)


def hinge_g(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss, G side: -D(G(z))."""
    return -fake.mean(0)


def ns_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN, D side: softplus(-D(x)) + softplus(D(G(z))). Goodfellow et al. 2014."""
    return F.softplus(-real).mean(0) + F.softplus(fake).mean(0)


def ns_g(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN, G side: softplus(-D(G(z)))."""
    return F.softplus(-fake).mean(0)


ADVERSARIAL = {"rpgan": (rpgan_d, rpgan_g), "hinge": (hinge_d, hinge_g), "ns": (ns_d, ns_g)}


# ---- weights ------------------------------------------------------------------------------------
def _weight_list(spec: str, n: int, presets: tuple[str, ...], key: str) -> list[float] | None:
    parse_weights(spec, n, presets, key)
    return None if spec in presets else [float(v) for v in spec.split(",")]


def scale_weights(spec: str, k: int) -> torch.Tensor:
    """Per-scale adversarial weights (K,), normalised to sum 1 so presets are comparable.

    uniform: equal; coarse-heavy: 2^(K-1-k) (halving toward fine); fine-heavy: 2^k;
    final-only: (0, ..., 0, 1), the single-scale baseline with no intermediate supervision.
    k == 1 (a D with one logit, e.g. concat) always gives (1,).
    """
    if k == 1:
        return torch.ones(1)
    custom = _weight_list(spec, k, SCALE_WEIGHT_PRESETS, "loss.scale_weights")
    i = torch.arange(k, dtype=torch.float32)
    w = {
        "uniform": lambda: torch.ones(k),
        "coarse-heavy": lambda: 2.0 ** (k - 1 - i),
        "fine-heavy": lambda: 2.0 ** i,
        "final-only": lambda: F.one_hot(torch.tensor(k - 1), k).float(),
    }[spec]() if custom is None else torch.tensor(custom)
    return w / w.sum()


def stage_weights(spec: str, k: int) -> torch.Tensor:
    """Consistency weights for stages 1..K-1, (K-1,), not normalised.

    paper: 1 / (K - k), which is (1/3, 1/2, 1) for K = 4 [reimpl]; uniform: ones;
    coarse-heavy: the paper's weights reversed, (1, 1/2, 1/3) for K = 4.
    """
    custom = _weight_list(spec, k - 1, STAGE_WEIGHT_PRESETS, "loss.consistency.stage_weights")
    paper = 1.0 / (k - torch.arange(1, k, dtype=torch.float32))
    return {"paper": paper, "uniform": torch.ones(k - 1), "coarse-heavy": paper.flip(0)}[spec] \
        if custom is None else torch.tensor(custom)


# ---- regularisers -------------------------------------------------------------------------------
def _subset(images: list[torch.Tensor], y: torch.Tensor, fraction: float):
    n = max(1, int(round(y.shape[0] * fraction)))
    return [x[:n] for x in images], y[:n]


def approx_r1(D, images: list[torch.Tensor], y: torch.Tensor, gamma: float, sigma: float = 0.01,
              fraction: float = 1.0) -> torch.Tensor:
    """Approximate R1 (on reals) or R2 (on fakes): gamma/2 * E[((D(x) - D(x + sigma n)) / sigma)^2].

    A finite-difference estimate of gamma/2 * |grad_x D|^2 (its expectation over n), without double
    backprop. GAT (Hyun et al., 2026) uses sigma = 0.01; the reimpl applies it to 25 % of the batch.
    """
    images, y = _subset([x.detach() for x in images], y, fraction)
    noisy = [x + sigma * torch.randn_like(x) for x in images]
    both = D([torch.cat([x, n]) for x, n in zip(images, noisy)], torch.cat([y, y]))
    clean, perturbed = both.chunk(2)
    return gamma / 2 * ((clean - perturbed) / sigma).pow(2).sum(1).mean()


def exact_r1(D, images: list[torch.Tensor], y: torch.Tensor, gamma: float, fraction: float = 1.0,
             **_) -> torch.Tensor:
    """Exact R1/R2 (Mescheder et al., 2018): gamma/2 * E[|grad_x sum_k D_k(x)|^2] over all scales."""
    images, y = _subset([x.detach().requires_grad_(True) for x in images], y, fraction)
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernels have no double backward
        grads = torch.autograd.grad(D(images, y).sum(), images, create_graph=True)
    return gamma / 2 * sum(g.pow(2).flatten(1).sum(1) for g in grads).mean()


REGULARISERS = {"approx": approx_r1, "exact": exact_r1}


# ---- the consistency loss -----------------------------------------------------------------------
def consistency(full: list[torch.Tensor], scaled: list[torch.Tensor], cfg: ConsistencyConfig,
                step: int, distance=None, resampler: str = "area") -> tuple[torch.Tensor, torch.Tensor]:
    """CAT's generator-side consistency loss: align every intermediate output with the final one.

    L = lambda_t * mean_k w_k * d(a_k, b_k), k = 1..K-1, with the final output as the common anchor
    [paper]. The reimpl form is MSE on full-resolution outputs, w = (1/3, 1/2, 1), lambda = 0.1, no
    stop-gradient. Every open choice is configurable (cfg):
      compare_at="full":      a_k = full[k],   b_k = full[K]              (accumulated full-res outputs)
      compare_at="own-scale": a_k = scaled[k], b_k = R_{s_k}(full[K])     (the stage's own scale; R is
                              catlab.data.pyramid.resample with `resampler`, the run's data.resampler)
      detach_anchor:          stop the gradient through the anchor (no gradient to the last head);
      warmup:                 lambda_t = lambda * min(1, step / warmup).
    Returns (loss, per-stage mean distances (K-1,) detached).
    """
    k = len(full)
    if k < 2:
        return full[0].new_zeros(()), full[0].new_zeros(0)
    if distance is None:
        distance = get_distance(cfg.distance)
    from catlab.data.pyramid import resample
    anchor = full[-1].detach() if cfg.detach_anchor else full[-1]
    if cfg.compare_at == "full":
        pairs = [(full[i], anchor) for i in range(k - 1)]
    else:
        pairs = [(scaled[i], resample(anchor, scaled[i].shape[-1], resampler)) for i in range(k - 1)]
    dist = torch.stack([distance(a, b).mean() for a, b in pairs])  # (K-1,)
    ramp = min(1.0, step / cfg.warmup) if cfg.warmup else 1.0
    w = stage_weights(cfg.stage_weights, k).to(dist)
    return cfg.weight * ramp * (w * dist).mean(), dist.detach()

