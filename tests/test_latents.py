"""Latent mode (`data.name=latents:PATH`): loading an .npz, a 2-step train with 4-channel models, the
diagnostics on generated latents, and decoding (a stub VAE; diffusers is optional and not needed here)."""
import json

import numpy as np
import pytest
import torch

from analysis.hooks import diagnostics_hook
from analysis.misalignment import cross_scale_metrics
from catlab.checkpoint import load_generator, safe_load
from catlab.config import load_config
from catlab.data import Batcher, build_dataset, pyramid
from catlab.data.latents import LatentDecoder, LatentSet, decode_stages, load_decoder, read_scale_factor
from catlab.errors import UserError
from catlab.trainer import Hooks, train
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
    result = train(cfg, Hooks(progress_fn=diagnostics_hook(every=2, n=16)))   # default distances: l2, lpips-domain
    assert result.status == "FINISHED" and result.step == 2
    names = {json.loads(x)["name"] for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()}
    assert {"diag_discrepancy_l2_s1", "diag_rewrite_l2_s3"} <= names and not any("lpips" in n for n in names)
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


# ---- latent stores (catlab.data.store: latents.npy memory-mapped, labels.npy, manifest.json) ----------
def _store(tmp_path, n=N, dtype=np.float16, name="st", **manifest):
    from catlab.data.store import write_store
    g = np.random.default_rng(2)
    lat, lab = g.normal(0, 1, (n, C, R, R)).astype(dtype), np.arange(n) % 3
    write_store(tmp_path / name, lat, lab, scale_factor=0.18215, chunk=7, **manifest)
    np.savez(tmp_path / f"{name}.npz", latents=lat, labels=lab)           # the same set in memory, scale 1
    return lat, lab


def _mapped_from(t: torch.Tensor, path) -> bool:
    """Whether tensor t's memory lies in a mapping of the file at path (/proc/self/maps)."""
    ptr, real = t.data_ptr(), str(path.resolve())
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) >= 6 and parts[5] == real:
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            if lo <= ptr < hi:
                return True
    return False


def test_store_reads_mapped_and_matches_the_npz(tmp_path):
    from catlab.data.store import MANIFEST
    lat, lab = _store(tmp_path, class_names=["a", "b", "c"])
    s = build_dataset(_cfg(tmp_path / "st").data)
    assert isinstance(s, LatentSet) and s.reader is not None and s.class_names == ["a", "b", "c"]
    assert s.scale_factor == 0.18215 and read_scale_factor(tmp_path / "st") == 0.18215   # stored already scaled
    assert s.images.dtype == torch.float16 and torch.equal(s.images, torch.from_numpy(lat))
    assert _mapped_from(s.images, tmp_path / "st" / "latents.npy")      # a view of the file, not a copy
    assert s.labels.tolist() == lab.tolist() and s.num_classes == 3
    m = json.loads((tmp_path / "st" / MANIFEST).read_text())
    assert m["shape"] == [N, C, R, R] and m["dtype"] == "float16" and m["class_counts"] == [16, 16, 16]
    assert build_dataset(_cfg(tmp_path / "st" / MANIFEST).data).reader is not None    # the manifest names it too
    # data.n: the same seeded subset as the .npz, read into memory
    sub, ref = build_dataset(_cfg(tmp_path / "st", "data.n=10").data), build_dataset(_cfg(tmp_path / "st.npz",
                                                                                        "data.n=10").data)
    assert sub.reader is None and torch.equal(sub.images, ref.images) and torch.equal(sub.labels, ref.labels)


