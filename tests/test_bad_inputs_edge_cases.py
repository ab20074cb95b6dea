"""Inputs next to the bad-input corpus (test_bad_inputs_corpus.py) that its one rule does not fit.

Grayscale, gray+alpha, RGBA, palette, 16-bit and CMYK images are not bad input: they become 3 channels and
train (RGBA composited on white). A tracking store that cannot be used (a server down, a sqlite file under a
file) is not bad input either: training goes on with JSONL (exit 0) and one line says so (nothing is lost:
`catlab sync RUN_DIR` replays it later). A run dir in a read-only folder is bad input (exit 2, one line,
nothing written); the case runs as an unprivileged user (nobody) when the tests run as root, as CI does.
"""
import contextlib
import json
import os
import pwd
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from catlab.cli import main
from catlab.config import load_config
from catlab.data import build_dataset
from conftest import BASE, FOLDER, WS, make_folder, snapshot


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
    """A sqlite store under a file (a server that is down: tests/test_faults_mlflow.py): the scheme is fine, the
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
