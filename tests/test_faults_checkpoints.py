"""Faults around checkpoints: SIGKILL at random points (the rerun ends bitwise like a straight run),
checkpoint writes that fail part-way (the old file stays, no temp file), and a damaged last checkpoint
(resume from the one before; none readable: one line naming the files)."""
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from catlab import checkpoint, files
from catlab.checkpoint import atomic_save, safe_load
from catlab.cli import main
from catlab.config import load_config
from catlab.errors import RunFailed
from catlab.trainer import Hooks, train
from conftest import SMALL, _metrics, state_equal

STATE_KEYS = ("G", "D", "G_ema", "opt_g", "opt_d", "rng", "data", "images_seen", "step")


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


def test_atomic_text_failing_part_way_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    """run.json, config.json, cells.csv, study.json and the analysis' kept results are all written this way."""
    path = tmp_path / "run" / "run.json"
    files.atomic_text(path, '{"step": 1}')

    def half_write(self, text):                                         # half the bytes, then a full disk
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")
    for shared in (False, True):
        with monkeypatch.context() as m:
            m.setattr(Path, "write_text", half_write)
            with pytest.raises(OSError, match="No space left"):
                files.atomic_text(path, '{"step": 2}', shared=shared)
        assert path.read_text() == '{"step": 1}' and not list(path.parent.glob("*.tmp"))
    assert files.temp_path(path) == files.temp_path(path)               # fixed: the next write overwrites it
    assert files.temp_path(path, shared=True) != files.temp_path(path, shared=True)


def test_the_shared_real_cache_survives_a_second_worker_writing_it_at_the_same_time(tmp_path, monkeypatch):
    """Two grid or search workers that analyse their first run at once both build the real subset and both
    write catlab-real-<key>.pt: each write publishes a whole file (a shared temp name made one fail)."""
    from analysis import inputs
    monkeypatch.setenv("CATLAB_CACHE", str(tmp_path))
    data = load_config(SMALL).data
    real_save, writers = torch.save, []

    def save_while_another_worker_writes(obj, f, *args, **kwargs):
        if not writers:                                       # the second worker runs inside the first's write
            writers.append(2)
            inputs._REAL.clear()
            inputs.real_pyramid(data, 8, [4, 8])
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(inputs, "_REAL", {})                 # the in-process memo: empty here, restored after
    monkeypatch.setattr(checkpoint.torch, "save", save_while_another_worker_writes)
    first = inputs.real_pyramid(data, 8, [4, 8])
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    (path,) = (tmp_path / "fidelity").glob("catlab-real-*.pt")
    kept = safe_load(path)["images"]
    assert writers == [2] and not list(path.parent.glob("*.tmp"))
    assert [torch.equal(a, b) for a, b in zip(first, kept, strict=True)] == [True, True]


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
