"""experiments: the study registry and `catlab ablate` (dry run, validation, kill + resume, FAILED cells)."""
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types

import pytest

from catlab.cli import main
from catlab.config import ConsistencyConfig, load_config
from catlab.errors import UserError
from conftest import FAST
from experiments import STUDIES, Study, register
from experiments.grid import build_grid, study_dir
from experiments.runner import ablate

TINY = FAST + ["train.steps=2", "data.n=64", "train.batch=4"]
NAMES = ["ablation-consistency", "ablation-scale-weights", "ablation-consistency-stage-weights",
         "ablation-consistency-weight", "ablation-anchor", "ablation-distance", "ablation-discriminator",
         "ablation-model-size", "calibration-consistency", "calibration-quality"]
CELL_COLUMNS = ["cell", "seed", "consistency", "run_dir", "status", "reason", "config_hash", "mlflow_run_id"]


def _out(workdir, study, overrides=TINY):
    """The study's outputs dir for a run with these overrides (studies/<study>@<variant>)."""
    return workdir / study_dir(study, "cpu", overrides)


def _cells_csv(workdir, study):
    with open(_out(workdir, study) / "cells.csv") as f:
        return list(csv.DictReader(f))


def _stub_analysis(monkeypatch, calls):
    """Fast stand-ins for analysis.study / reports.build (the real path is tested once, below)."""
    for name, fn_name in (("analysis.study", "evaluate_study"), ("reports.build", "report")):
        mod = types.ModuleType(name)
        setattr(mod, fn_name, lambda *a, _n=fn_name, **k: calls.append((_n, a, k)) or 0)
        monkeypatch.setitem(sys.modules, name, mod)


# ---- the registry -----------------------------------------------------------------------------------
def test_registry_holds_the_ten_studies_and_refuses_duplicates():
    assert list(STUDIES) == NAMES
    with pytest.raises(ValueError, match="already registered"):
        register(STUDIES["ablation-consistency"])
    for name, st in STUDIES.items():
        calibrated = name in ("calibration-consistency", "calibration-quality", "ablation-consistency")   # set their own cpu recipe
        assert st.name == name and set(st.profiles) == {"cpu", "gpu"} and st.summary
        assert st.seeds == {"ablation-consistency": 6, "calibration-quality": 5}.get(name, 3)
        assert f"catlab ablate {name}" in st.doc and "wall time" in st.doc and "outcome" in st.doc.lower()
        assert st.profiles["cpu"]["model.size"] == "tiny"
        if not calibrated:
            assert st.profiles["cpu"]["data.name"] == "shapes"
            assert "train.steps" not in {**st.base, **st.profiles["cpu"]}    # the config default
        else:
            assert st.profiles["cpu"]["data.name"] == "layouts"
        assert st.profiles["gpu"]["train.precision"] == "bf16" and st.profiles["gpu"]["data.name"] == "cifar10"
    on = STUDIES["ablation-consistency"].axes["consistency"]
    assert on == {"on": {}, "off": {"loss.consistency.weight": 0.0}}     # on: the profile's lambda
    cpu, gpu = (build_grid(STUDIES["ablation-consistency"], p, 1)[0].cfg.loss for p in ("cpu", "gpu"))
    assert cpu.consistency.weight == 30.0 and cpu.reg.kind == "none"      # calibration-consistency's pick
    assert build_grid(STUDIES["ablation-consistency"], "cpu", 1)[0].cfg.train.steps == 300
    assert gpu.consistency.weight == 0.1 and (gpu.reg.kind, gpu.reg.gamma) == ("approx", 0.1)
    assert len(STUDIES["ablation-scale-weights"].arms()) == 8
    assert len(STUDIES["ablation-anchor"].arms()) == 4
    assert list(STUDIES["ablation-consistency-weight"].axes["weight"]) == ["0", "0.01", "0.03", "0.1", "0.3", "1", "3", "10"]


def test_studies_import_no_optuna_and_spaces_give_valid_configs():
    code = "import sys, experiments; print('optuna' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, st in STUDIES.items():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(3):
            trial = study.ask()
            overrides = st.space(trial)
            load_config({**st.base, **st.profiles["cpu"], **overrides})
            for key in ("loss.consistency.weight", "train.lr_g", "train.lr_d", "loss.reg.gamma"):
                if key in trial.distributions:
                    assert trial.distributions[key].log, f"{name}: {key} must be log-uniform"
        assert trial.params and set(trial.params) == set(overrides)


