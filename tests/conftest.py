"""Shared test fixtures and helpers: every test runs offline, in its own folder, with its own MLflow store."""
import contextlib
import os
import socket

import pytest
import torch

torch.set_num_threads(2)

# A tiny, fast training config for tests (tiny model, small data, small batch).
FAST = ["loss.reg.kind=approx", "data.n=128", "train.batch=8", "train.log_every=2", "train.sample_every=4", "run.progress=false"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """cwd = a fresh folder; MLflow = a sqlite file in it."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    os.environ.pop("CATLAB_INCEPTION_WEIGHTS", None)
    return tmp_path


def state_equal(a, b) -> bool:
    """Bitwise equality of nested checkpoint state (tensors: same dtype and values; dicts, lists, scalars)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(state_equal(x, y) for x, y in zip(a, b))
    return a == b


@contextlib.contextmanager
def no_network():
    """Every TCP/UDP connect and every DNS lookup raises, and is recorded (yields the attempts)."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise ConnectionRefusedError(f"network blocked by the test (connect to {address})")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(f"network blocked by the test (lookup of {host})")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", lambda self, a: connect(self, a))
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        yield attempts
