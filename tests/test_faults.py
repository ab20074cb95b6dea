"""Faults: SIGKILL at random points, checkpoint writes that fail part-way, a damaged last checkpoint (resume
from the one before), an unreachable MLflow server (then `catlab sync`), a tracking URI that can never work,
and the security rules (weights_only loads, no network unless asked)."""
import ast
import json
import random
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from catlab import checkpoint, tracking
from catlab.checkpoint import atomic_save, safe_load
from catlab.cli import main
from catlab.config import load_config
from catlab.errors import RunFailed
from catlab.trainer import Hooks, train
from conftest import FAST, no_network, state_equal

REPO = Path(__file__).resolve().parents[1]
SMALL = FAST + ["data.resolution=16", "model.stages=3", "run.mlflow=false"]   # 16 px, 3 scales: cheap
STATE_KEYS = ("G", "D", "G_ema", "opt_g", "opt_d", "rng", "data", "images_seen", "step")


def _metrics(run_dir: Path) -> dict:
    """(name, step) -> value from metrics.jsonl, without the wall-clock throughput."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out = {(r["name"], r["step"]): r["value"] for r in rows if r["name"] != "img_per_s"}
    assert len(out) == sum(r["name"] != "img_per_s" for r in rows), "a (name, step) was logged twice"
    return out


# ---- SIGKILL at random points -----------------------------------------------------------------------------
KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    from catlab.config import load_config
    from catlab.trainer import Hooks, train
    torch.set_num_threads(2)
    where, at, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    hooks = Hooks()
    if where == "step":                       # right after optimiser step `at` (before its log/ckpt)
        def step_fn(step, state):
            if step == at:
                os.kill(os.getpid(), signal.SIGKILL)
        hooks = Hooks(step_fn=step_fn)
    elif where == "save":                     # in the middle of writing the checkpoint of step `at`
        real_save = torch.save
        def save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and "opt_g" in obj and obj["step"] == at:
                f.write(b"PK\\x03\\x04 half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)
        torch.save = save
    train(load_config(overrides), hooks)
""")


