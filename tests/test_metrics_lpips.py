"""catlab.metrics' perceptual distances: LPIPS against the lpips package, a missing trunk as one line,
batch-size invariance, lpips-domain (a distance at every scale; gradients reach the images, not the
extractor) and the package's exports. Offline: the trunks are random weights saved to a temporary file.

The reference is independent of catlab's code: lpips built through its own constructor around a
torchvision trunk loaded from the same file that catlab reads."""
import lpips
import pytest
import torch
import torch.nn.functional as F
import torchvision

from catlab.errors import UserError
from catlab.metrics.extractor import DomainNet, load_domain_extractor
from catlab.metrics.lpips_distance import PERCEPTUAL, lpips_distance, normalize_channels
from conftest import TOL

pytestmark = [pytest.mark.filterwarnings("ignore:.*(pretrained|weights).*:UserWarning"),  # torchvision, via lpips
              pytest.mark.usefixtures("offline")]                    # conftest: no real weights, no shared cache


# ---- LPIPS ----------------------------------------------------------------------------------------
def pair(b, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1, torch.rand(b, 3, size, size, generator=g) * 2 - 1


TORCHVISION = {"alex": "alexnet", "squeeze": "squeezenet1_1"}


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_lpips_matches_the_lpips_package_with_an_independently_built_trunk(net, tmp_path, monkeypatch):
    """A torchvision model of its own random init is saved as torchvision's weights file; catlab reads the
    file into lpips' slices by key (load_trunk). The reference is lpips' pretrained path: its constructor
    calls torchvision, here returning that model loaded from the same file, and cuts it into slices itself."""
    build = getattr(torchvision.models, TORCHVISION[net])
    torch.manual_seed(3)
    path = tmp_path / f"{net}-trunk.pth"
    torch.save(build(weights=None).state_dict(), path)                  # features.* and classifier.*
    ours = lpips_distance(f"lpips-{net}", weights=path)

    def from_file(pretrained=True, **kwargs):
        model = build(weights=None)
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    monkeypatch.setattr(lpips.pretrained_networks.tv, TORCHVISION[net], from_file)
    ref = lpips.LPIPS(net=net, pnet_rand=False, verbose=False).eval()
    a, b = pair(3, 40, 1)
    with torch.no_grad():
        d, r = ours(a, b), ref(a, b).flatten()
        assert d.shape == (3,) and (d - r).abs().max() < TOL and r.min() > 1e-4
        a16, b16 = pair(2, 16, 3)                                     # below 32 px: upsampled first
        up = lambda x: F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
        assert (ours(a16, b16) - ref(up(a16), up(b16)).flatten()).abs().max() < TOL


def test_lpips_missing_trunk_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        lpips_distance("lpips-vgg")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth") in msg
    with pytest.raises(UserError, match="weights"):
        lpips_distance("lpips-alex", weights=tmp_path / "missing.pth")
    with pytest.raises(UserError, match="distance"):
        lpips_distance("lpips-resnet")


@pytest.mark.parametrize("name", ["lpips-alex", "lpips-domain"])
def test_lpips_batch_size_invariance(name):
    torch.manual_seed(0)
    d = lpips_distance(name, random_trunk=True) if name != "lpips-domain" else lpips_distance(name)
    a, b = pair(6, 32, 4)
    with torch.no_grad():
        whole = d(a, b)
        parts = torch.cat([d(a[i:i + 2], b[i:i + 2]) for i in range(0, 6, 2)] + [])
        singles = torch.cat([d(a[i:i + 1], b[i:i + 1]) for i in range(6)])
    assert (whole - parts).abs().max() < TOL and (whole - singles).abs().max() < TOL


def test_lpips_domain_is_a_distance_at_every_scale():
    d = PERCEPTUAL["lpips-domain"]
    for size in (4, 8, 16, 32):
        a, b = pair(4, size, size)
        with torch.no_grad():
            assert torch.equal(d(a, a), torch.zeros(4))
            ab, ba = d(a, b), d(b, a)
        assert torch.equal(ab, ba) and ab.min() > 1e-3
    # the formula, by hand: unit-normalised channels, squared difference summed over C, mean over space
    net = load_domain_extractor()
    a, b = pair(2, 16, 7)
    expected = sum(((normalize_channels(fa) - normalize_channels(fb)) ** 2).sum(1).mean((1, 2))
                   for fa, fb in zip(net.layers(a), net.layers(b)))
    assert torch.allclose(d(a, b), expected, atol=1e-7)
    assert torch.allclose(normalize_channels(net.layers(a)[1]), lpips.normalize_tensor(net.layers(a)[1]))


def test_lpips_domain_gradients_reach_the_images_not_the_extractor():
    a, b = pair(2, 8, 5)
    a.requires_grad_(True)
    PERCEPTUAL["lpips-domain"](a, b).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in load_domain_extractor().parameters())
    assert isinstance(load_domain_extractor(), DomainNet)


def test_package_exports_for_losses_and_analysis():
    import catlab.metrics as m
    assert m.DISTANCES is m.PERCEPTUAL and set(m.DISTANCES) == {"lpips-alex", "lpips-vgg", "lpips-squeeze",
                                                              "lpips-domain"}
    assert m.perceptual_distance is lpips_distance and m.lpips_distance.PERCEPTUAL is PERCEPTUAL
    a, b = pair(3, 8, 9)
    assert torch.equal(m.perceptual_distance("lpips-domain")(a, b), PERCEPTUAL["lpips-domain"](a, b))
