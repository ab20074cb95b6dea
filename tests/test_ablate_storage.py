"""`catlab ablate STUDY --storage URL`: a grid's cells as trials of one Optuna study on a shared storage.

Two worker processes on one journal file train each cell exactly once; a failed cell ends FAIL, the grid goes
on and the next start retries it once; a worker killed mid-cell is replaced and its cell resumes from its
checkpoint; a bad --storage is one line. Cells are tiny (2-6 steps), so this is about the machinery.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
import torch

from catlab.cli import main
from catlab.tracking import MLflow
from conftest import FAST
from experiments import STUDIES, Study
from experiments.grid import build_grid, study_dir
from experiments.grid_storage import GridPlan, optuna_name
from experiments.runner import ablate

STUDY = "ablation-consistency"
TINY = FAST + ["train.steps=2", "data.n=64", "train.batch=4"]
NAMES = [f"consistency={a},seed={s}" for s in range(2) for a in ("on", "off")]
# analysis.study and reports.build stand-ins that record each call (one line per call) in analysis.log
WRAPPER = textwrap.dedent("""
    import sys, types
    if __name__ == "__main__":
        def record(*a, **k):
            with open("analysis.log", "a") as f:
                f.write(repr(a) + "\\n")
        for name, fn in (("analysis.study", "evaluate_study"), ("reports.build", "report")):
            mod = types.ModuleType(name)
            setattr(mod, fn, record)
            sys.modules[name] = mod
        from catlab.cli import main
        sys.exit(main(sys.argv[1:]))
