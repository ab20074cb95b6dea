"""catlab search: parallel workers on a journal file and on PostgreSQL, pruning, a killed worker.

Trials are tiny (16-px shapes, batch 8, 2-6 steps, FID on 32 samples), so every number here is about the
search machinery, not about GANs: trial counts and states, nested MLflow runs, outputs, resume.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from catlab.errors import UserError
from catlab.tracking import MLflow
from experiments import STUDIES, Study
from experiments.search import search, search_name
from experiments.storage import resolve

STUDY = "ablation-consistency-weight"
NAME = search_name(STUDY)
TINY = ["data.n=128", "data.resolution=16", "train.batch=8", "train.log_every=2", "train.ckpt_every=2",
        "train.sample_every=100", "run.progress=false"]
EVAL = {"n_eval": 32, "n_step": 16, "eval_every": 2}
states = lambda study: sorted(t.state.name for t in study.get_trials())  # noqa: E731


def load(storage: str, name: str = NAME):
    s = resolve(storage, STUDY).url if "://" in storage else optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage))
    return optuna.load_study(study_name=name, storage=s)


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory):
    """One MLflow store for the module (creating a sqlite store costs ~10 s); each search has its own parent run."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def env(workdir, mlflow_db, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    return workdir


def trial_runs(study, name: str = NAME):
    """(parent runs, nested trial runs) of a search: the runs under the parent named in the study's user_attrs."""
    runs = MLflow().runs(name)
    parent = study.user_attrs["mlflow_parent_run_id"]
    return runs[runs["run_id"] == parent], runs[runs["tags.mlflow.parentRunId"] == parent]


def check_parallel(study, n: int, out: str, err: str) -> None:
    """n COMPLETE trials, nothing else; one parent run; one nested run per trial, tagged with its number and state.
    A failure shows what the workers printed (each trial's line, with the reason of a FAIL)."""
    assert states(study) == ["COMPLETE"] * n, out + err
    parent, trials = trial_runs(study)
    assert len(parent) == 1 and parent.iloc[0]["tags.kind"] == "search" and parent.iloc[0]["status"] == "FINISHED"
    assert set(trials["tags.kind"]) == {"trial"} and len(trials) == n
    assert sorted(trials["tags.trial"].astype(int)) == list(range(n))
    assert set(trials["tags.trial_state"]) == {"COMPLETE"} and set(trials["status"]) == {"FINISHED"}
    assert {t.user_attrs["mlflow_run_id"] for t in study.get_trials()} == set(trials["run_id"])
    assert trials["metrics.fid_domain_32_s4"].notna().all()
    assert "locked" not in err and "MLflow at" not in err and "Traceback" not in err


