"""Bad inputs across the CLI, configs, data and checkpoints.

Every case of the corpus gets one line on stderr (no traceback), a non-zero exit (2 for bad input, 1 for
a run that started and failed), and leaves nothing half-written: the folder tree and every file in it are
byte-for-byte what they were (no run dir, no studies/<x>, no .tmp), except that a failed run keeps its
record (run.json FAILED). Grayscale and RGBA images are not bad input: they become 3 channels and train.
A tracking URI whose scheme can never work is bad input (exit 2, before any work); a tracking store that
cannot be used (a server down, a sqlite file under a file) is not: training goes on with JSONL (exit 0)
and one line says so (nothing is lost: `catlab sync RUN_DIR` replays it later). The read-only folder case
runs as an unprivileged user (nobody) when the tests run as root, as CI does.
"""
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from catlab.cli import main
from catlab.config import load_config, save_config
from catlab.data import build_dataset
from catlab.trainer import Hooks, train
from conftest import FAST, no_network
from experiments import STUDIES, Study

# 16 px, 3 scales: the cheapest real model. log_every=1 lets the fixture stop the run after step 1.
BASE = FAST + ["train.steps=2", "train.log_every=1", "run.mlflow=false", "data.resolution=16", "model.stages=3"]
FOLDER = BASE + ["data.name=imagefolder:imgs", "data.n=0"]


# ---- fixtures: a run stopped after step 1 of 2 (so `catlab train` resumes it and reads its checkpoint) --
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


# ---- helpers ------------------------------------------------------------------------------------------
def copy_run(src: Path, root: Path = Path("runs")) -> Path:
    dest = root / src.name
    shutil.copytree(src, dest)
    return dest


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root -> sha1 of its bytes ('dir' for folders)."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@dataclass
class Case:
    id: str
    setup: Callable            # (ws) -> argv; runs in the case's own folder
    code: int                  # 2 bad input, 1 a run that failed
    match: str                 # a piece of the one-line message
    offline: bool = False      # block the network while the command runs


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


def _other_config_dir(ws) -> Path:
    """A run dir of the K=2 config into which the K=3 run's checkpoint was copied by hand."""
    src = ws.run()
    cfg = load_config(BASE + ["model.stages=2"])
    dest = Path("runs") / cfg.run_name()
    (dest / "ckpt").mkdir(parents=True)
    save_config(cfg, dest / "config.json")
    for name in ("ckpt/last.pt", "eval_set.pt"):      # the eval set is a function of the seed: the same
        shutil.copy(src / name, dest / name)
    shutil.rmtree(src)
    return dest


def _ckpt(ws, damage) -> Path:
    run = ws.run()
    damage(run / "ckpt" / "last.pt")
    return run