def test_store_batcher_shards_and_resumes_like_the_in_memory_set(tmp_path):
    _store(tmp_path)
    mapped, memory = build_dataset(_cfg(tmp_path / "st").data), build_dataset(_cfg(tmp_path / "st.npz").data)
    assert memory.reader is None
    seen = []
    for rank in range(2):
        a, b = Batcher(mapped, 5, seed=4, rank=rank, world=2), Batcher(memory, 5, seed=4, rank=rank, world=2)
        for _ in range(7):                                               # 35 > 24 = one epoch of a shard
            (xa, ya), (xb, yb) = next(a), next(b)
            assert xa.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)
            seen.append(xa)
        state = a.state_dict()
        assert state == b.state_dict() == {"epoch": 1, "position": 11, "seed": 4, "world": 2}
        c = Batcher(mapped, 5, seed=4, rank=rank, world=2)
        c.load_state_dict(state)
        assert all(torch.equal(next(c)[0], next(b)[0]) for _ in range(6))   # resumed at the same position
    # the rows come from the file: every row of an epoch's shards, disjoint across the two ranks
    flat = torch.cat(seen[:4] + seen[7:11])[:, 0, 0, 0]                  # first 20 of each rank's 24
    assert len(set(flat.tolist())) == 40


def test_bad_stores_are_one_line_user_errors(tmp_path):
    from catlab.data.store import LATENTS, MANIFEST, PROGRESS
    _store(tmp_path)
    with pytest.raises(UserError, match="data.resolution must equal the latents' size 16"):
        build_dataset(load_config([f"data.name=latents:{tmp_path / 'st'}", "data.resolution=32"]).data)
    folder = tmp_path / "st"
    (folder / PROGRESS).write_text("{}")
    manifest = (folder / MANIFEST).read_text()
    (folder / MANIFEST).unlink()
    with pytest.raises(UserError, match="catlab encode has not finished writing it; run the same command again"):
        build_dataset(_cfg(folder).data)
    (folder / MANIFEST).write_text(manifest.replace('"float16"', '"int8"'))
    with pytest.raises(UserError, match="dtype is one of float16, float32"):
        build_dataset(_cfg(folder).data)
    (folder / MANIFEST).write_text(manifest)
    with open(folder / LATENTS, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(UserError, match=r"latent store folder with .*truncated"):
        build_dataset(_cfg(folder).data)
    with pytest.raises(UserError, match="no manifest.json in it"):
        build_dataset(_cfg(tmp_path).data)


def test_training_on_a_store_is_bitwise_training_on_the_same_npz(workdir):
    """The store trains exactly like the same latents in memory: same weights, optimisers and data position."""
    _store(workdir)
    runs = {}
    for name in ("st", "st.npz"):
        cfg = _cfg(workdir / name, *FAST, "train.steps=3", "run.mlflow=false", f"run.root=r-{name}")
        assert train(cfg).status == "FINISHED"
        runs[name] = safe_load(next((workdir / f"r-{name}").glob("*/ckpt/last.pt")))
    a, b = runs["st"], runs["st.npz"]
    assert a["data"] == b["data"] == {"epoch": 0, "position": 24, "seed": 0, "world": 1}
    from conftest import state_equal
    for key in ("G", "D", "G_ema", "opt_g", "opt_d"):
        assert state_equal(a[key], b[key]), key


@pytest.mark.slow
def test_training_peak_rss_does_not_grow_with_the_store(tmp_path):
    """bench/latents.py rss at a smaller size: stores of 2,000 and 40,000 rows (16 and 313 MB). The in-memory
    .npz of the large one is the contrast that shows the check can fail."""
    import sys
    from argparse import Namespace
    from pathlib import Path
    if not Path("/usr/bin/time").exists():
        pytest.skip("GNU time (/usr/bin/time) is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from latents import rss
    r = rss(Namespace(n=2000, factor=20, steps=4, npz=True, dir=str(tmp_path)))
    sets = r["sets"]
    print({k: round(v["train_peak_rss_mb"], 1) for k, v in sets.items()})
    assert r["train_rss_ratio"] < 1.10 and r["epoch_rss_ratio"] < 1.10
    assert sets["large-npz"]["train_peak_rss_mb"] > 1.10 * sets["small"]["train_peak_rss_mb"]