def both_workers(study) -> None:
    """Each of the two worker processes completed trials (a worker tags its trials with its id and pid)."""
    workers = [t.user_attrs["worker"] for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len({w["id"] for w in workers}) == len({w["pid"] for w in workers}) == 2, workers
    assert os.getpid() not in {w["pid"] for w in workers}                    # worker processes, not this one


def test_journal_two_workers(env, capfd):
    assert search(STUDY, trials=3, workers=2, overrides=TINY + ["train.steps=2"], **EVAL) == 0
    out, err = capfd.readouterr()
    study = load(f"optuna/{STUDY}.journal")
    check_parallel(study, 3, out, err)
    both_workers(study)
    hashes = {t.user_attrs["config_hash"] for t in study.get_trials()}
    assert all((env / t.user_attrs["run_dir"] / "ckpt" / "last.pt").exists() for t in study.get_trials())
    assert len(hashes) == 3
    outdir = env / "reports" / "out" / NAME
    for f in ("trials.csv", "best.json", "history.png", "history.pdf", "parallel_coordinate.png"):
        assert (outdir / f).is_file(), f
    assert "importances: skipped, 3 COMPLETE trial(s) (needs >= 4)" in out
    with pytest.raises(UserError, match="holds search-ablation-consistency-weight with another metrics"):
        search(STUDY, trials=4, overrides=TINY + ["train.steps=2"], **{**EVAL, "n_eval": 16})


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    cands = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return cands[-1].parent if cands else None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on a free port, its unix socket in a temp dir; yields its URL."""
    bindir = _pg_bin()
    if bindir is None:
        why = "PostgreSQL is not installed (no initdb in PATH or /usr/lib/postgresql/*/bin)"
        if os.environ.get("CATLAB_REQUIRE_POSTGRES"):                        # .ci/run: no skipping in CI
            pytest.fail(f"{why}, and CATLAB_REQUIRE_POSTGRES is set")
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="catlab-pg-"))         # not under pytest's 0700 tmp: the server user reads it
    as_user = []
    if os.geteuid() == 0:                                      # initdb refuses root: run the server as postgres
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *a: subprocess.run([*as_user, *a], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-o",
            f"-p {port} -k {root} -c listen_addresses='' -c fsync=off", "start")
        yield f"postgresql://postgres@/postgres?host={root}&port={port}"       # the driver is filled in
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_two_workers(env, postgres, capfd):
    assert search(STUDY, trials=2, workers=2, storage=postgres, overrides=TINY + ["train.steps=2"], **EVAL) == 0
    out, err = capfd.readouterr()
    check_parallel(load(postgres), 2, out, err)
    both_workers(load(postgres))
    assert not (env / "optuna").exists()


def test_storage_urls_are_shown_without_their_password():
    spec = resolve("postgresql://catlab:s3cret@db.example:5432/optuna", STUDY)
    assert "s3cret" in spec.url                                    # what the workers connect with
    assert "s3cret" not in str(spec) and "catlab:***@db.example:5432/optuna" in str(spec)
    assert str(resolve("runs/x.journal", STUDY)) == "runs/x.journal"


def _prune_space(trial) -> dict:
    """Trial 1 trains with a huge generator lr (its FID explodes). Trials 0 and 2 differ only in when they would
    save a sample grid (another run dir, the same numbers), so the median pruner keeps the second."""
    lr = 10.0 if trial.number == 1 else 1e-3
    return {"train.lr_g": trial.suggest_float("train.lr_g", lr, lr), "train.sample_every": 100 + trial.number}


def test_pruning_stops_the_bad_region(env):
    st = Study(name="test-prune", summary="test only", base={}, profiles=STUDIES[STUDY].profiles,
               axes={"lr": {"any": {}}}, seeds=1, space=_prune_space)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    overrides = [o for o in TINY if not o.startswith("train.sample_every")] + ["train.steps=4"]
    assert search(st, trials=2, overrides=overrides, pruner=pruner, **EVAL) == 0
    study = load("optuna/test-prune.journal", "search-test-prune")
    t = study.get_trials()
    assert [x.state.name for x in t] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert list(t[1].intermediate_values) == [2] and t[1].user_attrs["steps"] == 2   # stopped at the first report
    assert t[0].intermediate_values == t[2].intermediate_values and t[0].values == t[2].values
    assert t[1].intermediate_values[2] > t[0].intermediate_values[2]                 # worse than the median
    _, runs = trial_runs(study, "search-test-prune")
    pruned = runs[runs["tags.trial"] == "1"].iloc[0]
    assert pruned["tags.trial_state"] == "PRUNED" and pruned["status"] == "KILLED"
    assert pruned["tags.reason"].startswith("pruned at step 2 (fid_domain_16_s4=")
    assert runs["metrics.fid_domain_16_s4"].notna().all() and len(runs) == 3


def test_killed_worker_fails_its_trial_and_a_rerun_completes(env):
    workdir = env
    steps = TINY + ["train.steps=6"]
    script = workdir / "one.py"
    script.write_text(textwrap.dedent(f"""
        from experiments.search import search
        search({STUDY!r}, trials=1, overrides={steps!r}, n_eval=32, n_step=16, eval_every=2)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 150
    while not list(workdir.glob("studies/*/runs/*/ckpt/last.pt")) and time.time() < deadline:
        assert proc.poll() is None, "the search ended before it could be killed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert states(load(f"optuna/{STUDY}.journal")) == ["RUNNING"]           # killed mid-trial
    assert search(STUDY, trials=1, overrides=steps, n_eval=32, n_step=16, eval_every=2) == 0
    study = load(f"optuna/{STUDY}.journal")
    killed, retry = study.get_trials()
    assert (killed.state.name, retry.state.name) == ("FAIL", "COMPLETE")
    assert retry.params == killed.params and retry.user_attrs["retry_of"] == 0
    assert retry.user_attrs["run_dir"] == killed.user_attrs["run_dir"]          # the same run dir, resumed
    metrics = (workdir / retry.user_attrs["run_dir"] / "metrics.jsonl").read_text()
    assert metrics.count('"name": "d_loss"') == 3                             # steps 2, 4, 6 logged once each
    _, runs = trial_runs(study)
    assert len(runs) == 1 and runs.iloc[0]["tags.trial"] == "1" and runs.iloc[0]["tags.retry_of"] == "0"
    assert runs.iloc[0]["tags.trial_state"] == "COMPLETE" and runs.iloc[0]["status"] == "FINISHED"
    assert runs.iloc[0]["tags.reason"] == "its search worker died"               # ended KILLED before the retry


def _should_prune(pruner, finished: int, step: int) -> bool:
    """A fresh trial that reports a value worse than `finished` COMPLETE trials at `step`: pruned?"""
    study = optuna.create_study(pruner=pruner)
    for _ in range(finished):
        t = study.ask()
        for s in range(0, 101, 10):
            t.report(1.0, s)
        study.tell(t, 1.0)
    t = study.ask()
    t.report(9.0, step)
    return t.should_prune()


def test_the_default_pruners_are_the_documented_ones():
    """median: 3 startup trials, then a warm-up of half the steps; hyperband: Optuna's; none and two
    objectives: never."""
    from types import SimpleNamespace

    from experiments.search_worker import make_pruner
    plan = lambda pruner, multi=False: SimpleNamespace(pruner=pruner, multi=multi, every=10)  # noqa: E731
    median = make_pruner(plan("median"), 100)
    assert not _should_prune(median, 2, 60)                       # fewer than 3 COMPLETE trials
    assert not _should_prune(median, 3, 40) and _should_prune(median, 3, 60)   # warm-up: steps // 2
    assert isinstance(make_pruner(plan("hyperband"), 100), optuna.pruners.HyperbandPruner)
    for p in (make_pruner(plan("none"), 100), make_pruner(plan("median", multi=True), 100)):
        assert not _should_prune(p, 3, 60)
