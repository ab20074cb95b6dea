"""analysis.drift on a hand-made run dir: EMA snapshots written directly (no training), so numbers are exact.

Pins: one row per (snapshot after the first, stage); drift = mean per-sample distance between the stage
outputs of consecutive snapshots (checked against a direct computation); drift 0 (and ratio NaN, move_cos
0) between identical snapshots; the final stage's co-movement columns are 1; batch-size invariance; any
distance name; the memo is invalidated when a snapshot changes; drift.csv of a study.
"""
import math
import shutil

import pandas as pd
import pytest
import torch

from analysis import drift as Drb
from analysis import trajectory as Dr
from analysis.inputs import generate
from catlab.rundir import fixed_inputs
from catlab.checkpoint import atomic_save, load_generator
from catlab.config import load_config, save_config
from catlab.errors import UserError
from catlab.models import build_generator

STEPS = (2, 4, 6)
K = 4


def make_run(root, steps=STEPS, n_eval=None):
    """config.json + snapshots/ema_<step>.pt of a tiny generator whose weights move between snapshots."""
    cfg = load_config(["data.resolution=16", "run.mlflow=false"])
    run = root / "run"
    run.mkdir(parents=True)
    save_config(cfg, run / "config.json")
    torch.manual_seed(0)
    G = build_generator(cfg.model, 10, 16, 3, resampler=cfg.data.resampler)
    for step in steps:
        with torch.no_grad():
            for p in G.parameters():
                p.add_(0.05 * torch.randn_like(p))
        atomic_save({"G_ema": G.state_dict(), "meta": {"num_classes": 10, "channels": 3}, "step": step},
                    run / "snapshots" / f"ema_{step:06d}.pt")
    return run


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def test_one_row_per_later_snapshot_and_stage(run):
    df = Dr.run_drift(run, n=32)
    assert list(df.columns) == Dr.COLUMNS["drift"]
    assert list(zip(df["step"], df["stage"])) == [(s, k) for s in STEPS[1:] for k in range(1, K + 1)]
    assert (df["drift"] > 0).all() and df[["drift_ratio", "drift_corr", "move_cos"]].notna().all().all()
    final = df[df["stage"] == K]
    assert final["drift_ratio"].tolist() == [1.0, 1.0]
    assert final["drift_corr"].tolist() == pytest.approx([1.0, 1.0])
    assert final["move_cos"].tolist() == pytest.approx([1.0, 1.0])
    assert ((df["move_cos"] >= -1) & (df["move_cos"] <= 1)).all()


def test_drift_equals_direct_computation(run):
    df = Dr.run_drift(run, n=32).set_index(["step", "stage"])
    z, y = fixed_inputs(run, 32, 0, 64, 10)                  # no eval_set.pt: drawn from the seed as the trainer does
    outs = {s: generate(load_generator(run, snapshot=run / "snapshots" / f"ema_{s:06d}.pt")[0], z, y) for s in STEPS}
    for prev, step in zip(STEPS, STEPS[1:]):
        for k in range(K):
            want = (outs[step][k] - outs[prev][k]).pow(2).flatten(1).mean(1)        # (N,) mean squared
            assert df.loc[(step, k + 1), "drift"] == pytest.approx(float(want.double().mean()), rel=1e-5)


def test_identical_snapshots_give_zero_drift(run):
    shutil.copy(run / "snapshots" / "ema_000006.pt", run / "snapshots" / "ema_000008.pt")
    df = Dr.run_drift(run, n=16)
    same = df[df["step"] == 8]
    assert len(same) == K and (same["drift"] == 0).all()
    assert same["drift_ratio"].isna().all() and same["drift_corr"].isna().all() and (same["move_cos"] == 0).all()
    assert (df[df["step"] < 8]["drift"] > 0).all()


