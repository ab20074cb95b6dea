"""`catlab encode SOURCE --out STORE`: images -> SD-VAE latents in a latent store (catlab.data.store).

SOURCE is an image folder (one subfolder per class, as imagefolder:PATH: sorted names -> labels 0..C-1, files
in sorted order) or `torchvision:NAME` (a torchvision.datasets class, train split, read from --root; never
downloaded). The encoder is a local diffusers AutoencoderKL folder (--vae, else $CATLAB_VAE; never downloaded;
`pip install -e '.[latent]'`).

Preprocessing is the paper's pipeline (ADM's center_crop_arr, used by REPA and GAT): halve with a box filter
while the short side is >= 2 x resolution, resize the short side to the resolution (bicubic), centre crop;
pixels to [-1, 1]. --flip adds each image's horizontal mirror right after it (rows 2i, 2i + 1; labels
twice). The latent of an image is the posterior mean times the scale factor (0.18215 for SD-VAE), stored as
float16 by default; the store's manifest keeps the scale factor, the encoder's identity (its folder and a
digest of its files), the preprocessing and the counts per class.

Images are decoded by a thread pool one batch ahead of the encoder; batches run on the GPU when there is
one. Resume: rows are written batch by batch and progress.json records how many are final, so running the
same command again after an interruption continues at the first unrecorded batch. The batches are the same
as in an uninterrupted run, so the store comes out byte for byte the same, given the same device, software
and (on CPU) number of threads: the last bits of CPU convolutions depend on how many threads share them.
"""
from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from catlab.data import store
from catlab.data.latents import VAE_ENV, import_autoencoder, load_vae
from catlab.errors import RunFailed, UserError

SCALE_FACTOR = 0.18215                                 # SD-VAE's latent scale
TORCHVISION = "torchvision:"


# ---- preprocessing --------------------------------------------------------------------------------------
def center_crop_arr(img, size: int) -> np.ndarray:
    """PIL image -> uint8 (size, size, 3): ADM's center_crop_arr (box-halve, bicubic short side, centre crop)."""
    from PIL import Image
    while min(*img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.Resampling.BOX)
    scale = size / min(*img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.Resampling.BICUBIC)
    arr = np.array(img)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def to_rgb(img):
    from catlab.data.imagefolder import _to_rgb       # the same mode handling as imagefolder:PATH
    return _to_rgb(img)