# ---- dry run and validation -------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_dry_run_prints_every_cell_and_trains_nothing(workdir, capsys, name):
    st = STUDIES[name]
    axis_keys = {k for labels in st.axes.values() for over in labels.values() for k in over}
    tiny = [o for o in TINY if o.split("=")[0] not in axis_keys]      # an axis' keys cannot be overridden
    for profile in ("cpu", "gpu"):
        assert main(["ablate", name, *tiny, "--profile", profile, "--dry-run"]) == 0
        out = capsys.readouterr().out
        cells = build_grid(st, profile, st.seeds, tiny)
        assert len(cells) == len(st.arms()) * st.seeds
        assert f"= {len(cells)} cells" in out
        for c in cells:
            line = next(ln for ln in out.splitlines() if ln.startswith(c.name + " "))
            assert c.cfg.hash() in line and all(label in line for label in c.arm.values())
    assert not (workdir / "studies").exists() and not (workdir / "mlflow.db").exists()


def test_dry_run_of_ablation_consistency(workdir, capsys):
    assert ablate("ablation-consistency", dry_run=True, overrides=TINY) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ablation-consistency (profile cpu): 2 arms x 6 seeds = 12 cells")
    assert "train.steps=2" in lines[1] and "data.n=64" in lines[1]       # shared changes, shown once
    rows = [ln.split() for ln in lines[3:15]]
    assert [r[0] for r in rows] == [f"consistency={a},seed={s}" for s in range(6) for a in ("on", "off")]
    assert [r[4] for r in rows] == ["loss.consistency.weight=30", "loss.consistency.weight=0"] * 6  # the profile lambda
    assert len({r[3] for r in rows}) == 12                                 # twelve distinct configs


