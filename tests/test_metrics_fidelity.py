"""catlab.metrics' quality numbers: the domain extractor, agreement with torch-fidelity, batch-size
invariance, the reference cache, the offline notice and the metric names. Offline and small: where the real
weights would be a download, the tests use random weights saved to a temporary file.

The references are independent of catlab's code: torch-fidelity called with its keyword arguments
written out here (not catlab's fidelity_kwargs), and FID's closed form computed with scipy on features
whose law we chose."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg
from torch.utils.data import Dataset
from torch_fidelity import calculate_metrics
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from catlab.errors import UserError
from catlab.metrics import fidelity
from catlab.metrics.extractor import NATIVE, WEIGHTS, load_domain_extractor, read_weights
from catlab.metrics.fidelity import (DOMAIN_NAME, INCEPTION_FILE, DomainFeatureExtractor, count_name,
                                     protocol_name, quality)
from conftest import TOL

pytestmark = [pytest.mark.filterwarnings("ignore:.*(pretrained|weights).*:UserWarning"),  # torchvision, via lpips
              pytest.mark.usefixtures("offline")]                    # conftest: no real weights, no shared cache


def images(n, size, seed, smooth=False):
    """uint8 (n, 3, size, size): white noise, or smooth noise (bilinear from a 4x coarser grid)."""
    g = torch.Generator().manual_seed(seed)
    if not smooth:
        return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    x = torch.rand(n, 3, max(size // 4, 1), max(size // 4, 1), generator=g)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255).round().to(torch.uint8)


def pyramid_pair(n_fake=48, n_real=64, sizes=(4, 8, 16, 32)):
    fake = [images(n_fake, s, 10 + k) for k, s in enumerate(sizes)]
    real = [images(n_real, s, 20 + k, smooth=True) for k, s in enumerate(sizes)]
    return fake, real


# ---- the domain extractor -------------------------------------------------------------------------
def test_domain_weights_are_small_and_accurate():
    assert WEIGHTS.stat().st_size < 2e6
    meta = read_weights()["meta"]
    assert meta["dataset"] == "shapes" and meta["native"] == NATIVE
    acc = meta["heldout_accuracy"]
    assert acc["s4_32px"] > 0.97 and acc["s1_4px"] > 0.8, acc


def test_domain_extractor_conventions():
    net = load_domain_extractor()
    u8 = images(4, 16, 0)
    pool, logits = net(u8)
    assert pool.shape == (4, 128) and logits.shape == (4, net.num_classes)
    # uint8 and [-1, 1] floats are the same input; any size is resized bilinearly to 32
    pool_f, _ = net(u8.float() / 127.5 - 1)
    assert torch.equal(pool, pool_f)
    up = F.interpolate(u8.float() / 127.5 - 1, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(net(up)[0], pool, atol=1e-6)
    maps = net.layers(u8)
    assert [tuple(m.shape[1:]) for m in maps] == [(32, 32, 32), (64, 16, 16), (128, 8, 8), (128, 4, 4)]


def test_domain_extractor_classifies_shapes_at_every_scale():
    from catlab.config import DataConfig
    from catlab.data import build_dataset, resample, to_float
    ds = build_dataset(DataConfig(n=300))
    net = load_domain_extractor()
    x = to_float(ds.images)
    for size, floor in ((32, 0.97), (16, 0.95), (8, 0.9), (4, 0.75)):
        acc = (net(resample(x, size))[1].argmax(1) == ds.labels).float().mean().item()
        assert acc > floor, (size, acc)


# ---- torch-fidelity agreement -----------------------------------------------------------------------
class Images(Dataset):
    """This test's own torch-fidelity input: uint8 (3, H, W) images, one per item. (The references pass
    save_cpu_ram=True as catlab does: it only turns off DataLoader workers.)"""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def test_feature_layers_are_the_protocol():
    """The table that names each metric's features (a wrong layer passes a comparison with itself)."""
    assert fidelity.FEATURE_LAYERS == {
        "inception-v3-compat": {"fid": "2048", "kid": "2048", "prc": "2048", "isc": "logits_unbiased"},
        "catlab-domain": {"fid": "pool", "kid": "pool", "prc": "pool", "isc": "logits"}}


def test_fid_equals_a_literal_torch_fidelity_call_domain():
    fake, real = pyramid_pair(sizes=(8, 32))
    res = quality(fake, real, metrics=("fid",), extractor="domain")
    assert res.info["fid_extractor"] == "domain" and set(res) == {"fid_domain_48_s1", "fid_domain_48_s2"}
    for k in range(2):
        ref = calculate_metrics(input1=Images(fake[k]), input2=Images(real[k]), cuda=False, batch_size=64,
                                fid=True, feature_extractor="catlab-domain", feature_layer_fid="pool",
                                feature_extractor_weights_path=str(WEIGHTS), cache=False, save_cpu_ram=True,
                                verbose=False)["frechet_inception_distance"]
        assert abs(res[f"fid_domain_48_s{k + 1}"] - ref) < TOL
        assert ref > 1.0                                              # noise vs smooth noise: far apart


