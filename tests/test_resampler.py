"""One resampler: for each data.resampler, G's stage images, the real pyramid, the own-scale consistency
loss and the diagnostics all use catlab.data.pyramid.resample (area, or antialiased bilinear).

Pins, for area and bilinear: G's scaled stage k is resample(full_k, s_k); the trainer's real pyramid is
resample(x, s_k); the consistency loss (own-scale) measures d(x_k, resample(x_K, s_k)); the discrepancy
diagnostic is the same distance; the trainer hands data.resampler to its pyramid, its loss and G. The two modes
give different images, so a hard-wired operator fails.
"""
import pytest
import torch
import torch.nn.functional as F

from analysis.misalignment import cross_scale_metrics
from catlab.config import ConsistencyConfig
from catlab.data.pyramid import pyramid, resample
from catlab.distances import l2
from catlab.losses import consistency
from catlab.models.generator import Generator


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 64, generator=g), torch.arange(6) % 10, torch.rand(6, 3, 32, 32, generator=g) * 2 - 1


@pytest.mark.parametrize("mode", ["area", "bilinear"])
def test_everyone_uses_the_same_operator(mode, inputs):
    z, y, real = inputs
    torch.manual_seed(0)
    G = Generator(32, 3, 10, resampler=mode)
    with torch.no_grad():
        scaled, full = G(z, y, full=True)
    sizes = G.scales
    for k, s in enumerate(sizes):
        assert torch.equal(scaled[k], resample(full[k], s, mode)), (mode, k)
    for x, s in zip(pyramid(real, sizes, mode), sizes):
        assert torch.equal(x, resample(real, s, mode))
    cfg = ConsistencyConfig(weight=1.0, compare_at="own-scale", stage_weights="uniform")
    _, dist = consistency(full, scaled, cfg, step=1, resampler=mode)
    want = torch.stack([l2(scaled[k], resample(full[-1], sizes[k], mode)).mean() for k in range(3)])
    assert torch.allclose(dist, want, rtol=1e-6, atol=0)
    diag = cross_scale_metrics(scaled, "l2", resampler=mode)["discrepancy"]
    want = [float(l2(scaled[k], resample(scaled[-1], sizes[k], mode)).double().mean()) for k in range(3)]
    assert diag == pytest.approx(want, rel=1e-6)


def test_the_modes_differ_and_bilinear_is_antialiased(inputs):
    real = inputs[2]
    assert not torch.allclose(resample(real, 8, "area"), resample(real, 8, "bilinear"))
    assert torch.equal(resample(real, 8, "bilinear"),
                       F.interpolate(real, size=(8, 8), mode="bilinear", align_corners=False, antialias=True))
    torch.manual_seed(0)
    a, b = Generator(32, 3, 10, resampler="area"), Generator(32, 3, 10, resampler="bilinear")
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert not torch.equal(a(inputs[0], inputs[1])[0], b(inputs[0], inputs[1])[0])


def test_the_trainer_hands_data_resampler_to_each_of_them(workdir, monkeypatch):
    """One step with data.resampler=bilinear: the real pyramid the phases get, the consistency loss and G
    (and its EMA) all run with bilinear."""
    import catlab.phases
    import catlab.trainer
    from catlab.config import load_config
    from catlab.trainer import Hooks, train
    from conftest import FAST
    seen = {"pyramid": [], "consistency": [], "G": []}
    real_pyramid, real_consistency = catlab.trainer.pyramid, catlab.phases.consistency

    def pyramid_spy(x, sizes, mode="area"):
        seen["pyramid"].append(mode)
        return real_pyramid(x, sizes, mode)

    def consistency_spy(full, scaled, cfg, step, distance=None, resampler="area"):
        seen["consistency"].append(resampler)
        return real_consistency(full, scaled, cfg, step, distance, resampler)
    monkeypatch.setattr(catlab.trainer, "pyramid", pyramid_spy)
    monkeypatch.setattr(catlab.phases, "consistency", consistency_spy)
    train(load_config(FAST + ["train.steps=1", "run.mlflow=false", "data.resampler=bilinear"]),
          Hooks(step_fn=lambda step, s: seen["G"].extend([s.G.resampler, s.G_ema.resampler])))
    assert seen == {"pyramid": ["bilinear"], "consistency": ["bilinear"], "G": ["bilinear", "bilinear"]}
