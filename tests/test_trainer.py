"""Trainer: exact resume after SIGKILL, one MLflow run per run dir, NaN -> FAILED, hooks."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from catlab.checkpoint import load_generator, safe_load
from catlab.config import ConsistencyConfig, load_config
from catlab.errors import RunFailed, UserError
from catlab.trainer import Hooks, train
from conftest import FAST, no_network, state_equal

STATE_KEYS = ("G", "D", "G_ema", "opt_g", "opt_d")


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from catlab.config import load_config
    from catlab.trainer import Hooks, train
    cfg = load_config(sys.argv[2:])
    kill_at = int(sys.argv[1])
    def step_fn(step, state):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    train(cfg, Hooks(step_fn=step_fn if kill_at > 0 else None))
""")


def _run_script(workdir, kill_at, overrides):
    script = workdir / "kill_train.py"
    script.write_text(KILL_SCRIPT)
    return subprocess.run([sys.executable, str(script), str(kill_at), *overrides], cwd=workdir,
                          capture_output=True, text=True, timeout=300)


def test_exact_resume_after_sigkill_and_one_mlflow_run(workdir):
    import mlflow
    base = FAST + ["train.steps=8", "train.ckpt_every=4"]
    # N = 4 steps, then SIGKILL in the middle of the second half (after step 6), then the same command again
    killed = _run_script(workdir, 6, base + ["run.root=killed"])
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert safe_load(next((workdir / "killed").glob("*/ckpt/last.pt")))["step"] == 4
    resumed = _run_script(workdir, 0, base + ["run.root=killed"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = _run_script(workdir, 0, base + ["run.root=straight"])
    assert straight.returncode == 0, straight.stderr[-2000:]

    a = safe_load(next((workdir / "killed").glob("*/ckpt/last.pt")))
    b = safe_load(next((workdir / "straight").glob("*/ckpt/last.pt")))
    assert a["step"] == b["step"] == 8
    for key in STATE_KEYS + ("rng", "data", "images_seen"):
        assert state_equal(a[key], b[key]), f"{key} differs after kill + resume"

    # MLflow: the killed run continued the same MLflow run; one run per run dir, both FINISHED
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 2
    assert set(runs["status"]) == {"FINISHED"}
    run = runs[runs["tags.run_dir"].str.contains("killed")].iloc[0]
    assert run["params.train.steps"] == "8" and run["params.loss.consistency.weight"] == str(ConsistencyConfig.weight)
    for tag in ("config_hash", "git_commit", "catlab_version", "dataset", "device"):
        assert isinstance(run[f"tags.{tag}"], str) and run[f"tags.{tag}"]
    client = mlflow.tracking.MlflowClient()
    history = client.get_metric_history(run["run_id"], "d_loss")
    steps = [m.step for m in history]
    assert steps == sorted(set(steps)) == [2, 4, 6, 8]           # per-step, none sent twice
    artifacts = [f.path for f in client.list_artifacts(run["run_id"], "samples")]
    assert "samples/grid_000008.png" in artifacts
    assert "config.json" in [f.path for f in client.list_artifacts(run["run_id"])]
    lines = [json.loads(x) for x in next((workdir / "killed").glob("*/metrics.jsonl")).read_text().splitlines()]
    assert sorted({x["step"] for x in lines if x["name"] == "d_loss"}) == [2, 4, 6, 8]


def test_nan_marks_failed_and_keeps_previous_checkpoint(workdir):
    import mlflow
    cfg = load_config(FAST + ["train.steps=12", "train.ckpt_every=5"])

    def poison(step, state):
        if step == 7:
            with torch.no_grad():
                for p in state.G.parameters():
                    p.fill_(float("nan"))
    with pytest.raises(RunFailed, match="non-finite .* at step 8"):
        train(cfg, Hooks(step_fn=poison))
    run_dir = workdir / "runs" / cfg.run_name()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "FAILED" and "non-finite" in info["reason"]
    last = safe_load(run_dir / "ckpt" / "last.pt")
    assert last["step"] == 5 and all(torch.isfinite(v).all() for v in last["G"].values())
    run = mlflow.search_runs(search_all_experiments=True).iloc[0]
    assert run["status"] == "FAILED" and "non-finite" in run["tags.reason"]
    assert run["metrics.d_loss"] == run["metrics.d_loss"]      # partial metrics were kept


def test_abort_hook_kills_with_reason_and_progress_sees_context(workdir):
    cfg = load_config(FAST + ["train.steps=10", "run.mlflow=false"])
    seen = []

    def progress(step, stats, ctx):
        stages = ctx.sample(ctx.eval_z[:2], ctx.eval_y[:2])
        seen.append((step, stats["d_loss"], [tuple(x.shape) for x in stages]))
        ctx.report("probe", float(step))
    result = train(cfg, Hooks(progress_fn=progress, abort_fn=lambda step: "pruned" if step >= 4 else None))
    assert result.status == "KILLED" and result.reason == "pruned" and result.step == 4
    assert [s for s, _, _ in seen] == [2, 4]
    assert seen[0][2] == [(2, 3, 4, 4), (2, 3, 8, 8), (2, 3, 16, 16), (2, 3, 32, 32)]
    assert safe_load(result.run_dir / "ckpt" / "last.pt")["step"] == 4   # nothing lost
    # the run can be resumed to the end by running it again without the abort
    assert train(cfg).status == "FINISHED"


def test_finished_run_is_not_trained_again_and_other_config_is_refused(workdir):
    cfg = load_config(FAST + ["train.steps=2", "run.mlflow=false"])
    first = train(cfg)
    assert first.status == "FINISHED"
    again = train(cfg)
    assert again.status == "FINISHED" and again.reason == "already finished"
    other = load_config(FAST + ["train.steps=3", "run.mlflow=false"])
    with pytest.raises(UserError, match="holds a run of config"):
        train(other, run_dir=first.run_dir)
    G, loaded_cfg = load_generator(first.run_dir)
    assert loaded_cfg == cfg and len(G(torch.randn(2, G.z_dim), torch.arange(2))) == 4


def test_consistency_term_moves_the_generator_and_nothing_else(workdir):
    """lambda > 0 against lambda = 0, paired: the same data order and eval set, the same D after the first
    step (its phase comes before G's), and a different G from the first G update on (the term is in G's
    loss); lambda = 0 logs a zero term."""
    on = train(load_config(FAST + ["train.steps=1", "run.mlflow=false", "run.root=on", "loss.consistency.weight=3"]))
    off = train(load_config(FAST + ["train.steps=1", "run.mlflow=false", "run.root=off",
                                    "loss.consistency.weight=0"]))
    a, b = safe_load(on.run_dir / "ckpt" / "last.pt"), safe_load(off.run_dir / "ckpt" / "last.pt")
    assert state_equal(a["data"], b["data"]) and state_equal(a["D"], b["D"])
    assert torch.equal(safe_load(on.run_dir / "eval_set.pt")["z"], safe_load(off.run_dir / "eval_set.pt")["z"])
    changed = [k for k in a["G"] if not torch.equal(a["G"][k], b["G"][k])]
    assert any(k.startswith("heads.") for k in changed), changed
    cons = [json.loads(x) for x in (off.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(x["value"] == 0.0 for x in cons if x["name"] == "cons")


def test_consistency_lowers_the_discrepancy(workdir):
    """A tiny seeded problem: 20 steps with lambda = 30 give every intermediate stage a lower L2 distance
    to the final output (the raw G, on the run's fixed eval set) than 20 steps with lambda = 0."""
    from analysis.misalignment import cross_scale_metrics
    disc = {}
    for lam in (0, 30):
        r = train(load_config(FAST + ["train.steps=20", "run.mlflow=false", f"run.root=l{lam}",
                                      f"loss.consistency.weight={lam}"]))
        G, _ = load_generator(r.run_dir, ema=False)
        ev = safe_load(r.run_dir / "eval_set.pt")
        with torch.no_grad():
            disc[lam] = cross_scale_metrics(G(ev["z"], ev["y"]), "l2")["discrepancy"]
    assert all(on < off for on, off in zip(disc[30], disc[0])), disc


def test_width_aware_lr(workdir):
    """train.width_lr: lr = base * 768 / width, for G and D."""
    from catlab.data import Batcher, build_dataset
    from catlab.trainer import build_state
    cfg = load_config(FAST + ["train.width_lr=true", "train.lr_g=2e-4", "train.lr_d=1e-4"])
    data = build_dataset(cfg.data)
    s = build_state(cfg, data.num_classes, 3, Batcher(data, 8), "cpu")
    assert s.opt_g.param_groups[0]["lr"] == pytest.approx(2e-4 * 768 / s.G.width)
    assert s.opt_d.param_groups[0]["lr"] == pytest.approx(1e-4 * 768 / s.D.width)


def test_the_ema_generator_follows_g_with_the_warm_up_then_the_decay(workdir):
    """After each step k (0-based) the EMA is lerp(EMA, G, 1 - beta_k), beta_k = min(decay, (1 + k) / (10 + k))
    while k < ema_warmup, then decay: checked against G's weights as the trainer left them after every step."""
    seen = []

    def step_fn(step, state):
        seen.append((step, {k: v.clone() for k, v in state.G.state_dict().items()},
                     {k: v.clone() for k, v in state.G_ema.state_dict().items()}))
    decay, warmup = 0.9, 2
    train(load_config(FAST + ["train.steps=4", "run.mlflow=false", f"train.ema={decay}",
                              f"train.ema_warmup={warmup}"]), Hooks(step_fn=step_fn))
    assert [s for s, _, _ in seen] == [1, 2, 3, 4]
    for (_, _, ema_before), (step, g, ema) in zip(seen, seen[1:]):
        k = step - 1                                          # the step index the update ran at
        beta = min(decay, (1 + k) / (10 + k)) if k < warmup else decay
        assert beta == (2 / 11 if k == 1 else decay)
        for name, value in ema.items():
            want = torch.lerp(ema_before[name], g[name], 1 - beta) if value.is_floating_point() else g[name]
            torch.testing.assert_close(value, want, rtol=1e-6, atol=1e-7, msg=name)