def test_batch_size_invariance_and_distances(run):
    a = Dr.run_drift(run, n=20, batch=256, reuse=False)
    b = Dr.run_drift(run, n=20, batch=6, reuse=False)
    pd.testing.assert_frame_equal(a, b, rtol=1e-5, atol=1e-7)
    for name in ("l1", "lpips-domain"):
        d = Dr.run_drift(run, distance=name, n=8)
        assert len(d) == 2 * K and (d["distance"] == name).all() and (d["drift"] > 0).all()
    with pytest.raises(UserError, match="distance must be one of"):
        Dr.run_drift(run, distance="nope", n=8)


def test_memo_is_read_back_and_invalidated(run):
    first = Dr.run_drift(run, n=16)
    assert first.attrs["info"]["reused"] is False
    again = Dr.run_drift(run, n=16)
    assert again.attrs["info"]["reused"] is True
    pd.testing.assert_frame_equal(first, again)
    shutil.copy(run / "snapshots" / "ema_000002.pt", run / "snapshots" / "ema_000004.pt")   # step 4 = step 2 now
    changed = Dr.run_drift(run, n=16)
    assert changed.attrs["info"]["reused"] is False
    assert (changed[changed["step"] == 4]["drift"] == 0).all()


def test_fewer_than_two_snapshots_give_an_empty_table(tmp_path):
    df = Dr.run_drift(make_run(tmp_path, steps=(5,)), n=8)
    assert df.empty and list(df.columns) == Dr.COLUMNS["drift"]


def test_pearson_and_cosine():
    a = torch.tensor([1.0, 2.0, 4.0])
    assert Drb.pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert Drb.pearson(a, -a) == pytest.approx(-1.0)
    assert math.isnan(Drb.pearson(a, torch.ones(3)))
    u = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    v = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    assert Drb.cosine(u, v).tolist() == [1.0, 0.0, -1.0]


def test_study_drift_writes_drift_csv(run, tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    pd.DataFrame([{"cell": f"consistency={a},seed=0", "seed": 0, "consistency": a, "run_dir": str(run),
                   "status": "FINISHED", "reason": "", "config_hash": "x", "mlflow_run_id": ""}
                  for a in ("on", "off")]).to_csv(study / "cells.csv", index=False)
    Dr.study_drift(study, n=8, progress=False)
    df = pd.read_csv(study / "drift.csv")
    assert list(df.columns) == ["cell", "seed", "consistency", *Dr.COLUMNS["drift"]]
    assert len(df) == 2 * 2 * K and set(df["consistency"]) == {"on", "off"}


def test_co_movement_resamples_with_the_runs_resampler(tmp_path):
    """move_cos compares stage k's move with the final stage's move brought to s_k by the run's
    data.resampler: with bilinear it is that direct computation, and it differs from area's."""
    import torch.nn.functional as F
    from catlab.data import resample
    run = make_run(tmp_path)
    cfg = load_config(["data.resolution=16", "run.mlflow=false", "data.resampler=bilinear"])
    save_config(cfg, run / "config.json")
    df = Dr.run_drift(run, n=32).set_index(["step", "stage"])
    z, y = fixed_inputs(run, 32, 0, 64, 10)
    outs = {s: generate(load_generator(run, snapshot=run / "snapshots" / f"ema_{s:06d}.pt")[0], z, y) for s in STEPS}
    for prev, step in zip(STEPS, STEPS[1:]):
        final = outs[step][-1] - outs[prev][-1]
        for k in range(K - 1):
            move = (outs[step][k] - outs[prev][k]).flatten(1).double()
            size = outs[step][k].shape[-1]
            want = {m: float(F.cosine_similarity(move, resample(final, size, m).flatten(1).double()).mean())
                    for m in ("bilinear", "area")}
            assert df.loc[(step, k + 1), "move_cos"] == pytest.approx(want["bilinear"], rel=1e-6, abs=1e-9)
            assert abs(want["bilinear"] - want["area"]) > 1e-6