""")


def load(journal, study=STUDY, seeds=2, overrides=TINY):
    cells = build_grid(STUDIES[study], "cpu", seeds, overrides)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=optuna_name(study, "cpu", cells), storage=storage)


def cells_csv(workdir, study=STUDY, overrides=TINY):
    with open(workdir / study_dir(study, "cpu", overrides) / "cells.csv") as f:
        return {r["cell"]: r for r in csv.DictReader(f)}


def worker(workdir, *argv, script="ablate.py"):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(workdir / script), "ablate", *argv], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_worker_queues_the_cells_in_the_grid_order():
    plan = GridPlan(build_grid(STUDIES[STUDY], "cpu", 2, TINY), "cpu", None, "grid")
    study, cells = optuna.create_study(), []
    for _ in NAMES:
        assert plan.next_action(study) == "run"
        cells.append(study.ask().suggest_categorical("cell", NAMES))
    assert cells == NAMES and plan.next_action(study) == "wait"      # every cell running: nothing more to start


def test_two_workers_on_one_journal_run_each_cell_once(workdir, monkeypatch, capsys):
    (workdir / "ablate.py").write_text(WRAPPER)
    MLflow().experiment_id(STUDY)                # create the MLflow store before two processes race to
    journal = workdir / "shared" / "grid.journal"
    argv = [STUDY, "--seeds", "2", *TINY, "--storage", str(journal)]
    procs = [worker(workdir, *argv) for _ in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(logs)[-6000:]

    # every cell trained once, by one of the two workers, as one COMPLETE trial; nothing else in the study
    starts = [ln.split()[2] for log in logs for ln in log.splitlines() if " start " in ln]
    assert sorted(starts) == sorted(NAMES), logs
    study = load(journal)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert [t.params["cell"] for t in trials] == NAMES                 # trial k holds cell k (the grid's order)
    rows = cells_csv(workdir)
    assert list(rows) == NAMES and {r["status"] for r in rows.values()} == {"FINISHED"}
    for t in trials:
        info = json.loads((workdir / t.user_attrs["run_dir"] / "run.json").read_text())
        assert info["status"] == "FINISHED" and info["step"] == 2
        assert rows[t.params["cell"]]["mlflow_run_id"] == t.user_attrs["mlflow_run_id"] == info["mlflow_run_id"]

    # one parent run (FINISHED), one nested run per cell; the analysis ran once, in one of the two workers
    info = json.loads((workdir / study_dir(STUDY, "cpu", TINY) / "study.json").read_text())
    assert info["optuna_study"] == study.study_name and info["storage"] == str(journal)
    runs = MLflow().runs(STUDY)
    parent = runs[runs["run_id"] == info["parent_run_id"]]
    children = runs[runs["tags.mlflow.parentRunId"] == info["parent_run_id"]]
    assert list(parent["status"]) == ["FINISHED"] and len(runs) == 5
    assert sorted(children["tags.cell"]) == sorted(NAMES) and set(children["status"]) == {"FINISHED"}
    # (a command that found the grid done, had it started that late, would analyse again, as a local re-run does)
    late = sum("4 cells as trials" in log and "; 4 finished;" in log for log in logs)
    assert (workdir / "analysis.log").read_text().count("\n") == 2 * (1 + late)   # evaluate_study + report
    assert sum("analysis: left to the command that saw" in log for log in logs) == 1 - late

    # again, in this process, with a twin of cell 0 queued (what a sampler race leaves): nothing trains
    calls = []
    for name, fn in (("analysis.study", "evaluate_study"), ("reports.build", "report")):
        monkeypatch.setattr(__import__(name, fromlist=[fn]), fn, lambda *a, _n=fn, **k: calls.append(_n))
    study.enqueue_trial({"cell": NAMES[0]})
    capsys.readouterr()
    assert ablate(STUDY, seeds=2, overrides=TINY, storage=str(journal)) == 0
    out = capsys.readouterr().out
    assert f"[1/4] skipped {NAMES[0]}: held by trial 0" in out and " start " not in out
    assert [t.state.name for t in load(journal).get_trials()] == ["COMPLETE"] * 4 + ["PRUNED"]
    assert calls == ["evaluate_study", "report"]
    assert len(MLflow().runs(STUDY)) == 5


def test_a_failed_cell_is_failed_the_grid_goes_on_and_the_next_start_retries_it(workdir, monkeypatch, capsys):
    """gamma = 1e300 is a valid config whose R1 term overflows at step 1 (as in test_experiments)."""
    st = Study("test-failing", "one arm overflows", {}, {"cpu": {}},
               {"reg": {"boom": {"loss.reg.gamma": 1e300}, "ok": {}}}, seeds=1)
    monkeypatch.setitem(STUDIES, st.name, st)
    for name, fn in (("analysis.study", "evaluate_study"), ("reports.build", "report")):
        monkeypatch.setattr(__import__(name, fromlist=[fn]), fn, lambda *a, **k: None)
    journal = workdir / "grid.journal"
    over = TINY + ["run.mlflow=false"]
    assert ablate(st.name, overrides=over, storage=str(journal)) == 1
    out = capsys.readouterr().out
    assert "[1/2] failed reg=boom,seed=0" in out and "non-finite" in out
    assert "[2/2] finished reg=ok,seed=0" in out and "1 of 2 cells did not finish: reg=boom,seed=0" in out
    rows = cells_csv(workdir, st.name)
    assert rows["reg=boom,seed=0"]["status"] == "FAILED" and "non-finite" in rows["reg=boom,seed=0"]["reason"]
    assert rows["reg=ok,seed=0"]["status"] == "FINISHED"
    study = load(journal, st.name, 1, over)
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "COMPLETE"]

    assert main(["ablate", st.name, *over, "--storage", str(journal)]) == 1     # the failed cell, once more
    out = capsys.readouterr().out
    assert "1 failed before and re-queued" in out and out.count(" start ") == 1 and "start reg=boom" in out
    trials = load(journal, st.name, 1, over).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "FAIL"]
    assert trials[2].params["cell"] == "reg=boom,seed=0" and trials[2].user_attrs["retry_of"] == 0


def test_a_killed_worker_is_replaced_and_its_cell_resumes(workdir):
    (workdir / "ablate.py").write_text(WRAPPER)
    over = FAST + ["train.steps=6", "train.ckpt_every=2", "data.n=64", "train.batch=4", "run.mlflow=false"]
    journal = workdir / "grid.journal"
    argv = [STUDY, "--seeds", "1", *over, "--storage", str(journal)]
    proc = worker(workdir, *argv)
    deadline = time.time() + 150
    while not list(workdir.glob("studies/*/runs/*/snapshots/ema_000002.pt")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    snapshot = next(workdir.glob("studies/*/runs/*/snapshots/ema_000002.pt"))
    written = snapshot.stat().st_mtime_ns
    assert [t.state.name for t in load(journal, seeds=1, overrides=over).get_trials()] == ["RUNNING"]
    again = worker(workdir, *argv)
    log = again.communicate(timeout=240)[0]
    assert again.returncode == 0, log[-3000:]
    assert "trial 0 (consistency=on,seed=0) fail: its worker died; re-queued" in log
    trials = load(journal, seeds=1, overrides=over).get_trials()
    assert [(t.state.name, t.params["cell"]) for t in trials] == \
        [("FAIL", NAMES[0]), ("COMPLETE", NAMES[0]), ("COMPLETE", NAMES[1])]      # the re-queued cell first
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].user_attrs["run_dir"] == str(
        snapshot.parent.parent.relative_to(workdir))
    assert snapshot.stat().st_mtime_ns == written                  # resumed from its checkpoint, not restarted
    metrics = (snapshot.parent.parent / "metrics.jsonl").read_text()
    assert metrics.count('"name": "d_loss"') == 3                 # steps 2, 4, 6 logged once each
    assert {r["status"] for r in cells_csv(workdir, overrides=over).values()} == {"FINISHED"}


# A worker that dies in its cell's 4th step (after the checkpoint of step 2), once the file `go` exists.
DOOMED = textwrap.dedent("""
    import os, pathlib, signal, time
    import catlab.trainer as trainer
    update = trainer.update_ema
    def update_then_die(ema, net, step, *args):
        update(ema, net, step, *args)
        if step == 3:
            while not pathlib.Path("go").exists():
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
    trainer.update_ema = update_then_die
