"""Ctrl-C: SIGINT during `catlab train`, `catlab ablate --workers 2` (local, or on a storage) and
`catlab search --workers 2`.

The first SIGINT stops a run at the end of its step: it writes a checkpoint (none was due: ckpt_every is
larger than the run), marks the run KILLED in run.json and in MLflow with the reason, and the command exits
130. Running the same command again resumes from that checkpoint, in the same MLflow run(s), and ends
bitwise like a run that was never interrupted. A second SIGINT stops at once and keeps the last checkpoint.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catlab.checkpoint import safe_load
from catlab.cli import main
from catlab.config import load_config
from catlab.trainer import Hooks, train
from conftest import FAST, state_equal

SMALL = FAST + ["data.resolution=16", "model.stages=3", "run.mlflow=true"]
STATE_KEYS = ("G", "D", "G_ema", "opt_g", "opt_d", "rng", "data", "images_seen", "step")


def _metrics(run_dir: Path) -> dict:
    """(name, step) -> value from metrics.jsonl without the wall-clock throughput; each (name, step) once."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out = {(r["name"], r["step"]): r["value"] for r in rows if r["name"] != "img_per_s"}
    assert len(out) == sum(r["name"] != "img_per_s" for r in rows), "a (name, step) was logged twice"
    return out


def _run(client, run_id: str):
    run = client.get_run(run_id)
    return run.info.status, run.data.tags.get("reason", "")


def _sigint_at(step: int, times: int = 1):
    def step_fn(at, state):
        if at == step:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)
    return Hooks(step_fn=step_fn)


# ---- in one process: the trainer's part -------------------------------------------------------------------
def test_sigint_checkpoints_marks_killed_and_the_same_call_resumes_exactly(workdir, capsys):
    over = SMALL + ["train.steps=6", "train.ckpt_every=100", "run.mlflow=false"]     # MLflow: the CLI tests
    cfg = load_config(over)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, _sigint_at(3))
    run_dir = workdir / "runs" / cfg.run_name()
    assert safe_load(run_dir / "ckpt" / "last.pt")["step"] == 3             # written at the stop
    assert not (run_dir / "ckpt" / "prev.pt").exists() and not list(run_dir.rglob("*.tmp"))
    info = json.loads((run_dir / "run.json").read_text())
    reason = "interrupted by the user (Ctrl-C) at step 3"
    assert (info["status"], info["reason"], info["step"]) == ("KILLED", reason, 3)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"catlab: {reason}; checkpoint {Path('runs') / cfg.run_name() / 'ckpt' / 'last.pt'} (step 3); "
                   "run the same command again to resume"], err

    result = train(cfg)                                                    # the same call again
    assert (result.status, result.step) == ("FINISHED", 6)
    straight = train(load_config(over + ["run.root=straight"]))
    a, b = safe_load(run_dir / "ckpt" / "last.pt"), safe_load(straight.run_dir / "ckpt" / "last.pt")
    for key in STATE_KEYS:
        assert state_equal(a[key], b[key]), f"{key} differs after Ctrl-C + resume"
    assert _metrics(run_dir) == _metrics(straight.run_dir)                 # steps 2, 4, 6, each once


def test_second_sigint_stops_at_once_and_keeps_the_last_checkpoint(workdir):
    cfg = load_config(SMALL + ["train.steps=6", "train.ckpt_every=2", "run.mlflow=false"])
    before = signal.getsignal(signal.SIGINT)     # Python's default_int_handler (SIG_IGN under a background job)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, _sigint_at(3, times=2))
    run_dir = workdir / "runs" / cfg.run_name()
    assert safe_load(run_dir / "ckpt" / "last.pt")["step"] == 2             # step 3 was not saved
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "KILLED" and "(resumes from step 2)" in info["reason"], info
    assert train(cfg).status == "FINISHED"
    assert signal.getsignal(signal.SIGINT) is before                       # the handler was put back


