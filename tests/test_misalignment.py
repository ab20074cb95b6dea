"""cross_scale_metrics: pinned values on constructed pyramids, batch-size invariance, shapes, errors."""
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from analysis.misalignment import _resample, cross_scale_metrics, metrics_frame
from catlab.errors import UserError

SIZES = [4, 8, 16]


def aligned_pyramid(B=6, C=3, seed=0, mode="area"):
    """Stages that are exactly R(final). Dyadic pixel values keep area averages exact in float32."""
    g = torch.Generator().manual_seed(seed)
    final = torch.randint(-8, 9, (B, C, SIZES[-1], SIZES[-1]), generator=g).float() / 8
    return [_resample(final, s, mode) for s in SIZES[:-1]] + [final]


def up(x, size):
    """Nearest upsampling by an integer factor: area downsampling recovers x exactly."""
    return F.interpolate(x, size=(size, size), mode="nearest")


def test_exact_alignment_is_zero():
    res = cross_scale_metrics(aligned_pyramid())
    assert res["discrepancy"] == [0.0, 0.0]
    assert res["rewrite"] == [0.0, 0.0]
    assert res["direction"] == [0.0, 0.0]   # both vectors are zero: the cosine of a zero vector is 0


def test_exact_alignment_bilinear():
    # bilinear does not compose (R_4 R_8 != R_4), so only discrepancy is exactly 0
    res = cross_scale_metrics(aligned_pyramid(mode="bilinear"), resampler="bilinear")
    assert res["discrepancy"] == [0.0, 0.0]
    assert res["rewrite"][1] == 0.0 and res["rewrite"][0] > 1e-5
    assert res["direction"][1] == 0.0


def test_area_operator_matches_average_pooling():
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(_resample(x, 4), F.avg_pool2d(x, 4), atol=1e-6)
    assert _resample(x, 16) is x


def test_gaussian_noise_gives_sigma_squared():
    sigma = 0.1
    g = torch.Generator().manual_seed(1)
    final = torch.rand(32, 3, 64, 64, generator=g) * 2 - 1
    stages = [_resample(final, s) + sigma * torch.randn(32, 3, s, s, generator=g) for s in (16, 32)] + [final]
    res = cross_scale_metrics(stages, distance="l2")
    for v in res["discrepancy"]:
        assert v == pytest.approx(sigma ** 2, rel=0.02)
    assert res["rewrite"][1] == res["discrepancy"][1]          # k = K-1: x_{k+1} is x_K
    l1 = cross_scale_metrics(stages, distance="l1")["discrepancy"]
    for v in l1:                                              # E|N(0, s^2)| = s sqrt(2/pi)
        assert v == pytest.approx(sigma * math.sqrt(2 / math.pi), rel=0.02)


def test_direction_cosines_one_zero_minus_one():
    # x_1 = 0 at 4x4; x_2 and x_3 are built at 4x4 and upsampled nearest, so R_4 recovers them exactly.
    B, C = 3, 3
    g = torch.Generator().manual_seed(2)
    x1 = torch.zeros(B, C, 4, 4)
    mask = (torch.arange(16).reshape(1, 1, 4, 4) % 3 == 0).float()
    target = torch.randn(B, C, 4, 4, generator=g) * mask      # R_4(x_3) - x_1
    x3 = up(target, 16)
    orth = torch.randn(B, C, 4, 4, generator=g) * (1 - mask)   # disjoint support: dot product exactly 0
    cases = {1.0: 0.5 * target, -1.0: -2.0 * target, 0.0: orth}
    for expected, update in cases.items():
        stages = [x1, up(update, 8), x3]
        res = cross_scale_metrics(stages, per_sample=True)
        assert res["direction"][0] == pytest.approx(expected, abs=1e-12)
        assert torch.allclose(res["per_sample"]["direction"][:, 0], torch.full((B,), expected, dtype=torch.float64),
                              atol=1e-12)
        assert res["direction"][1] == 1.0                     # k = K-1: both vectors are R(x_K) - x_k


def test_direction_constant_images_exact():
    B = 2
    const = lambda v, s: torch.full((B, 3, s, s), float(v))    # noqa: E731
    assert cross_scale_metrics([const(0, 4), const(0.5, 8), const(1, 16)])["direction"] == [1.0, 1.0]
    assert cross_scale_metrics([const(0, 4), const(-0.5, 8), const(1, 16)])["direction"] == [-1.0, 1.0]
    assert cross_scale_metrics([const(0, 4), const(0, 8), const(1, 16)])["direction"] == [0.0, 1.0]
    res = cross_scale_metrics([const(0, 4), const(0.5, 8), const(1, 16)])
    assert res["discrepancy"] == [1.0, 0.25] and res["rewrite"] == [0.25, 0.25]


