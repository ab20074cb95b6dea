"""`imagefolder:PATH`: one subfolder per class (sorted names -> labels 0..C-1), images decoded with PIL.

Images become RGB (grayscale, palette and 16-bit modes converted; transparency composited on white),
follow their EXIF orientation, and are centre-cropped to a square and resized to data.resolution
(antialiased). data.n caps the count (0 = all) with a seeded subset that spreads over the classes.
Files without an image extension and hidden files/folders are ignored.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from catlab.errors import UserError
from catlab.data.base import ImageSet

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
PROGRESS_ABOVE = 1000                          # show a progress bar when loading more images than this


def _visible(p: Path, top: Path) -> bool:
    return not any(part.startswith(".") for part in p.relative_to(top).parts)


def list_images(folder: Path) -> tuple[list[str], list[Path], list[int]]:
    """Class names (sorted subfolders holding images), image paths and their labels."""
    classes, paths, labels = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.rglob("*")
                       if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file() and _visible(f, sub))
        if files:
            paths += files
            labels += [len(classes)] * len(files)
            classes.append(sub.name)
    return classes, paths, labels


def _to_rgb(img):
    """Any PIL image -> RGB (alpha composited on white, 16-bit/float grayscale scaled to 8 bit)."""
    from PIL import Image
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        peak = 1.0 if img.mode == "F" and a.max() <= 1.0 else peak
        img = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, img)
    return img.convert("RGB")


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """Decode one file to uint8 (3, R, R): RGB, centre square crop, antialiased resize."""
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as im:
            im.load()
            img = _to_rgb(ImageOps.exif_transpose(im))
    except (OSError, SyntaxError, ValueError) as e:   # UnidentifiedImageError is an OSError
        raise UserError(f"cannot decode image file {path} ({type(e).__name__}); remove it or fix it") from None
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s)).resize((resolution, resolution), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)   # (3, R, R)


def load_imagefolder(path: str, data_cfg, seed: int = 0, workers: int = 4) -> ImageSet:
    folder = Path(path).expanduser()
    spec = f"imagefolder:{path}"
    if not folder.is_dir():
        raise UserError(f"data.name={spec}: folder {folder.resolve()} does not exist")
    classes, paths, labels = list_images(folder)
    if not classes:
        raise UserError(f"data.name={spec}: no class subfolders with images in {folder.resolve()}; put images "
                        f"({', '.join(IMAGE_EXTENSIONS[:3])}, ...) in {folder.resolve()}/<class name>/")
    keep = list(range(len(paths)))
    if data_cfg.n and data_cfg.n < len(paths):          # a seeded subset, kept in folder order
        g = torch.Generator().manual_seed(seed)
        keep = sorted(torch.randperm(len(paths), generator=g)[:data_cfg.n].tolist())
    from tqdm import tqdm
    bar = tqdm(total=len(keep), desc=f"loading {folder.name}", unit="img", disable=len(keep) <= PROGRESS_ABOVE)
    images = torch.empty(len(keep), 3, data_cfg.resolution, data_cfg.resolution, dtype=torch.uint8)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for i, img in enumerate(pool.map(lambda j: load_image(paths[j], data_cfg.resolution), keep)):
            images[i] = img
            bar.update()
    finally:                                            # on an error, do not decode the rest first
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return ImageSet(images=images, labels=torch.tensor([labels[j] for j in keep], dtype=torch.int64),
                    num_classes=len(classes), name=spec, class_names=classes)