def _start(workdir: Path, where: str, at: int, overrides: list[str]) -> subprocess.Popen:
    script = workdir / "kill_train.py"
    script.write_text(KILL_SCRIPT)
    return subprocess.Popen([sys.executable, str(script), where, str(at), *overrides], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def kill_points(seed: int, steps: int, every: int) -> list[tuple[str, int]]:
    """3 distinct random steps in 1..steps-1, in order; a kill on a checkpoint step happens inside its write."""
    picks = sorted(random.Random(seed).sample(range(1, steps), 3))
    return [("save" if s % every == 0 else "step", s) for s in picks]


def test_sigkill_at_three_random_points_then_rerun_is_bitwise_exact(workdir):
    steps, every = 8, 2
    base = SMALL + [f"train.steps={steps}", f"train.ckpt_every={every}"]
    points = kill_points(seed=9, steps=steps, every=every)
    assert points == [("step", 3), ("save", 4), ("step", 5)]         # pinned: both kinds of kill are covered
    straight = _start(workdir, "none", 0, base + ["run.root=straight"])   # runs alongside the killed chain
    run_dir = None
    for where, at in points:
        code, err = _finish(_start(workdir, where, at, base + ["run.root=killed"]))
        assert code == -9, err[-2000:]
        run_dir = next((workdir / "killed").iterdir())
        last = run_dir / "ckpt" / "last.pt"
        resumable = (at - 1) // every * every                          # the last checkpoint before the kill
        assert (safe_load(last)["step"] if last.exists() else 0) == resumable
        if where == "save":                                             # the half-written temp file is all
            assert (last.parent / "last.pt.tmp").read_bytes().startswith(b"PK")   # that the kill left
        assert json.loads((run_dir / "run.json").read_text())["status"] == "RUNNING"
    code, err = _finish(_start(workdir, "none", 0, base + ["run.root=killed"]))
    assert code == 0, err[-2000:]
    code, err = _finish(straight)
    assert code == 0, err[-2000:]

    a, b = safe_load(run_dir / "ckpt" / "last.pt"), safe_load(next((workdir / "straight").iterdir()) / "ckpt/last.pt")
    assert a["step"] == b["step"] == steps
    for key in STATE_KEYS:
        assert state_equal(a[key], b[key]), f"{key} differs after 3 kills + resumes"
    straight_dir = next((workdir / "straight").iterdir())
    for (sa, pa), (sb, pb) in zip(checkpoint.snapshots(run_dir), checkpoint.snapshots(straight_dir), strict=True):
        assert sa == sb and state_equal(safe_load(pa)["G_ema"], safe_load(pb)["G_ema"])
    assert _metrics(run_dir) == _metrics(straight_dir)                  # every logged value, once, identical
    assert not list(run_dir.rglob("*.tmp"))                             # the stale temp was overwritten
    assert json.loads((run_dir / "run.json").read_text())["status"] == "FINISHED"


# ---- a checkpoint write that fails part-way -----------------------------------------------------------------
def _half_save(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(28, "No space left on device")


def test_atomic_save_failing_part_way_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "last.pt"
    atomic_save({"step": 1, "w": torch.arange(4.0)}, path)
    with monkeypatch.context() as m:
        m.setattr(checkpoint.torch, "save", _half_save)
        with pytest.raises(OSError, match="No space left"):
            atomic_save({"step": 2, "w": torch.zeros(4)}, path)
    assert safe_load(path)["step"] == 1 and not list(path.parent.glob("*.tmp"))
    with monkeypatch.context() as m:                                    # the rename fails
        m.setattr(checkpoint.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O error")))
        with pytest.raises(OSError, match="I/O error"):
            atomic_save({"step": 3, "w": torch.ones(4)}, path)
    assert safe_load(path)["step"] == 1 and not list(path.parent.glob("*.tmp"))
    (path.parent / "last.pt.tmp").write_bytes(b"left by a killed process")
    atomic_save({"step": 4, "w": torch.ones(4)}, path)                   # the next save replaces it
    assert safe_load(path)["step"] == 4 and not list(path.parent.glob("*.tmp"))


def test_training_whose_checkpoint_write_fails_keeps_the_previous_one_and_resumes(workdir, monkeypatch):
    cfg = load_config(SMALL + ["train.steps=2", "train.ckpt_every=1"])
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "opt_g" in obj and obj["step"] == 2:
            _half_save(obj, f)
        return real_save(obj, f, *args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(checkpoint.torch, "save", failing_save)
        with pytest.raises(RunFailed, match="No space left on device"):
            train(cfg)
    run_dir = workdir / "runs" / cfg.run_name()
    assert safe_load(run_dir / "ckpt" / "last.pt")["step"] == 1                # intact and loadable
    assert not list(run_dir.rglob("*.tmp"))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "FAILED" and "No space left" in info["reason"]
    result = train(cfg)                                                        # the same command again
    assert result.status == "FINISHED" and result.step == 2
    assert safe_load(run_dir / "ckpt" / "last.pt")["step"] == 2 and not list(run_dir.rglob("*.tmp"))


# ---- a damaged last checkpoint: resume from the one before it -------------------------------------------
DAMAGED = SMALL[:-1] + ["run.mlflow=true", "train.steps=6", "train.ckpt_every=2"]   # log_every=2 (FAST)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The damaged runs' config, trained 6 steps without a stop (no MLflow)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("straight"))
        return train(load_config(DAMAGED + ["run.mlflow=false"])).run_dir.resolve()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_last_checkpoint_resumes_from_the_previous_one_exactly(damage, workdir, straight_run, capsys):
    """A run stopped at step 4 keeps ckpt/last.pt (step 4) and ckpt/prev.pt (step 2). last.pt truncated, or
    missing (a save cut between its two renames): the same command resumes from prev.pt with one line, ends
    bitwise like the straight run, and its MLflow run holds every (name, step) once."""
    from mlflow.tracking import MlflowClient
    cfg = load_config(DAMAGED)
    stopped = train(cfg, Hooks(abort_fn=lambda step: "stop" if step == 4 else None))
    ckpt_dir = stopped.run_dir / "ckpt"
    assert (safe_load(ckpt_dir / "last.pt")["step"], safe_load(ckpt_dir / "prev.pt")["step"]) == (4, 2)
    (_truncate if damage == "truncated" else Path.unlink)(ckpt_dir / "last.pt")
    capsys.readouterr()
    result = train(cfg)
    err = capsys.readouterr().err.strip().splitlines()
    why = "is unreadable or corrupt (RuntimeError)" if damage == "truncated" else "is missing"
    kept = " (the damaged file is kept as last.pt.damaged)" if damage == "truncated" else ""
    assert err == [f"catlab: checkpoint {ckpt_dir / 'last.pt'} {why}; resuming from the previous one, "
                   f"{ckpt_dir / 'prev.pt'} (step 2){kept}"], err
    assert result.status == "FINISHED" and result.step == 6
    assert (ckpt_dir / "last.pt.damaged").exists() == (damage == "truncated")
    assert (safe_load(ckpt_dir / "last.pt")["step"], safe_load(ckpt_dir / "prev.pt")["step"]) == (6, 4)
    a, b = safe_load(ckpt_dir / "last.pt"), safe_load(straight_run / "ckpt" / "last.pt")
    for key in STATE_KEYS:
        assert state_equal(a[key], b[key]), f"{key} differs after resuming from prev.pt"
    jsonl = _metrics(stopped.run_dir)
    assert jsonl == _metrics(straight_run)                               # steps 2, 4, 6, each once
    client = MlflowClient()
    assert result.mlflow_run_id == stopped.mlflow_run_id
    for name in ("d_loss", "g_loss", "cons", "img_per_s"):
        history = client.get_metric_history(result.mlflow_run_id, name)
        assert sorted(m.step for m in history) == [2, 4, 6], (name, [m.step for m in history])
        if name != "img_per_s":
            assert {(m.step, m.value) for m in history} == {(s, v) for (n, s), v in jsonl.items() if n == name}


def test_no_readable_checkpoint_is_one_line_naming_the_file(workdir, capsys):
    cfg = load_config(SMALL + ["train.steps=4", "train.ckpt_every=1"])
    stopped = train(cfg, Hooks(abort_fn=lambda step: "stop" if step == 2 else None))
    ckpt_dir = stopped.run_dir / "ckpt"
    for name in ("last.pt", "prev.pt"):
        _truncate(ckpt_dir / name)
    files = sorted((p.name, p.read_bytes()) for p in ckpt_dir.iterdir())
    capsys.readouterr()
    assert main(["train", *SMALL, "train.steps=4", "train.ckpt_every=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"catlab: error: checkpoint {ckpt_dir / 'last.pt'} is unreadable or corrupt (RuntimeError), and "
                   f"the previous one, {ckpt_dir / 'prev.pt'}, is unreadable or corrupt (RuntimeError); "
                   f"delete {ckpt_dir} to start the run over"], err
    assert sorted((p.name, p.read_bytes()) for p in ckpt_dir.iterdir()) == files     # nothing renamed


# ---- MLflow: unreachable server, then catlab sync --------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_cli(argv, capsys) -> tuple[int, list[str]]:
    """(exit code, the MLflow lines on stderr); the stderr holds nothing else (no Python warning source)."""
    capsys.readouterr()
    code = main(["train", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    ours = [ln for ln in err if "MLflow at" in ln]
    assert err == ours and not any("warn(" in ln or "Warning" in ln for ln in err), err
    return code, ours


@pytest.fixture
def dropping_server():
    """A TCP server on 127.0.0.1 that accepts and at once closes every connection; yields (url, accepts)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    accepts = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:                               # closed: the test is over
                return
            accepts.append(1)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", accepts
    srv.close()


def test_mlflow_fails_fast_by_default(monkeypatch, dropping_server, capsys):
    """Unless the user set them, MLflow's HTTP retries are few (FAIL_FAST: 1 + 2 attempts; MLflow's own
    default is 1 + 7 with a longer backoff); the sink is off after the first failure, announced in one line."""
    for key in tracking.FAIL_FAST:
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)                           # restored (absent) after the test
    url, accepts = dropping_server
    ml = tracking.MLflow(url)
    assert ml.create_run("catlab", "x") is None
    assert len(accepts) == 1 + int(tracking.FAIL_FAST["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) == 3
    ml.log_metrics("x", [("a", 1.0, 1)])                  # off after the first failure: nothing is tried
    assert len(accepts) == 3 and not ml.ok
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"catlab: warning: MLflow at {url} failed (") and \
        err[0].endswith("continuing with JSONL only. Sync afterwards with: catlab sync RUN_DIR"), err


def test_unreachable_mlflow_trains_with_jsonl_warns_once_then_sync_sends_it(workdir, monkeypatch, capsys):
    import mlflow
    sqlite = f"sqlite:///{workdir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    code, warned = _train_cli(SMALL + ["train.steps=4", "train.ckpt_every=2", "run.mlflow=true"], capsys)
    assert code == 0, capsys.readouterr().err
    run_dir = next((workdir / "runs").iterdir())
    assert len(warned) == 1 and f"catlab sync {Path('runs') / run_dir.name}" in warned[0], warned
    assert json.loads((run_dir / "run.json").read_text())["mlflow_run_id"] is None
    jsonl = _metrics(run_dir)
    assert {s for n, s in jsonl if n == "d_loss"} == {2, 4}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite)                     # the server is back
    capsys.readouterr()
    assert main(["sync", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{len(jsonl) + 2} values" in out and "created" in out       # + img_per_s at steps 2 and 4
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs["status"][0] == "FINISHED"
    run_id = runs["run_id"][0]
    assert json.loads((run_dir / "run.json").read_text())["mlflow_run_id"] == run_id
    assert runs["params.train.steps"][0] == "4" and runs["tags.config_hash"][0] == load_config(
        SMALL + ["train.steps=4", "train.ckpt_every=2", "run.mlflow=true"]).hash()
    client = mlflow.tracking.MlflowClient()
    for name in ("d_loss", "g_loss", "cons"):
        history = client.get_metric_history(run_id, name)
        assert {(m.step, m.value) for m in history} == {(s, v) for (n, s), v in jsonl.items() if n == name}
        assert len(history) == 2
    assert "samples/grid_000004.png" in [f.path for f in client.list_artifacts(run_id, "samples")]
    assert main(["sync", str(run_dir)]) == 0                            # twice: nothing new is sent
    assert "0 values" in capsys.readouterr().out
    assert len(client.get_metric_history(run_id, "d_loss")) == 2
    assert len(mlflow.search_runs(search_all_experiments=True)) == 1


def test_mlflow_lost_mid_run_then_sync_continues_the_same_run(workdir, capsys):
    """The server goes away after the first checkpoint; sync completes the run's own MLflow run."""
    import mlflow
    from mlflow.tracking import MlflowClient
    port = closed_port()

    def outage(step, state):
        if step == 3:
            tracking._active.mlflow._client = MlflowClient(f"http://127.0.0.1:{port}")
    capsys.readouterr()
    result = train(load_config(SMALL + ["train.steps=4", "train.ckpt_every=2", "run.mlflow=true"]),
                   Hooks(step_fn=outage))
    assert result.status == "FINISHED"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("catlab: warning: MLflow at ") and \
        f"127.0.0.1:{port}" in err[0] and f"catlab sync {Path('runs') / result.run_dir.name}" in err[0], err
    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(result.mlflow_run_id, "d_loss")] == [2]
    assert client.get_run(result.mlflow_run_id).info.status == "RUNNING"   # its end was never sent
    capsys.readouterr()
    assert main(["sync", str(result.run_dir)]) == 0
    assert "continued" in capsys.readouterr().out
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs["run_id"][0] == result.mlflow_run_id and runs["status"][0] == "FINISHED"
    history = client.get_metric_history(result.mlflow_run_id, "d_loss")
    jsonl = _metrics(result.run_dir)
    assert sorted((m.step, m.value) for m in history) == sorted((s, v) for (n, s), v in jsonl.items()
                                                               if n == "d_loss")
    assert [m.step for m in history].count(2) == 1                     # step 2 was not sent again


def test_sync_with_mlflow_unreachable_is_one_line_and_exit_1(workdir, monkeypatch, capsys):
    run_dir = workdir / "runs" / "r"
    run_dir.mkdir(parents=True)
    from catlab.config import save_config
    save_config(load_config(SMALL), run_dir / "config.json")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    capsys.readouterr()
    assert main(["sync", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("catlab: run failed: MLflow at http://127.0.0.1"), err


# ---- security ------------------------------------------------------------------------------------------
def _repo_py_files() -> list[Path]:
    skip = {".venv", ".git", "node_modules", "__pycache__", "build", "dist"}
    return [p for p in REPO.rglob("*.py") if not skip & set(p.relative_to(REPO).parts)
            and not any(part.startswith(".") for part in p.relative_to(REPO).parts)]


def unsafe_torch_loads(source: str) -> list[int]:
    """Line numbers of torch.load(...) calls (or `load` imported from torch) without weights_only=True."""
    tree = ast.parse(source)
    aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "torch"
               for a in n.names if a.name == "load"}
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        is_load = (isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name)
                   and f.value.id == "torch") or (isinstance(f, ast.Name) and f.id in aliases)
        safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                   for k in node.keywords)
        if is_load and not safe:
            bad.append(node.lineno)
    return bad


def test_every_torch_load_in_the_repo_uses_weights_only():
    assert unsafe_torch_loads("import torch\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
                              "torch.load(p, weights_only=True)\nfrom torch import load as L\nL(p)\n") == [2, 3, 6]
    files = _repo_py_files()
    assert REPO / "catlab" / "checkpoint.py" in files and len(files) > 30
    offenders = {str(p.relative_to(REPO)): lines for p in files if (lines := unsafe_torch_loads(p.read_text()))}
    assert offenders == {}, f"torch.load without weights_only=True: {offenders}"


def test_train_and_analyze_need_no_network(workdir, capsys):
    """A 1-step run (MLflow on, sqlite) and its analysis with the default metrics, with the network blocked."""
    with no_network() as attempts:
        assert main(["train", *SMALL, "train.steps=1", "run.mlflow=true"]) == 0
        run_dir = next((workdir / "runs").iterdir())
        assert main(["analyze", str(run_dir), "--n", "16"]) == 0
    assert attempts == []
    out = capsys.readouterr().out
    assert "fid" in out and "discrepancy_l2" in out
    assert (run_dir / "analysis.csv").exists()
