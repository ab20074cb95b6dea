"""Latent mode (`data.name=latents:PATH`): loading an .npz, a 2-step train with 4-channel models, the
diagnostics on generated latents, and decoding (a stub VAE; diffusers is optional and not needed here)."""
import numpy as np
import pytest
import torch

from analysis.misalignment import cross_scale_metrics
from catlab.checkpoint import load_generator, safe_load
from catlab.config import load_config
from catlab.data import Batcher, build_dataset, pyramid
from catlab.data.latents import LatentDecoder, LatentSet, decode_stages, load_decoder, read_scale_factor
from catlab.errors import UserError
from catlab.trainer import train
from conftest import FAST

N, C, R = 48, 4, 16


def _npz(path, scale=None, **extra):
    g = np.random.default_rng(0)
    arrays = {"latents": g.normal(0, 5, (N, C, R, R)).astype(np.float32), "labels": np.arange(N) % 3, **extra}
    if scale is not None:
        arrays["scale_factor"] = np.float32(scale)
    np.savez(path, **arrays)
    return arrays


def _cfg(path, *more):
    return load_config([f"data.name=latents:{path}", f"data.resolution={R}", *more])


def test_build_dataset_reads_scales_and_subsets(tmp_path):
    raw = _npz(tmp_path / "z.npz", scale=0.25)
    s = build_dataset(_cfg(tmp_path / "z.npz").data)
    assert isinstance(s, LatentSet) and s.scale_factor == 0.25 and read_scale_factor(tmp_path / "z.npz") == 0.25
    assert s.images.shape == (N, C, R, R) and s.images.dtype == torch.float32 and s.channels == 4
    assert torch.equal(s.images, torch.from_numpy(raw["latents"]) * 0.25)
    assert s.labels.tolist() == (np.arange(N) % 3).tolist() and s.num_classes == 3 and s.class_names == ["0", "1", "2"]
    sub = build_dataset(_cfg(tmp_path / "z.npz", "data.n=10").data)
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:10].sort().values
    assert torch.equal(sub.images, s.images[idx]) and torch.equal(sub.labels, s.labels[idx])
    # no scale_factor: 1.0; float16 stays float16 in memory, batches come out float32 and unmapped
    _npz(tmp_path / "h.npz", latents=np.full((N, C, R, R), 3.5, np.float16), class_names=np.array(list("abc")))
    h = build_dataset(_cfg(tmp_path / "h.npz").data)
    assert h.scale_factor == 1.0 and h.images.dtype == torch.float16 and h.class_names == ["a", "b", "c"]
    x, y = next(Batcher(h, 5, seed=0))
    assert x.dtype == torch.float32 and x.shape == (5, C, R, R) and bool((x == 3.5).all()) and y.shape == (5,)


@pytest.mark.parametrize("arrays, match", [
    ({"labels": np.zeros(N, int)}, "a 'latents' array"),
    ({"latents": np.zeros((N, C, R, R), np.uint8), "labels": np.zeros(N, int)}, "float latents"),
    ({"latents": np.zeros((N, C, R, R), np.float32), "labels": np.zeros(N - 1, int)}, "labels"),
    ({"latents": np.zeros((N, C, R, R), np.float32), "labels": np.zeros(N, int), "scale_factor": -1.0},
     "scale_factor"),
    ({"latents": np.full((N, C, R, R), np.nan, np.float32), "labels": np.zeros(N, int)}, "finite"),
])
def test_bad_files_are_one_line_user_errors(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=match):
        build_dataset(_cfg(tmp_path / "bad.npz").data)


def test_missing_file_and_wrong_resolution(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_dataset(_cfg(tmp_path / "nope.npz").data)
    _npz(tmp_path / "z.npz")
    with pytest.raises(UserError, match="data.resolution must equal the latents' size 16"):
        build_dataset(load_config([f"data.name=latents:{tmp_path / 'z.npz'}", "data.resolution=32"]).data)


def test_two_step_train_with_4_channel_models_and_diagnostics(workdir):
    _npz(workdir / "z.npz", scale=0.2)
    cfg = _cfg(workdir / "z.npz", *FAST, "train.steps=2", "run.mlflow=false")
    result = train(cfg)
    assert result.status == "FINISHED" and result.step == 2
    last = safe_load(result.run_dir / "ckpt" / "last.pt")
    assert last["meta"] == {"num_classes": 3, "channels": 4}
    assert (result.run_dir / "samples" / "grid_000002.png").exists()      # first 3 latent channels, a preview
    G, _ = load_generator(result.run_dir)
    z, y = torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(1)), torch.arange(6) % 3
    with torch.no_grad():
        stages = G(z, y)
    assert [tuple(x.shape) for x in stages] == [(6, 4, s, s) for s in (2, 4, 8, 16)]
    res = cross_scale_metrics(stages, distance="l2")
    for k in ("discrepancy", "rewrite", "direction"):
        assert len(res[k]) == 3 and all(np.isfinite(res[k]))
    assert res["rewrite"][2] == pytest.approx(res["discrepancy"][2])          # k = K-1: x_{k+1} = x_K
    # the real pyramid of latents is what D saw: float, unmapped (std ~ 5 * 0.2 at full size)
    real, _ = next(Batcher(build_dataset(cfg.data), 48, seed=0))
    assert 0.9 < float(pyramid(real, [16])[0].std()) < 1.1


class _StubVAE(torch.nn.Module):
    """decode(z).sample = nearest 8x upsampling of z's first 3 channels (a stand-in for AutoencoderKL)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def decode(self, z):
        return type("Out", (), {"sample": torch.nn.functional.interpolate(z[:, :3] * self.w, scale_factor=8)})()


def test_decoder_divides_by_scale_factor_and_clamps(monkeypatch, tmp_path, capsys):
    dec = LatentDecoder(_StubVAE(), scale_factor=0.5, batch=3)
    lat = torch.tensor([0.1, -0.2, 0.6, 0.0]).view(1, 4, 1, 1).expand(7, 4, 2, 2)
    out = decode_stages([lat[:, :, :1, :1], lat], dec)
    assert [tuple(x.shape) for x in out] == [(7, 3, 8, 8), (7, 3, 16, 16)]
    assert out[1][0, :, 0, 0].tolist() == pytest.approx([0.2, -0.4, 1.0])   # 0.6 / 0.5 = 1.2 -> clamped
    # no decoder given: one line, once; pixel metrics are the caller's to skip
    monkeypatch.delenv("CATLAB_VAE", raising=False)
    monkeypatch.setattr("catlab.data.latents._noticed", set())
    assert load_decoder() is None and load_decoder() is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pixel metrics (FID, LPIPS) skipped" in err and "CATLAB_VAE" in err
    monkeypatch.setenv("CATLAB_VAE", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="CATLAB_VAE must name a local diffusers AutoencoderKL folder"):
        load_decoder()
    monkeypatch.setenv("CATLAB_VAE", str(tmp_path))
    try:
        import diffusers  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="needs the optional dependency diffusers"):
            load_decoder()
