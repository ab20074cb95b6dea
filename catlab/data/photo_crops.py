"""An image folder of real photographs, made offline: random crops of the photos that ship with the installed
packages (scikit-learn's china.jpg and flower.jpg, matplotlib's grace_hopper.jpg), one class per photo.

    python -m catlab.data.photo_crops data/photos              # 3 classes x 1000 crops, 32 px PNGs
    catlab ablate ablation-consistency data.name=imagefolder:data/photos

Each crop is a square window of a random side (a quarter to all of the photo's shorter side) at a random
place, flipped left-right with probability 1/2, resized to --size with antialiasing. Deterministic from
--seed. It is a second, natural-image data set for the studies (the stages of a generator have photos'
worth of coarse layouts to disagree on); its classes are the photos, so a domain extractor can be trained
on it (python -m catlab.metrics.train_extractor --data imagefolder:data/photos).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from catlab.errors import UserError


def sources() -> dict[str, Path]:
    """{class name: photo path} of the photos found in the installed packages."""
    found = {}
    try:
        import sklearn.datasets
        folder = Path(sklearn.datasets.__file__).parent / "images"
        found.update({p.stem: p for p in sorted(folder.glob("*.jpg"))})
    except ImportError:
        pass
    import matplotlib
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.is_file():
        found["grace_hopper"] = hopper
    return found


def make(out: Path, n_per_class: int = 1000, size: int = 32, seed: int = 0) -> dict[str, int]:
    """Write out/<class>/<i>.png; returns {class: count}. Refuses a non-empty out folder."""
    from PIL import Image
    photos = sources()
    if len(photos) < 2:
        raise UserError(f"photo_crops needs at least two photos from scikit-learn or matplotlib, but found "
                        f"{sorted(photos)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"out must be an empty or new folder, but got out={str(out)!r} with files in it")
    rng = np.random.default_rng(seed)
    counts = {}
    for name, path in photos.items():
        img = Image.open(path).convert("RGB")
        w, h = img.size
        short = min(w, h)
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            side = int(rng.integers(short // 4, short + 1))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = img.crop((x, y, x + side, y + side)).resize((size, size), Image.LANCZOS)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            crop.save(out / name / f"{i:05d}.png")
        counts[name] = n_per_class
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m catlab.data.photo_crops", description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--n-per-class", type=int, default=1000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        counts = make(a.out, a.n_per_class, a.size, a.seed)
    except UserError as e:
        print(f"photo_crops: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {sum(counts.values())} crops to {a.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
