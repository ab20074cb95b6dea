"""Where grids across machines and searches keep their trials (Optuna storages), their locks, and how a dead
worker's trials are found and re-queued (docs/architecture.md, "The run engine")."""
from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import sys
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from catlab.errors import UserError

STORAGE_ROOT = Path("optuna")
MAX_RETRY = 2       # a dead worker's trial is re-queued at most this often


@dataclass(frozen=True)
class StorageSpec:
    kind: str            # journal | sqlite | rdb
    url: str             # what the user gave (a journal path or a URL)
    path: Path | None    # the file of a journal or sqlite storage

    def __str__(self) -> str:
        """As printed and recorded (outputs, study.json, MLflow): a database URL loses its password."""
        if self.kind == "journal":
            return str(self.path)
        from sqlalchemy.engine import make_url
        return make_url(self.url).render_as_string(hide_password=True)


def resolve(storage: str | None, study: str) -> StorageSpec:
    """None -> optuna/<study>.journal; 'PATH' -> a journal file; 'dialect://...' -> an RDB URL."""
    if not storage or "://" not in storage:
        path = Path(storage) if storage else STORAGE_ROOT / f"{study}.journal"
        return StorageSpec("journal", storage or str(path), path)
    from importlib.util import find_spec

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        url = make_url(storage)
    except ArgumentError:
        raise UserError(f"--storage must be a journal file path or a database URL like "
                        f"postgresql://user@host/db, but got storage={storage!r}") from None
    if url.drivername == "postgresql" and not find_spec("psycopg") and find_spec("psycopg2"):
        url = url.set(drivername="postgresql+psycopg2")          # SQLAlchemy 2.1 defaults to psycopg 3
        storage = url.render_as_string(hide_password=False)
    if url.get_backend_name() != "sqlite":
        return StorageSpec("rdb", storage, None)
    if not url.database or url.database == ":memory:":
        raise UserError(f"--storage must be a file for sqlite (sqlite:///PATH): an in-memory database "
                        f"cannot be shared or resumed, but got storage={storage!r}")
    return StorageSpec("sqlite", storage, Path(url.database))


def warn_parallel(spec: StorageSpec, workers: int) -> None:
    """sqlite locks under parallel workers: a warning on stderr when several share one."""
    if spec.kind == "sqlite" and workers > 1:
        print("catlab: warning: sqlite storage locks under parallel workers; use a journal file or PostgreSQL "
              "with --workers > 1", file=sys.stderr)


def open_storage(spec: StorageSpec, heartbeat: int = 60, on_stale=None):
    """The Optuna storage of a spec; RDB storages get a heartbeat and `on_stale` for trials whose heartbeat stops."""
    import optuna
    if spec.path is not None:
        spec.path.parent.mkdir(parents=True, exist_ok=True)
    if spec.kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(str(spec.path)))
    engine = {"connect_args": {"timeout": 60}} if spec.kind == "sqlite" else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(spec.url, engine_kwargs=engine, heartbeat_interval=int(heartbeat),
                                              grace_period=2 * int(heartbeat),
                                              heartbeat_stale_trial_callback=on_stale)
    except Exception as e:  # noqa: BLE001 -- a driver or a server that is not there: one line for the user
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(f"--storage must be a reachable database, but got storage={str(spec)!r} ({first})") from None


class FileLock:
    """An exclusive lock whose release() may come early: a flock on `path`, a PostgreSQL advisory lock on a key
    from `name` (pg_url), or none (path=None)."""

    def __init__(self, path: Path | None, pg_url: str | None = None, name: str = ""):
        self.path, self.pg_url, self.held = Path(path) if path else None, pg_url, None
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)

    def acquire(self, blocking: bool = True) -> bool:
        if self.pg_url:
            import sqlalchemy as sa
            from sqlalchemy.pool import NullPool
            self.held = sa.create_engine(self.pg_url, poolclass=NullPool).connect()
            self.held.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        elif self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            self.held = fd
        return True

    def release(self) -> None:
        held, self.held = self.held, None
        if held is None:
            return
        if self.pg_url:
            import sqlalchemy as sa
            try:
                held.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                held.close()
        else:
            fcntl.flock(held, fcntl.LOCK_UN)
            os.close(held)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def budget_lock(spec: StorageSpec, name: str) -> FileLock:
    """A file lock beside journal and sqlite files, an advisory lock for PostgreSQL, none for other servers."""
    if spec.path is not None:
        return FileLock(spec.path.with_name(f"{spec.path.name}.{name}.lock"))
    return FileLock(None, spec.url if spec.url.startswith(("postgresql", "postgres")) else None, name)


class Liveness:
    """This worker's lock under <journal>.workers/; alive(tag): does the worker of that tag still hold its own?"""

    def __init__(self, spec: StorageSpec):
        self.dir = spec.path.with_name(f"{spec.path.name}.workers") if spec.kind == "journal" else None
        self.id = uuid.uuid4().hex[:12]
        self.tag = {"id": self.id, "host": socket.gethostname(), "pid": os.getpid()}
        self._lock = FileLock(self.dir / f"{self.id}.lock") if self.dir else None
        if self._lock:
            self._lock.acquire()

    def alive(self, tag: dict | None) -> bool:
        """False only for a journal worker whose lock file can be locked (or is gone)."""
        if self.dir is None or not isinstance(tag, dict) or "id" not in tag or tag["id"] == self.id:
            return True
        path = self.dir / f"{tag['id']}.lock"
        probe = FileLock(path)
        if path.exists() and not probe.acquire(blocking=False):
            return True
        probe.release()
        path.unlink(missing_ok=True)
        return False

    def close(self) -> None:
        if self._lock:
            self._lock.release()
            self._lock.path.unlink(missing_ok=True)
            self._lock = None


def requeue_stale(study, trial) -> None:
    """Queue a fresh copy of a dead worker's trial (same params), at most MAX_RETRY times per original."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def reap(study, liveness: Liveness, on_stale) -> list[int]:
    """Mark the RUNNING trials of dead workers FAIL and hand each to on_stale; returns their numbers."""
    import optuna
    from optuna.trial import TrialState
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    dead = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not liveness.alive(t.user_attrs.get("worker")):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            dead.append(t.number)
            if on_stale is not None:
                on_stale(study, next(x for x in study.get_trials() if x.number == t.number))
    return dead


def counts(study) -> dict[str, int]:
    """{state name: number of trials}, every state present (COMPLETE, RUNNING, WAITING, PRUNED, FAIL)."""
    from optuna.trial import TrialState
    out = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out
