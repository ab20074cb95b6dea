"""Shape accuracy: does a class-conditional sample show its class's shape? (`shapes` and `layouts` runs)

    acc = shape_accuracy(images, labels)                     # `shapes`: images (B, 3, H, W) -> fraction
    acc = shape_accuracy(images, labels, data="layouts")     # the classifier trained on `layouts`
    net = load_shape_classifier(data="layouts")              # frozen, eval; net(images) -> logits (B, 10)

A small CNN that is blind to colour, brightness and most texture: it sees luminance only, resized to its
native size (area when shrinking, bilinear when enlarging), each image standardised to zero mean and unit
std. What is left is the silhouette (and the coarse part of the texture). Chance is 1/10.
  shapes   16 px native; it trains on `shapes` images drawn in random classes' colour families
           (shapes.render(colour=...)), since there the class colour would give the class away; it trains
           on the 8, 16 and 32 px scales (4 px is too coarse for a silhouette and is reported only).
  layouts  32 px native (its objects are a third of the image); the colours are already free of the
           class; it trains on the 16 and 32 px scales.
The held-out accuracy of real images per scale (meta["heldout_accuracy"]) is the ceiling for each stage.
Its images come from other dataset seeds than any training run's data (seed 0), so samples are scored by
a classifier that has not seen the images the GAN was trained on.

Weights: shape_classifier.pt (shapes) and layouts_classifier.pt beside this file, written by
`python -m catlab.metrics.shape_classifier [--data layouts]` (deterministic; about two minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from catlab.data.pyramid import resample
from catlab.errors import UserError
from catlab.metrics.train_extractor import write_weights

VERSION = 1
WIDTHS = (32, 64, 64)                        # conv channels, strides 1, 2, 2
TRAIN_SEED, HELDOUT_SEED = 1001, 1002        # dataset seeds of its training and held-out images
_LOADED: dict = {}


def colour_blind_shapes(n: int, seed: int, resolution: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """n `shapes` images (n, 3, R, R) in [-1, 1], each drawn in a random class's colour family, and labels."""
    from catlab.data.shapes import CLASS_NAMES, render, shape_params
    labels, params = shape_params(n, seed, len(CLASS_NAMES))
    colours = torch.randint(0, len(CLASS_NAMES), (n,), generator=torch.Generator().manual_seed(seed))
    images = torch.empty(n, 3, resolution, resolution)
    for c in range(len(CLASS_NAMES)):
        for j in range(len(CLASS_NAMES)):
            idx = ((labels == c) & (colours == j)).nonzero()[:, 0]
            if len(idx):
                images[idx] = render(c, params[idx], resolution, colour=j) * 2 - 1
    return images, labels


