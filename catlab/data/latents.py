"""`latents:PATH`: the paper's own setting, a GAN trained on VAE latents (e.g. SD-VAE, 32 x 32 x 4).

PATH is a latent store folder written by `catlab encode` (catlab.data.store: latents.npy memory-mapped,
labels.npy, manifest.json; the latents are stored already multiplied by the manifest's scale_factor and are
never loaded whole: the Batcher reads each batch's rows), or an .npz held in memory, with
    latents       (N, C, H, W) float (float16 is kept as float16 in memory; anything else becomes float32)
    labels        (N,) int, in [0, num_classes)
    scale_factor  optional scalar, default 1.0: the latents are multiplied by it on load, so the model trains
                  on latents * scale_factor (SD-VAE: store the raw posterior latents and 0.18215, or store
                  already scaled latents and leave it out). A decoder divides by it again.
    class_names   optional (num_classes,) str
data.resolution must equal H (= W); the models get C channels in and out (the trainer passes the data's
channels). data.n keeps a seeded subset (0 = all), like imagefolder (of a store, that subset is read into
memory: it is meant for small subsets). The latents are not mapped to
[-1, 1]: the Batcher passes float sets through as they are, and the pyramid, the losses and the
misalignment diagnostics (L2 in latent space) work on them unchanged.

Pixel metrics (FID, LPIPS) need pixels: `load_decoder()` loads a local diffusers AutoencoderKL from
$CATLAB_VAE (diffusers is an optional dependency; loaded once per process and device). Without one it
prints a one-line notice and returns None: analysis skips the pixel metrics (the L2 diagnostics still run
in latent space) and `catlab sample` writes latents instead of PNGs. `decoder_for(data_cfg)` is the
decoder of a run's data (its .npz's scale_factor). `decode_stages` decodes each stage at its own latent
scale (s_k latent px -> 8 s_k px for SD-VAE), in batches. `decoder.ident` names what decoded pixels
depend on (decoder, its files, scale_factor): analysis keys its caches by it.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from catlab.data import store
from catlab.data.base import ImageSet
from catlab.data.pyramid import to_uint8
from catlab.errors import UserError

PREFIX = "latents:"
VAE_ENV = "CATLAB_VAE"
_noticed: set[str] = set()
_VAES: dict[tuple[str, str], object] = {}    # (folder, device) -> loaded AutoencoderKL


@dataclass
class LatentSet(ImageSet):
    """An ImageSet whose `images` are float latents (N, C, H, W), already multiplied by scale_factor.

    reader: for a store, `images` is memory-mapped and reader(idx) reads rows idx without mapping them into
    the process (catlab.data.store.RowReader); the Batcher uses it. None: `images` is in memory."""
    scale_factor: float = 1.0
    reader: object = None

    def __post_init__(self):
        x = self.images
        if not x.is_floating_point() or x.dim() != 4 or x.shape[2] != x.shape[3]:
            raise ValueError(f"LatentSet.images must be float (N, C, H, H), got {x.dtype} {tuple(x.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (x.shape[0],):
            raise ValueError(f"LatentSet.labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"LatentSet has {self.num_classes} classes but {len(self.class_names)} class names")


def is_latent(name: str) -> bool:
    return name.startswith(PREFIX)


def _fail(path, what: str):
    raise UserError(f"data.name=latents:PATH must name an .npz with {what}, but got name='latents:{path}'")


def _read(path: Path):
    if not path.is_file():
        _fail(path, "latents (N, C, H, W) and labels (N,) (the file does not exist)")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 -- not a zip, truncated, pickled objects
        _fail(path, f"latents and labels (it cannot be read: {type(e).__name__})")


def read_scale_factor(path: str | Path) -> float:
    """The scale_factor of a store (its manifest) or an .npz (1.0 if absent), without loading the latents."""
    if store.is_store(path):
        return float(store.read_manifest(path)["scale_factor"])
    with _read(Path(path).expanduser()) as f:
        return float(f["scale_factor"].reshape(-1)[0]) if "scale_factor" in f.files else 1.0


def load_latents(path: str | Path, data_cfg, seed: int = 0) -> LatentSet:
    """The LatentSet of a store or an .npz (see the module docstring), checked against data_cfg."""
    if store.is_store(path):
        return load_store(path, data_cfg, seed)
    path = Path(path).expanduser()
    with _read(path) as f:
        for key in ("latents", "labels"):
            if key not in f.files:
                _fail(path, f"a '{key}' array (it has {', '.join(f.files) or 'nothing'})")
        lat, lab = f["latents"], f["labels"]
        scale = f["scale_factor"] if "scale_factor" in f.files else np.ones(1)
        names = [str(n) for n in f["class_names"]] if "class_names" in f.files else []
    if lat.ndim != 4 or lat.shape[2] != lat.shape[3] or lat.dtype.kind != "f" or lat.shape[0] == 0:
        _fail(path, f"float latents (N, C, H, H), not {lat.dtype} {lat.shape}")
    if lab.shape != (lat.shape[0],) or lab.dtype.kind not in "iu" or (lab.size and lab.min() < 0):
        _fail(path, f"labels (N,) int >= 0 for N={lat.shape[0]}, not {lab.dtype} {lab.shape}")
    try:
        scale = float(scale.reshape(-1)[0]) if scale.size == 1 else math.nan
    except (TypeError, ValueError):
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        _fail(path, "a scale_factor that is one finite number > 0")
    _check_resolution(lat.shape[-1], data_cfg)
    n = len(lat)
    keep = np.arange(n)
    if data_cfg.n and data_cfg.n < n:
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(n, generator=g)[:data_cfg.n].sort().values.numpy()
    x = torch.from_numpy(np.ascontiguousarray(lat[keep]))
    x = x if x.dtype == torch.float16 else x.float()
    x = x * scale if scale != 1.0 else x                     # (N, C, H, H)
    if not torch.isfinite(x).all():
        _fail(path, "finite latents (it holds NaN or inf)")
    labels = torch.from_numpy(lab[keep].astype(np.int64))
    num_classes = max(int(lab.max()) + 1, len(names))
    if names and len(names) != num_classes:
        _fail(path, f"class_names for all {num_classes} classes, not {len(names)}")
    return LatentSet(x, labels, num_classes, data_cfg.name, names, scale_factor=scale)


def _check_resolution(size: int, data_cfg) -> None:
    if size != data_cfg.resolution:
        raise UserError(f"data.resolution must equal the latents' size {size} for {data_cfg.name}, "
                        f"but got resolution={data_cfg.resolution}")


def load_store(path: str | Path, data_cfg, seed: int = 0) -> LatentSet:
    """The LatentSet of a store: latents memory-mapped (nothing read), labels in memory.

    The latents were checked finite when they were encoded; they are not scanned here (that would read
    the whole store). data.n: the same seeded subset as an .npz, read into memory."""
    m, lat, lab, reader = store.open_store(path)
    _check_resolution(m["shape"][-1], data_cfg)
    names = [str(c) for c in m.get("class_names", [])]
    num_classes = max(int(lab.max()) + 1, len(names))
    if names and len(names) != num_classes:
        store._fail(path, f"class_names for all {num_classes} classes, not {len(names)}")
    n = len(lat)
    if data_cfg.n and data_cfg.n < n:
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(n, generator=g)[:data_cfg.n].sort().values
        x, reader = reader(keep), None                                     # (n, C, H, H), in memory
        labels = torch.from_numpy(lab[keep.numpy()])
    else:
        x, labels = torch.from_numpy(lat), torch.from_numpy(lab)         # (N, C, H, H) mapped, (N,)
    return LatentSet(x, labels, num_classes, data_cfg.name, names, scale_factor=float(m["scale_factor"]),
                     reader=reader)


# ---- decoding to pixels (optional; diffusers) ---------------------------------------------------
def notice(message: str) -> None:
    """A one-line notice on stderr, once per process."""
    if message not in _noticed:
        _noticed.add(message)
        print(f"catlab: {message}", file=sys.stderr)


class LatentDecoder:
    """latents as trained (times scale_factor) (B, C, h, w) -> pixels float [-1, 1] (B, 3, 8h, 8w), in batches.

    vae: anything with .decode(z).sample (a diffusers AutoencoderKL). name, fingerprint: what identifies
    its weights (load_decoder passes the folder and a digest of its files' names, sizes and mtimes).
    """

    def __init__(self, vae, scale_factor: float = 1.0, batch: int = 64, name: str = "", fingerprint: str = ""):
        self.vae, self.scale_factor, self.batch = vae, scale_factor, batch
        self.name, self.fingerprint = name or type(vae).__name__, fingerprint
        p = next(vae.parameters(), None) if hasattr(vae, "parameters") else None
        self.device = p.device if p is not None else torch.device("cpu")
        self.dtype = p.dtype if p is not None else torch.float32

    @property
    def ident(self) -> dict:
        """What decoded pixels depend on, for cache keys: decoder name, its files' digest, scale_factor."""
        return {"decoder": self.name, "fingerprint": self.fingerprint, "scale_factor": float(self.scale_factor)}

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        out = []
        for part in latents.split(self.batch):
            z = part.to(self.device, self.dtype) / self.scale_factor
            out.append(self.vae.decode(z).sample.float().clamp(-1, 1).cpu())
        return torch.cat(out)


def folder_fingerprint(path: Path) -> str:
    """A digest of a folder's file names, sizes and mtimes (cheap; changes when the weights change)."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    stats = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(repr(stats).encode()).hexdigest()[:12]


def load_decoder(scale_factor: float = 1.0, path: str | None = None, device="cpu") -> LatentDecoder | None:
    """The AutoencoderKL at path (else $CATLAB_VAE), or None with a one-line notice when none is given."""
    path = path or os.environ.get(VAE_ENV) or ""
    if not path:
        notice(f"latent run without a decoder: pixel metrics (FID, LPIPS) skipped and samples stay latents; "
               f"set {VAE_ENV}=PATH to a local diffusers AutoencoderKL folder to decode them")
        return None
    folder = Path(path).expanduser()
    if not folder.exists():
        raise UserError(f"{VAE_ENV} must name a local diffusers AutoencoderKL folder, but got {VAE_ENV}={path!r} "
                        "(it does not exist)")
    vae = load_vae(folder, device, f"{VAE_ENV}={path}")
    return LatentDecoder(vae, scale_factor, name=str(folder.resolve()), fingerprint=folder_fingerprint(folder))


def import_autoencoder(who: str):
    """diffusers.AutoencoderKL, or a one-line UserError saying that `who` needs the optional extra."""
    try:
        import safetensors.torch  # noqa: F401  -- diffusers 0.30 uses safetensors.torch without importing it
        from diffusers import AutoencoderKL
    except ImportError:
        raise UserError(f"{who} needs the optional dependency diffusers (pip install -e '.[latent]'), "
                        "but it is not installed") from None
    return AutoencoderKL


def load_vae(folder: Path, device="cpu", who: str = "a VAE"):
    """The local diffusers AutoencoderKL in folder (never downloaded), eval, frozen; once per process and device."""
    AutoencoderKL = import_autoencoder(who)
    key = (str(Path(folder).resolve()), str(torch.device(device)))
    if key not in _VAES:
        try:
            vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{who} must name a local diffusers AutoencoderKL folder (config.json and weights), "
                            f"but it cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        _VAES[key] = vae.to(device).eval().requires_grad_(False)
    return _VAES[key]


def decoder_for(data_cfg, device="cpu") -> LatentDecoder | None:
    """The decoder of a latents:PATH run (scale_factor from its store or .npz), or None (after the notice)."""
    return load_decoder(read_scale_factor(data_cfg.name[len(PREFIX):]), device=device)


def decode_stages(stages: list[torch.Tensor], decoder: LatentDecoder) -> list[torch.Tensor]:
    """K stage latents (N, C, s_k, s_k), coarse to fine -> K pixel images (N, 3, f s_k, f s_k) in [-1, 1]."""
    return [decoder(x) for x in stages]


def decode_to_pixels(stages, decoder, keep: int = 0, batch: int = 256):
    """K stage latents (N, C, s_k, s_k) -> (K uint8 (N, 3, f s_k, f s_k), K float [-1, 1] of the first `keep`).

    Decodes in chunks of `batch`, so only the uint8 pixels of all N samples are held."""
    u8, first = [], []
    for x in stages:
        parts, head = [], []
        for i in range(0, len(x), batch):
            px = decoder(x[i:i + batch])                     # (b, 3, f s, f s) float [-1, 1]
            parts.append(to_uint8(px))
            if i < keep:
                head.append(px[:keep - i])
        u8.append(torch.cat(parts))
        first.append(torch.cat(head) if head else None)
    return u8, first
