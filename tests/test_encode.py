"""`catlab encode` with a real diffusers AutoencoderKL (tiny, random weights, built from a config: no download):
ADM's centre crop, the store it writes (flip copies, labels, manifest, scale factor), a killed encode re-run
giving the same bytes, DDP training on the store (2 CPU ranks) and decoding its samples for metrics."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[latent]')")

from PIL import Image  # noqa: E402

from catlab.cli import main  # noqa: E402
from catlab.data import build_dataset  # noqa: E402
from catlab.data.store import LABELS, LATENTS, MANIFEST, PROGRESS  # noqa: E402
from catlab.config import load_config  # noqa: E402
from catlab.encode import center_crop_arr, encode  # noqa: E402
from catlab.errors import UserError  # noqa: E402

RES, LAT, SF = 64, 8, 0.18215                      # 64 px images -> 4 x 8 x 8 latents (4 VAE levels: / 8)
SIZES = {"ant": [(300, 140), (64, 64), (80, 100), (41, 33)], "bee": [(90, 90), (120, 70), (70, 200)],
         "cat": [(64, 96), (256, 130), (100, 64)]}                         # (width, height) per image
ENCODE = ["--resolution", str(RES), "--flip", "--batch", "3", "--device", "cpu", "--workers", "2"]


def _vae():
    import safetensors.torch  # noqa: F401
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                         layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=RES)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An image folder (3 classes, 10 images of assorted sizes, plus files to ignore), a tiny VAE folder and
    the store an uninterrupted `catlab encode --flip` writes from them."""
    root = tmp_path_factory.mktemp("encode")
    g = np.random.default_rng(0)
    for name, sizes in SIZES.items():
        (root / "imgs" / name).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "imgs" / name / f"{i}.png")
    (root / "imgs" / "ant" / "notes.txt").write_text("not an image")
    (root / "imgs" / ".cache").mkdir()
    _vae().save_pretrained(root / "vae")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CATLAB_VAE", raising=False)
        assert main(["encode", str(root / "imgs"), "--out", str(root / "ref"), "--vae", str(root / "vae"),
                     *ENCODE]) == 0
    return root


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_center_crop_is_adms_center_crop_arr():
    g = np.random.default_rng(1)
    big = Image.fromarray(g.integers(0, 256, (140, 300, 3), dtype=np.uint8))        # 300 x 140
    # 140 >= 2 x 64: box-halve to 150 x 70; bicubic to 137 x 64 (short side 64); centre crop at x = 36
    want = np.asarray(big.resize((150, 70), Image.Resampling.BOX).resize((137, 64), Image.Resampling.BICUBIC))
    assert np.array_equal(center_crop_arr(big, 64), want[:, 36:100])
    small = Image.fromarray(g.integers(0, 256, (20, 32, 3), dtype=np.uint8))        # upscaled: 102 x 64
    want = np.asarray(small.resize((102, 64), Image.Resampling.BICUBIC))
    assert np.array_equal(center_crop_arr(small, 64), want[:, 19:83])


