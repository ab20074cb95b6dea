"""A real MLflow tracking server (`mlflow server` on 127.0.0.1: sqlite backend, local artifact root, a free
port), over HTTP: a tiny grid logs its parent run, nested cell runs, params, metrics and sample grids; then the
server is stopped in the middle of a run, the run finishes on JSONL, and after a restart `catlab sync` sends
what the server missed: the server then holds exactly the JSONL's values, none lost and none twice.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from catlab.cli import main
from catlab.config import load_config
from catlab.trainer import Hooks, train
from conftest import FAST

SMALL = FAST + ["data.resolution=16", "model.stages=3", "run.mlflow=true"]


class Server:
    """`mlflow server` in its own session (it starts a uvicorn child), stopped by signalling the session."""

    def __init__(self, root: Path):
        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url, self.proc = f"http://127.0.0.1:{self.port}", None

    def start(self, timeout: float = 180) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts")]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
            assert time.time() < deadline, f"mlflow server not up after {timeout} s"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for _ in range(100):                                  # its children leave the session too
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self.log.close()
        with socket.socket() as s:                            # nothing answers there any more
            assert s.connect_ex(("127.0.0.1", self.port)) != 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def http(server, workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the stop below is seen at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.tracking import MlflowClient
    return MlflowClient(server.url)


def jsonl_rows(run_dir: Path) -> list[tuple[str, int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["name"], r["step"], r["value"]) for r in map(json.loads, lines)]


def server_rows(client, run_id: str) -> list[tuple[str, int, float]]:
    names = client.get_run(run_id).data.metrics
    return [(n, m.step, m.value) for n in names for m in client.get_metric_history(run_id, n)]


def test_a_grid_logs_parent_nested_runs_params_metrics_and_sample_grids_over_http(http, server, workdir,
                                                                                   monkeypatch, capsys):
    from experiments import outputs
    monkeypatch.setattr(outputs, "analyse", lambda *a, **k: None)      # tracking only: no analysis, no report
    monkeypatch.setattr(outputs, "build_report", lambda *a, **k: None)
    assert main(["ablate", "ablation-consistency", "--seeds", "1", *SMALL, "data.n=64", "train.steps=4"]) == 0
    assert "MLflow at" not in capsys.readouterr().err
    exp = http.get_experiment_by_name("ablation-consistency")
    runs = http.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    pid = parents[0].info.run_id
    assert parents[0].data.params["study"] == "ablation-consistency"
    cells = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == pid]
    assert len(runs) == 3 and len(cells) == 2
    assert sorted(r.data.tags["consistency"] for r in cells) == ["off", "on"]
    for r in cells:
        run_dir = Path(r.data.tags["run_dir"])
        assert r.info.status == "FINISHED" and r.info.artifact_uri.startswith("mlflow-artifacts:")
        assert r.data.params["train.steps"] == "4" and r.data.params["data.resolution"] == "16"
        assert sorted(server_rows(http, r.info.run_id)) == sorted(jsonl_rows(run_dir))   # every value, once
        listed = [f.path for f in http.list_artifacts(r.info.run_id, "samples")]
        assert listed == ["samples/grid_000004.png"]
        stored = server.root / "artifacts" / exp.experiment_id / r.info.run_id / "artifacts"
        assert (stored / "samples" / "grid_000004.png").read_bytes() == \
            (run_dir / "samples" / "grid_000004.png").read_bytes()                # uploaded over HTTP
        assert (stored / "config.json").is_file()
    assert {f.path for f in http.list_artifacts(pid)} >= {"cells.csv", "study.json"}


def test_server_stopped_mid_run_then_restarted_and_synced_loses_and_duplicates_nothing(http, server, workdir,
                                                                                      capsys):
    stopped_at = []

    def stop_server(step, state):
        if step == 3:                                  # after the checkpoint of step 2 was sent
            server.stop()
            stopped_at.append(step)
    capsys.readouterr()
    result = train(load_config(SMALL + ["train.steps=8", "train.ckpt_every=2"]), Hooks(step_fn=stop_server))
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped_at == [3] and result.status == "FINISHED" and result.step == 8
    assert len(err) == 1 and err[0].startswith(f"catlab: warning: MLflow at {server.url} failed (") and \
        err[0].endswith(f"continuing with JSONL only. Sync afterwards with: catlab sync {result.run_dir}"), err
    rows = jsonl_rows(result.run_dir)
    assert {s for _, s, _ in rows} == {2, 4, 6, 8}

    server.start()                                     # the same store, the same port
    sent = server_rows(http, result.mlflow_run_id)
    assert {s for _, s, _ in sent} == {2} and http.get_run(result.mlflow_run_id).info.status == "RUNNING"
    assert main(["sync", str(result.run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"run {result.mlflow_run_id}, continued" in out and "View run" not in out   # catlab's lines only
    assert f"metrics    {len(rows) - len(sent)} values" in out and f"({len(sent)} already there)" in out
    after = server_rows(http, result.mlflow_run_id)
    with capsys.disabled():                            # the counts, for the record (pytest -s)
        print(f"\nserver test: JSONL {len(rows)} values; sent before the stop {len(sent)}; by sync "
              f"{len(rows) - len(sent)}; on the server after sync {len(after)}; lost "
              f"{len(set(rows) - set(after))}; duplicated {len(after) - len(set(after))}")
    assert len(after) == len(set(after)) == len(rows)  # nothing twice
    assert sorted(after) == sorted(rows)               # nothing lost, the same values
    assert http.get_run(result.mlflow_run_id).info.status == "FINISHED"
    listed = {f.path for f in http.list_artifacts(result.mlflow_run_id, "samples")}
    assert listed == {f"samples/{p.name}" for p in (result.run_dir / "samples").glob("*.png")} and len(listed) == 2
    assert main(["sync", str(result.run_dir)]) == 0    # twice: nothing more
    assert "metrics    0 values" in capsys.readouterr().out
    assert len(server_rows(http, result.mlflow_run_id)) == len(rows)