def test_layouts_images_are_scored_with_the_extractor_trained_on_layouts(monkeypatch):
    """FID of the main study's data: data="layouts" gives the packaged layouts extractor (its meta says so),
    and the FID equals a literal torch-fidelity call with those weights, not with the shapes ones."""
    from catlab.metrics.extractor import PACKAGED
    from catlab.metrics.shape_classifier import layouts_images
    monkeypatch.delenv("CATLAB_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(fidelity, "inception_weights_path", lambda: None)
    short, _, weights = fidelity.resolve_extractor("auto", "layouts")
    assert (short, weights) == ("domain", PACKAGED["layouts"]) and weights != WEIGHTS
    assert torch.load(weights, weights_only=True)["meta"]["dataset"] == "layouts"
    a, b = layouts_images(48, 5)[0], layouts_images(48, 6)[0]
    a, b = [((x + 1) * 127.5).round().to(torch.uint8) for x in (a, b)]
    res = quality([a], [b], metrics=("fid",), data="layouts")

    def literal(path):
        return calculate_metrics(input1=Images(a), input2=Images(b), cuda=False, batch_size=64, fid=True,
                                 feature_extractor="catlab-domain", feature_layer_fid="pool",
                                 feature_extractor_weights_path=str(path), cache=False, save_cpu_ram=True,
                                 verbose=False)["frechet_inception_distance"]
    assert abs(res["fid_domain_48_s1"] - literal(PACKAGED["layouts"])) < TOL
    assert abs(literal(PACKAGED["layouts"]) - literal(WEIGHTS)) > 10 * TOL


def test_fid_of_a_set_with_itself_is_zero():
    x = images(300, 8, 5, smooth=True)                               # more images than the 128 features
    res = quality([x], [x], metrics=("fid",), extractor="domain")
    assert abs(res["fid_domain_300_s1"]) < 1e-6, res


def _indexed(n: int, offset: int) -> torch.Tensor:
    """n uint8 4x4 images that carry their index (offset + i) in the first two pixels' red channel."""
    x = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    i = torch.arange(offset, offset + n)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = i // 256, i % 256
    return x


def test_fid_of_gaussian_features_is_the_closed_form(monkeypatch):
    """The domain extractor replaced by a lookup: image i -> feature i, Gaussian of a chosen law (its
    "logits" are other numbers, so reading the wrong layer shows). FID must be the Frechet distance of the
    two samples' Gaussians, |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), computed here with scipy; and
    near the population's (the sampling error is small at these sizes)."""
    rng = np.random.default_rng(0)
    d, n1, n2 = 8, 2000, 2500
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d) + 0.5
    a1, a2 = rng.normal(size=(d, d)) / d ** 0.5, rng.normal(size=(d, d)) / d ** 0.5
    c1, c2 = a1 @ a1.T + 0.1 * np.eye(d), a2 @ a2.T + 0.5 * np.eye(d)
    f1 = rng.multivariate_normal(mu1, c1, size=n1)
    f2 = rng.multivariate_normal(mu2, c2, size=n2)
    table = torch.from_numpy(np.concatenate([f1, f2]))              # (n1 + n2, d) float64
    other = torch.from_numpy(rng.normal(size=(n1 + n2, d)) * 3)

    def lookup(self, x):
        i = x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()
        feats = {"pool": table[i], "logits": other[i]}
        return tuple(feats[k] for k in self.features_list)
    monkeypatch.setattr(DomainFeatureExtractor, "forward", lookup)
    res = quality([_indexed(n1, 0)], [_indexed(n2, n1)], metrics=("fid",), extractor="domain")

    def frechet(m1, s1, m2, s2) -> float:
        root = linalg.sqrtm(s1 @ s2).real
        return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))
    sample = frechet(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    population = frechet(mu1, c1, mu2, c2)
    assert res[protocol_name("fid", "domain", n1, 1)] == pytest.approx(sample, rel=1e-9, abs=1e-9)
    assert sample == pytest.approx(population, rel=0.05) and population > 1


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """A state dict for torch-fidelity's inception-v3-compat with He-scaled random values."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        mp.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {})
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, t in model.state_dict().items():
        if t.dim() > 1:                                               # conv / fc weights
            fan_in = t[0].numel()
            state[name] = torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif name.endswith(("running_var", "bn.weight")):
            state[name] = torch.ones_like(t)
        elif t.is_floating_point():
            state[name] = torch.zeros_like(t)
        else:
            state[name] = t.clone()
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(state, path)
    return path


def check_inception_fid(path, monkeypatch, n_fake, n_real, size, layer):
    monkeypatch.setenv("CATLAB_INCEPTION_WEIGHTS", str(path))
    fake, real = images(n_fake, size, 1), images(n_real, size, 2, smooth=True)
    res = quality([fake], [real], metrics=("fid",))                   # extractor="auto" finds the file
    assert res.info["fid_extractor"] == "inception" and list(res) == [f"fid_inception_{n_fake}_s1"]
    ref = calculate_metrics(input1=Images(fake), input2=Images(real), cuda=False, batch_size=64, fid=True,
                            feature_extractor="inception-v3-compat", feature_layer_fid=layer,
                            feature_extractor_weights_path=str(path), cache=False, save_cpu_ram=True,
                            verbose=False)["frechet_inception_distance"]
    assert abs(res[f"fid_inception_{n_fake}_s1"] - ref) < TOL and ref > 1e-3


def test_fid_equals_torch_fidelity_inception(random_inception, monkeypatch):
    # FID on the 64-d Inception block: the whole path (weights file, resizing 8 -> 299, names) in seconds.
    # The 2048-d protocol layer costs an eigendecomposition of a 2048 x 2048 matrix: see the slow test.
    monkeypatch.setitem(fidelity.FEATURE_LAYERS, "inception-v3-compat", {"fid": "64"})
    check_inception_fid(random_inception, monkeypatch, 10, 12, 8, "64")


@pytest.mark.slow
def test_fid_equals_torch_fidelity_inception_2048(random_inception, monkeypatch):
    check_inception_fid(random_inception, monkeypatch, 16, 16, 16, "2048")


# ---- batch size, cache, notice, names ---------------------------------------------------------------
def test_every_metric_is_batch_size_invariant():
    fake, real = pyramid_pair(n_fake=40, n_real=50, sizes=(4, 16))
    a = quality(fake, real, extractor="domain", batch_size=64)
    b = quality(fake, real, extractor="domain", batch_size=7)
    assert set(a) == set(b) and len(a) == 16                          # 8 numbers per scale
    for k in a:
        assert abs(a[k] - b[k]) < TOL, (k, a[k], b[k])
    assert 0 < a["precision_domain_40_s2"] <= 1 and a["isc_domain_40_s1"] >= 1


def test_reference_cache_is_used(tmp_path, monkeypatch):
    fake, real = pyramid_pair(n_fake=30, n_real=40, sizes=(8, 16))
    seen = []
    forward = DomainFeatureExtractor.forward
    monkeypatch.setattr(DomainFeatureExtractor, "forward", lambda self, x: seen.append(len(x)) or forward(self, x))
    kw = dict(metrics=("fid", "kid"), extractor="domain", cache_key="test-area", cache_root=tmp_path / "c")
    first = quality(fake, real, **kw)
    assert sum(seen) == 2 * (30 + 40)                                 # fakes and reals, two scales
    names = first.info["cache_names"]
    assert all(name.startswith("catlab-v1-test-area-") and "-n40-" in name for name in names)
    assert "-8px-" in names[0] and "-16px-" in names[1]
    for name in names:
        assert (tmp_path / "c" / f"{name}-{DOMAIN_NAME}-features-pool.pt").is_file()
    seen.clear()
    second = quality(fake, real, **kw)
    assert sum(seen) == 2 * 30                                        # reals came from the cache
    assert dict(second) == dict(first)
    # other real images (or another count) are another cache entry
    seen.clear()
    quality(fake, [r[:35] for r in real], **kw)
    assert sum(seen) == 2 * (30 + 35)


def test_offline_notice_once_and_domain_fallback(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(fidelity, "_NOTICE_SHOWN", False)
    fake, real = pyramid_pair(n_fake=12, n_real=12, sizes=(8,))
    res = quality(fake, real, metrics=("fid",))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_FILE) in err[0]
    assert "CATLAB_INCEPTION_WEIGHTS" in err[0]
    assert res.info["fid_extractor"] == "domain" and list(res) == ["fid_domain_12_s1"]
    quality(fake, real, metrics=("fid",))
    assert capsys.readouterr().err == ""                              # once per process
    with pytest.raises(UserError, match=INCEPTION_FILE):
        quality(fake, real, extractor="inception")
    monkeypatch.setenv("CATLAB_INCEPTION_WEIGHTS", str(tmp_path / "nope.pth"))
    with pytest.raises(UserError, match="CATLAB_INCEPTION_WEIGHTS"):
        quality(fake, real)


def test_metric_names_state_the_protocol():
    assert count_name(5000) == "5k" and count_name(10000) == "10k"
    assert count_name(512) == "512" and count_name(1500) == "1500"
    assert protocol_name("fid", "domain", 5000, 4) == "fid_domain_5k_s4"
    assert protocol_name("kid", "inception", 10000, 1) == "kid_inception_10k_s1"
    fake, real = pyramid_pair(n_fake=20, n_real=20, sizes=(4,))
    with pytest.raises(UserError, match="metrics"):
        quality(fake, real, metrics=("fid", "ppl"))
    with pytest.raises(UserError, match="real"):
        quality(fake, [images(20, 8, 0)], extractor="domain")
