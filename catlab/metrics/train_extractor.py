"""Train a domain feature extractor on a labelled catlab data set (FID/KID features that fit that data).

    python -m catlab.metrics.train_extractor --data shapes          # catlab/metrics/domain_extractor.pt
    python -m catlab.metrics.train_extractor --data layouts         # catlab/metrics/layouts_extractor.pt
    python -m catlab.metrics.train_extractor --data imagefolder:PATH  # extractor_cache()/domain-<digest>.pt

About a minute or two on 2 CPU cores. The packaged data sets write the packaged files; any other data set
writes into the extractor cache under its data digest, where catlab's FID/KID then find it
(catlab.metrics.extractor.extractor_for). The weights record the data set and its digest.
An image folder needs at least two class folders (the extractor learns to tell the classes apart).

Deterministic: fixed seeds, torch.use_deterministic_algorithms(True), a fixed held-out split (20 %).
Every training image is shown at a random scale of the pyramid (area-downsampled to 32 / 2**j, then
bilinear back to 32 px, which is what the extractor does to a coarse stage output), so its features mean
something at every scale. Prints the held-out accuracy, overall and per scale, and the weight file size.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from catlab.metrics.extractor import NATIVE, PACKAGED, WIDTHS, DomainNet, cached_path, data_digest, to_native

VERSION = 1


def scale_augment(x: torch.Tensor, scale_idx: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """x: (B, 3, 32, 32) float [-1, 1]; sample i is resampled to sizes[scale_idx[i]] and back to 32 px."""
    from catlab.data.pyramid import resample
    out = x.clone()
    for j, s in enumerate(sizes):
        sel = (scale_idx == j).nonzero().flatten()
        if len(sel) and s != x.shape[-1]:
            out[sel] = to_native(resample(x[sel], s, "area"))
    return out


@torch.no_grad()
def accuracy(net: DomainNet, x: torch.Tensor, y: torch.Tensor, size: int, batch: int = 500) -> float:
    from catlab.data.pyramid import resample
    correct = 0
    for i in range(0, len(x), batch):
        xb = resample(x[i:i + batch], size, "area")                  # the net resizes to 32 itself
        correct += (net(xb)[1].argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def train(data: str = "shapes", epochs: int = 4, batch: int = 128, lr: float = 2e-3, seed: int = 0,
          n: int = 10000, holdout: float = 0.2, out: Path | None = None, threads: int = 2) -> dict:
    from catlab.config import DataConfig
    from catlab.data import build_dataset
    from catlab.data.pyramid import to_float
    from catlab.errors import UserError
    out = Path(out) if out is not None else PACKAGED.get(data) or cached_path(data)

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    ds = build_dataset(DataConfig(name=data, resolution=NATIVE, n=n))
    if ds.num_classes < 2:
        raise UserError(f"data must have at least two classes to train an extractor, but got {data} with "
                        f"{ds.num_classes}")
    x_all, y_all = to_float(ds.images), ds.labels                    # (N, 3, 32, 32), (N,)
    if x_all.shape[1] == 1:
        x_all = x_all.expand(-1, 3, -1, -1)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x_all), generator=g)
    n_val = int(round(holdout * len(x_all)))
    val, tr = perm[:n_val], perm[n_val:]
    x_tr, y_tr, x_val, y_val = x_all[tr], y_all[tr], x_all[val], y_all[val]
    sizes = [NATIVE >> j for j in range(4)][::-1]                    # [4, 8, 16, 32]

    net = DomainNet(ds.num_classes, WIDTHS)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999))
    steps = epochs * math.ceil(len(x_tr) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    step = 0
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x_tr), generator=g)
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            xb = scale_augment(x_tr[idx], torch.randint(0, len(sizes), (len(idx),), generator=g), sizes)
            loss = F.cross_entropy(net(xb)[1], y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            step += 1
        print(f"epoch {epoch + 1}/{epochs}  loss {total / len(x_tr):.4f}  ({time.time() - t0:.1f}s)", flush=True)

    net.eval()
    with torch.no_grad():                                             # unit-RMS pooled features (32 px)
        pool = torch.cat([net(x_tr[i:i + 500])[0] for i in range(0, len(x_tr), 500)])
        net.feature_scale.fill_(1.0 / pool.pow(2).mean().sqrt().item())
    acc = {f"s{k + 1}_{s}px": accuracy(net, x_val, y_val, s) for k, s in enumerate(sizes)}
    acc["mean"] = sum(acc.values()) / len(sizes)
    meta = {"version": VERSION, "dataset": data, "digest": data_digest(data), "n": len(x_all), "num_classes": ds.num_classes,
            "widths": list(WIDTHS), "native": NATIVE, "epochs": epochs, "seed": seed, "heldout": n_val,
            "heldout_accuracy": acc, "feature_scale": net.feature_scale.item()}
    write_weights(net, meta, Path(out), n_val, t0)
    return meta


def write_weights(net: torch.nn.Module, meta: dict, out: Path, heldout: int, t0: float) -> None:
    """Save {"state_dict" (float32), "meta"} atomically and print meta's held-out accuracy and the file size.
    Used for both of our small networks (this extractor and catlab.metrics.shape_classifier)."""
    from catlab.checkpoint import atomic_save
    state = {k: v.detach().float().contiguous() for k, v in net.state_dict().items()}
    atomic_save({"state_dict": state, "meta": meta}, out)
    acc = meta["heldout_accuracy"]
    print("held-out accuracy (%d images): " % heldout + "  ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB) in {time.time() - t0:.1f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m catlab.metrics.train_extractor", description=__doc__.split("\n")[0])
    p.add_argument("--data", default="shapes", help="a labelled catlab dataset name (default: shapes)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=10000, help="images to generate/keep (data.n)")
    p.add_argument("--out", type=Path, default=None, help="default: the packaged file of --data, else the cache")
    a = p.parse_args(argv)
    from catlab.errors import UserError
    try:
        train(a.data, a.epochs, a.batch, a.lr, a.seed, a.n, out=a.out)
    except UserError as e:
        print(f"train_extractor: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
