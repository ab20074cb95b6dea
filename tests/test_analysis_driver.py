"""analysis.run_eval / command / hooks on one tiny trained run (2 steps, a snapshot per step, the hook on).

Pins: the documented metric names with finite values, batch-size invariance of generate() and of the
diagnostics, the hook's diag_* rows (equal to the offline diagnostics of the final EMA generator), the
reference-statistics cache on a second evaluation, the per-run result memo, analysis.csv, MLflow logging
and the study tables (table, summary, tests, drift, curve).
"""
import json
import math

import pandas as pd
import pytest
import torch

from analysis import inputs, run_eval
from analysis import study as study_mod
from analysis.measures import diagnostics
from catlab.rundir import fixed_inputs
from analysis.command import analyze
from analysis.hooks import diagnostics_hook
from catlab.checkpoint import load_generator
from catlab.config import load_config
from catlab.errors import UserError
from catlab.metrics.shape_classifier import shape_accuracy
from catlab.tracking import MLflow, read_metrics
from catlab.trainer import Hooks, train
from conftest import FAST

N = 24
TINY = FAST + ["data.resolution=16", "train.steps=2", "train.ckpt_every=1", "train.log_every=1"]
# direction is an image-space cosine, the same for every distance: reported once, under the first one (l2)
DIAG = {f"{m}_{d}" for m in ("discrepancy", "rewrite") for d in ("l2", "lpips-domain")} | {"direction_l2"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained run (K=4 stages at 2, 4, 8, 16 px) in its own folder, MLflow store and torch home."""
    root = tmp_path_factory.mktemp("analysis")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("TORCH_HOME", str(root / "torch_home"))
        mp.delenv("CATLAB_INCEPTION_WEIGHTS", raising=False)
        mp.delenv("CATLAB_CACHE", raising=False)
        hook = diagnostics_hook(every=1, n=16)
        result = train(load_config(TINY), Hooks(progress_fn=hook))
        assert result.status == "FINISHED"
        yield result.run_dir.resolve()


def test_hook_reports_diagnostics_into_metrics_jsonl(run):
    m = read_metrics(run)
    diag = m[m["name"].str.startswith("diag_")]
    expected = {f"diag_{name}_s{k}" for name in DIAG for k in (1, 2, 3)}
    assert set(diag["name"]) == expected
    assert sorted(diag["step"].unique()) == [1, 2]
    assert diag["value"].map(math.isfinite).all()
    # the step-2 values are the diagnostics of the final EMA generator on the first 16 eval samples
    G, cfg = load_generator(run)
    z, y = fixed_inputs(run, 16, cfg.seed, G.z_dim, G.num_classes)
    offline = dict(((f"diag_{m}_s{k}"), v) for m, k, v in diagnostics(inputs.generate(G, z, y), ["l2", "lpips-domain"]))
    at2 = diag[diag["step"] == 2].set_index("name")["value"]
    for name, v in offline.items():
        assert at2[name] == pytest.approx(v, rel=1e-4, abs=1e-6), name


def test_generate_and_diagnostics_are_batch_size_invariant(run):
    G, cfg = load_generator(run)
    z, y = fixed_inputs(run, 20, cfg.seed, G.z_dim, G.num_classes)
    whole, chunked = inputs.generate(G, z, y, batch=256), inputs.generate(G, z, y, batch=7)
    assert [tuple(x.shape) for x in whole] == [(20, 3, s, s) for s in (2, 4, 8, 16)]
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    d1 = diagnostics(whole, ["l2", "lpips-domain"], batch=256)
    d2 = diagnostics(chunked, ["l2", "lpips-domain"], batch=8)
    assert [r[:2] for r in d1] == [r[:2] for r in d2]
    for (_, _, v1), (_, _, v2) in zip(d1, d2):
        assert v1 == pytest.approx(v2, rel=1e-4, abs=1e-6)


def test_fixed_inputs_extend_the_eval_set_deterministically(run):
    ev = torch.load(run / "eval_set.pt", weights_only=True)
    z, y = fixed_inputs(run, 300, 0, ev["z"].shape[1], 10)
    assert torch.equal(z[:256], ev["z"]) and torch.equal(y[:256], ev["y"])
    z2, _ = fixed_inputs(run, 300, 0, ev["z"].shape[1], 10)
    z3, _ = fixed_inputs(run, 300, 1, ev["z"].shape[1], 10)
    assert torch.equal(z, z2) and not torch.equal(z[256:], z3[256:])
    assert y[256:].tolist() == [i % 10 for i in range(256, 300)]
    from catlab.rundir import draw_eval_set
    a, b = draw_eval_set(0, 8, 10), draw_eval_set(1, 8, 10)    # a function of the seed: paired arms share it
    assert torch.equal(a["z"], draw_eval_set(0, 8, 10)["z"]) and not torch.equal(a["z"], b["z"])


def test_evaluate_run_names_values_cache_and_mlflow(run, monkeypatch):
    import catlab.data
    loads = []                                         # generators built: a computed evaluation builds one
    real_load = run_eval.load_generator
    monkeypatch.setattr(run_eval, "load_generator", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    first = run_eval.evaluate_run(run, n=N)
    assert len(loads) == 1
    info = first.attrs["info"]
    names = set(first["metric"])
    assert names == DIAG | {f"fid_domain_{N}", f"kid_domain_{N}", f"kid_std_domain_{N}", "shape_acc"}
    assert info["fid_extractor"] == "domain" and info["step"] == 2 and not info["reused"]
    assert info["cache_hits"] == [False] * 4
    assert first["value"].map(math.isfinite).all()
    for metric, stages in first.groupby("metric")["stage"]:
        assert sorted(stages) == ([1, 2, 3] if metric in DIAG else [1, 2, 3, 4]), metric
    assert (first[first["metric"] == f"kid_std_domain_{N}"]["value"] > 0).all()    # subsets of N/2: they differ
    # shape_acc: the colour-blind classifier on each stage of the same n samples, against their classes
    G, cfg = load_generator(run)
    z, y = fixed_inputs(run, N, cfg.seed, G.z_dim, G.num_classes)
    expected = [shape_accuracy(x, y) for x in inputs.generate(G, z, y)]
    assert first[first["metric"] == "shape_acc"].sort_values("stage")["value"].tolist() == expected
    direction = first[first["metric"] == "direction_l2"].set_index("stage")["value"]
    assert direction[3] == pytest.approx(1.0)                  # x_{K-1}'s next stage is the final one
    # logged to the run's own MLflow run at the final step
    run_id = json.loads((run / "run.json").read_text())["mlflow_run_id"]
    client = MLflow().client
    hist = client.get_metric_history(run_id, f"fid_domain_{N}_s4")
    assert [(h.step, h.value) for h in hist] == [(2, pytest.approx(
        first.query(f"metric == 'fid_domain_{N}' and stage == 4")["value"].item()))]
    # second evaluation, recomputed: no dataset built, reference statistics read from the cache
    built = []
    real_build = catlab.data.build_dataset
    monkeypatch.setattr(catlab.data, "build_dataset", lambda *a, **k: built.append(1) or real_build(*a, **k))
    inputs._REAL.clear()
    second = run_eval.evaluate_run(run, n=N, reuse=False, log=False)
    assert second.attrs["info"]["cache_hits"] == [True] * 4 and built == [] and len(loads) == 2
    pd.testing.assert_frame_equal(first, second, rtol=1e-6)
    # third: the run is unchanged, so its result is read back from <run_dir>/analysis/: no generator is built
    memo = sorted(p for p in (run / "analysis").rglob("*") if p.is_file())
    assert memo, "no result was kept under <run_dir>/analysis/"
    third = run_eval.evaluate_run(run, n=N)
    assert len(loads) == 2 and built == []
    assert third.attrs["info"]["reused"] and len(client.get_metric_history(run_id, f"fid_domain_{N}_s4")) == 1
    pd.testing.assert_frame_equal(first, third)


def test_analyze_run_dir_writes_analysis_csv(run, capsys):
    assert analyze(str(run), metrics=["fid", "l2"], n=N) == 0
    out = capsys.readouterr().out
    df = pd.read_csv(run / "analysis.csv")
    assert list(df.columns) == ["metric", "stage", "value"]
    assert set(df["metric"]) == {"discrepancy_l2", "rewrite_l2", "direction_l2", f"fid_domain_{N}"}
    assert f"fid_domain_{N}" in out and "analysis.csv" in out


def test_analyze_offline_notices_and_errors(run, capsys, monkeypatch):
    import catlab.metrics.fidelity
    monkeypatch.setattr(catlab.metrics.fidelity, "_NOTICE_SHOWN", False)
    analyze(str(run), n=N)
    err = capsys.readouterr().err
    hub = run.parent.parent / "torch_home" / "hub" / "checkpoints"
    assert err.count("no AlexNet weights") == 1 and str(hub / "alexnet-owt-7be5be79.pth") in err
    assert err.count("no Inception weights") == 1 and str(hub / "weights-inception-2015-12-05-6726825d.pth") in err
    with pytest.raises(UserError, match="target must be a run dir") as e:
        analyze("no-such-study-or-dir")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="--metrics must name"):
        analyze(str(run), metrics=["fid", "lpips-nope"])
    with pytest.raises(UserError, match="lpips-alex needs the torchvision alex weights"):
        analyze(str(run), metrics=["l2", "lpips-alex"])             # asked for by name: an error, up front


def test_evaluate_study_writes_tables(run, tmp_path):
    """Two arms x two seeds (the same trained run stands in for every cell): table, summary, tests, drift."""
    study = tmp_path / "studies" / "toy"
    study.mkdir(parents=True)
    rows = [{"cell": f"consistency={arm},seed={s}", "seed": s, "consistency": arm, "run_dir": str(run),
             "status": "FINISHED", "reason": "", "config_hash": "x", "mlflow_run_id": ""}
            for arm in ("on", "off") for s in (0, 1)]
    rows.append({**rows[0], "cell": "consistency=on,seed=2", "seed": 2, "status": "FAILED"})
    pd.DataFrame(rows).to_csv(study / "cells.csv", index=False)
    parent = MLflow().create_run("catlab", "toy")
    (study / "study.json").write_text(json.dumps({"study": "toy", "parent_run_id": parent}))
    table = study_mod.evaluate_study(study, n=N, metrics=("fid",), distances=("l2",), curve=True, curve_fid=True,
                             progress=False)
    assert list(table.columns) == ["cell", "seed", "consistency", "metric", "stage", "value"]
    assert len(table) == 4 * (3 * 3 + 4)
    summary = pd.read_csv(study / "summary.csv")
    assert set(summary.columns) >= {"consistency", "metric", "stage", "n", "mean", "ci_low", "ci_high", "method"}
    assert (summary["n"] == 2).all()
    tests = pd.read_csv(study / "tests.csv")
    assert set(tests["axis"]) == {"consistency"} and (tests["n_pairs"] == 2).all()
    drift = pd.read_csv(study / "drift.csv")
    assert len(drift) == 4 * 4 and set(drift["step"]) == {2}
    curve = pd.read_csv(study / "curve.csv")
    assert set(curve["step"]) == {1, 2} and set(curve["images_seen"]) == {8, 16}
    logged = MLflow().client.get_run(parent).data.metrics
    assert f"consistency-on/fid_domain_{N}_s4" in logged


def test_a_layouts_run_is_scored_by_the_layouts_classifier(workdir, monkeypatch):
    """shape_acc of the main study's data: the per-run table and the curve over training score each stage with
    the `layouts` classifier (data="layouts"), on the same samples; its FID uses the layouts extractor."""
    from analysis.trajectory import run_trajectory
    from catlab.metrics.extractor import PACKAGED
    monkeypatch.delenv("CATLAB_CACHE", raising=False)                # reference statistics under workdir
    result = train(load_config(TINY + ["data.name=layouts", "data.n=64", "run.mlflow=false"]))
    df = run_eval.evaluate_run(result.run_dir, n=N, metrics=("shape", "fid"), distances=("l2",), log=False,
                               reuse=False)
    assert df.attrs["info"]["weights"] == str(PACKAGED["layouts"])          # FID with the layouts extractor
    G, cfg = load_generator(result.run_dir)
    z, y = fixed_inputs(result.run_dir, N, cfg.seed, G.z_dim, G.num_classes)
    stages = inputs.generate(G, z, y)
    expected = [shape_accuracy(x, y, data="layouts") for x in stages]
    assert expected != [shape_accuracy(x, y, data="shapes") for x in stages]      # the two scorers differ here
    assert df[df["metric"] == "shape_acc"].sort_values("stage")["value"].tolist() == expected
    curve = run_trajectory(result.run_dir, parts=("curve",), n=N, metrics=(), reuse=False)["curve"]
    last = curve[(curve["metric"] == "shape_acc") & (curve["step"] == curve["step"].max())]
    assert last.sort_values("stage")["value"].tolist() == expected
