"""The domain feature extractors: small CNNs, each trained on the labels of one data set.

They are the offline stand-in for Inception (FID/KID/PRC/IS); the `shapes` one is also the trunk of
`lpips-domain`. Each weights file records the data it was trained on (meta["dataset"], meta["digest"]).

    net = load_domain_extractor()             # frozen, eval, cached per (path, device)
    path, trained_on = extractor_for("layouts")          # the packaged layouts extractor
    path, trained_on = extractor_for("imagefolder:/x")   # one trained on that folder (cached by its
                                                         # digest), else the shapes one: trained_on="shapes"

Packaged: domain_extractor.pt (`shapes`) and layouts_extractor.pt (`layouts`). For any other data set,
`python -m catlab.metrics.train_extractor --data imagefolder:PATH` writes one into extractor_cache(),
named by the data's digest (data_digest: the images and labels at 32 px), and catlab then uses it there.
    pool, logits = net(x)                     # (B, 128) (unit RMS on the training set), (B, num_classes)
    maps = net.layers(x)                      # 4 maps: (B,32,32,32) (B,64,16,16) (B,128,8,8) (B,128,4,4)

Input convention: float images in [-1, 1] (B, 3, H, W), or uint8 in [0, 255] (B, 3, H, W), which is
mapped to [-1, 1] as u8 / 127.5 - 1. Any H, W works: inputs are resized bilinearly to the native 32 px
(align_corners=False; antialiased when shrinking, plain when enlarging), so a 4-px stage output is seen
the way the extractor saw coarse scales in training (area-downsampled, then bilinear back to 32).

Weights: `domain_extractor.pt` beside this file, written by `python -m catlab.metrics.train_extractor`.
It holds {"state_dict", "meta"} (meta: num_classes, widths, dataset, held-out accuracy, version).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from catlab.errors import UserError

NATIVE = 32                               # the extractor's input size (px)
WIDTHS = (32, 64, 128, 128)               # channels of the 4 conv layers (strides 1, 2, 2, 2)
WEIGHTS = Path(__file__).with_name("domain_extractor.pt")
PACKAGED = {"shapes": WEIGHTS, "layouts": Path(__file__).with_name("layouts_extractor.pt")}


# ---- input handling -------------------------------------------------------------------------------
def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]; float inputs are returned unchanged (assumed in [-1, 1])."""
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    return x


def to_native(x: torch.Tensor, size: int = NATIVE) -> torch.Tensor:
    """Resize (B, C, H, W) to (B, C, size, size), bilinear; identity when the size already matches."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = x.shape[-2] > size or x.shape[-1] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


# ---- the network ----------------------------------------------------------------------------------
class DomainNet(nn.Module):
    """conv3x3-ReLU x 4 (strides 1, 2, 2, 2) -> global average pool -> linear classifier."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = WIDTHS, in_channels: int = 3):
        super().__init__()
        chans = (in_channels, *widths)
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1)
            for i in range(len(widths)))
        self.head = nn.Linear(widths[-1], num_classes)
        # pooled features are multiplied by this constant, set after training so that their RMS over the
        # training images is 1 (Inception's pool features have a similar scale; KID's cubic kernel stays
        # well-conditioned in float32). The logits use the unscaled features.
        self.register_buffer("feature_scale", torch.ones(()))
        self.num_classes = num_classes
        self.widths = tuple(widths)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The post-ReLU maps of every conv layer, for LPIPS. x: (B, 3, H, W) float [-1, 1] or uint8."""
        h = to_native(to_unit_range(x))                               # (B, 3, 32, 32)
        maps = []
        for conv in self.convs:
            h = F.relu(conv(h))
            maps.append(h)                                            # (B, C_l, 32 / 2**l, 32 / 2**l)
        return maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 3, H, W) -> pooled features (B, widths[-1]) and logits (B, num_classes)."""
        pool = self.layers(x)[-1].mean(dim=(2, 3))                   # (B, D)
        return pool * self.feature_scale, self.head(pool)


# ---- weights --------------------------------------------------------------------------------------
_LOADED: dict[tuple[str, str], DomainNet] = {}
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path, length: int = 12) -> str:
    """A short sha256 of a file's bytes (memoised per path, size and mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key][:length]


def read_weights(path: str | Path | None = None) -> dict:
    """The saved {"state_dict", "meta"} of a domain extractor (default: the packaged one)."""
    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise UserError(f"domain extractor weights must exist, but got path={str(path)!r}; "
                        "write them with `python -m catlab.metrics.train_extractor --data shapes`")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_domain_extractor(path: str | Path | None = None, device: str | torch.device = "cpu") -> DomainNet:
    """The trained extractor, frozen and in eval mode; one shared instance per (path, device)."""
    path = Path(path) if path is not None else WEIGHTS
    key = (f"{path.resolve()}:{file_digest(path) if path.is_file() else ''}", str(torch.device(device)))
    if key not in _LOADED:
        saved = read_weights(path)
        meta = saved["meta"]
        net = DomainNet(int(meta["num_classes"]), tuple(int(w) for w in meta["widths"]))
        net.load_state_dict(saved["state_dict"])
        net.requires_grad_(False).eval().to(device)
        _LOADED[key] = net
    return _LOADED[key]


# ---- which extractor fits which data ----------------------------------------------------------------
_DATA_DIGESTS: dict[str, str] = {}


def extractor_cache() -> Path:
    """Where extractors trained on user data live: $CATLAB_CACHE/extractors, else $TORCH_HOME/catlab_extractors."""
    env = os.environ.get("CATLAB_CACHE", "")
    return Path(env) / "extractors" if env else Path(torch.hub._get_torch_home()) / "catlab_extractors"


def data_digest(name: str, n: int = 0) -> str:
    """A short sha256 of a data set's images and labels at the extractor's 32 px (data.n = n)."""
    key = f"{name}|{n}"
    if key not in _DATA_DIGESTS:
        from catlab.config import DataConfig
        from catlab.data import build_dataset
        ds = build_dataset(DataConfig(name=name, resolution=NATIVE, n=n))
        h = hashlib.sha256(ds.images.contiguous().numpy().tobytes())
        h.update(ds.labels.numpy().tobytes())
        _DATA_DIGESTS[key] = h.hexdigest()[:12]
    return _DATA_DIGESTS[key]


def cached_path(name: str) -> Path:
    """The file an extractor trained on data set `name` goes to (and is looked for at)."""
    return extractor_cache() / f"domain-{data_digest(name)}.pt"


def extractor_for(name: str | None) -> tuple[Path, str]:
    """(weights, the data set they were trained on) for scoring data set `name`.

    Packaged data sets have their own; other data (image folders, torchvision sets) use one trained on it
    when extractor_cache() holds it, else the `shapes` extractor (trained_on="shapes": then the metric
    is not a quality measure of that data, and catlab says so)."""
    if name is None or name == "shapes":
        return WEIGHTS, "shapes"
    if name in PACKAGED:
        return (PACKAGED[name], name) if PACKAGED[name].is_file() else (WEIGHTS, "shapes")
    if name.startswith("latents:"):                     # decoded latents: pixels of another data set
        return WEIGHTS, "shapes"
    path = cached_path(name)
    return (path, name) if path.is_file() else (WEIGHTS, "shapes")