# ---- sources: n images, their labels and class names, an identity --------------------------------------
class FolderSource:
    """An image folder: one subfolder per class (hidden files and non-images ignored, as imagefolder:PATH)."""

    def __init__(self, path: str):
        from catlab.data.imagefolder import list_images
        self.folder = Path(path).expanduser()
        if not self.folder.is_dir():
            raise UserError(f"SOURCE must be an image folder or torchvision:NAME, but got {path!r} "
                            "(no such folder)")
        self.class_names, self.paths, labels = list_images(self.folder)
        if not self.paths:
            raise UserError(f"SOURCE {path} must hold one subfolder of images per class, but it has none")
        self.labels = np.asarray(labels, np.int64)
        listing = [(str(p.relative_to(self.folder)), p.stat().st_size) for p in self.paths]
        self.ident = {"kind": "folder", "path": str(self.folder.resolve()), "images": len(self.paths),
                      "listing_sha256": hashlib.sha256(repr(listing).encode()).hexdigest()}

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int):
        from PIL import Image
        try:
            with Image.open(self.paths[i]) as im:
                im.load()
                return to_rgb(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise UserError(f"cannot decode image file {self.paths[i]} ({type(e).__name__}); remove it or "
                            "fix it, then run the same command again") from None


class TorchvisionSource:
    """torchvision.datasets.NAME, train split, from root (download=False)."""

    def __init__(self, name: str, root: str):
        import torchvision.datasets as tvd
        from catlab.data.base import data_root
        cls = getattr(tvd, name, None)
        if not isinstance(cls, type):
            raise UserError(f"SOURCE torchvision:NAME must name a torchvision.datasets class (CIFAR10, "
                            f"ImageNet, ...), but got NAME={name!r}")
        where = data_root(root)
        self.ds = None
        for kwargs in ({"train": True, "download": False}, {"split": "train", "download": False},
                       {"split": "train"}, {}):
            try:
                self.ds = cls(str(where), **kwargs)
                break
            except TypeError:
                continue
            except (RuntimeError, OSError, ValueError) as e:
                raise UserError(f"SOURCE torchvision:{name} must be present under --root {where} (nothing is "
                                f"downloaded), but it cannot be opened ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
        if self.ds is None or len(self.ds) == 0:
            raise UserError(f"SOURCE torchvision:{name} under --root {where} must hold images, but it has none")
        targets = getattr(self.ds, "targets", None)
        self.labels = None if targets is None else np.asarray(targets, np.int64)
        self.class_names = [str(c) for c in getattr(self.ds, "classes", [])]
        self.ident = {"kind": "torchvision", "name": name, "root": str(where), "images": len(self.ds)}

    def __len__(self) -> int:
        return len(self.ds)

    def image(self, i: int):
        img, label = self.ds[i]
        return to_rgb(img), int(label)


def open_source(spec: str, root: str = ""):
    if spec.startswith(TORCHVISION):
        return TorchvisionSource(spec[len(TORCHVISION):], root)
    return FolderSource(spec[len("imagefolder:"):] if spec.startswith("imagefolder:") else spec)


def _load(source, i: int, size: int) -> tuple[np.ndarray, int]:
    """Image i of source -> (uint8 (size, size, 3), label)."""
    got = source.image(i)
    img, label = got if isinstance(got, tuple) else (got, int(source.labels[i]))
    return center_crop_arr(img, size), label


# ---- the encoder ----------------------------------------------------------------------------------------
def encoder_identity(folder: Path, vae) -> dict:
    """What the latents depend on: the folder, a digest of its files' names and contents, the config."""
    import diffusers
    h = hashlib.sha256()
    for p in sorted(x for x in folder.rglob("*") if x.is_file() and not x.name.startswith(".")):
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    cfg = vae.config
    return {"class": "diffusers.AutoencoderKL", "diffusers": diffusers.__version__, "path": str(folder.resolve()),
            "files_sha256": h.hexdigest(), "latent_channels": int(cfg.latent_channels),
            "block_out_channels": list(cfg.block_out_channels)}


@torch.no_grad()
def encode_batch(vae, pixels: torch.Tensor, scale_factor: float, device) -> np.ndarray:
    """uint8 (B, 3, R, R) -> float32 (B, C, R/f, R/f): the posterior mean times scale_factor."""
    x = pixels.to(device).float() / 127.5 - 1.0                            # (B, 3, R, R) in [-1, 1]
    z = vae.encode(x).latent_dist.mean * scale_factor                      # (B, C, r, r)
    return z.float().cpu().numpy()


def _complete(out: str, settings: dict, shape: list, dtype: str) -> dict | None:
    """The manifest of a finished store at out made with these settings (None if out is not finished).

    Another finished store there is a UserError naming the first field that differs."""
    if not (Path(out) / store.MANIFEST).is_file():
        return None
    m = store.read_manifest(out)
    want = {"shape": shape, "dtype": dtype, **{k: settings[k] for k in ("source", "encoder", "preprocess",
                                                                      "scale_factor", "device")}}
    for key, value in want.items():
        if m.get(key) != value:
            raise UserError(f"--out {out} already holds a finished store made with other settings ({key}: "
                            f"{m.get(key)!r} there, {value!r} now); remove it or pick another --out")
    m["already_complete"] = True
    return m


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device must be auto, cpu or an available cuda device, but got device={device!r} "
                        "(no CUDA here)")
    return torch.device(device)


def encode(source: str, out: str, vae: str | None = None, resolution: int = 256, flip: bool = False,
           batch: int = 32, device: str = "auto", dtype: str = "float16", scale_factor: float = SCALE_FACTOR,
           root: str = "", workers: int = 4, progress: bool | None = None, stop_after: int | None = None) -> dict:
    """Encode SOURCE into the store OUT (see the module docstring); returns the manifest.

    stop_after: return after that many batches of this call (tests use it to interrupt a run)."""
    if batch < 1:
        raise UserError(f"--batch must be >= 1, but got batch={batch}")
    if resolution < 8 or resolution % 8:
        raise UserError(f"--resolution must be a multiple of 8, >= 8, but got resolution={resolution}")
    if not (np.isfinite(scale_factor) and scale_factor > 0):
        raise UserError(f"--scale-factor must be a finite number > 0, but got scale_factor={scale_factor}")
    if dtype not in store.DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(store.DTYPES)}, but got dtype={dtype!r}")
    vae_path = vae or os.environ.get(VAE_ENV) or ""
    if not vae_path:
        raise UserError(f"--vae must name a local diffusers AutoencoderKL folder (or set {VAE_ENV}), but none "
                        "was given")
    folder = Path(vae_path).expanduser()
    if not (folder / "config.json").is_file():
        raise UserError(f"--vae must name a local diffusers AutoencoderKL folder (with config.json), but got "
                        f"vae={vae_path!r}")
    import_autoencoder("catlab encode")
    dev = pick_device(device)
    src = open_source(source, root)
    model = load_vae(folder, dev, f"--vae {vae_path}")
    enc = encoder_identity(folder, model)
    down = 2 ** (len(model.config.block_out_channels) - 1)
    row = (int(model.config.latent_channels), resolution // down, resolution // down)
    copies = 2 if flip else 1
    preprocess = {"crop": "center_crop_arr (ADM)", "resolution": resolution, "flip": flip,
                  "latent": "posterior mean", "pixels": "[-1, 1]"}
    settings = {"source": src.ident, "encoder": enc, "preprocess": preprocess, "scale_factor": scale_factor,
                "batch": batch, "device": dev.type}
    done = _complete(out, settings, [len(src) * copies, *row], dtype)
    if done is not None:
        return done
    writer = store.StoreWriter(out, len(src) * copies, row, dtype, settings)
    start = writer.done // copies                                          # first image not yet written
    if writer.done % (batch * copies) and writer.done != writer.n:
        raise RunFailed(f"{out}: progress.json records {writer.done} rows, not a whole number of batches")
    from tqdm import tqdm
    bar = tqdm(total=len(src), initial=start, unit="img", desc=f"encode {Path(out).name}", dynamic_ncols=True,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    starts = list(range(start, len(src), batch))

    def submit(i0):                                                        # decode one batch in the pool
        return [pool.submit(_load, src, i, resolution) for i in range(i0, min(i0 + batch, len(src)))]

    try:
        pending = submit(starts[0]) if starts else None
        for k, i0 in enumerate(starts):
            items = [f.result() for f in pending]
            pending = submit(starts[k + 1]) if k + 1 < len(starts) else None     # the next batch, meanwhile
            px = torch.from_numpy(np.stack([a for a, _ in items])).permute(0, 3, 1, 2)  # (b, 3, R, R) uint8
            labels = np.asarray([y for _, y in items], np.int64)                # (b,)
            if flip:                                                        # rows 2i, 2i + 1: image, mirror
                px = torch.stack([px, px.flip(-1)], 1).flatten(0, 1)        # (2b, 3, R, R)
                labels = labels.repeat(2)
            z = encode_batch(model, px, scale_factor, dev)                  # (b', C, r, r)
            if z.shape[1:] != row:
                raise RunFailed(f"--vae {vae_path} gave latents of shape {z.shape[1:]}, expected {row}")
            if not np.isfinite(z).all() or not np.isfinite(z.astype(dtype)).all():
                raise RunFailed(f"--vae {vae_path} gave non-finite latents for images {i0}..{i0 + len(items) - 1}"
                                f" (in {dtype}); try --dtype float32")
            writer.write(i0 * copies, z, labels)
            bar.update(len(items))
            if stop_after is not None and k + 1 >= stop_after and k + 1 < len(starts):
                return {}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    names = src.class_names
    return writer.finish({"scale_factor": scale_factor, "encoder": enc, "preprocess": preprocess,
                          "source": src.ident, "device": dev.type, "class_names": names})
