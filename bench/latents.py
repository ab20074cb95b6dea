"""The latent store at scale: training's peak RSS against the store's size, and `catlab encode`'s speed.

    python bench/latents.py rss    [--n 5000] [--factor 20] [--steps 10] [--npz] [--dir DIR]
    python bench/latents.py encode [--images 32] [--batch 8] [--threads N]

rss: writes two synthetic stores of 4 x 32 x 32 float16 latents (n and factor x n rows: 40 MB and 800 MB by
default), then for each, in a fresh process, (a) trains `--steps` steps of the default tiny model from it and
(b) reads one whole epoch through the Batcher (every row once, batch 512). Peak RSS per process is
/usr/bin/time -v's "Maximum resident set size" (GNU time must be installed). --npz adds the large
set as an in-memory .npz, the contrast that shows what loading it would cost.

encode: an AutoencoderKL of SD-VAE's shape (sd-vae-ft-ema's config, random weights: the same arithmetic as the
real weights, which are not needed) encodes `--images` synthetic 500 x 375 JPEGs (ImageNet's typical size)
at 256 px through `catlab encode`, timed end to end and per part (decode + crop, VAE encode); the time per
10k images is extrapolated from that. Needs the latent extra (pip install -e '.[latent]').

Writes bench/out/latents_<mode>.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parent.parent
TIME = "/usr/bin/time"                                 # GNU time (apt-get install time)

SD_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
          "block_out_channels": (128, 256, 512, 512), "sample_size": 256, "act_fn": "silu",
          "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}

EPOCH_SCRIPT = """
import sys, torch
from catlab.config import load_config
from catlab.data import Batcher, build_dataset
torch.set_num_threads(1)
data = build_dataset(load_config(sys.argv[1:]).data)
b = Batcher(data, 512, seed=0)
total = 0.0
while b.epoch == 0:
    total += float(next(b)[0][:, 0, 0, 0].sum())
