"""Bar figures of the diagnostics: fig4 (per stage, arm against arm), fig6 (against model size), fig7
(discriminator variants). Bars = mean, error bars = 95 % CI, dots = seeds.

Every builder takes (sd, out_dir, ctx) and returns (written paths, note); a note says why it drew nothing.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from reports import style
from reports.compare import summarize_seeds

DIAG = style.DIAGNOSTICS


def bars(ax, xs, hues, stat, points, colour, jitter=0.04):
    """Grouped bars. stat[(x, hue)] = (mean, lo, hi); points[(x, hue)] = seed values; colour(x, hue) -> RGB."""
    rng = np.random.default_rng(0)          # fixed jitter: the same figure every build
    width = 0.8 / max(1, len(hues))
    for i, x in enumerate(xs):
        for j, h in enumerate(hues):
            if (x, h) not in stat:
                continue
            m, lo, hi = stat[(x, h)]
            pos = i - 0.4 + width * (j + 0.5)
            ax.bar(pos, m, width * 0.9, color=colour(x, h), alpha=0.75, edgecolor=colour(x, h), linewidth=0.8)
            if math.isfinite(lo) and math.isfinite(hi):
                ax.errorbar(pos, m, yerr=[[m - lo], [hi - m]], color="black", capsize=2.5, linewidth=0.9)
            pts = points.get((x, h), [])
            ax.scatter(pos + rng.uniform(-jitter, jitter, len(pts)) * width / 0.2, pts, s=9, zorder=3,
                       facecolor="white", edgecolor="black", linewidth=0.6)
    ax.set_xticks(range(len(xs)))
    long = sum(len(str(x)) for x in xs) > 24        # e.g. scalewise / aggregated / concat: tilt them
    ax.set_xticklabels([str(x) for x in xs], rotation=25 if long else 0, ha="right" if long else "center")
    ax.axhline(0, color="black", linewidth=0.5)


def legend(fig, hues, pal, ncol=None):
    """Arms, then what the marks mean; below the panels."""
    handles = [Patch(facecolor=pal[h], edgecolor=pal[h], alpha=0.75, label=style.arm_title(h)) for h in hues]
    handles += [Line2D([], [], color="black", marker="|", linestyle="", markersize=8, label="95 % CI"),
                Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="black",
                       markersize=4, label="seed")]
    fig.legend(handles=handles, loc="lower center", ncol=ncol or min(len(handles), 6),
               bbox_to_anchor=(0.5, -0.02), frameon=False)


def _stat_rows(df, keys):
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: (r["mean"], r["ci_low"], r["ci_high"])
            for r in df.to_dict("records")}


# ---- fig4: the three diagnostics per stage -----------------------------------------------------------------
def fig4(sd, out_dir, ctx):
    summ = ctx["summary"]
    if sd.table is None or summ is None:
        return [], "fig4 skipped: table.csv is missing (run `catlab analyze %s`)" % sd.name
    dists = sorted({m.split("_", 1)[1] for m in sd.metrics() if m.split("_")[0] in DIAG and "_" in m},
                   key=lambda d: (d != "l2", d))
    if not dists:
        return [], "fig4 skipped: table.csv has no discrepancy/rewrite/direction rows"
    arms, pal = sd.arms, ctx["palette"]
    fig, axes = plt.subplots(len(dists), 3, figsize=(9, 2.6 * len(dists) + 0.6), squeeze=False)
    for r, dist in enumerate(dists):
        for c, head in enumerate(DIAG):
            metric, ax = f"{head}_{dist}", axes[r][c]
            s = summ[summ["metric"] == metric]
            t = sd.table[sd.table["metric"] == metric]
            if s.empty:                 # e.g. direction, which analysis reports under one distance only
                ax.set_axis_off()
                other = [m for m in sd.metrics(head + "_") if m != metric]
                text = (f"{head} is the same for every distance:\nsee {style.metric_label(other[0], short=True)}"
                        if head == "direction" and other else f"no {metric} rows in table.csv")
                ax.text(0.5, 0.5, text, ha="center", va="center",
                        transform=ax.transAxes, fontsize="small", color="grey")
                continue
            stages = sorted(int(x) for x in s["stage"].unique())
            stat = {(int(k[0]), k[1]): v for k, v in _stat_rows(s, ["stage", "arm"]).items()}
            pts = {(int(k[0]), k[1]): g["value"].tolist() for k, g in t.groupby(["stage", "arm"])}
            bars(ax, stages, arms, stat, pts, lambda x, h: pal[h])
            ax.set_xlabel("stage k (1 = coarsest)")
            ax.set_ylabel(style.metric_label(metric))
    fig.suptitle(f"{sd.name}: cross-scale diagnostics per stage (mean, 95 % CI, seeds)")
    fig.tight_layout(rect=(0, style.legend_room(fig), 1, 1))
    legend(fig, arms, pal)
    return style.save(fig, out_dir, "fig4"), None


# ---- fig6 / fig7: a summary number per arm, against one axis -------------------------------------------------
def _panels(sd):
    """(metric, label) per panel: the three diagnostics (stage mean) and FID at the final scale."""
    out = [(m, style.metric_label(m) + "\n(mean over stages)") for m in (sd.primary(h) for h in DIAG) if m]
    fid = sd.primary("fid")
    if fid:
        out.append((fid, style.metric_label(fid) + "\n(final scale)"))
    return out


def by_axis(sd, out_dir, ctx, axis, name, title, order=None):
    """Bars per value of `axis`; the hue is the rest of the arm (the other axes), or the arm itself."""
    panels = _panels(sd)
    if not panels:
        return [], f"{name} skipped: table.csv has no diagnostics or FID rows"
    rest = [a for a in sd.axes if a != axis]
    xs = [v for v in (order or sd.values[axis])]

    def hue_of(arm):
        vals = sd.arm_values(arm)
        return ",".join(f"{a}={vals[a]}" for a in rest) if rest else arm
    hues = list(dict.fromkeys(hue_of(a) for a in sd.arms))
    pal = style.palette(hues) if rest else ctx["palette"]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels), 3.1), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], panels):
        per_seed = sd.seed_values(metric)
        per_seed["hue"] = per_seed["arm"].map(hue_of)
        if not rest:             # one bar per x, coloured by its arm
            per_seed["hue"] = ""
        s = summarize_seeds(per_seed, by=(axis, "hue"))
        stat = _stat_rows(s, [axis, "hue"])
        pts = {k: g["value"].tolist() for k, g in per_seed.groupby([axis, "hue"])}
        if rest:
            bars(ax, xs, hues, stat, pts, lambda x, h: pal[h])
        else:
            bars(ax, xs, [""], stat, pts, lambda x, h: pal[f"{axis}={x}"])
        ax.set_xlabel(axis)
        ax.set_ylabel(ylabel)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, style.legend_room(fig), 1, 1))
    legend(fig, hues, pal)
    return style.save(fig, out_dir, name), None


def fig6(sd, out_dir, ctx):
    size_ax, cons_ax = sd.axis_for("model.size"), sd.axis_for("loss.consistency.weight")
    if not size_ax or len(sd.values[size_ax]) < 2 or not cons_ax or cons_ax == size_ax:
        return [], None           # not a model-size study: nothing to say
    if sd.table is None:
        return [], f"fig6 skipped: table.csv is missing (run `catlab analyze {sd.name}`)"
    from catlab.models import SIZES
    rank = {s: i for i, s in enumerate(SIZES)}
    order = sorted(sd.values[size_ax], key=lambda v: rank.get(str(sd.setting(size_ax, v, "model.size")), 99))
    return by_axis(sd, out_dir, ctx, size_ax, "fig6",
                   f"{sd.name}: the consistency effect against model size (mean, 95 % CI, seeds)", order)


def fig7(sd, out_dir, ctx):
    d_ax = sd.axis_for("model.discriminator")
    if not d_ax or len(sd.values[d_ax]) < 2:
        return [], None
    if sd.table is None:
        return [], f"fig7 skipped: table.csv is missing (run `catlab analyze {sd.name}`)"
    return by_axis(sd, out_dir, ctx, d_ax, "fig7",
                   f"{sd.name}: discriminator variants compared (mean, 95 % CI, seeds)")
