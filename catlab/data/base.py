"""The pieces every dataset shares: the ImageSet container, the registry, the data root and a resizer."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class ImageSet:
    """A class-conditional image set, held in memory at the final resolution."""
    images: torch.Tensor            # (N, C, R, R) uint8
    labels: torch.Tensor            # (N,) int64 in [0, num_classes)
    num_classes: int
    name: str
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[2] != self.images.shape[3]:
            raise ValueError(f"ImageSet.images must be uint8 (N, C, R, R), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"ImageSet.labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"ImageSet has {self.num_classes} classes but {len(self.class_names)} class names")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]


# ---- registry ---------------------------------------------------------------------------------------
DATASETS: dict[str, Callable[..., ImageSet]] = {}   # name -> constructor(data_cfg, seed=0) -> ImageSet


def register(name: str):
    """Decorator: add a dataset constructor under `name`; a name can be registered once."""
    def add(fn):
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = fn
        return fn
    return add


# ---- helpers ----------------------------------------------------------------------------------------
def mix_seed(*parts: int) -> int:
    """A 32-bit seed from several ints. torch's CPU generator keeps only the low 32 bits of a seed, so
    packing ints with shifts (seed << 32 | epoch) would silently drop some of them."""
    return int.from_bytes(hashlib.sha256(repr(tuple(int(p) for p in parts)).encode()).digest()[:4], "little")


def data_root(root: str = "") -> Path:
    """Where downloadable datasets live: data.root, else $CATLAB_DATA, else ./data (absolute)."""
    return Path(root or os.environ.get("CATLAB_DATA") or "data").expanduser().resolve()


def resize_u8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) to (N, C, size, size) with antialiased bilinear; identity if it fits."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for part in images.split(chunk):
        x = F.interpolate(part.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)
