"""Datasets and the data pipeline.

`build_dataset(data_cfg)` returns an ImageSet (uint8 images at the final resolution, labels, class names),
or for `latents:PATH` a LatentSet (an ImageSet of float latents, see catlab.data.latents).
`pyramid` cuts images into the K scales; `Batcher` streams training batches from memory.
Registered names live in `DATASETS`; `imagefolder:PATH` and `latents:PATH` are prefixed names.
"""
from __future__ import annotations

from catlab.errors import UserError
from catlab.data.base import DATASETS, ImageSet, data_root, register, resize_u8
from catlab.data.pyramid import RESAMPLERS, pyramid, resample, scale_sizes, to_float, to_uint8
from catlab.data.batcher import Batcher, epoch_permutation
from catlab.data import shapes as _shapes                      # noqa: F401  (registers shapes)
from catlab.data import layouts as _layouts                    # noqa: F401  (registers layouts)
from catlab.data import torchvision_sets as _tv                 # noqa: F401  (registers cifar10, mnist)

PREFIXED = ("imagefolder:", "latents:")


def check_dataset_name(name: str) -> None:
    if name in DATASETS or any(name.startswith(p) and len(name) > len(p) for p in PREFIXED):
        return
    raise UserError(f"data.name must be one of {', '.join(DATASETS)}, imagefolder:PATH or latents:PATH, "
                    f"but got name={name!r}")


def build_dataset(data_cfg, seed: int = 0) -> ImageSet:
    """The dataset named by data_cfg.name, at data_cfg.resolution.

    `seed` is the dataset seed (it only changes `shapes`); it is not the run seed, so that every run
    seed trains on the same data.
    """
    name = data_cfg.name
    check_dataset_name(name)
    if name.startswith("latents:"):
        from catlab.data.latents import load_latents
        return load_latents(name[len("latents:"):], data_cfg, seed=seed)
    if name.startswith("imagefolder:"):
        from catlab.data.imagefolder import load_imagefolder
        return load_imagefolder(name[len("imagefolder:"):], data_cfg, seed=seed)
    return DATASETS[name](data_cfg, seed=seed)


__all__ = ["DATASETS", "PREFIXED", "ImageSet", "Batcher", "RESAMPLERS", "build_dataset", "check_dataset_name",
           "data_root", "epoch_permutation", "pyramid", "register", "resample", "resize_u8", "scale_sizes",
           "to_float", "to_uint8"]
