"""Losses: analytic values, weight presets, regularisers, and the consistency loss's open choices."""
import math

import pytest
import torch

from catlab.config import ConsistencyConfig, ModelConfig
from catlab.data import pyramid
from catlab.losses import (ADVERSARIAL, approx_r1, consistency, exact_r1, scale_weights, stage_weights)
from catlab.models import build_generator


def test_rpgan_analytic():
    d, g = ADVERSARIAL["rpgan"]
    real, fake = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    assert torch.allclose(d(real, fake), torch.tensor([math.log1p(math.exp(-1)), math.log(2)]))
    assert torch.allclose(g(real, fake), torch.tensor([math.log1p(math.exp(1)), math.log(2)]))


def test_hinge_and_ns_analytic():
    real, fake = torch.tensor([[2.0], [0.0]]), torch.tensor([[-2.0], [0.5]])
    assert torch.allclose(ADVERSARIAL["hinge"][0](real, fake), torch.tensor([0.5 + 0.75]))
    assert torch.allclose(ADVERSARIAL["hinge"][1](real, fake), torch.tensor([0.75]))
    sp = torch.nn.functional.softplus
    assert torch.allclose(ADVERSARIAL["ns"][1](real, fake), sp(-fake).mean(0))


def test_scale_weight_presets():
    assert torch.allclose(scale_weights("uniform", 4), torch.full((4,), 0.25))
    assert torch.allclose(scale_weights("final-only", 4), torch.tensor([0.0, 0, 0, 1]))
    assert torch.allclose(scale_weights("coarse-heavy", 4), torch.tensor([8.0, 4, 2, 1]) / 15)
    assert torch.allclose(scale_weights("fine-heavy", 4), torch.tensor([1.0, 2, 4, 8]) / 15)
    assert torch.allclose(scale_weights("1,1,2,0", 4), torch.tensor([0.25, 0.25, 0.5, 0]))
    assert torch.equal(scale_weights("fine-heavy", 1), torch.ones(1))  # a one-logit D (concat)


def test_stage_weight_presets():
    assert torch.allclose(stage_weights("paper", 4), torch.tensor([1 / 3, 1 / 2, 1]))
    assert torch.allclose(stage_weights("coarse-heavy", 4), torch.tensor([1, 1 / 2, 1 / 3]))
    assert torch.equal(stage_weights("uniform", 4), torch.ones(3))
    assert torch.allclose(stage_weights("0.5,0,2", 4), torch.tensor([0.5, 0, 2]))


def _aligned(final: torch.Tensor, k: int = 4):
    sizes = [final.shape[-1] >> (k - 1 - i) for i in range(k)]
    return pyramid(final, sizes), [final.clone() for _ in range(k)]


@pytest.mark.parametrize("compare_at", ["full", "own-scale"])
@pytest.mark.parametrize("distance", ["l2", "l1"])
def test_consistency_zero_iff_aligned(compare_at, distance):
    torch.manual_seed(0)
    final = torch.randn(3, 3, 32, 32)
    scaled, full = _aligned(final)
    cfg = ConsistencyConfig(weight=0.7, compare_at=compare_at, distance=distance)
    loss, per_stage = consistency(full, scaled, cfg, step=100)
    assert loss.item() == 0.0 and torch.equal(per_stage, torch.zeros(3))
    scaled[1] = scaled[1] + 0.1
    full[1] = full[1] + 0.1
    loss, per_stage = consistency(full, scaled, cfg, step=100)
    assert loss.item() > 0 and per_stage[1] > 0 and per_stage[0] == 0 and per_stage[2] == 0


def test_consistency_weighting_and_warmup():
    final = torch.zeros(2, 3, 8, 8)
    full = [final + 1.0, final + 2.0, final]            # l2 distances to the anchor: 1, 4
    scaled = pyramid(final, [4, 8, 8][:2]) + [final]
    cfg = ConsistencyConfig(weight=2.0, stage_weights="1,0.5", warmup=10, compare_at="full")
    loss, dist = consistency(full, scaled, cfg, step=5)
    assert torch.allclose(dist, torch.tensor([1.0, 4.0]))
    assert loss.item() == pytest.approx(2.0 * 0.5 * (1 * 1 + 0.5 * 4) / 2)
    loss, _ = consistency(full, scaled, cfg, step=50)   # past the warm-up
    assert loss.item() == pytest.approx(2.0 * (1 * 1 + 0.5 * 4) / 2)


@pytest.mark.parametrize("compare_at", ["full", "own-scale"])
def test_detach_anchor_blocks_gradient_to_final_head(compare_at):
    torch.manual_seed(0)
    G = build_generator(ModelConfig(), num_classes=10, resolution=32)
    z, y = torch.randn(4, G.z_dim), torch.arange(4)
    for detach in (True, False):
        G.zero_grad(set_to_none=True)
        scaled, full = G(z, y, full=True)
        cfg = ConsistencyConfig(weight=1.0, detach_anchor=detach, compare_at=compare_at)
        loss, _ = consistency(full, scaled, cfg, step=1)
        loss.backward()
        grads = [p.grad for p in G.heads[-1].parameters()]
        if detach:
            assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
        else:
            assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads)
        assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in G.heads[0].parameters())


class _Linear(torch.nn.Module):
    """D(x) = <a, x>: |grad D|^2 = |a|^2 exactly, so R1 is known in closed form."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(3, 8, 8))

    def forward(self, images, y):
        return (images[0] * self.a).flatten(1).sum(1, keepdim=True)


def test_r1_analytic():
    torch.manual_seed(0)
    D, x, y = _Linear(), [torch.randn(4096, 3, 8, 8)], torch.zeros(4096)
    expected = 0.5 * D.a.pow(2).sum()
    assert exact_r1(D, x, y, gamma=1.0).item() == pytest.approx(expected.item(), rel=1e-5)
    # the finite-difference estimate is unbiased: (a.n)^2 has mean |a|^2 and relative sd sqrt(2);
    # over 4096 samples its mean is within 10 % (4.5 sd)
    assert approx_r1(D, x, y, gamma=1.0, sigma=0.01).item() == pytest.approx(expected.item(), rel=0.10)
    assert approx_r1(D, x, y, gamma=1.0, fraction=0.25).item() == pytest.approx(expected.item(), rel=0.2)


def test_exact_r1_runs_through_the_vit_discriminator():
    """Double backward through the ViT's attention (the fused CPU kernels lack it)."""
    from catlab.models import build_discriminator
    D = build_discriminator(ModelConfig(discriminator="scalewise"), num_classes=10, resolution=32)
    images = [torch.randn(2, 3, s, s) for s in (4, 8, 16, 32)]
    penalty = exact_r1(D, images, torch.arange(2), gamma=1.0)
    penalty.backward()
    assert penalty.item() > 0 and D.out.linear.weight.grad is not None


def test_exact_r1_runs_through_the_conv_discriminator():
    from catlab.models import build_discriminator
    D = build_discriminator(ModelConfig(discriminator="scalewise-conv"), num_classes=10, resolution=32)
    images = [torch.randn(2, 3, s, s) for s in (4, 8, 16, 32)]
    penalty = exact_r1(D, images, torch.arange(2), gamma=1.0)
    penalty.backward()
    assert penalty.item() > 0 and all(out.linear.weight.grad is not None for out in D.outs)
