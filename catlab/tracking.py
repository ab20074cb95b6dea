"""Tracking: one cheap `report(name, value)` from anywhere, with two sinks.

- JSONL (`<run_dir>/metrics.jsonl`), always: the local source of truth.
- MLflow, on by default: `sqlite:///<repo>/mlflow.db` unless `MLFLOW_TRACKING_URI` (or run.tracking_uri)
  says otherwise. Metrics are buffered and sent in batches when a checkpoint is written, so a killed
  run that resumes never sends a step twice (one resumed from the checkpoint before a damaged last one
  skips the (name, step) values its MLflow run already holds).
- A tracking URI whose scheme can never work (`bogus://x`) is a configuration error: `check_uri`, called
  before any work, raises a one-line UserError naming MLFLOW_TRACKING_URI (or run.tracking_uri).
- A server that is down, or stops mid-run, is not: training goes on with JSONL alone, and one line on
  stderr (`catlab: warning: MLflow at ... failed (...); continuing with JSONL only. Sync afterwards with:
  catlab sync RUN_DIR`) says how to send it later (catlab.sync).
  MLflow's HTTP client retries for minutes by default; here it fails fast unless the user set these:
  MLFLOW_HTTP_REQUEST_MAX_RETRIES=2, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1, MLFLOW_HTTP_REQUEST_TIMEOUT=10
  (a dead server costs a run a few seconds once; nothing is lost, since sync replays the JSONL).

This is the only module that imports mlflow.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}      # defaults only: the user's environment wins
QUIET = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}  # no "View run ... at: URL" line per run on a server
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


def check_uri(configured: str = "") -> str:
    """The tracking URI (default_uri), refused with a one-line UserError when MLflow has no store for its
    scheme (a typo such as `htp://` or `bogus://x` can never work; a server that is down can)."""
    from catlab.errors import UserError
    uri = default_uri(configured)
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry as registry
    except ImportError:                                  # another MLflow layout: leave it to MLflow
        return uri
    try:
        registry.get_store_builder(uri)
    except Exception:  # noqa: BLE001 -- UnsupportedModelRegistryStoreURIException, or a bad db dialect
        key = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "run.tracking_uri"
        schemes = ", ".join(sorted(s for s in registry._registry if s)) or "http, https, sqlite"
        raise UserError(f"{key} must use a scheme MLflow can track to ({schemes}) or be a path, "
                        f"but got {key}={uri!r}") from None
    return uri


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
    """A thin, failure-tolerant MLflow client: the first error prints one line and turns the sink off.

    strict=True (used by `catlab sync`) raises RunFailed instead of warning.
    """

    def __init__(self, uri: str = "", strict: bool = False):
        self.uri = default_uri(uri)
        self.ok = True
        self.strict = strict
        self.run_dir: Path | str = "RUN_DIR"      # named in the warning's sync hint
        self._client = None

    @property
    def client(self):
        if self._client is None:
            for key, value in {**FAIL_FAST, **QUIET}.items():
                os.environ.setdefault(key, value)
            from mlflow.tracking import MlflowClient
            logging.getLogger("mlflow").setLevel(logging.ERROR)     # after the import: mlflow sets INFO
            logging.getLogger("alembic").setLevel(logging.ERROR)
            logging.getLogger("urllib3").setLevel(logging.ERROR)         # its "Retrying (...)" lines
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
            if self.strict:
                from catlab.errors import RunFailed
                raise RunFailed(f"MLflow at {self.uri} failed ({first})") from e
            print(f"catlab: warning: MLflow at {self.uri} failed ({first}); continuing with JSONL only. "
                  f"Sync afterwards with: catlab sync {self.run_dir}", file=sys.stderr, flush=True)
            return None

    def _call(self, method: str, *args, **kwargs):
        """client.<method>(...) under the guard (building the client can fail too: a bad URI)."""
        return self._guard(lambda: getattr(self.client, method)(*args, **kwargs))

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
        run = self._call("create_run", exp, tags=tags, run_name=name) if exp else None
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
        run = self._call("get_run", run_id)
        return run.info.status if run else None

    def resume(self, run_id: str) -> None:
        self._call("update_run", run_id, status="RUNNING")

    def log_metrics(self, run_id: str, rows: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(s)) for k, v, s in rows]
        for i in range(0, len(metrics), 1000):
            self._call("log_batch", run_id, metrics=metrics[i:i + 1000])

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._call("log_batch", run_id, params=items[i:i + 100])

    def logged(self, run_id: str, names=None, after: int = -1) -> set[tuple[str, int]]:
        """(name, step) of every metric value the run holds at a step > after (names: all of the run's)."""
        def get():
            keys = list(self.client.get_run(run_id).data.metrics) if names is None else names
            return {(k, m.step) for k in keys for m in self.client.get_metric_history(run_id, k) if m.step > after}
        return self._guard(get) or set()

    def set_tags(self, run_id: str, tags: dict) -> None:
        from mlflow.entities import RunTag
        self._call("log_batch", run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", run_id, str(path), artifact_path)

    def end(self, run_id: str, status: str, reason: str = "") -> None:
        if reason:
            self.set_tags(run_id, {"reason": reason})
        self._call("set_terminated", run_id, status)

    def runs(self, experiment: str, filter_string: str = ""):
        """All runs of an experiment as a pandas DataFrame with mlflow.search_runs' columns (run_id, status,
        start_time, end_time, tags.*, params.*, metrics.*), through this client's URI: the process-wide
        tracking URI is left alone."""
        import pandas as pd
        exp = self.client.get_experiment_by_name(experiment)
        rows, token = [], None
        while exp is not None:
            page = self.client.search_runs([exp.experiment_id], filter_string, max_results=1000, page_token=token)
            for r in page:
                rows.append({"run_id": r.info.run_id, "status": r.info.status, "start_time": r.info.start_time,
                             "end_time": r.info.end_time,
                             **{f"tags.{k}": v for k, v in r.data.tags.items()},
                             **{f"params.{k}": v for k, v in r.data.params.items()},
                             **{f"metrics.{k}": v for k, v in r.data.metrics.items()}})
            token = page.token
            if not token:
                break
        return pd.DataFrame(rows, columns=None if rows else ["run_id", "status", "start_time", "end_time"])


class RunTracker:
    """The sinks of one training run. JSONL lines are {"step", "name", "value"}."""

    def __init__(self, run_dir: Path, cfg, info: dict, resume_step: int = 0,
                 parent_run_id: str | None = None, tags: dict | None = None, saved_step: int = 0):
        """saved_step: the last step the run saved before (run.json); above resume_step when it resumes from
        the checkpoint before a damaged one, and its MLflow run already holds the steps in between."""
        self.run_dir, self.cfg, self.info, self.step = run_dir, cfg, info, resume_step
        self.saved_step = saved_step
        self.jsonl_path = run_dir / "metrics.jsonl"
        self._truncate_after(resume_step)
        self._jsonl = open(self.jsonl_path, "a", buffering=1)  # line-buffered: progress is visible
        self._pending: list[tuple[str, float, int]] = []
        self._sent: set[tuple[str, int]] = set()        # (name, step) the MLflow run held when we resumed
        self.mlflow = MLflow(cfg.run.tracking_uri) if cfg.run.mlflow else None
        if self.mlflow:
            self.mlflow.run_dir = run_dir
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
            if self.saved_step > self.step:               # resumed from an older checkpoint than the last
                self._sent = self.mlflow.logged(run_id, after=self.step)   # one: its later steps were sent
            return run_id
        name = str(tags["cell"]).replace(",", ", ") if tags and tags.get("cell") else self.run_dir.name
        run_id = self.mlflow.create_run(self.cfg.run.experiment, name,       # a grid's cell: consistency=off, seed=2
                                        run_tags(self.cfg, self.run_dir, tags), parent_run_id)
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
            self.mlflow.log_metrics(self.run_id, [r for r in self._pending if (r[0], r[2]) not in self._sent])
        self._pending = []

    def finish(self, status: str, reason: str = "") -> None:
        self.flush()
        self._jsonl.close()
        if self.run_id:
            self.mlflow.end(self.run_id, status, reason)


def run_tags(cfg, run_dir: Path, extra: dict | None = None) -> dict:
    """The tags every run's MLflow run carries."""
    import catlab
    return {"config_hash": cfg.hash(), "git_commit": git_commit(), "catlab_version": catlab.__version__,
            "dataset": cfg.data.name, "model_size": cfg.model.size, "seed": cfg.seed,
            "run_dir": str(Path(run_dir).resolve()), **(extra or {})}


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


class NullTracker:
    """The sinks of ranks other than 0: they log nothing."""
    run_id = None

    def log(self, *args, **kwargs): ...
    def artifact(self, *args, **kwargs): ...
    def tag(self, *args, **kwargs): ...
    def flush(self): ...
    def finish(self, *args, **kwargs): ...


# ---- make mlflow-ui -----------------------------------------------------------------------------------
def runs_urls(uri: str, host: str = "http://127.0.0.1:5000") -> list[str]:
    """The runs table of every experiment in the store, as direct UI links (the MLflow 3 UI otherwise opens
    an experiment on its GenAI overview page): "<name>: <host>/#/experiments/<id>/runs"."""
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=uri)
    return [f"{e.name}: {host}/#/experiments/{e.experiment_id}/runs" for e in client.search_experiments()
            if e.name != "Default" or client.search_runs([e.experiment_id], max_results=1)]


if __name__ == "__main__":        # python -m catlab.tracking URI: what make mlflow-ui prints first
    for line in runs_urls(sys.argv[1]) or ["(no experiments yet: run a study first)"]:
        print(line)
