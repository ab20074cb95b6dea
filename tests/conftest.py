"""Shared test fixtures: every test runs offline, in its own folder, with its own MLflow store."""
import os

import pytest
import torch

torch.set_num_threads(2)

# A tiny, fast training config for tests (tiny model, small data, small batch).
FAST = ["data.n=128", "train.batch=8", "train.log_every=2", "train.sample_every=4", "run.progress=false"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """cwd = a fresh folder; MLflow = a sqlite file in it."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    os.environ.pop("CATLAB_INCEPTION_WEIGHTS", None)
    return tmp_path