def layouts_images(n: int, seed: int, resolution: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """n `layouts` images (n, 3, R, R) in [-1, 1] and labels (their colours carry no class already)."""
    from catlab.data.layouts import make_layouts
    from catlab.data.pyramid import to_float
    ds = make_layouts(n, resolution, seed)
    return to_float(ds.images), ds.labels


@dataclass(frozen=True)
class Scorer:
    """One dataset's classifier: where its weights live, its input size, and how its images are drawn."""
    weights: Path
    native: int                              # px the luminance is resized to
    train_sizes: tuple[int, ...]             # pyramid scales it trains on
    images: object                           # (n, seed) -> (images (n, 3, 32, 32) in [-1, 1], labels (n,))


SCORERS: dict[str, Scorer] = {
    "shapes": Scorer(Path(__file__).with_name("shape_classifier.pt"), 16, (8, 16, 32), colour_blind_shapes),
    "layouts": Scorer(Path(__file__).with_name("layouts_classifier.pt"), 32, (16, 32), layouts_images),
}
WEIGHTS = SCORERS["shapes"].weights          # the `shapes` classifier (kept name)


def preprocess(x: torch.Tensor, native: int = 16) -> torch.Tensor:
    """(B, 3 or 1, H, W), float [-1, 1] or uint8 -> (B, 1, native, native) standardised luminance."""
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float().clamp(-1, 1)
    lum = x.mean(1, keepdim=True) if x.shape[1] != 3 else \
        (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]                  # (B, 1, H, W)
    lum = resample(lum, native, "area")                                 # area down, bilinear up
    lum = lum - lum.mean((2, 3), keepdim=True)
    return lum / (lum.std((2, 3), keepdim=True) + 1e-3)


class ShapeNet(nn.Module):
    """preprocess -> conv3x3-ReLU x 3 (strides 1, 2, 2) -> global average pool -> linear -> logits."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = WIDTHS, native: int = 16):
        super().__init__()
        chans, layers = (1, *widths), []
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            layers += [nn.Conv2d(a, b, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(widths[-1], num_classes)
        self.native = native

    def forward(self, x: torch.Tensor) -> torch.Tensor:                          # -> (B, num_classes)
        return self.classifier(self.features(preprocess(x, self.native)))


def scorer(data: str) -> Scorer:
    if data not in SCORERS:
        raise UserError(f"data must be one of {', '.join(SCORERS)} for shape_acc, but got data={data!r}")
    return SCORERS[data]


def load_shape_classifier(path: str | Path | None = None, device: str | torch.device = "cpu",
                          data: str = "shapes") -> ShapeNet:
    """The trained classifier of `data` (or the file at path), frozen and in eval mode; one per (file, device)."""
    path = Path(path) if path is not None else scorer(data).weights
    if not path.is_file():
        raise UserError(f"shape classifier weights {path} do not exist; write them with "
                        f"`python -m catlab.metrics.shape_classifier --data {data}`")
    key = (str(path.resolve()), path.stat().st_mtime_ns, str(torch.device(device)))
    if key not in _LOADED:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        meta = saved["meta"]
        net = ShapeNet(int(meta["num_classes"]), tuple(meta["widths"]), int(meta["native"]))
        net.load_state_dict(saved["state_dict"])
        _LOADED[key] = net.requires_grad_(False).eval().to(device)
    return _LOADED[key]


@torch.no_grad()
def predict(images: torch.Tensor, batch: int = 500, net: ShapeNet | None = None, data: str = "shapes") -> torch.Tensor:
    """Predicted shape classes (B,) of images (B, C, H, W), in chunks of `batch`."""
    net = net or load_shape_classifier(data=data)
    device = next(net.parameters()).device
    return torch.cat([net(images[i:i + batch].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch)])


def shape_accuracy(images: torch.Tensor, labels: torch.Tensor, batch: int = 500, data: str = "shapes") -> float:
    """The fraction of images classified as their label (the class the generator was asked for)."""
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"expected as many labels as images (> 0), got {len(labels)} and {len(images)}")
    return (predict(images, batch, data=data) == labels.cpu()).float().mean().item()


# ---- training --------------------------------------------------------------------------------------
def train(epochs: int = 6, n: int = 20000, heldout: int = 2000, batch: int = 128, lr: float = 2e-3,
          out: Path | None = None, threads: int = 2, data: str = "shapes") -> dict:
    spec = scorer(data)
    out = Path(out) if out is not None else spec.weights
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    x, y = spec.images(n, TRAIN_SEED)
    x_val, y_val = spec.images(heldout, HELDOUT_SEED)
    net = ShapeNet(native=spec.native)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        net.train()
        order, total = torch.randperm(n, generator=g), 0.0
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            size = spec.train_sizes[int(torch.randint(len(spec.train_sizes), (), generator=g))]
            loss = F.cross_entropy(net(resample(x[idx], size, "area")), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}  loss {total / n:.4f}  ({time.time() - t0:.1f}s)", flush=True)
    net.eval()
    acc = {f"{s}px": (predict(resample(x_val, s, "area"), net=net) == y_val).float().mean().item() for s in (4, 8, 16, 32)}
    meta = {"version": VERSION, "dataset": data, "num_classes": 10, "widths": list(WIDTHS), "native": spec.native,
            "epochs": epochs, "n": n, "train_seed": TRAIN_SEED, "heldout_seed": HELDOUT_SEED, "heldout": heldout,
            "heldout_accuracy": acc}
    write_weights(net, meta, out, heldout, t0)
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m catlab.metrics.shape_classifier", description=__doc__.split("\n")[0])
    p.add_argument("--data", default="shapes", choices=list(SCORERS))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--n", type=int, default=20000, help="training images")
    p.add_argument("--out", type=Path, default=None, help="default: the packaged weights of --data")
    a = p.parse_args(argv)
    train(a.epochs, a.n, out=a.out, data=a.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