""") + WRAPPER


def test_a_running_worker_takes_over_the_cell_of_a_worker_that_dies_beside_it(workdir):
    """Not a restart: the survivor, in its loop, finds the dead worker's trial, re-queues it and resumes the cell."""
    (workdir / "ablate.py").write_text(WRAPPER)
    (workdir / "doomed.py").write_text(DOOMED)
    over = FAST + ["train.steps=6", "train.ckpt_every=2", "data.n=64", "train.batch=4", "run.mlflow=false"]
    journal = workdir / "grid.journal"
    argv = [STUDY, "--seeds", "1", *over, "--storage", str(journal)]
    doomed = worker(workdir, *argv, script="doomed.py")

    def wait_for(pattern: str, n: int) -> list:
        deadline = time.time() + 150
        while len(found := list(workdir.glob(pattern))) < n and time.time() < deadline:
            time.sleep(0.1)
        assert len(found) >= n, f"no {pattern}"
        return found
    first = wait_for("studies/*/runs/*/ckpt/last.pt", 1)[0].parent.parent     # the doomed worker's cell, step 2
    survivor = worker(workdir, *argv)
    try:
        wait_for("studies/*/runs/*/config.json", 2)                           # the survivor trains its own cell
        (workdir / "go").touch()
        assert doomed.wait(timeout=60) == -signal.SIGKILL, doomed.communicate()[0][-3000:]
        log = survivor.communicate(timeout=120)[0]
    finally:
        for proc in (doomed, survivor):
            if proc.poll() is None:
                proc.kill()
    assert survivor.returncode == 0, log[-3000:]
    assert f"trial 0 ({NAMES[0]}) fail: its worker died; re-queued" in log, log[-3000:]
    trials = load(journal, seeds=1, overrides=over).get_trials()
    assert [(t.state.name, t.params["cell"]) for t in trials] == \
        [("FAIL", NAMES[0]), ("COMPLETE", NAMES[1]), ("COMPLETE", NAMES[0])]
    assert trials[2].user_attrs["run_dir"] == str(first.relative_to(workdir))
    assert (first / "metrics.jsonl").read_text().count('"name": "d_loss"') == 3   # steps 2, 4, 6: resumed at 2


@pytest.mark.parametrize("storage, needle", [
    ("sqlite://", "--storage must be a file for sqlite"),
    ("nosuchdb://host/db", "--storage must be a reachable database"),
    ("a-file/grid.journal", "--storage must be a journal file in a writable folder"),
])
def test_a_bad_storage_is_one_line_before_anything_runs(workdir, capsys, storage, needle):
    (workdir / "a-file").write_text("not a folder")
    assert main(["ablate", STUDY, *TINY, "--storage", storage]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and f"storage={storage!r}" in err and "\n" not in err
    assert not (workdir / "studies").exists() and not (workdir / "mlflow.db").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the test stops the grid at the check of train.device=cuda")
@pytest.mark.parametrize("storage, warned", [("sqlite:///grid.db", True), ("grid.journal", False)])
def test_sqlite_under_parallel_workers_is_warned_about(workdir, capsys, storage, warned):
    # train.device=cuda fails the check before any run (there is no GPU in CI), after the storage is opened
    assert main(["ablate", STUDY, *TINY, "--storage", storage, "--workers", "2", "train.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert ("warning: sqlite storage locks under parallel workers" in err) is warned, err
    assert "train.device must be" in err


def test_a_bad_storage_exits_2_from_the_command_line(workdir):
    out = subprocess.run([sys.executable, "-m", "catlab", "ablate", STUDY, "--storage", "nosuchdb://x/y"],
                         cwd=workdir, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--storage must be" in out.stderr, out.stderr