def _garbage(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _drop_class(ws) -> list[str]:
    ws.folder_run()
    shutil.rmtree(Path("imgs") / "palette")          # 4 classes at training time, 3 now
    return ["train", *FOLDER]


def _folder(classes: dict[str, str | None]) -> Path:
    """imgs/<class>/ with files: None = an empty class folder; 'text' = non-image files; 'junk' = a broken png."""
    for name, kind in classes.items():
        d = Path("imgs") / name
        d.mkdir(parents=True)
        if kind == "text":
            (d / "notes.txt").write_text("not an image")
            (d / "labels.csv").write_text("a,b\n")
            (d / "image.png.bak").write_bytes(b"\x89PNG")
        elif kind == "junk":
            _image("RGB").save(d / "good.png")
            (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return Path("imgs")


def _both_ckpts(damage):
    """last.pt and a prev.pt (a copy of it), both damaged."""
    def fn(p: Path) -> None:
        shutil.copy(p, p.with_name("prev.pt"))
        damage(p)
        damage(p.with_name("prev.pt"))
    return fn


SEARCH = ["search", "ablation-consistency-weight"]
NO_SPACE = Study(name="no-space", summary="test only: no search space", base={}, profiles={"cpu": {}},
                 axes={"a": {"x": {}}}, seeds=1)


CASES = [
    # -- the command line
    Case("unknown-command", lambda ws: ["nope"], 2, "invalid choice: 'nope'"),
    Case("no-command", lambda ws: [], 2, "required"),
    Case("override-without-equals", lambda ws: ["train", "train.steps"], 2, "must look like key.sub=value"),
    Case("unknown-config-key", lambda ws: ["train", "train.stepz=3"], 2, "unknown config key 'train.stepz'"),
    Case("int-field-not-int", lambda ws: ["train", "train.steps=ten"], 2, "train.steps must be an int"),
    Case("bool-field-not-bool", lambda ws: ["train", "run.mlflow=maybe"], 2, "run.mlflow must be a bool"),
    Case("list-unknown", lambda ws: ["list", "nope"], 2, "invalid choice: 'nope'"),
    Case("sample-n-not-int", lambda ws: ["sample", str(ws.run()), "--n", "x", "--out", "o"], 2, "invalid int"),
    # -- configs: values
    Case("lr-nan", lambda ws: ["train", "train.lr_g=nan"], 2, "train.lr_g must be a finite number"),
    Case("lr-inf", lambda ws: ["train", "train.lr_d=inf"], 2, "train.lr_d must be a finite number"),
    Case("gamma-negative", lambda ws: ["train", "loss.reg.gamma=-1"], 2, "loss.reg.gamma must be >= 0"),
    Case("batch-zero", lambda ws: ["train", "train.batch=0"], 2, "train.batch must be > 0"),
    Case("steps-negative", lambda ws: ["train", "train.steps=-5"], 2, "train.steps must be > 0"),
    Case("ema-one", lambda ws: ["train", "train.ema=1"], 2, "train.ema must be in [0, 1)"),
    Case("consistency-weight-negative", lambda ws: ["train", "loss.consistency.weight=-0.1"], 2,
         "loss.consistency.weight must be >= 0"),
    Case("stage-weights-wrong-length", lambda ws: ["train", "loss.consistency.stage_weights=1,2"], 2,
         "comma list of 3 numbers"),
    Case("stage-weights-nan", lambda ws: ["train", "loss.consistency.stage_weights=1,nan,1"], 2,
         "weights that are finite"),
    Case("scale-weights-wrong-length", lambda ws: ["train", "model.stages=3", "loss.scale_weights=1,1,1,1"], 2,
         "comma list of 3 numbers"),
    Case("unknown-dataset", lambda ws: ["train", "data.name=nope"], 2, "data.name must be one of"),
    Case("unknown-model-size", lambda ws: ["train", "model.size=XXL"], 2, "model.size must be one of"),
    Case("unknown-discriminator", lambda ws: ["train", "model.discriminator=nope"], 2,
         "model.discriminator must be one of"),
    Case("resolution-not-power-of-two", lambda ws: ["train", "data.resolution=24"], 2, "power of two"),
    Case("too-many-stages-for-resolution", lambda ws: ["train", "data.resolution=8", "model.stages=4"], 2,
         "model.stages must be small enough"),
    # -- configs: files
    Case("config-not-json", lambda ws: (Path("bad.json").write_text("{not json"),
                                        ["train", "--config", "bad.json"])[1], 2, "is not valid JSON"),
    Case("config-missing", lambda ws: ["train", "--config", "missing.json"], 2, "does not exist"),
    Case("config-json-list", lambda ws: (Path("list.json").write_text("[1, 2]"),
                                         ["train", "--config", "list.json"])[1], 2, "must hold a JSON object"),
    Case("config-json-bad-value", lambda ws: (Path("neg.json").write_text('{"train": {"steps": -1}}'),
                                              ["train", "--config", "neg.json"])[1], 2, "train.steps must be > 0"),
    # -- data
    Case("imagefolder-missing", lambda ws: ["train", *BASE, "data.name=imagefolder:/nonexistent"], 2,
         "folder /nonexistent does not exist"),
    Case("imagefolder-empty", lambda ws: (_folder({"a": None, "b": None}),
                                          ["train", *BASE, "data.name=imagefolder:imgs"])[1], 2,
         "no class subfolders with images"),
    Case("imagefolder-non-images", lambda ws: (_folder({"a": "text"}),
                                               ["train", *BASE, "data.name=imagefolder:imgs"])[1], 2,
         "no class subfolders with images"),
    Case("imagefolder-broken-image", lambda ws: (_folder({"a": "junk"}),
                                                 ["train", *BASE, "data.name=imagefolder:imgs"])[1], 2,
         "cannot decode image file"),
    Case("cifar10-not-on-disk", lambda ws: ["train", *BASE, "data.name=cifar10", "data.root=cifar"], 2,
         "cifar10 not found under"),
    Case("mnist-download-offline", lambda ws: ["train", *BASE, "data.name=mnist", "data.download=true",
                                               "data.root=mnist"], 2, "mnist: download failed", offline=True),
    # -- checkpoints
    Case("ckpt-truncated-train", lambda ws: (_ckpt(ws, truncate), ["train", *BASE])[1], 2,
         "is unreadable or corrupt"),
    Case("ckpt-truncated-sample", lambda ws: ["sample", str(_ckpt(ws, truncate)), "--n", "2", "--out", "png"], 2,
         "is unreadable or corrupt"),
    Case("ckpt-garbage-train", lambda ws: (_ckpt(ws, _garbage), ["train", *BASE])[1], 2,
         "is unreadable or corrupt"),
    Case("ckpt-garbage-sample", lambda ws: ["sample", str(_ckpt(ws, _garbage)), "--n", "2", "--out", "png"], 2,
         "is unreadable or corrupt"),
    Case("ckpt-garbage-analyze", lambda ws: ["analyze", str(_ckpt(ws, _garbage)), "--metrics", "l2", "--n", "4"],
         2, "is unreadable or corrupt"),
    Case("ckpt-and-prev-truncated-train", lambda ws: (_ckpt(ws, _both_ckpts(truncate)), ["train", *BASE])[1], 2,
         "last.pt is unreadable or corrupt (RuntimeError), and the previous one"),
    Case("ckpt-and-prev-garbage-train", lambda ws: (_ckpt(ws, _both_ckpts(_garbage)), ["train", *BASE])[1], 2,
         "to start the run over"),
    Case("ckpt-empty-file", lambda ws: (_ckpt(ws, lambda p: p.write_bytes(b"")), ["train", *BASE])[1], 2,
         "is unreadable or corrupt"),
    Case("ckpt-not-a-dict", lambda ws: ["sample", str(_ckpt(ws, lambda p: torch.save(torch.zeros(3), p))),
                                        "--n", "2", "--out", "png"], 2, "not a catlab checkpoint"),
    Case("ckpt-from-other-config-train", lambda ws: (_other_config_dir(ws), ["train", *BASE, "model.stages=2"])[1],
         2, "belongs to config"),
    Case("ckpt-from-other-config-sample", lambda ws: ["sample", str(_other_config_dir(ws)), "--n", "2",
                                                      "--out", "png"], 2, "belongs to config"),
    Case("stages-differ-from-run-dir", lambda ws: ["train", *BASE, "model.stages=2", "--run-dir", str(ws.run())],
         2, "holds a run of config"),
    Case("class-count-differs-from-ckpt", _drop_class, 2, "does not fit this model"),
    # -- sample / analyze / ablate / sync
    Case("sample-stage-zero", lambda ws: ["sample", str(ws.run()), "--stage", "0", "--out", "png"], 2,
         "--stage must be in 1..3"),
    Case("sample-stage-too-big", lambda ws: ["sample", str(ws.run()), "--stage", "4", "--out", "png"], 2,
         "--stage must be in 1..3"),
    Case("sample-n-zero", lambda ws: ["sample", str(ws.run()), "--n", "0", "--out", "png"], 2,
         "--n must be >= 1"),
    Case("sample-missing-run-dir", lambda ws: ["sample", "runs/nope", "--out", "png"], 2,
         "is not a catlab run dir"),
    Case("sample-out-is-a-file", lambda ws: (Path("afile").write_text("x"),
                                             ["sample", str(ws.run()), "--n", "2", "--out", "afile"])[1], 2,
         "--out afile cannot be written"),
    Case("analyze-missing-run-dir", lambda ws: ["analyze", "runs/nope"], 2, "must be a run dir"),
    Case("analyze-unknown-metric", lambda ws: ["analyze", str(ws.run()), "--metrics", "nope"], 2,
         "--metrics must name"),
    Case("analyze-n-one", lambda ws: ["analyze", str(ws.run()), "--n", "1"], 2, "--n must be >= 2"),
    Case("analyze-study-without-results", lambda ws: ["analyze", "ablation-consistency"], 2, "has no results yet"),
    Case("ablate-unknown-study", lambda ws: ["ablate", "nope"], 2, "study must be one of"),
    Case("ablate-bad-override", lambda ws: ["ablate", "ablation-consistency", "train.lr_g=nan"], 2,
         "train.lr_g must be a finite number"),
    Case("ablate-missing-data", lambda ws: ["ablate", "ablation-consistency", "data.name=imagefolder:/nonexistent"],
         2, "does not exist"),
    Case("ablate-axis-override", lambda ws: ["ablate", "ablation-consistency", "loss.consistency.weight=10"], 2,
         "loss.consistency.weight is set by the axis 'consistency' of study ablation-consistency"),
    Case("ablate-zero-seeds", lambda ws: ["ablate", "ablation-consistency", "--seeds", "0"], 2,
         "--seeds must be an int >= 1"),
    Case("sync-missing-run-dir", lambda ws: ["sync", "runs/nope"], 2, "is not a catlab run dir"),
    # -- search options
    Case("search-zero-trials", lambda ws: [*SEARCH, "--trials", "0"], 2, "--trials must be an int >= 1"),
    Case("search-trials-not-int", lambda ws: [*SEARCH, "--trials", "many"], 2, "invalid int value: 'many'"),
    Case("search-no-trials", lambda ws: [*SEARCH], 2, "the following arguments are required: --trials"),
    Case("search-zero-workers", lambda ws: [*SEARCH, "--trials", "2", "--workers", "0"], 2,
         "--workers must be an int >= 1"),
    Case("search-unknown-objective", lambda ws: [*SEARCH, "--trials", "2", "--objective", "ssim"], 2,
         "argument --objective: invalid choice: 'ssim'"),
    Case("search-negative-timeout", lambda ws: [*SEARCH, "--trials", "2", "--timeout", "-5"], 2,
         "--timeout must be a number of seconds > 0, but got timeout=-5.0"),
    Case("search-nan-timeout", lambda ws: [*SEARCH, "--trials", "2", "--timeout", "nan"], 2,
         "--timeout must be a number of seconds > 0"),
    Case("search-unknown-profile", lambda ws: [*SEARCH, "--trials", "2", "--profile", "tpu"], 2,
         "argument --profile: invalid choice: 'tpu'"),
    Case("search-unknown-study", lambda ws: ["search", "nope", "--trials", "2"], 2, "study must be one of"),
    Case("search-study-without-space", lambda ws: ["search", ws.study(NO_SPACE), "--trials", "2"], 2,
         "study must declare a search space (space=...), but got study='no-space' without one"),
    Case("search-bad-override", lambda ws: [*SEARCH, "--trials", "2", "train.stepz=3"], 2,
         "unknown config key 'train.stepz'"),
    Case("search-override-of-the-space", lambda ws: [*SEARCH, "--trials", "2", "loss.consistency.weight=1"], 2,
         "loss.consistency.weight is searched by the space of ablation-consistency-weight"),
    # -- tracking URIs that can never work: before any work, whatever the command
    Case("mlflow-uri-bogus-scheme-train", lambda ws: (ws.env("MLFLOW_TRACKING_URI", "bogus://nowhere"),
                                                      ["train", *BASE, "run.mlflow=true"])[1], 2,
         "MLFLOW_TRACKING_URI must use a scheme MLflow can track to"),
    Case("mlflow-uri-typo-train", lambda ws: (ws.env("MLFLOW_TRACKING_URI", "htp://127.0.0.1:5000"),
                                              ["train", *BASE, "run.mlflow=true"])[1], 2,
         "but got MLFLOW_TRACKING_URI='htp://127.0.0.1:5000'"),
    Case("mlflow-config-uri-bogus-train", lambda ws: (ws.env("MLFLOW_TRACKING_URI", None),
                                                      ["train", *BASE, "run.mlflow=true",
                                                       "run.tracking_uri=bogus://x"])[1], 2,
         "run.tracking_uri must use a scheme MLflow can track to"),
    Case("mlflow-uri-bogus-ablate", lambda ws: (ws.env("MLFLOW_TRACKING_URI", "bogus://nowhere"),
                                                ["ablate", "ablation-consistency", "--seeds", "1", "train.steps=2",
                                                 "data.n=64"])[1], 2, "MLFLOW_TRACKING_URI must use a scheme"),
    Case("mlflow-uri-bogus-search", lambda ws: (ws.env("MLFLOW_TRACKING_URI", "bogus://nowhere"),
                                                [*SEARCH, "--trials", "1"])[1], 2,
         "MLFLOW_TRACKING_URI must use a scheme"),
    Case("mlflow-uri-bogus-sync", lambda ws: ["sync", str(ws.env("MLFLOW_TRACKING_URI", "bogus://x").run())], 2,
         "MLFLOW_TRACKING_URI must use a scheme"),
    # -- run dirs that cannot be written
    Case("run-dir-is-a-file", lambda ws: (Path("afile").write_text("x"), ["train", *BASE, "--run-dir", "afile"])[1],
         2, "cannot be written"),
    Case("run-dir-under-a-file", lambda ws: (Path("afile").write_text("x"),
                                             ["train", *BASE, "--run-dir", "afile/run"])[1], 2, "cannot be written"),
    Case("run-root-under-a-file", lambda ws: (Path("afile").write_text("x"), ["train", *BASE, "run.root=afile"])[1],
         2, "cannot be written"),
    # -- a run that starts and fails: exit 1, its record kept (run.json FAILED), no checkpoint, no temp file
    Case("run-diverges", lambda ws: ["train", *BASE, "train.lr_g=1e38", "train.lr_d=1e38"], 1,
         "non-finite"),
]


def _param(c):
    return c if not isinstance(c, Case) else pytest.param(c, id=c.id)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case, workdir, request, capsys):
    assert not Path("/nonexistent").exists()
    argv = case.setup(WS(workdir, request))
    before = snapshot(workdir)
    capsys.readouterr()
    with no_network() if case.offline else contextlib.nullcontext():
        code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == case.code, (code, err)
    assert len(lines) == 1, err
    prefix = "catlab: error: " if case.code == 2 else "catlab: run failed: "
    assert lines[0].startswith(prefix) and case.match in lines[0], lines[0]
    assert "Traceback" not in err + out
    after = snapshot(workdir)
    assert not [p for p in after if p.endswith(".tmp")]
    if case.code == 2:
        assert after == before, "bad input changed the folder: " + str(set(after.items()) ^ set(before.items()))
    else:                                   # the failed run keeps its record and nothing else changed
        assert {k: v for k, v in after.items() if not k.startswith("runs")} == before
        info = json.loads(next(workdir.glob("runs/*/run.json")).read_text())
        assert info["status"] == "FAILED" and case.match in info["reason"]
        assert not list(workdir.glob("runs/*/ckpt/*"))


def test_corpus_size():
    assert len(CASES) >= 25


# ---- not bad input: grayscale / RGBA / palette images become 3 channels and train -------------------------
@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK"])
def test_image_modes_become_rgb(mode, workdir):
    make_folder(workdir / "imgs", {"a": mode, "b": "RGB"}, per_class=2)
    data = build_dataset(load_config(BASE + ["data.name=imagefolder:imgs", "data.n=0"]).data)
    assert data.images.shape == (4, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.num_classes == 2 and data.labels.tolist() == [0, 0, 1, 1]
    first = data.images[0]
    if mode in ("L", "LA", "I;16"):                               # gray: the three channels agree
        assert torch.equal(first[0], first[1]) and torch.equal(first[1], first[2])
    assert first.float().std() > 10                               # the random pixels survived the conversion


def test_grayscale_and_rgba_folder_trains(workdir, request, capsys):
    """The mixed-mode folder run (stopped after step 1) resumes and finishes through the CLI: exit 0."""
    ws = WS(workdir, request)
    run = ws.folder_run()
    assert main(["train", *FOLDER]) == 0
    assert "FINISHED" in capsys.readouterr().out
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "FINISHED" and info["step"] == 2
    assert info["num_classes"] == 4 and info["channels"] == 3


def test_rgba_is_composited_on_white(workdir):
    d = workdir / "imgs" / "a"
    d.mkdir(parents=True)
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(d / "clear.png")            # fully transparent black
    Image.new("RGBA", (16, 16), (0, 0, 255, 255)).save(d / "blue.png")        # opaque blue
    data = build_dataset(load_config(BASE + ["data.name=imagefolder:imgs", "data.n=0"]).data)
    assert data.images[1].unique().tolist() == [255]                          # clear.png: white
    assert data.images[0][:, 0, 0].tolist() == [0, 0, 255]                     # blue.png


# ---- not bad input: a tracking store that cannot be used --------------------------------------------------
def test_unusable_mlflow_store_trains_with_jsonl_and_says_so_in_one_line(workdir, monkeypatch, capsys):
    """A sqlite store under a file (a server that is down: tests/test_faults.py): the scheme is fine, the
    store is not; training goes on with JSONL."""
    (workdir / "afile").write_text("x")
    uri = f"sqlite:///{workdir}/afile/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    capsys.readouterr()
    code = main(["train", *BASE, "train.steps=1", "run.mlflow=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0, err
    run = next(workdir.glob("runs/*"))
    assert len(err) == 1, err                                          # no Python warning, no source line
    assert err[0].startswith(f"catlab: warning: MLflow at {uri} failed (") and \
        err[0].endswith(f"continuing with JSONL only. Sync afterwards with: catlab sync {Path('runs') / run.name}")
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "FINISHED" and info["mlflow_run_id"] is None
    names = {json.loads(x)["name"] for x in (run / "metrics.jsonl").read_text().splitlines()}
    assert {"d_loss", "g_loss", "cons"} <= names
    assert (workdir / "afile").read_text() == "x"


# ---- a read-only folder, as a user who cannot write there ------------------------------------------------
def _as_user(uid: int, gid: int, cwd: Path, argv: list[str]) -> int:
    """main(argv) in a forked child that runs as uid:gid in cwd; its exit code. (A fork, not a new
    interpreter: the venv's Python may live under /root, which nobody may read. One torch thread in the
    child, as in DataLoader workers: OpenMP's pool does not survive a fork.)"""
    pid = os.fork()
    if pid == 0:                                                       # the child: never returns
        code = 3
        try:
            torch.set_num_threads(1)
            os.chdir(cwd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            assert os.geteuid() == uid and os.getegid() == gid
            code = main(argv)
        except BaseException:  # noqa: BLE001 -- report it through the exit code and stderr
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_run_dir_read_only_as_unprivileged_user(workdir, capfd):
    """--run-dir under a folder the user may not write: exit 2, one line, nothing written. Root writes
    anywhere, so under root (CI) the command runs as `nobody` (a forked child that drops to its uid)."""
    argv = ["train", *BASE, "--run-dir", "locked/run"]
    root = Path(tempfile.mkdtemp(prefix="catlab-ro-"))                # not under pytest's 0700 tmp
    case, locked = root / "case", root / "case" / "locked"
    try:
        locked.mkdir(parents=True)
        for d in (root, case):
            d.chmod(0o755)
        locked.chmod(0o555)                                            # owned by us: read-only to others
        before = snapshot(case)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            (workdir / "afile").write_text("x")                        # the same path in this process first,
            assert main(["train", *BASE, "--run-dir", "afile/run"]) == 2  # so the child imports nothing
            capfd.readouterr()
            code = _as_user(nobody.pw_uid, nobody.pw_gid, case, argv)
        else:
            with contextlib.chdir(case):
                capfd.readouterr()
                code = main(argv)
        err = capfd.readouterr().err
        after = snapshot(case)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == "catlab: error: --run-dir locked/run cannot be written (Permission denied)", lines
    assert after == before
