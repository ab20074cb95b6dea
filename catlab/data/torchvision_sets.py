"""cifar10 and mnist through torchvision (train split), read from data.root / $CATLAB_DATA / ./data.

Nothing is downloaded unless data.download=true. When the files are missing (or the download fails,
e.g. offline) the UserError says in one line where to put them.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from catlab.errors import UserError
from catlab.data.base import ImageSet, data_root, register, resize_u8


def _reason(e: BaseException) -> str:
    """One line for an exception: its type and its last non-empty line (torchvision nests the cause there)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1]}" if lines else type(e).__name__


def _open(cls, root: Path, download: bool, where: Path, what: str, name: str):
    """Instantiate a torchvision dataset; turn missing files and failed downloads into one-line UserErrors."""
    hint = f"{name} not found under {where}; put {what} there, or pass data.download=true"
    if download:
        new_dirs = [p for p in (where, *where.parents) if not p.exists()]      # deepest first
        try:
            return cls(str(root), train=True, download=True)
        except Exception as e:                          # URLError, RuntimeError from torchvision, OSError...
            for d in new_dirs:                          # leave no empty folders behind (files stay)
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise UserError(f"{name}: download failed ({_reason(e)}); put {what} under {where} instead") from None
    try:
        return cls(str(root), train=True, download=False)
    except RuntimeError:
        raise UserError(hint) from None


def _cap(images: torch.Tensor, labels: torch.Tensor, n: int):
    return (images[:n], labels[:n]) if n else (images, labels)


@register("cifar10")
def cifar10(data_cfg, seed: int = 0) -> ImageSet:
    """CIFAR-10 train split (50,000 images, 32 px, 10 classes); the first data.n (0 = all)."""
    from torchvision.datasets import CIFAR10
    root = data_root(data_cfg.root)
    where = root / CIFAR10.base_folder
    ds = _open(CIFAR10, root, data_cfg.download, where, "the CIFAR-10 python version (data_batch_1..5, "
               "test_batch, batches.meta)", "cifar10")
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)     # (N, 3, 32, 32)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    images, labels = _cap(images, labels, data_cfg.n)
    images = resize_u8(images.contiguous(), data_cfg.resolution)
    return ImageSet(images=images, labels=labels, num_classes=len(ds.classes), name="cifar10",
                    class_names=list(ds.classes))


@register("mnist")
def mnist(data_cfg, seed: int = 0) -> ImageSet:
    """MNIST train split (60,000 digits, 28 px), as 3-channel images resized to data.resolution."""
    from torchvision.datasets import MNIST
    root = data_root(data_cfg.root)
    where = root / "MNIST" / "raw"
    ds = _open(MNIST, root, data_cfg.download, where, "train-images-idx3-ubyte, train-labels-idx1-ubyte, "
               "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (uncompressed)", "mnist")
    images, labels = _cap(ds.data, ds.targets.long(), data_cfg.n)                     # (N, 28, 28) uint8
    images = resize_u8(images[:, None].contiguous(), data_cfg.resolution).expand(-1, 3, -1, -1).contiguous()
    return ImageSet(images=images, labels=labels, num_classes=10, name="mnist",
                    class_names=[str(i) for i in range(10)])