def test_encode_writes_a_store_of_scaled_posterior_means_with_flips(tiny):
    from catlab.encode import to_rgb
    from catlab.data.latents import load_vae
    m = json.loads((tiny / "ref" / MANIFEST).read_text())
    assert sorted(os.listdir(tiny / "ref")) == [LABELS, LATENTS, MANIFEST]             # progress.json gone
    assert m["shape"] == [20, 4, LAT, LAT] and m["dtype"] == "float16" and m["scale_factor"] == SF
    assert m["class_names"] == ["ant", "bee", "cat"] and m["class_counts"] == [8, 6, 6] and m["num_classes"] == 3
    assert m["preprocess"]["flip"] is True and m["preprocess"]["resolution"] == RES
    assert m["source"]["images"] == 10 and m["device"] == "cpu"
    h = hashlib.sha256()
    for p in sorted((tiny / "vae").iterdir()):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    assert m["encoder"]["files_sha256"] == h.hexdigest() and m["encoder"]["diffusers"] == "0.30.0"
    lab = np.load(tiny / "ref" / LABELS)
    assert lab.tolist() == [0] * 8 + [1] * 6 + [2] * 6
    lat = np.load(tiny / "ref" / LATENTS)
    # rows 2i, 2i + 1: image i (folder order) and its mirror, each the posterior mean x 0.18215, in float16
    vae = load_vae(tiny / "vae")
    paths = [tiny / "imgs" / c / f"{i}.png" for c, s in SIZES.items() for i in range(len(s))]
    for i in (0, 5, 9):
        px = torch.from_numpy(center_crop_arr(to_rgb(Image.open(paths[i])), RES).copy()).permute(2, 0, 1)[None]
        x = torch.cat([px, px.flip(-1)]).float() / 127.5 - 1                        # (2, 3, 64, 64)
        with torch.no_grad():
            want = vae.encode(x).latent_dist.mean * SF                               # (2, 4, 8, 8)
        assert np.allclose(lat[2 * i:2 * i + 2], want.numpy(), atol=2e-3, rtol=2e-3), i
    assert not np.allclose(lat[0], lat[1], atol=1e-2)                                # the mirror differs
    s = build_dataset(load_config([f"data.name=latents:{tiny / 'ref'}", f"data.resolution={LAT}",
                                   "model.stages=3"]).data)
    assert s.reader is not None and s.scale_factor == SF and s.channels == 4 and s.class_names == ["ant", "bee", "cat"]
    assert torch.equal(s.images, torch.from_numpy(lat))


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(int(os.environ["THREADS"]))  # CPU convolutions' last bits depend on the thread count
    from catlab.cli import main
    from catlab.data import store
    real, calls = store.StoreWriter.write, [0]
    def write(self, start, latents, labels):     # the 3rd batch: half its rows reach the file, then SIGKILL
        if calls[0] == 2:
            with open(self.folder / store.LATENTS, "r+b") as f:
                f.seek(self.offset + start * self.row_bytes)
                f.write(b"\\xff" * (len(latents) // 2 * self.row_bytes))
            os.kill(os.getpid(), signal.SIGKILL)
        calls[0] += 1
        real(self, start, latents, labels)
    store.StoreWriter.write = write
    sys.exit(main(sys.argv[1:]))
""")


def test_killed_encode_rerun_gives_the_same_bytes(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CATLAB_VAE", raising=False)
    out = tmp_path / "store"
    args = ["encode", str(tiny / "imgs"), "--out", str(out), "--vae", str(tiny / "vae"), *ENCODE]
    env = {**os.environ, "THREADS": str(torch.get_num_threads())}
    run = subprocess.run([sys.executable, "-c", KILL_SCRIPT, *args], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert json.loads((out / PROGRESS).read_text())["done"] == 12 and not (out / MANIFEST).exists()
    with pytest.raises(UserError, match="catlab encode has not finished writing it; run the same command again"):
        build_dataset(load_config([f"data.name=latents:{out}", f"data.resolution={LAT}", "model.stages=3"]).data)
    # other settings are refused in one line; the same command finishes it: the same bytes as uninterrupted
    assert main([*args[:-6], "--batch", "2", *args[-4:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was started with other settings (batch: 3 then, 2 now)" in err
    assert main(args) == 0 and "wrote" in capsys.readouterr().out
    assert _files(out) == _files(tiny / "ref")
    assert main(args) == 0 and "already complete" in capsys.readouterr().out


def test_encode_errors_are_one_line(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CATLAB_VAE", raising=False)
    cases = [(["encode", str(tiny / "imgs"), "--out", str(tmp_path / "a")], "--vae must name a local diffusers"),
             (["encode", str(tiny / "imgs"), "--out", str(tmp_path / "b"), "--vae", str(tmp_path)], "config.json"),
             (["encode", str(tmp_path / "nope"), "--out", str(tmp_path / "c"), "--vae", str(tiny / "vae")],
              "SOURCE must be an image folder or torchvision:NAME"),
             (["encode", "torchvision:Nope", "--out", str(tmp_path / "d"), "--vae", str(tiny / "vae")],
              "must name a torchvision.datasets class"),
             (["encode", str(tiny / "imgs"), "--out", str(tiny / "ref"), "--vae", str(tiny / "vae"), *ENCODE[:2]],
              "already holds a finished store made with other settings (shape")]
    for argv, match in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and match in err, err


def test_torchvision_source_labels_and_class_names(tiny, tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    class Tiny:                                                    # the torchvision interface encode relies on
        classes = ["zero", "one"]

        def __init__(self, root, train=True, download=False):
            assert train and not download
            self.targets = [1, 0, 1]

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return Image.new("L", (40 + 10 * i, 32), 60 * i), self.targets[i]

    monkeypatch.setattr(tvd, "Tiny", Tiny, raising=False)
    m = encode("torchvision:Tiny", str(tmp_path / "tv"), vae=str(tiny / "vae"), resolution=RES, device="cpu",
               root=str(tmp_path))
    assert m["shape"] == [3, 4, LAT, LAT] and m["class_names"] == ["zero", "one"] and m["class_counts"] == [1, 2]
    assert np.load(tmp_path / "tv" / LABELS).tolist() == [1, 0, 1] and m["source"]["kind"] == "torchvision"


def test_ddp_training_on_the_store_then_decoding_for_metrics(tiny, workdir, monkeypatch, capsys):
    """2 CPU ranks train 4 steps on the encoded store; `catlab sample` and the FID evaluation decode with
    the same VAE (its folder as $CATLAB_VAE)."""
    from analysis.run_eval import evaluate_run
    from catlab.checkpoint import safe_load
    over = [f"data.name=latents:{tiny / 'ref'}", f"data.resolution={LAT}", "model.stages=3", "train.batch=8",
            "train.steps=4", "train.log_every=2", "train.sample_every=4", "train.ckpt_every=100",
            "run.progress=false", "run.mlflow=false", "run.root=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "catlab",
           "train", *over]
    out = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    run_dir = next((workdir / "ddp").glob("*-s0"))
    last = safe_load(run_dir / "ckpt" / "last.pt")
    assert last["step"] == 4 and last["meta"] == {"num_classes": 3, "channels": 4}
    assert last["data"] == {"epoch": 1, "position": 6, "seed": 0, "world": 2}   # 16 rows a rank, shards of 10
    monkeypatch.setenv("CATLAB_VAE", str(tiny / "vae"))
    monkeypatch.setenv("CATLAB_CACHE", str(workdir / "cache"))
    assert main(["sample", str(run_dir), "--n", "3", "--out", str(workdir / "png"), "--seed", "1"]) == 0
    assert "wrote 3 PNGs (64x64, stage 3)" in capsys.readouterr().out
    assert Image.open(workdir / "png" / "00002_class2.png").size == (RES, RES)
    df = evaluate_run(run_dir, n=8, metrics=("fid",), distances=("l2",), log=False, reuse=False)
    info = df.attrs["info"]
    assert info["latent"] and info["decoder"]["scale_factor"] == SF and info["skipped"] == []
    fid = df[df.metric.str.startswith("fid_")]
    assert sorted(fid.stage) == [1, 2, 3] and np.isfinite(fid.value).all()
