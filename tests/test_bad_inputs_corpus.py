"""The bad-input corpus: the CLI, configs, data, checkpoints, studies, the search and tracking URIs.

Every case of the corpus gets one line on stderr (no traceback), a non-zero exit (2 for bad input, 1 for
a run that started and failed), and leaves nothing half-written: the folder tree and every file in it are
byte-for-byte what they were (no run dir, no studies/<x>, no .tmp), except that a failed run keeps its
record (run.json FAILED). A tracking URI whose scheme can never work is bad input (exit 2, before any work).
The runs the cases start from (stopped after step 1 of 2) and the folder snapshots are in conftest.py; the
inputs this rule does not fit are in test_bad_inputs_edge_cases.py.
"""
import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from catlab.cli import main
from catlab.config import load_config, save_config
from conftest import BASE, FOLDER, WS, _image, no_network, snapshot
from experiments import Study


# ---- helpers ------------------------------------------------------------------------------------------
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@dataclass
class Case:
    id: str
    setup: Callable            # (ws) -> argv; runs in the case's own folder
    code: int                  # 2 bad input, 1 a run that failed
    match: str                 # a piece of the one-line message
    offline: bool = False      # block the network while the command runs


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
