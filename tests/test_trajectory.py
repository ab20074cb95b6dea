"""analysis.trajectory: one pass over the EMA snapshots gives exactly what separate passes give.

Pins: the drift, diagnostics and curve parts equal a direct, part-by-part computation (each part's own
generation, the same building blocks) bitwise; a second call reads every part back; a part whose
spec changes (another n) is recomputed without touching the others.
"""
import pandas as pd
import pytest
import torch

from analysis import trajectory as T
from analysis.drift import stage_moves
from analysis.inputs import generate
from analysis.measures import diagnostics, scale_quality, shape_rows
from catlab.distances import get_distance as distance_fn
from catlab.rundir import fixed_inputs
from catlab.checkpoint import atomic_save, load_generator, snapshots
from catlab.config import load_config, save_config
from catlab.models import build_generator


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("CATLAB_CACHE", str(tmp_path / "cache"))
    cfg = load_config(["data.name=layouts", "data.n=64", "train.batch=8", "run.mlflow=false"])   # images_seen
    run = tmp_path / "run"
    run.mkdir()
    save_config(cfg, run / "config.json")
    torch.manual_seed(0)
    G = build_generator(cfg.model, 10, 32, 3, resampler=cfg.data.resampler)
    for step in (10, 20, 30):
        with torch.no_grad():
            for p in G.parameters():
                p.add_(0.05 * torch.randn_like(p))
        atomic_save({"G_ema": G.state_dict(), "meta": {"num_classes": 10, "channels": 3}, "step": step},
                    run / "snapshots" / f"ema_{step:06d}.pt")
    return run


def direct(run, n):
    """The three parts, each with its own generation (what separate passes compute)."""
    drift, diag, curve, prev = [], [], [], None
    for step, path in snapshots(run):
        G, cfg = load_generator(run, snapshot=path)
        z, y = fixed_inputs(run, n, cfg.seed, G.z_dim, G.num_classes)
        cur = generate(G, z, y)
        if prev is not None:
            drift += [{"step": step, **r, "distance": "l2"} for r in stage_moves(cur, prev, distance_fn("l2"))]
        prev = cur
        diag += [{"step": step, "metric": m, "stage": k, "value": v}
                 for m, k, v in diagnostics(generate(G, z, y), ("l2",))]
        x = generate(G, z, y)
        q = scale_quality(x, cfg.data, n, ("fid",))[0] + shape_rows(x, y, 256, "layouts")
        curve += [{"step": step, "images_seen": step * cfg.train.batch, "metric": m, "stage": k, "value": v}
                  for m, k, v in q]
    return {"drift": pd.DataFrame(drift, columns=T.COLUMNS["drift"]),
            "diagnostics": pd.DataFrame(diag, columns=T.COLUMNS["diagnostics"]),
            "curve": pd.DataFrame(curve, columns=T.COLUMNS["curve"])}


def test_one_pass_equals_separate_passes(run):
    got = T.run_trajectory(run, n=24, reuse=False)
    want = direct(run, 24)
    for part in T.PARTS:
        pd.testing.assert_frame_equal(got[part].reset_index(drop=True), want[part], check_exact=True)
    assert set(got["curve"]["metric"]) == {"fid_domain_24", "shape_acc"}
    assert len(got["drift"]) == 2 * 4 and len(got["diagnostics"]) == 3 * 3 * 3


def test_each_part_uses_its_own_sample_count(run):
    """n per part: each part equals the separate pass at its own n (not another part's samples)."""
    n = {"drift": 16, "diagnostics": 24, "curve": 8}
    got = T.run_trajectory(run, n=n, reuse=False)
    for part in T.PARTS:
        pd.testing.assert_frame_equal(got[part].reset_index(drop=True), direct(run, n[part])[part],
                                      check_exact=True)


def test_parts_are_kept_and_recomputed_alone(run, monkeypatch):
    first = T.run_trajectory(run, n=16)
    calls = []
    real = T.generate
    monkeypatch.setattr(T, "generate", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    again = T.run_trajectory(run, n=16)
    assert calls == [] and all(again[p].attrs["info"]["reused"] for p in T.PARTS)
    for p in T.PARTS:
        pd.testing.assert_frame_equal(first[p], again[p])
    T.run_trajectory(run, n={"drift": 16, "diagnostics": 16, "curve": 8})
    assert calls == [8, 8, 8]                                  # only the curve's 8 samples, per snapshot
