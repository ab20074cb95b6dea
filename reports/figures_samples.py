"""fig8: per-stage samples, arms side by side, the same (z, y) in every column group.

Each arm is one column group: a row per (z, y), a column per stage, every stage upsampled (nearest) to the
final size, so what a later stage rewrites can be seen by eye. The images come from studies/<study>/
samples.pt, which the analysis writes (analysis.study.write_samples: every arm's EMA generator on the
fixed eval set of one seed that every arm has); reports never load a checkpoint.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from reports import style

N_SAMPLES = 8
MAX_ARMS = 8


def _to_rgb(stages, n: int) -> np.ndarray:
    """K tensors (B, C, s_k, s_k) in [-1, 1] -> uint8 (n*(R+1)+1, K*(R+1)+1, 3): rows = samples, cols = stages."""
    import torch
    from catlab.samples import upsample_nearest
    size = stages[-1].shape[-1]
    tiles = torch.stack([upsample_nearest(x[:n].float(), size) for x in stages], 1)   # (n, K, C, R, R)
    tiles = ((tiles.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if tiles.shape[2] == 1:
        tiles = tiles.expand(-1, -1, 3, -1, -1)
    rows, k, r = tiles.shape[0], tiles.shape[1], size
    canvas = np.full((rows * (r + 1) + 1, k * (r + 1) + 1, 3), 255, dtype=np.uint8)
    for i in range(rows):
        for j in range(k):
            canvas[1 + i * (r + 1):1 + i * (r + 1) + r, 1 + j * (r + 1):1 + j * (r + 1) + r] = \
                tiles[i, j, :3].permute(1, 2, 0).numpy()
    return canvas


def _cell_arm(sd) -> dict:
    cells = sd.cells
    if cells is None or "cell" not in cells.columns or "arm" not in cells.columns:
        return {}
    return dict(zip(cells["cell"], cells["arm"]))


def _from_samples_pt(sd) -> tuple[dict, object, str] | None:
    """({arm: stage list}, y, source) from samples.pt; None when absent or not in a shape I know."""
    path = sd.dir / "samples.pt"
    if not path.exists():
        return None
    from catlab.checkpoint import safe_load
    obj = safe_load(path)
    found, c2a = {}, _cell_arm(sd)

    def visit(d):
        for key, v in d.items():
            if isinstance(v, dict):
                visit(v)
            elif isinstance(v, (list, tuple)) and len(v) >= 2 and all(getattr(t, "dim", lambda: 0)() == 4 for t in v):
                arm = c2a.get(key) or (key if key in sd.arms else None)
                if arm is None and "=" in str(key):     # "consistency=on,seed=0"
                    parts = dict(p.split("=", 1) for p in str(key).split(",") if "=" in p)
                    arm = sd.label(parts) if set(sd.axes) <= set(parts) else None
                if arm and arm not in found:
                    found[arm] = list(v)
    visit(obj)
    return (found, obj.get("y"), "samples.pt") if found else None


def fig8(sd, out_dir, ctx):
    got = _from_samples_pt(sd)
    if got is None:
        return [], f"fig8 skipped: samples.pt is missing (run `catlab analyze {sd.name}`)"
    found, y, source = got
    arms, pal = [a for a in sd.arms if a in found][:MAX_ARMS], ctx["palette"]
    grids = [_to_rgb(found[a], N_SAMPLES) for a in arms]
    k, size = len(found[arms[0]]), found[arms[0]][-1].shape[-1]
    scales = [int(x.shape[-1]) for x in found[arms[0]]]
    h, w = grids[0].shape[:2]
    fig, axes = plt.subplots(1, len(arms), figsize=(max(4.5, len(arms) * ((w / h) * 3.6 + 0.5)), 4.4),
                             squeeze=False)
    for ax, arm, img in zip(axes[0], arms, grids):
        ax.imshow(img, interpolation="nearest")
        ax.set_xticks([(j + 0.5) * (size + 1) for j in range(k)])
        ax.set_xticklabels([f"{j + 1}\n{s}px" for j, s in enumerate(scales)], fontsize="x-small")
        rows = img.shape[0] // (size + 1)
        if y is not None and len(y) >= rows:
            ax.set_yticks([(i + 0.5) * (size + 1) for i in range(rows)])
            ax.set_yticklabels([f"y={int(v)}" for v in y[:rows]], fontsize="x-small")
        else:
            ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color(pal[arm])
            spine.set_linewidth(3)
        ax.set_title(style.arm_title(arm), color="black", fontsize="small")
        ax.set_xlabel("stage k (own scale)", fontsize="small")
    fig.suptitle(f"{sd.name}: per-stage samples, the same (z, y) in every row\n"
                 f"({source}; stages upsampled, nearest, to {size}px)", fontsize="medium")
    fig.legend(handles=[Patch(facecolor="white", edgecolor=pal[a], linewidth=3, label=style.arm_title(a))
                        for a in arms], loc="lower center", ncol=min(len(arms), 6), bbox_to_anchor=(0.5, -0.03))
    fig.tight_layout(rect=(0, style.legend_room(fig), 1, 1))
    return style.save(fig, out_dir, "fig8"), None