assert len(data) == b.n and data.reader is not None or "npz" in sys.argv[1], "not the whole store, mapped"
print(len(data), total)
"""


def peak_rss_mb(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(peak RSS in MB of the process cmd, wall seconds), from /usr/bin/time -v's "Maximum resident set size".

    Not from this process's wait4: Linux carries a parent's RSS at fork into the child's ru_maxrss across
    exec, and this process has just written the stores. `time` is a small parent."""
    t = time.perf_counter()
    out = subprocess.run([TIME, "-v", *cmd], cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({out.returncode}):\n{out.stderr[-2000:]}")
    kb = next(line.split(":")[1] for line in out.stderr.splitlines() if "Maximum resident set size" in line)
    return int(kb) / 1024, time.perf_counter() - t


def rss(args) -> dict:
    from catlab.data.store import write_store
    work = Path(args.dir or tempfile.mkdtemp(prefix="catlab-rss-"))
    work.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    sets = {}
    for name, n in (("small", args.n), ("large", args.n * args.factor)):
        folder = work / name
        if not (folder / "manifest.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            lat = np.lib.format.open_memmap(work / f"{name}.tmp.npy", "w+", np.float16, (n, 4, 32, 32))
            for i in range(0, n, 8192):                                # written in parts: the bench itself stays small
                lat[i:i + 8192] = g.normal(0, 1, (min(8192, n - i), 4, 32, 32))
            write_store(folder, lat, np.arange(n) % 10, scale_factor=0.18215)
            del lat
            (work / f"{name}.tmp.npy").unlink()
        sets[name] = f"latents:{folder}"
    if args.npz:
        npz = work / "large.npz"
        if not npz.exists():
            np.savez(npz, latents=np.load(work / "large" / "latents.npy"), labels=np.load(work / "large" / "labels.npy"))
        sets["large-npz"] = f"latents:{npz}"
    rows = {}
    py = sys.executable
    for name, spec in sets.items():
        over = [f"data.name={spec}", "data.resolution=32", "data.n=0", f"train.steps={args.steps}", "train.batch=32",
                "train.log_every=5", f"train.sample_every={10 * args.steps}", f"train.ckpt_every={10 * args.steps}",
                "run.mlflow=false", "run.progress=false", f"run.root={work / 'runs' / name}"]
        shutil.rmtree(work / "runs" / name, ignore_errors=True)
        train_mb, train_s = peak_rss_mb([py, "-m", "catlab", "train", *over], {"OMP_NUM_THREADS": "1"})
        epoch_mb, epoch_s = peak_rss_mb([py, "-c", EPOCH_SCRIPT, f"data.name={spec}", "data.resolution=32", "data.n=0"],
                                        {"OMP_NUM_THREADS": "1"})
        size = sum(p.stat().st_size for p in Path(spec[len("latents:"):]).glob("*")) if "npz" not in name else \
            Path(spec[len("latents:"):]).stat().st_size
        rows[name] = {"rows": args.n * (1 if name == "small" else args.factor), "file_mb": size / 2**20,
                      "train_peak_rss_mb": train_mb, "train_s": train_s, "epoch_peak_rss_mb": epoch_mb,
                      "epoch_s": epoch_s}
        print(f"{name:10s} {rows[name]['rows']:>8d} rows {size / 2**20:8.1f} MB   train {args.steps} steps: "
              f"peak RSS {train_mb:7.1f} MB   one epoch through the Batcher: peak RSS {epoch_mb:7.1f} MB")
    s, big = rows["small"], rows["large"]
    result = {"mode": "rss", "date": str(date.today()), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "steps": args.steps, "factor": args.factor, "sets": rows,
              "train_rss_ratio": big["train_peak_rss_mb"] / s["train_peak_rss_mb"],
              "epoch_rss_ratio": big["epoch_peak_rss_mb"] / s["epoch_peak_rss_mb"]}
    print(f"large / small peak RSS: training {result['train_rss_ratio']:.3f}, one epoch "
          f"{result['epoch_rss_ratio']:.3f} (store {args.factor}x larger)")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return result


def encode_speed(args) -> dict:
    import torch
    from PIL import Image
    from catlab.data.latents import import_autoencoder
    from catlab.encode import _load, encode, encode_batch, open_source
    if args.threads:
        torch.set_num_threads(args.threads)
    AutoencoderKL = import_autoencoder("bench/latents.py encode")
    work = Path(tempfile.mkdtemp(prefix="catlab-encode-"))
    try:
        torch.manual_seed(0)
        AutoencoderKL(**SD_VAE).save_pretrained(work / "vae")
        g = np.random.default_rng(0)
        base = g.integers(0, 256, (375 // 5, 500 // 5, 3), dtype=np.uint8)  # smooth-ish content, JPEG-sized
        for i in range(args.images):
            cls = work / "imgs" / f"n{i % 4:08d}"
            cls.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(np.roll(base, i, axis=1)).resize((500, 375), Image.Resampling.BICUBIC)
            img.save(cls / f"{i:05d}.JPEG", quality=90)
        t = time.perf_counter()
        encode(str(work / "imgs"), str(work / "store"), vae=str(work / "vae"), resolution=256, batch=args.batch,
               device="cpu", workers=2, progress=False)
        total = time.perf_counter() - t
        src = open_source(str(work / "imgs"))
        t = time.perf_counter()
        px = [_load(src, i, 256)[0] for i in range(args.images)]
        decode = time.perf_counter() - t
        vae = AutoencoderKL.from_pretrained(str(work / "vae"), local_files_only=True, low_cpu_mem_usage=False).eval()
        x = torch.from_numpy(np.stack(px[:args.batch])).permute(0, 3, 1, 2)
        t = time.perf_counter()
        encode_batch(vae, x, 0.18215, torch.device("cpu"))
        vae_s = (time.perf_counter() - t) / len(x)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"mode": "encode", "date": str(date.today()), "device": "cpu", "threads": torch.get_num_threads(),
              "cpus": os.cpu_count(), "images": args.images, "batch": args.batch,
              "s_per_image_end_to_end": total / args.images, "s_per_image_decode_crop": decode / args.images,
              "s_per_image_vae": vae_s, "h_per_10k_images": total / args.images * 1e4 / 3600}
    print(f"catlab encode on CPU ({result['threads']} threads), SD-VAE-shaped AutoencoderKL at 256 px, batch "
          f"{args.batch}: {result['s_per_image_end_to_end']:.3f} s/image end to end (JPEG decode + crop "
          f"{result['s_per_image_decode_crop'] * 1e3:.1f} ms, VAE {result['s_per_image_vae']:.3f} s): "
          f"{result['h_per_10k_images']:.2f} h per 10k images")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("rss")
    r.add_argument("--n", type=int, default=5000)
    r.add_argument("--factor", type=int, default=20)
    r.add_argument("--steps", type=int, default=10)
    r.add_argument("--npz", action="store_true", help="also the large set as an in-memory .npz")
    r.add_argument("--dir", default="", help="keep the stores here (default: a temporary folder)")
    e = sub.add_parser("encode")
    e.add_argument("--images", type=int, default=32)
    e.add_argument("--batch", type=int, default=8)
    e.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    result = rss(args) if args.mode == "rss" else encode_speed(args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"latents_{args.mode}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
