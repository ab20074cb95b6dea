"""Where the grid across machines and the search keep their trials, and how workers share that storage safely.

    spec = resolve(None, "ablation-consistency-weight")   # journal file optuna/ablation-consistency-weight.journal
    storage = open_storage(spec, heartbeat=60, on_stale=callback)
    with budget_lock(spec, "search-..."):                  # count + ask, the parent MLflow run: one at a time
        ...

Storages
  journal (default): JournalStorage(JournalFileBackend(path)). Safe for worker processes on one machine (and
      on a shared disk whose locks work). Optuna 5.0's JournalStorage has no heartbeat, so every worker holds
      an exclusive flock on <path>.workers/<id>.lock while it lives and stamps the trials it runs with that
      id; a RUNNING trial whose owner's lock can be taken belongs to a dead worker (the kernel drops the locks
      of a killed process at once) and is marked FAIL, then re-queued with the same parameters.
  RDB URL (postgresql://..., mysql://...): RDBStorage with Optuna's heartbeat (heartbeat_interval, grace period
      2x) and RetryHeartbeatStaleTrialCallback, for workers on many machines.
  sqlite:///PATH: accepted, but it locks under parallel writers (the commands warn when workers > 1).

The budget lock makes "count the trials, then ask for one" atomic, so N workers never start more trials than
the budget: a file lock beside journal and sqlite files, a PostgreSQL advisory lock for PostgreSQL, none for
other servers (there a race can start up to workers-1 extra trials).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from catlab.errors import UserError

STORAGE_ROOT = Path("optuna")


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
    if not storage:
        path = STORAGE_ROOT / f"{study}.journal"
        return StorageSpec("journal", str(path), path)
    if "://" not in storage:
        return StorageSpec("journal", storage, Path(storage))
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        url = make_url(storage)
    except ArgumentError:
        raise UserError(f"--storage must be a journal file path or a database URL like "
                        f"postgresql://user@host/db, but got storage={storage!r}") from None
    from importlib.util import find_spec
    if url.drivername == "postgresql" and not find_spec("psycopg") and find_spec("psycopg2"):
        url = url.set(drivername="postgresql+psycopg2")          # SQLAlchemy 2.1 defaults to psycopg 3
        storage = url.render_as_string(hide_password=False)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise UserError(f"--storage must be a file for sqlite (sqlite:///PATH): an in-memory database "
                            f"cannot be shared or resumed, but got storage={storage!r}")
        return StorageSpec("sqlite", storage, Path(url.database))
    return StorageSpec("rdb", storage, None)


def open_storage(spec: StorageSpec, heartbeat: int = 60, on_stale=None):
    """The Optuna storage of a spec. RDB storages get a heartbeat and `on_stale` for trials whose heartbeat stops."""
    import optuna
    if spec.kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(spec.path)))
    if spec.path is not None:
        spec.path.parent.mkdir(parents=True, exist_ok=True)
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


# ---- locks --------------------------------------------------------------------------------------------
class FileLock:
    """An exclusive flock on a file; release() is idempotent (the objective releases it early)."""

    def __init__(self, path: Path):
        self.path, self.fd = Path(path), None

    def acquire(self, blocking: bool = True) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class PostgresLock(FileLock):
    """pg_advisory_lock on a key derived from the study name, held by one dedicated connection."""

    def __init__(self, url: str, name: str):
        super().__init__(Path(os.devnull))
        self.url, self.conn = url, None
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)

    def acquire(self, blocking: bool = True) -> bool:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool
        self.conn = sa.create_engine(self.url, poolclass=NullPool).connect()
        self.conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        return True

    def release(self) -> None:
        if self.conn is not None:
            import sqlalchemy as sa
            try:
                self.conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                self.conn.close()
                self.conn = None


class NoLock(FileLock):
    def acquire(self, blocking: bool = True) -> bool:
        return True

    def release(self) -> None:
        pass


def budget_lock(spec: StorageSpec, name: str) -> FileLock:
    if spec.path is not None:
        return FileLock(spec.path.with_name(f"{spec.path.name}.{name}.lock"))
    if spec.url.startswith(("postgresql", "postgres")):
        return PostgresLock(spec.url, name)
    return NoLock(Path(os.devnull))


# ---- worker liveness (journal storages) -------------------------------------------------------------------
class Liveness:
    """This worker's lock under <journal>.workers/; alive(tag) tells whether another worker still holds its own."""

    def __init__(self, spec: StorageSpec):
        self.dir = spec.path.with_name(f"{spec.path.name}.workers") if spec.kind == "journal" else None
        self.id = uuid.uuid4().hex[:12]
        self.tag = {"id": self.id, "host": socket.gethostname(), "pid": os.getpid()}
        self._lock = FileLock(self.dir / f"{self.id}.lock") if self.dir else None
        if self._lock:
            self._lock.acquire()

    def alive(self, tag: dict | None) -> bool:
        """False only when we can tell: a journal worker whose lock file can be locked (or is gone)."""
        if self.dir is None or not isinstance(tag, dict) or "id" not in tag:
            return True
        if tag["id"] == self.id:
            return True
        path = self.dir / f"{tag['id']}.lock"
        if not path.exists():
            return False
        probe = FileLock(path)
        if not probe.acquire(blocking=False):
            return True
        probe.release()
        path.unlink(missing_ok=True)
        return False

    def close(self) -> None:
        if self._lock:
            self._lock.release()
            self._lock.path.unlink(missing_ok=True)
            self._lock = None


MAX_RETRY = 2       # a dead worker's trial is re-queued at most this often


def requeue_stale(study, trial) -> None:
    """Queue a fresh copy of a dead worker's trial (same params), at most MAX_RETRY times per original."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def reap(study, liveness: Liveness, on_stale) -> list[int]:
    """Mark RUNNING trials of dead workers FAIL and hand each to on_stale (retry); returns their numbers.

    Journal storages: by the workers' locks. RDB storages: Optuna's heartbeat (fail_stale_trials)."""
    import optuna
    from optuna.trial import TrialState
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    dead = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if liveness.alive(t.user_attrs.get("worker")):
            continue
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
