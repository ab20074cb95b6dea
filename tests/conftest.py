"""Shared test fixtures and helpers: every test runs offline, in its own folder, with its own MLflow store.

After the helpers any test may use, one section per family of test files (test_<family>_*.py) holds what
two or more of its files use."""
import contextlib
import hashlib
import json
import os
import shutil
import socket
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catlab.config import load_config
from catlab.trainer import Hooks, train
from experiments import STUDIES, Study

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


# ---- bad inputs: runs stopped after step 1 of 2 (`catlab train` resumes them), folders, snapshots -----
# 16 px, 3 scales: the cheapest real model. log_every=1 lets the fixture stop the run after step 1.
BASE = FAST + ["train.steps=2", "train.log_every=1", "run.mlflow=false", "data.resolution=16", "model.stages=3"]
FOLDER = BASE + ["data.name=imagefolder:imgs", "data.n=0"]


def _stopped_run(root: Path, overrides: list[str]) -> Path:
    with contextlib.chdir(root):
        cfg = load_config(overrides)
        result = train(cfg, Hooks(abort_fn=lambda step: "stopped for the corpus" if step == 1 else None))
        assert result.status == "KILLED" and result.step == 1
        return root / "runs" / cfg.run_name()


def _image(mode: str, size=(20, 24), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    if mode in ("L", "P"):
        img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
        if mode == "P":
            img = img.convert("P")
            img.info["transparency"] = 0
        return img
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    channels = {"LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(arr, mode=mode)


def make_folder(root: Path, classes: dict[str, str], per_class: int = 3) -> Path:
    """root/<class>/<i>.png, each class in its own PIL mode."""
    for name, mode in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = _image(mode, seed=i)
            img.save(root / name / f"{i}.{'jpg' if mode == 'CMYK' else 'png'}")
    return root


MIXED = {"gray": "L", "graya": "LA", "rgba": "RGBA", "palette": "P"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return _stopped_run(tmp_path_factory.mktemp("trained"), BASE)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run on an image folder of grayscale, gray+alpha, RGBA and palette images (4 classes)."""
    root = tmp_path_factory.mktemp("folder")
    make_folder(root / "imgs", MIXED)
    return _stopped_run(root, FOLDER), root / "imgs"


def copy_run(src: Path, root: Path = Path("runs")) -> Path:
    dest = root / src.name
    shutil.copytree(src, dest)
    return dest


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root -> sha1 of its bytes ('dir' for folders)."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


class WS:
    """What a case's setup may use: the fixtures' runs, copied into the case folder on demand."""

    def __init__(self, path: Path, request):
        self.path, self.request = path, request

    def run(self) -> Path:
        return copy_run(self.request.getfixturevalue("trained"))

    def folder_run(self) -> Path:
        run, imgs = self.request.getfixturevalue("folder_run")
        shutil.copytree(imgs, "imgs")
        return copy_run(run)

    def env(self, key: str, value: str | None):
        """Set (or, with None, unset) an environment variable for this case only."""
        mp = self.request.getfixturevalue("monkeypatch")
        mp.setenv(key, value) if value is not None else mp.delenv(key, raising=False)
        return self

    def study(self, study: Study) -> str:
        """Register a study for this case only."""
        self.request.getfixturevalue("monkeypatch").setitem(STUDIES, study.name, study)
        return study.name


# ---- faults: the cheap config, the logged values ------------------------------------------------------
SMALL = FAST + ["data.resolution=16", "model.stages=3", "run.mlflow=false"]   # 16 px, 3 scales: cheap


def _metrics(run_dir: Path) -> dict:
    """(name, step) -> value from metrics.jsonl, without the wall-clock throughput."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out = {(r["name"], r["step"]): r["value"] for r in rows if r["name"] != "img_per_s"}
    assert len(out) == sum(r["name"] != "img_per_s" for r in rows), "a (name, step) was logged twice"
    return out


# ---- metrics: offline, and the tolerance against the reference implementations ------------------------
TOL = 1e-6


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No real weights, no shared cache: TORCH_HOME is an empty temp dir; the notice is already shown."""
    from catlab.metrics import fidelity
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CATLAB_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("CATLAB_CACHE", raising=False)
    monkeypatch.setattr(fidelity, "_NOTICE_SHOWN", True)


# ---- reports: the strict HTML check -------------------------------------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StrictHTML(HTMLParser):
    """An HTML check that fails (ValueError, naming the line) where a browser would quietly repair or drop:
    an end tag that does not close the innermost open element, an element left open, an end tag for a void
    element, no <!DOCTYPE html>, a duplicate id, an #anchor without its id, a src/href that is empty, points
    off the machine (the report is read offline) or names a file that does not exist next to the page."""

    def __init__(self, base: Path):
        super().__init__(convert_charrefs=True)
        self.base, self.stack, self.ids, self.refs, self.tags, self.doctype = base, [], set(), [], [], False

    def _fail(self, what: str):
        raise ValueError(f"line {self.getpos()[0]}: {what}")

    def handle_decl(self, decl):
        self.doctype = self.doctype or decl.strip().lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag not in VOID:
            self.stack.append((tag, self.getpos()[0]))
        if "id" in a:
            if a["id"] in self.ids:
                self._fail(f"duplicate id {a['id']!r}")
            self.ids.add(a["id"])
        for key in ("src", "href"):
            if key in a:
                self.refs.append((tag, key, a[key], self.getpos()[0]))

    def handle_startendtag(self, tag, attrs):            # <br/>, <img ... />
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            self._fail(f"</{tag}>: {tag} is a void element")
        if not self.stack or self.stack[-1][0] != tag:
            self._fail(f"</{tag}> closes " + (f"<{self.stack[-1][0]}> of line {self.stack[-1][1]}" if self.stack
                                              else "nothing"))
        self.stack.pop()

    def close(self):
        super().close()
        if self.stack:
            tag, line = self.stack[-1]
            raise ValueError(f"line {line}: <{tag}> is never closed")
        if not self.doctype:
            raise ValueError("no <!DOCTYPE html>")
        from urllib.parse import unquote, urlparse
        for tag, key, ref, line in self.refs:
            url = urlparse(ref or "")
            if not ref:
                raise ValueError(f"line {line}: <{tag} {key}> is empty")
            if url.scheme or url.netloc or ref.startswith("/"):
                raise ValueError(f"line {line}: <{tag} {key}={ref!r}> points off the page's folder")
            if url.path and not (self.base / unquote(url.path)).is_file():
                raise ValueError(f"line {line}: <{tag} {key}={ref!r}>: no such file next to the page")
            if url.fragment and not url.path and url.fragment not in self.ids:
                raise ValueError(f"line {line}: <{tag} {key}={ref!r}>: no element with that id")


def strict_html(path: Path) -> StrictHTML:
    page = StrictHTML(path.parent)
    page.feed(path.read_text())
    page.close()
    return page