@pytest.mark.parametrize("argv, needle", [
    (["ablate", "no-such-study"], "ablation-consistency, ablation-scale-weights"),
    (["ablate", "ablation-consistency", "train.steps=-1"], "train.steps must be > 0"),
    (["ablate", "ablation-consistency", "train.nope=1"], "train.nope"),
    (["ablate", "ablation-consistency", "seed=4"], "use --seeds N"),
    (["ablate", "ablation-consistency", "--seeds", "0"], "--seeds must be"),
    (["ablate", "ablation-consistency", "--workers", "0"], "--workers must be"),
    (["ablate", "ablation-consistency", "--storage", "sqlite://"], "--storage must be a file for sqlite"),
])
def test_bad_input_is_one_line_before_anything_runs(workdir, capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert not (workdir / "studies").exists() and not (workdir / "mlflow.db").exists()


def test_an_override_invalid_for_one_cell_only_names_that_cell(workdir, monkeypatch):
    st = Study("test-stages", "K = 3 or 5", {}, {"cpu": {}}, {"K": {"3": {"model.stages": 3},
                                                                     "5": {"model.stages": 5}}}, seeds=1)
    monkeypatch.setitem(STUDIES, st.name, st)
    with pytest.raises(UserError, match=r"model.stages must be .* \(in cell K=5,seed=0 of test-stages"):
        ablate(st.name, overrides=TINY + ["data.resolution=8"])
    assert not (workdir / "studies").exists()


# ---- running: kill mid-grid, resume, idempotent -------------------------------------------------------
WRAPPER = textwrap.dedent("""
    import sys, types
    if __name__ == "__main__":            # spawned workers import this file again
        for name, fn in (("analysis.study", "evaluate_study"), ("reports.build", "report")):
            mod = types.ModuleType(name)
            setattr(mod, fn, lambda *a, **k: 0)
            sys.modules[name] = mod
        from catlab.cli import main
        sys.exit(main(sys.argv[1:]))
""")


def _finished(runs_dir) -> int:
    n = 0
    for path in runs_dir.glob("*/run.json"):
        try:
            n += json.loads(path.read_text()).get("status") == "FINISHED"
        except (OSError, ValueError):
            pass
    return n


def test_killed_grid_resumes_only_missing_cells_under_one_parent(workdir, monkeypatch, capsys):
    import mlflow
    study = "ablation-consistency"
    script = workdir / "ablate.py"
    script.write_text(WRAPPER)
    argv = [sys.executable, str(script), "ablate", study, *TINY, "--seeds", "3"]
    runs_dir = workdir / "studies" / study / "runs"
    (workdir / "tmp").mkdir()                  # the killed grid's private journal stays in the test's folder
    env = {**os.environ, "TMPDIR": str(workdir / "tmp")}
    proc = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 300
    while proc.poll() is None and _finished(runs_dir) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    log = proc.communicate()[0]
    assert proc.returncode == -9, log[-3000:]
    done_before = _finished(runs_dir)
    assert 2 <= done_before < 6
    assert json.loads((_out(workdir, study) / "study.json").read_text())["parent_run_id"]

    # the same command again (cells of seeds 1-2 now in 2 worker processes): only the missing cells train
    again = subprocess.run(argv + ["--workers", "2"], cwd=workdir, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"6 cells, {done_before} already finished, {6 - done_before} to run" in again.stdout, again.stdout
    assert again.stdout.count("] start ") == again.stdout.count("] finished ") == 6 - done_before, again.stdout

    info = json.loads((_out(workdir, study) / "study.json").read_text())
    rows = _cells_csv(workdir, study)
    assert list(rows[0]) == CELL_COLUMNS and [r["status"] for r in rows] == ["FINISHED"] * 6
    assert info["command"] == f"catlab ablate {study} --profile cpu --seeds 3 " + " ".join(TINY)

    def check_mlflow():
        runs = mlflow.search_runs(experiment_names=[study])
        parents = runs[runs["tags.mlflow.parentRunId"].isna()]
        assert list(parents["run_id"]) == [info["parent_run_id"]] and list(parents["status"]) == ["FINISHED"]
        children = mlflow.search_runs(experiment_names=[study],
                                      filter_string=f"tags.mlflow.parentRunId = '{info['parent_run_id']}'")
        assert (children["status"] == "FINISHED").sum() == 6 and "RUNNING" not in set(children["status"])
        finished = children[children["status"] == "FINISHED"]
        assert sorted(finished["tags.cell"]) == sorted(r["cell"] for r in rows)
        assert sorted(finished["run_id"]) == sorted(r["mlflow_run_id"] for r in rows)
        assert set(finished["tags.profile"]) == {"cpu"} and set(finished["tags.study"]) == {study}
        assert set(finished["tags.consistency"]) == {"on", "off"}
    check_mlflow()

    # a third time, in this process: nothing trains, the parent is reused, the analysis is called once
    calls = []
    _stub_analysis(monkeypatch, calls)
    capsys.readouterr()
    assert ablate(study, seeds=3, overrides=TINY) == 0
    out = capsys.readouterr().out
    assert "6 cells, 6 already finished, 0 to run" in out and "] start " not in out
    assert [c[0] for c in calls] == ["evaluate_study", "report"]
    assert str(calls[0][1][0]) == str(study_dir(study, "cpu", TINY)) and calls[1][1][0] == study_dir(study, "cpu", TINY).name
    check_mlflow()


def test_children_left_running_by_a_killed_grid_are_closed(workdir):
    """A grid killed between creating a cell's MLflow run and writing its run.json leaves an orphan."""
    from catlab.tracking import MLflow
    from experiments.runner import reap_orphans
    ml = MLflow()
    parent = ml.create_run("orphans", "orphans")
    orphan = ml.create_run("orphans", "lost", parent_run_id=parent)
    other = ml.create_run("orphans", "elsewhere")
    reap_orphans(ml, "orphans", parent, [])
    assert (ml.status(orphan), ml.status(other), ml.status(parent)) == ("KILLED", "RUNNING", "RUNNING")


# ---- a failing cell ---------------------------------------------------------------------------------
def test_a_failing_cell_is_failed_the_grid_goes_on_and_the_exit_code_is_1(workdir, monkeypatch, capsys):
    """gamma = 1e300 is a valid config, but its R1 term overflows float32 at step 1: a run-time failure.
    The one FINISHED cell then goes through the real analysis (cheap settings) and the real report."""
    import mlflow
    st = Study("test-failing", "one arm overflows", {}, {"cpu": {}},
               {"reg": {"boom": {"loss.reg.gamma": 1e300}, "ok": {}}}, seeds=1)
    monkeypatch.setitem(STUDIES, st.name, st)
    quality = pytest.importorskip("analysis.study")
    import functools
    from catlab.profiles import PROFILES
    monkeypatch.setitem(PROFILES["cpu"].analysis, "n", 32)
    monkeypatch.setattr(quality, "evaluate_study", functools.partial(
        quality.evaluate_study, metrics=("fid",), distances=("l2",), drift=False, curve=False, progress=False))
    assert ablate(st.name, overrides=TINY) == 1
    out = capsys.readouterr().out
    assert "[1/2] failed reg=boom,seed=0" in out and "non-finite" in out
    assert "[2/2] finished reg=ok,seed=0" in out
    rows = {r["cell"]: r for r in _cells_csv(workdir, st.name)}
    assert rows["reg=boom,seed=0"]["status"] == "FAILED" and "non-finite" in rows["reg=boom,seed=0"]["reason"]
    assert rows["reg=ok,seed=0"]["status"] == "FINISHED"
    runs = mlflow.search_runs(experiment_names=[st.name]).set_index("run_id")
    parent = json.loads((_out(workdir, st.name) / "study.json").read_text())["parent_run_id"]
    assert runs.loc[parent, "status"] == "FAILED"
    assert runs.loc[rows["reg=boom,seed=0"]["mlflow_run_id"], "status"] == "FAILED"
    assert runs.loc[rows["reg=ok,seed=0"]["mlflow_run_id"], "status"] == "FINISHED"
    # the real analysis and report ran on the finished cell, and the summary read their tables
    assert (_out(workdir, st.name) / "summary.csv").exists()
    assert "fid_domain_32 s4" in out and "discrepancy_l2 s1" in out
    assert "analysis: " not in out and "report: failed" not in out
    assert (workdir / "reports" / "out" / _out(workdir, st.name).name / "index.html").exists()


# ---- the closing summary ----------------------------------------------------------------------------
def test_summary_tables_read_the_analysis_csvs(tmp_path):
    """Per arm mean +/- CI half-width (arms in the study's order), final-scale FID only, paired p-values."""
    import pandas as pd
    from analysis.stats import paired_tests, summarize
    from experiments.outputs import quality_tables
    rows = []
    for seed in range(3):
        for arm, shift in (("on", 0.0), ("off", 1.0)):
            for stage in (1, 2, 3):
                rows.append({"seed": seed, "consistency": arm, "metric": "discrepancy_l2", "stage": stage,
                             "value": shift + stage + 0.1 * seed})
            for stage in (1, 2, 3, 4):
                rows.append({"seed": seed, "consistency": arm, "metric": "fid_domain_1k", "stage": stage,
                             "value": 50 + 10 * shift + [0.0, 0.5, 0.2][seed]})
    table = pd.DataFrame(rows)
    summarize(table, by=["consistency", "metric", "stage"], method="t").to_csv(tmp_path / "summary.csv", index=False)
    tests = paired_tests(table, "consistency", pair_col="seed", by=["metric", "stage"])
    tests.assign(axis="consistency").to_csv(tmp_path / "tests.csv", index=False)
    lines = quality_tables(tmp_path, ["on", "off"]).splitlines()
    assert lines[1].split() == ["metric", "on", "off"]
    body = {ln.split("  ")[0].strip(): ln for ln in lines[2:6]}
    assert list(body) == ["discrepancy_l2 s1", "discrepancy_l2 s2", "discrepancy_l2 s3", "fid_domain_1k s4"]
    assert body["discrepancy_l2 s1"].split()[2:] == ["1.1", "±", "0.2484", "2.1", "±", "0.2484"]
    assert lines[6].startswith("paired p-values") and lines[7].split()[1:] == ["off", "vs", "on"]
    p = float(tests[(tests.metric == "fid_domain_1k") & (tests.stage == 4)]["p_ttest"].iloc[0])
    assert lines[-1].split()[:4] == ["fid_domain_1k", "s4", f"{p:.4g}", "/"]


def test_a_study_with_other_overrides_keeps_its_tables_apart():
    """studies/<study> for the study as declared; another data set, recipe or profile gets its own dir
    (the run dirs stay under studies/<study>/runs, named by their config hash)."""
    name = "ablation-consistency"
    default = study_dir(name)
    assert default == study_dir(name, "cpu", ["run.mlflow=false"]) == study_dir(name, "cpu", [])
    other = {study_dir(name, "cpu", ["data.name=imagefolder:photos"]), study_dir(name, "gpu", []),
             study_dir(name, "cpu", ["train.steps=200"]), study_dir(name, "cpu", ["train.steps=400"]),
             study_dir(name, "gpu", ["train.steps=200"])}                  # the same overrides, another profile
    assert len(other) == 5 and default not in other
    assert all(d.name.startswith(name + "@") for d in other)
    assert study_dir(name, "cpu", ["a=1", "b=2"]) == study_dir(name, "cpu", ["b=2", "a=1"])
