"""Tracking: one cheap `report(name, value)` from anywhere, with two sinks.

- JSONL (`<run_dir>/metrics.jsonl`), always: the local source of truth.
- MLflow, on by default: `sqlite:///<repo>/mlflow.db` unless `MLFLOW_TRACKING_URI` (or run.tracking_uri)
  says otherwise. Metrics are buffered and sent in batches when a checkpoint is written, so a killed
  run that resumes never sends a step twice. If the server cannot be reached, training goes on with
  JSONL alone; one warning says how to sync afterwards (`catlab sync RUN_DIR`).

This is the only module that imports mlflow.
"""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_active: "RunTracker | None" = None


def report(name: str, value: float, step: int | None = None) -> None:
    """Log one scalar to the active run (no-op outside a run)."""
    if _active is not None:
        _active.log(name, value, step)


def default_uri(configured: str = "") -> str:
    """MLFLOW_TRACKING_URI wins, then run.tracking_uri, then sqlite:///<repo>/mlflow.db."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if configured:
        return configured
    root = REPO_ROOT if (REPO_ROOT / "pyproject.toml").exists() else Path.cwd()
    return f"sqlite:///{root / 'mlflow.db'}"


def git_commit() -> str:
    head = REPO_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (REPO_ROOT / ".git" / ref[5:]).read_text().strip()[:12]
        return ref[:12]
    except OSError:
        return "unknown"


class MLflow:
    """A thin, failure-tolerant MLflow client: the first error warns once and turns the sink off."""

    def __init__(self, uri: str = ""):
        self.uri = default_uri(uri)
        self.ok = True
        self._client = None

    @property
    def client(self):
        if self._client is None:
            logging.getLogger("mlflow").setLevel(logging.ERROR)
            logging.getLogger("alembic").setLevel(logging.ERROR)
            from mlflow.tracking import MlflowClient
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _guard(self, fn, *args, **kwargs):
        if not self.ok:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 -- any MLflow failure must not stop training
            self.ok = False
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            warnings.warn(f"MLflow at {self.uri} failed ({first}); continuing with JSONL only. "
                          "Sync afterwards with: catlab sync RUN_DIR", stacklevel=3)
            return None

    def experiment_id(self, name: str) -> str | None:
        def get():
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            location = None
            if self.uri.startswith("sqlite:///"):
                location = Path(self.uri[len("sqlite:///"):]).parent.joinpath("mlruns", name).as_uri()
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except Exception:  # noqa: BLE001 -- a parallel worker created it first
                return self.client.get_experiment_by_name(name).experiment_id
        return self._guard(get)

    def create_run(self, experiment: str, name: str, tags: dict | None = None,
                   parent_run_id: str | None = None) -> str | None:
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        exp = self.experiment_id(experiment)
        run = self._guard(self.client.create_run, exp, tags=tags, run_name=name) if exp else None
        return run.info.run_id if run else None

    def exists(self, run_id: str) -> bool:
        def get():
            try:
                return self.client.get_run(run_id) is not None
            except Exception as e:  # noqa: BLE001
                if "RESOURCE_DOES_NOT_EXIST" in str(e) or "not found" in str(e).lower():
                    return False
                raise
        return bool(self._guard(get))

    def status(self, run_id: str) -> str | None:
        run = self._guard(self.client.get_run, run_id)
        return run.info.status if run else None

    def resume(self, run_id: str) -> None:
        self._guard(self.client.update_run, run_id, status="RUNNING")

    def log_metrics(self, run_id: str, rows: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(s)) for k, v, s in rows]
        for i in range(0, len(metrics), 1000):
            self._guard(self.client.log_batch, run_id, metrics=metrics[i:i + 1000])

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._guard(self.client.log_batch, run_id, params=items[i:i + 100])

    def set_tags(self, run_id: str, tags: dict) -> None:
        from mlflow.entities import RunTag
        self._guard(self.client.log_batch, run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self._guard(self.client.log_artifact, run_id, str(path), artifact_path)

    def end(self, run_id: str, status: str, reason: str = "") -> None:
        if reason:
            self.set_tags(run_id, {"reason": reason})
        self._guard(self.client.set_terminated, run_id, status)

    def runs(self, experiment: str, filter_string: str = ""):
        """All runs of an experiment as a pandas DataFrame (mlflow.search_runs)."""
        import mlflow
        mlflow.set_tracking_uri(self.uri)
        return mlflow.search_runs(experiment_names=[experiment], filter_string=filter_string,
                                  output_format="pandas")


class RunTracker:
    """The sinks of one training run. JSONL lines are {"step", "name", "value"}."""

    def __init__(self, run_dir: Path, cfg, info: dict, resume_step: int = 0,
                 parent_run_id: str | None = None, tags: dict | None = None):
        self.run_dir, self.cfg, self.info, self.step = run_dir, cfg, info, resume_step
        self.jsonl_path = run_dir / "metrics.jsonl"
        self._truncate_after(resume_step)
        self._jsonl = open(self.jsonl_path, "a")
        self._pending: list[tuple[str, float, int]] = []
        self.mlflow = MLflow(cfg.run.tracking_uri) if cfg.run.mlflow else None
        self.run_id = self._open_mlflow(parent_run_id, tags or {}) if self.mlflow else None

    def _truncate_after(self, step: int) -> None:
        """Drop lines logged after the checkpoint we resume from: they will be logged again."""
        if not self.jsonl_path.exists():
            return
        keep = [ln for ln in self.jsonl_path.read_text().splitlines()
                if ln.strip() and _line_step(ln) <= step]
        self.jsonl_path.write_text("".join(ln + "\n" for ln in keep))

    def _open_mlflow(self, parent_run_id, tags) -> str | None:
        run_id = self.info.get("mlflow_run_id")
        if run_id and self.mlflow.exists(run_id):
            self.mlflow.resume(run_id)
            self.mlflow.set_tags(run_id, tags)
            return run_id
        import catlab
        all_tags = {"config_hash": self.cfg.hash(), "git_commit": git_commit(),
                    "catlab_version": catlab.__version__, "dataset": self.cfg.data.name,
                    "model_size": self.cfg.model.size, "seed": self.cfg.seed,
                    "run_dir": str(self.run_dir.resolve()), **tags}
        run_id = self.mlflow.create_run(self.cfg.run.experiment, self.run_dir.name, all_tags, parent_run_id)
        if run_id:
            self.mlflow.log_params(run_id, self.cfg.flat())
            self.mlflow.log_artifact(run_id, self.run_dir / "config.json")
        return run_id

    def log(self, name: str, value: float, step: int | None = None) -> None:
        step = self.step if step is None else step
        self._jsonl.write(json.dumps({"step": step, "name": name, "value": float(value)}) + "\n")
        self._pending.append((name, float(value), step))

    def tag(self, tags: dict) -> None:
        if self.run_id:
            self.mlflow.set_tags(self.run_id, tags)

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.run_id:
            self.mlflow.log_artifact(self.run_id, path, artifact_path)

    def flush(self) -> None:
        """Called when a checkpoint is written: everything up to here is safe to send."""
        self._jsonl.flush()
        if self.run_id and self._pending:
            self.mlflow.log_metrics(self.run_id, self._pending)
        self._pending = []

    def finish(self, status: str, reason: str = "") -> None:
        self.flush()
        self._jsonl.close()
        if self.run_id:
            self.mlflow.end(self.run_id, status, reason)


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line is dropped


def read_metrics(run_dir: str | Path):
    """metrics.jsonl as a tidy DataFrame (step, name, value)."""
    import pandas as pd
    path = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    return pd.DataFrame(rows, columns=["step", "name", "value"])


def activate(tracker: "RunTracker | None") -> None:
    global _active
    _active = tracker