# ---- the commands, as a user runs them: a subprocess and a real SIGINT ------------------------------------
def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the command ended before {what}: " + proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def _catlab(workdir: Path, *argv) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal gives it, even when the tests run as a background job (which ignores SIGINT)
    return subprocess.Popen([sys.executable, "-m", "catlab", *argv], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_during_catlab_train_exits_130_and_the_same_command_resumes(workdir):
    from mlflow.tracking import MlflowClient
    argv = ["train", *SMALL, "train.steps=40", "train.ckpt_every=400", "train.log_every=1"]
    proc = _catlab(workdir, *argv)
    _wait_for(lambda: _lines(next(iter(workdir.glob("runs/*/metrics.jsonl")), workdir / "x")) > 0, proc,
              "a logged step")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    run_dir = next(workdir.glob("runs/*"))
    info = json.loads((run_dir / "run.json").read_text())
    step = safe_load(run_dir / "ckpt" / "last.pt")["step"]
    assert 0 < step < 40 and info["status"] == "KILLED" and info["step"] == step
    assert info["reason"] == f"interrupted by the user (Ctrl-C) at step {step}"
    assert _run(MlflowClient(), info["mlflow_run_id"]) == ("KILLED", info["reason"])
    assert "Traceback" not in err and err.strip().splitlines()[-2:] == [
        f"catlab: {info['reason']}; checkpoint {Path('runs') / run_dir.name / 'ckpt' / 'last.pt'} (step {step}); "
        "run the same command again to resume", "catlab: interrupted"], err

    assert main(argv) == 0                         # the same command again (in this process: no second start-up)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "FINISHED" and info["step"] == 40
    assert sorted(s for n, s in _metrics(run_dir) if n == "d_loss") == list(range(1, 41))
    history = MlflowClient().get_metric_history(info["mlflow_run_id"], "d_loss")
    assert sorted(m.step for m in history) == list(range(1, 41))          # the same run, each step once


def test_ctrl_c_during_catlab_ablate_with_two_workers_exits_130_and_the_same_command_resumes(workdir,
                                                                                               monkeypatch):
    """SIGINT to the grid's process only (`kill -INT`): it stops its workers itself. (A terminal's Ctrl-C
    reaches the workers too; each then stops on its own handler, the same way.) The same command again runs
    in this process with the analysis and the report after the grid left out (a minute here, tested in
    tests/test_experiments.py)."""
    from experiments import outputs
    from mlflow.tracking import MlflowClient
    argv = ["ablate", "ablation-consistency", "--seeds", "1", "--workers", "2", *SMALL, "data.n=64",
            "train.steps=60", "train.ckpt_every=1000", "train.log_every=1"]
    proc = _catlab(workdir, *argv)
    jsonls = lambda: sorted(workdir.glob("studies/*/runs/*/metrics.jsonl"))  # noqa: E731
    _wait_for(lambda: len(jsonls()) == 2 and all(_lines(p) > 0 for p in jsonls()), proc, "both cells training")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "catlab: interrupted", err[-3000:]
    sdir = next(p for p in workdir.glob("studies/*") if (p / "cells.csv").exists())
    with open(sdir / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    study = json.loads((sdir / "study.json").read_text())
    client = MlflowClient()
    assert _run(client, study["parent_run_id"]) == ("KILLED", "interrupted by the user")
    assert len(cells) == 2 and {c["status"] for c in cells} == {"KILLED"}, cells
    ids = {}
    for c in cells:
        run_dir = workdir / c["run_dir"]
        info = json.loads((run_dir / "run.json").read_text())
        step = safe_load(run_dir / "ckpt" / "last.pt")["step"]            # the stop's own checkpoint
        assert 0 < step < 60 and info["status"] == "KILLED" and info["step"] == step
        assert c["reason"] == info["reason"] == f"interrupted by the user (Ctrl-C) at step {step}"
        assert c["mlflow_run_id"] == info["mlflow_run_id"]
        assert _run(client, info["mlflow_run_id"]) == ("KILLED", info["reason"])
        assert client.get_run(info["mlflow_run_id"]).data.tags["mlflow.parentRunId"] == study["parent_run_id"]
        ids[c["cell"]] = info["mlflow_run_id"]

    monkeypatch.setattr(outputs, "analyse", lambda *a, **k: None)
    monkeypatch.setattr(outputs, "build_report", lambda *a, **k: None)
    assert main(argv) == 0                                                 # the same command again
    with open(sdir / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert {c["status"] for c in cells} == {"FINISHED"}
    assert {c["cell"]: c["mlflow_run_id"] for c in cells} == ids           # resumed in the same runs
    assert json.loads((sdir / "study.json").read_text())["parent_run_id"] == study["parent_run_id"]
    assert _run(client, study["parent_run_id"])[0] == "FINISHED"
    for c in cells:
        assert sorted(s for n, s in _metrics(workdir / c["run_dir"]) if n == "d_loss") == list(range(1, 61))
        assert _run(client, c["mlflow_run_id"])[0] == "FINISHED"


@pytest.mark.parametrize("command", ["ablate", "search"])
def test_ctrl_c_to_the_parent_of_two_workers_on_a_storage_stops_both_and_exits_130(workdir, command):
    """`kill -INT` to the command only: its two spawned workers (a grid on a journal, or a search) stop at the
    end of their step, their cells KILLED with the reason (a grid queues them again for other machines; a search
    trial ends FAIL), the workers exit and the command exits 130 at once, without a traceback."""
    import optuna
    from optuna.storages.journal import JournalFileBackend
    long = ["train.steps=400", "train.ckpt_every=1000", "train.log_every=1", "data.n=64", "run.mlflow=false"]
    study = "ablation-consistency" if command == "ablate" else "ablation-consistency-weight"
    argv = [command, study, *(["--seeds", "1"] if command == "ablate" else ["--trials", "2", "--objective", "fid"]),
            "--workers", "2", "--storage", "grid.journal", *SMALL, *long]
    proc = _catlab(workdir, *argv)
    jsonls = lambda: sorted(workdir.glob("studies/*/runs/*/metrics.jsonl"))  # noqa: E731
    _wait_for(lambda: len(jsonls()) == 2 and all(_lines(p) > 0 for p in jsonls()), proc, "both cells training")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "catlab: interrupted", err[-3000:]
    trials = optuna.load_study(study_name=None, storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(workdir / "grid.journal")))).get_trials()
    stopped = [t for t in trials if t.state.name == "FAIL"]
    assert len(stopped) == 2 and "RUNNING" not in {t.state.name for t in trials}, trials
    for t in stopped:
        info = json.loads((workdir / t.user_attrs["run_dir"] / "run.json").read_text())
        assert info["status"] == "KILLED" and 0 < info["step"] < 400
        assert info["reason"] == f"interrupted by the user (Ctrl-C) at step {info['step']}"
        reason = t.user_attrs["reason"] if command == "ablate" else t.user_attrs["error"]
        assert reason == info["reason"]
    queued = [t for t in trials if t.state.name == "WAITING"]
    if command == "ablate":
        assert {t.user_attrs["status"] for t in stopped} == {"KILLED"}
        assert sorted(t.user_attrs["retry_of"] for t in queued) == sorted(t.number for t in stopped)
    else:
        assert queued == []
