"""Faults in tracking: an unreachable MLflow server (few retries, training goes on with JSONL and one line,
then `catlab sync` sends it), a server lost mid-run (sync continues the same MLflow run), and sync while
the server is still down (one line, exit 1). A tracking URI that can never work is bad input instead:
test_bad_inputs_corpus.py."""
import json
import socket
import threading
from pathlib import Path

import pytest

from catlab import tracking
from catlab.cli import main
from catlab.config import load_config
from catlab.trainer import Hooks, train
from conftest import SMALL, _metrics


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