@pytest.mark.parametrize("distance", ["l2", "l1"])
def test_batch_size_invariance(distance):
    g = torch.Generator().manual_seed(3)
    stages = [torch.rand(10, 3, s, s, generator=g) * 2 - 1 for s in SIZES]
    full = cross_scale_metrics(stages, distance=distance, per_sample=True)
    for bs in (1, 3, 4, 10, 64):
        part = cross_scale_metrics(stages, distance=distance, per_sample=True, batch_size=bs)
        for m in ("discrepancy", "rewrite", "direction"):
            assert part[m] == pytest.approx(full[m], abs=1e-6)
            assert torch.allclose(part["per_sample"][m], full["per_sample"][m], atol=1e-6)


def test_per_sample_shapes_and_means():
    g = torch.Generator().manual_seed(4)
    stages = [torch.rand(5, 1, s, s, generator=g) for s in (2, 4, 8, 16)]
    res = cross_scale_metrics(stages, per_sample=True)
    assert set(res) == {"discrepancy", "rewrite", "direction", "per_sample"}
    for m in ("discrepancy", "rewrite", "direction"):
        assert len(res[m]) == 3 and all(isinstance(v, float) for v in res[m])
        assert res["per_sample"][m].shape == (5, 3)
        assert res[m] == pytest.approx(res["per_sample"][m].mean(0).tolist(), abs=1e-12)
    assert "per_sample" not in cross_scale_metrics(stages)


def test_callable_distance():
    stages = aligned_pyramid(B=2)
    stages[0] = stages[0] + 1.0
    res = cross_scale_metrics(stages, distance=lambda a, b: (a - b).abs().amax(dim=(1, 2, 3)))
    assert res["discrepancy"][0] == pytest.approx(1.0) and res["discrepancy"][1] == 0.0


def test_errors_are_user_errors():
    stages = aligned_pyramid(B=2)
    with pytest.raises(UserError, match=r"distance must be one of .*l1, .*l2.* but got distance='nope'"):
        cross_scale_metrics(stages, distance="nope")
    with pytest.raises(UserError, match="resampler"):
        cross_scale_metrics(stages, resampler="nearest")
    with pytest.raises(UserError, match="batch_size"):
        cross_scale_metrics(stages, batch_size=0)
    with pytest.raises(UserError, match="stages"):
        cross_scale_metrics(stages[:1])
    with pytest.raises(UserError, match="coarse to fine"):
        cross_scale_metrics(stages[::-1])
    with pytest.raises(UserError, match=r"stages\[1\]"):
        cross_scale_metrics([stages[0], stages[1][:1], stages[2]])


def test_metrics_frame():
    res = {"discrepancy": [0.5, 0.25], "rewrite": [0.4, 0.25], "direction": [0.9, 1.0]}
    df = metrics_frame(res, arm="cat", seed=3)
    assert list(df.columns) == ["metric", "stage", "value", "arm", "seed"]
    assert len(df) == 6 and set(df["arm"]) == {"cat"} and set(df["seed"]) == {3}
    row = df[(df.metric == "rewrite") & (df.stage == 1)]
    assert row["value"].item() == 0.4
    assert isinstance(df, pd.DataFrame)


@pytest.mark.parametrize("resampler", ["area", "bilinear"])
def test_every_diagnostic_resamples_with_the_chosen_operator(resampler):
    """discrepancy, rewrite and direction against a direct computation: R_{s_k} of the final and of the next
    stage both use `resampler` (bilinear: antialiased F.interpolate, as the pyramid's; area: average pooling)."""
    torch.manual_seed(3)
    stages = [torch.randn(5, 3, s, s) for s in (2, 4, 8, 16)]

    def R(x, s):
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True) \
            if resampler == "bilinear" else F.avg_pool2d(x, x.shape[-1] // s)
    res = cross_scale_metrics(stages, "l2", resampler=resampler)
    for k in range(3):
        x, s = stages[k], stages[k].shape[-1]
        target, nxt = R(stages[-1], s), R(stages[k + 1], s)
        cos = F.cosine_similarity((nxt - x).flatten(1).double(), (target - x).flatten(1).double())
        assert res["discrepancy"][k] == pytest.approx(float((x - target).pow(2).mean()), rel=1e-5)
        assert res["rewrite"][k] == pytest.approx(float((x - nxt).pow(2).mean()), rel=1e-5)
        assert res["direction"][k] == pytest.approx(float(cos.mean()), rel=1e-5)
