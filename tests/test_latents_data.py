"""Latent data (`data.name=latents:PATH`): an .npz and a latent store read into a LatentSet, bad files and
stores as one-line user errors, a 2-step train with 4-channel models and the diagnostics on generated
latents, a store that trains bitwise like the same .npz, and (slow) a peak RSS that does not grow with it."""
import json

import numpy as np
import pytest
import torch

from analysis.hooks import diagnostics_hook
from analysis.misalignment import cross_scale_metrics
from catlab.checkpoint import load_generator, safe_load
from catlab.config import load_config
from catlab.data import Batcher, build_dataset, pyramid
from catlab.data.latents import LatentSet, read_scale_factor
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
