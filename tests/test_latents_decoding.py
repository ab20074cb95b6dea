"""Decoding latents (a stub VAE; diffusers is optional and not needed here): the decoder divides by the
scale factor and clamps, and a latent run end to end, with a tanh stub decoder or without one: its
analysis, `catlab sample` and the training grid."""
import numpy as np
import pytest
import torch

from catlab.checkpoint import load_generator, safe_load
from catlab.config import load_config
from catlab.data import build_dataset
from catlab.data.latents import LatentDecoder, decode_stages, load_decoder
from catlab.errors import UserError
from catlab.trainer import train
from conftest import FAST


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


# ---- latent runs end to end: analysis, `catlab sample`, the training grid (a tanh stub decoder) -------
NL, CL, RL, KL, SF, NE = 64, 4, 8, 3, 0.5, 16     # latents 4 x 8 x 8, 10 classes, K = 3 (2, 4, 8), n = 16


class _TanhVAE(torch.nn.Module):
    """decode(z).sample = tanh of z's first 3 channels, nearest 8x: a fixed stand-in for AutoencoderKL."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def decode(self, z):
        return type("Out", (), {"sample": torch.tanh(torch.nn.functional.interpolate(z[:, :3] * self.w,
                                                                                       scale_factor=8))})()


def _stub_decoder(scale_factor=1.0, path=None, device="cpu"):
    return LatentDecoder(_TanhVAE(), scale_factor, name="tanh-stub", fingerprint="0")


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """A 2-step latent run (tiny model, K = 3) on 64 synthetic latents, shared by the tests below."""
    root = tmp_path_factory.mktemp("latent_run")
    g = np.random.default_rng(1)
    np.savez(root / "z.npz", latents=g.normal(0, 2, (NL, CL, RL, RL)).astype(np.float32),
             labels=np.arange(NL) % 10, scale_factor=np.float32(SF))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CATLAB_VAE", raising=False)
        mp.setenv("TORCH_HOME", str(root / "torch_home"))
        cfg = load_config([f"data.name=latents:{root / 'z.npz'}", f"data.resolution={RL}", f"model.stages={KL}",
                           *FAST, "train.steps=2", "run.mlflow=false"])
        result = train(cfg, run_dir=root / "run")
    assert result.status == "FINISHED"
    return result.run_dir


@pytest.fixture
def no_decoder(monkeypatch, tmp_path):
    monkeypatch.delenv("CATLAB_VAE", raising=False)
    monkeypatch.setattr("catlab.data.latents._noticed", set())
    monkeypatch.setenv("CATLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture
def stub_decoder(no_decoder, monkeypatch):
    monkeypatch.setattr("catlab.data.latents.load_decoder", _stub_decoder)


def _rows(df, prefix):
    return {(m, s): v for m, s, v in df[df.metric.str.startswith(prefix)][["metric", "stage", "value"]].values}


def test_analysis_decodes_latents_for_fid_and_lpips(latent_run, stub_decoder, capsys):
    from analysis.inputs import real_pyramid
    from analysis.run_eval import evaluate_run
    from catlab.data import resample, to_uint8
    df = evaluate_run(latent_run, n=NE, metrics=("fid", "kid"), distances=("l2", "lpips-domain"), log=False,
                      reuse=False)
    info = df.attrs["info"]
    assert info["latent"] and info["decoder"] == {"decoder": "tanh-stub", "fingerprint": "0", "scale_factor": SF}
    # decoded latents are not `shapes`: the shapes extractor's numbers are named after it, with a notice
    assert info["skipped"] == [] and info["fid_extractor"] == "domain-shapes"
    err = capsys.readouterr().err
    assert "without a decoder" not in err and "not a quality measure" in err
    fid = _rows(df, "fid_")
    assert sorted(fid) == [(f"fid_domain-shapes_{NE}", k) for k in (1, 2, 3)] and all(v > 0 for v in fid.values())
    assert sorted(_rows(df, "kid_domain")) == [(f"kid_domain-shapes_{NE}", k) for k in (1, 2, 3)]
    assert sorted(_rows(df, "discrepancy_")) == [(f"discrepancy_{d}", k) for d in ("l2", "lpips-domain")
                                                 for k in (1, 2)]
    assert {m for m in df.metric if m.startswith("direction")} == {"direction_l2"}    # latent space, once
    # the reference: the real latents' pyramid (what D saw), each scale decoded -> 16, 32, 64 px; the cache
    # names say "vae" and the decoder's tag, so decoded references never mix with a pixel dataset's
    assert all("latents_" in c and "-vae" in c for c in info["cache_names"])
    cfg = load_config([f"data.name=latents:{latent_run.parent / 'z.npz'}", f"data.resolution={RL}",
                       f"model.stages={KL}"])
    real = real_pyramid(cfg.data, NE, [2, 4, 8], _stub_decoder(SF))
    assert [tuple(r.shape) for r in real] == [(NE, 3, s, s) for s in (16, 32, 64)] and real[0].dtype == torch.uint8
    lat = build_dataset(cfg.data).images
    lat = lat[torch.randperm(NL, generator=torch.Generator().manual_seed(0))[:NE].sort().values]
    want = to_uint8(torch.tanh(torch.nn.functional.interpolate(resample(lat, 4)[:, :3] / SF, scale_factor=8)))
    assert torch.equal(real[1], want)


def test_analysis_without_decoder_keeps_latent_l2_and_says_so_once(latent_run, no_decoder, capsys, monkeypatch):
    from analysis.run_eval import evaluate_run
    from analysis.trajectory import quality_curve
    from catlab.cli import main
    assert main(["analyze", str(latent_run), "--n", str(NE), "--metrics", "fid", "kid", "l2", "lpips-domain"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "latent run without a decoder: pixel metrics (FID, LPIPS) skipped" in err
    assert "no decoder: latent-space diagnostics only" in out and "discrepancy_l2" in out and "fid" not in out
    import pandas as pd
    df = pd.read_csv(latent_run / "analysis.csv")
    assert set(df.metric) == {"discrepancy_l2", "rewrite_l2", "direction_l2"} and len(df) == 3 * (KL - 1)
    # the same latent-space numbers as with a decoder: L2 never looks at pixels
    monkeypatch.setattr("catlab.data.latents.load_decoder", _stub_decoder)
    dec = evaluate_run(latent_run, n=NE, metrics=(), distances=("l2",), log=False, reuse=False)
    assert dict(zip(zip(dec.metric, dec.stage), dec.value)) == pytest.approx(
        dict(zip(zip(df.metric, df.stage), df.value)))
    assert dec.attrs["info"]["decoder"]["decoder"] == "tanh-stub"
    monkeypatch.setattr("catlab.data.latents.load_decoder", load_decoder)
    assert quality_curve(latent_run, n=NE, write=False, reuse=False).empty       # no pixels, no curve


def test_sample_writes_decoded_pngs_or_latents(latent_run, no_decoder, capsys, monkeypatch, tmp_path):
    from PIL import Image
    from catlab.cli import main
    from catlab.data import to_uint8
    G, _ = load_generator(latent_run)
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(5, G.z_dim, generator=g), torch.arange(5) % 10
    with torch.no_grad():
        stages = G(z, y)
    # no decoder: one .npz in the latents:PATH format (raw latents = model output / scale_factor), one notice
    assert main(["sample", str(latent_run), "--n", "5", "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "samples stay latents" in err and "latents_stage3.npz" in out
    with np.load(tmp_path / "a" / "latents_stage3.npz") as f:
        assert f["latents"].shape == (5, CL, RL, RL) and float(f["scale_factor"]) == SF and int(f["stage"]) == 3
        assert torch.allclose(torch.from_numpy(f["latents"]), stages[2] / SF) and f["labels"].tolist() == y.tolist()
    back = build_dataset(load_config([f"data.name=latents:{tmp_path / 'a' / 'latents_stage3.npz'}",
                                      f"data.resolution={RL}", f"model.stages={KL}"]).data)
    assert torch.allclose(back.images, stages[2], atol=1e-6)                     # reads back as trained
    assert main(["sample", str(latent_run), "--n", "5", "--out", str(tmp_path / "b"), "--stage", "2",
                 "--seed", "3"]) == 0
    assert np.load(tmp_path / "b" / "latents_stage2.npz")["latents"].shape == (5, CL, 4, 4)
    # a decoder: uint8 PNGs of the decoded stage (8 latent px -> 64 px)
    monkeypatch.setattr("catlab.data.latents.load_decoder", _stub_decoder)
    assert main(["sample", str(latent_run), "--n", "5", "--out", str(tmp_path / "c"), "--seed", "3"]) == 0
    assert "wrote 5 PNGs (64x64, stage 3)" in capsys.readouterr().out
    png = torch.from_numpy(np.array(Image.open(tmp_path / "c" / "00004_class4.png"))).permute(2, 0, 1)
    want = to_uint8(torch.tanh(torch.nn.functional.interpolate(stages[2][4:5, :3] / SF, scale_factor=8)))[0]
    assert torch.equal(png, want)


def test_training_grid_previews_or_decodes_latents(latent_run, no_decoder, monkeypatch):
    from types import SimpleNamespace
    from PIL import Image
    from catlab.samples import latent_preview, save_stage_grid
    # the grid the 2-step run wrote (no decoder): K rows of 8 px latent previews, 4x enlarged
    assert Image.open(latent_run / "samples" / "grid_000002.png").size == (4 * (12 * 9 + 1), 4 * (KL * 9 + 1))
    x = [torch.tensor([[[[0.0, 4.0]], [[2.0, 1.0]], [[3.0, 3.0]], [[9.0, 9.0]]]]),     # (1, 4, 1, 2) coarse
         torch.tensor([[[[1.0, 5.0]], [[2.0, 3.0]], [[3.0, 3.0]], [[-9.0, 9.0]]]])]    # final: min 1, max 5
    p = latent_preview(x)
    assert p[1].flatten().tolist() == [-1.0, 1.0, -0.5, 0.0, 0.0, 0.0]              # 4th channel ignored
    assert p[0].flatten().tolist() == [-1.0, 0.5, -0.5, -1.0, 0.0, 0.0]             # same map, clamped
    # $CATLAB_VAE set: each stage decoded at its own scale (2, 4, 8 -> 16, 32, 64 px), shown at 2x
    G, cfg = load_generator(latent_run)
    ev = safe_load(latent_run / "eval_set.pt")
    ctx = SimpleNamespace(state=SimpleNamespace(G_ema=G), cfg=cfg, run_dir=latent_run.parent / "grid",
                          eval_z=ev["z"], eval_y=ev["y"], sample=lambda z, y: G(z, y))
    monkeypatch.setenv("CATLAB_VAE", "/nonexistent")          # only its presence matters to the stub
    monkeypatch.setattr("catlab.data.latents.load_decoder", _stub_decoder)
    with torch.no_grad():
        path = save_stage_grid(ctx, 7, n=3)
    assert Image.open(path).size == (2 * (3 * 65 + 1), 2 * (KL * 65 + 1))
