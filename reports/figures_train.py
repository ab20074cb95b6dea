"""Figures over training and over a swept setting: fig5 (FID per scale against images seen), drift over
training, the lambda sweep curve and the stage-weight heatmap.

Every builder takes (sd, out_dir, ctx) and returns (written paths, note); a note says why it drew nothing.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from reports import style
from reports.compare import summarize_seeds
from reports.figures_diag import _panels

CURVE_X = {"images_seen": "training images seen", "step": "training step"}


def _t_band(values: np.ndarray) -> tuple[float, float]:
    from analysis.stats import t_interval
    return t_interval(values) if len(values) > 1 else (math.nan, math.nan)


def lines(ax, df, x, arms, pal):
    """One line per arm: the mean over seeds at each x, with a shaded Student-t 95 % CI over seeds."""
    for arm in arms:
        sub = df[df["arm"] == arm]
        if sub.empty:
            continue
        g = sub.groupby(x)["value"]
        xs = np.array(sorted(sub[x].unique()), dtype=float)
        mean = g.mean().reindex(xs).to_numpy()
        band = np.array([_t_band(g.get_group(v).dropna().to_numpy()) for v in xs])
        ax.plot(xs, mean, color=pal[arm], linewidth=1.4, marker="o", markersize=2.5, label=style.arm_title(arm))
        if np.isfinite(band).any():
            ax.fill_between(xs, band[:, 0], band[:, 1], color=pal[arm], alpha=0.2, linewidth=0)


def _legend(fig, arms, pal, band=True, extra=()):
    handles = [Line2D([], [], color=pal[a], linewidth=1.4, label=style.arm_title(a)) for a in arms]
    if band:
        handles.append(Patch(facecolor="grey", alpha=0.3, label="95 % CI over seeds"))
    fig.legend(handles=handles + list(extra), loc="lower center", ncol=min(len(handles) + len(extra), 6),
               bbox_to_anchor=(0.5, -0.02), frameon=False)


def _k(v, _pos):
    return f"{v / 1e6:g}M" if abs(v) >= 1e6 else f"{v / 1e3:g}k" if abs(v) >= 1e3 else f"{v:g}"


def by_definition_note(name: str, key: str, last: bool, vals) -> str | None:
    """What a panel that holds by definition says instead of lines: drift's ratio, correlation and cosine of
    the final stage with itself (1); rewrite and direction at stage K-1, whose rows the analysis leaves out
    (analysis.claims.by_definition: x_{k+1} is the final image there)."""
    if name == "drift" and key != "drift" and last and len(vals) and (vals == 1).all():
        return "1 by definition\n(the final stage)"
    if name == "diagnostics_curve" and last and not len(vals) and key.startswith(("rewrite_", "direction_")):
        what = "equals discrepancy" if key.startswith("rewrite_") else "is 1"
        return f"{what} by definition\n(the next stage is the final one)"
    return None


def _grid(sd, df, rows, x, name, title, ylabel, pal):
    """rows x stages panels of lines per arm; df columns arm, seed, x, stage, row key, value."""
    stages = sorted(int(s) for s in df["stage"].dropna().unique())
    fig, axes = plt.subplots(len(rows), len(stages), figsize=(2.5 * len(stages), 2.3 * len(rows) + 0.7),
                             squeeze=False, sharex=True)
    for r, (key, sub) in enumerate(rows):
        for c, stage in enumerate(stages):
            ax, part = axes[r][c], sub[sub["stage"] == stage]
            note = by_definition_note(name, key, stage == stages[-1], part["value"].dropna())
            if note:
                ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, fontsize="small",
                        color="grey")
                ax.set_yticks([])
                ax.spines["left"].set_visible(False)
            else:
                lines(ax, part, x, sd.arms, pal)
            ax.set_title(f"{'scale' if name == 'fig5' else 'stage'} {stage}", fontsize="small")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
            ax.xaxis.set_major_formatter(FuncFormatter(_k))
            if c == 0:
                ax.set_ylabel(ylabel(key))
            if r == len(rows) - 1:
                ax.set_xlabel(CURVE_X.get(x, x))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, style.legend_room(fig), 1, 1))
    _legend(fig, sd.arms, pal)
    return fig


# ---- fig5: quality per scale over training -------------------------------------------------------------------
def fig5(sd, out_dir, ctx):
    c = sd.curve
    if c is None or c.empty:
        return [], f"fig5 skipped: curve.csv is missing (run `catlab analyze {sd.name}`)"
    x = "images_seen" if "images_seen" in c.columns and c["images_seen"].notna().all() else "step"
    metrics = sorted(c["metric"].unique(), key=lambda m: (not str(m).startswith("fid"), m))
    rows = [(m, c[c["metric"] == m]) for m in metrics]
    fig = _grid(sd, c, rows, x, "fig5", f"{sd.name}: quality per scale over training (mean, 95 % CI over seeds)",
                lambda m: style.metric_label(m), ctx["palette"])
    return style.save(fig, out_dir, "fig5"), None


# ---- the three diagnostics over training ----------------------------------------------------------------------
def diagnostics_curve(sd, out_dir, ctx):
    """Discrepancy, rewrite and direction per intermediate stage at every EMA snapshot, one line per arm
    (mean and 95 % CI over seeds): when an effect appears, and whether it fades. Rows that hold by
    definition (rewrite and direction at stage K-1) are left out; their panels say so."""
    from analysis.claims import drop_by_definition
    d = sd.diagnostics_curve
    if d is None or d.empty:
        return [], f"diagnostics over training skipped: diagnostics_curve.csv is missing (run `catlab analyze {sd.name}`)"
    d = drop_by_definition(d)
    names = [m for head in style.DIAGNOSTICS for m in sorted(d["metric"].unique()) if str(m).startswith(head + "_")]
    rows = [(m, d[d["metric"] == m]) for m in names]
    fig = _grid(sd, d, rows, "step", "diagnostics_curve",
                f"{sd.name}: the diagnostics over training (EMA snapshots; mean, 95 % CI over seeds)",
                lambda m: style.metric_label(m), ctx["palette"])
    return style.save(fig, out_dir, "diagnostics_curve"), None


# ---- drift over training -------------------------------------------------------------------------------------
DRIFT_LABELS = {   # analysis.drift's columns
    "drift": "drift: move since the last\nsnapshot [{unit}]",
    "drift_ratio": "drift ratio: stage / final\n[unitless]",
    "drift_corr": "drift correlation with the\nfinal stage [Pearson r]",
    "move_cos": "move direction vs the\nfinal stage [cosine]",
}


def drift(sd, out_dir, ctx):
    d = sd.drift
    if d is None or d.empty:
        return [], f"drift skipped: drift.csv is missing (run `catlab analyze {sd.name}`)"
    skip = {"cell", "seed", "step", "stage", "images_seen", "arm", *sd.axes}
    cols = [c for c in d.columns if c not in skip and pd.api.types.is_numeric_dtype(d[c])]
    cols = sorted(cols, key=lambda c: c != "drift")
    rows = [(c, d.assign(value=d[c])) for c in cols]
    dist = d["distance"].dropna().unique() if "distance" in d.columns else ["l2"]
    unit = style.DISTANCE_UNITS.get(dist[0], f"{dist[0]} distance") if len(dist) == 1 else "distance"
    fig = _grid(sd, d.assign(value=np.nan), rows, "step", "drift",
                f"{sd.name}: drift of each stage over training (mean, 95 % CI over seeds)",
                lambda c: DRIFT_LABELS.get(c, c.replace("_", " ")).format(unit=unit), ctx["palette"])
    return style.save(fig, out_dir, "drift"), None


# ---- the lambda sweep -------------------------------------------------------------------------------------
def _lam(sd, axis, v):
    try:
        return float(sd.setting(axis, v, "loss.consistency.weight"))
    except (TypeError, ValueError):
        return math.nan


def sweep(sd, out_dir, ctx):
    ax_name = sd.axis_for("loss.consistency.weight")
    if not ax_name or len(sd.values[ax_name]) < 3 or len(sd.axes) > 1:
        return [], None            # a sweep needs >= 3 values of lambda on a study's only axis
    lam = {v: _lam(sd, ax_name, v) for v in sd.values[ax_name]}
    if not all(math.isfinite(x) for x in lam.values()):
        return [], f"sweep skipped: the {ax_name} labels do not give numeric lambda values"
    if sd.table is None:
        return [], f"sweep skipped: table.csv is missing (run `catlab analyze {sd.name}`)"
    panels, pal = _panels(sd), ctx["palette"]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels), 3.1), squeeze=False)
    rng = np.random.default_rng(0)
    pos = sorted(x for x in lam.values() if x > 0)
    for ax, (metric, ylabel) in zip(axes[0], panels):
        per_seed = sd.seed_values(metric)
        per_seed["lam"] = per_seed[ax_name].map(lam)
        s = summarize_seeds(per_seed, by=("lam",)).sort_values("lam")
        ax.plot(s["lam"], s["mean"], color="black", linewidth=1.2, zorder=2)
        ax.fill_between(s["lam"], s["ci_low"], s["ci_high"], color="black", alpha=0.12, linewidth=0)
        for arm, g in per_seed.groupby("arm"):
            ax.scatter(g["lam"] * np.exp(rng.uniform(-0.04, 0.04, len(g))), g["value"], s=12, zorder=3,
                       color=pal[arm], edgecolor="black", linewidth=0.4)
        if pos and min(lam.values()) == 0:
            ax.set_xscale("symlog", linthresh=pos[0])
        elif pos:
            ax.set_xscale("log")
        ax.set_xlabel("consistency weight \u03bb (unitless)")
        ax.set_ylabel(ylabel)
    fig.suptitle(f"{sd.name}: the consistency weight sweep (mean, 95 % CI, seeds)")
    fig.tight_layout(rect=(0, style.legend_room(fig), 1, 1))
    handles = [Line2D([], [], color="black", label="mean over seeds"),
               Patch(facecolor="black", alpha=0.12, label="95 % CI")]
    handles += [Line2D([], [], marker="o", linestyle="", color=pal[a], markeredgecolor="black",
                       label=f"seed, {style.arm_title(a)}") for a in sd.arms]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), bbox_to_anchor=(0.5, -0.04))
    return style.save(fig, out_dir, "sweep"), None


# ---- the stage-weight presets -------------------------------------------------------------------------------
def _weights_text(sd, axis, v, k):
    spec = sd.setting(axis, v, "loss.consistency.stage_weights")
    try:
        from catlab.losses import stage_weights
        w = stage_weights(str(spec), k)
        return f"{v}\n(" + ", ".join(f"{x:.2g}" for x in w.tolist()) + ")"
    except Exception:  # noqa: BLE001 -- a label that is not a preset: show the label alone
        return str(v)


def heatmap(sd, out_dir, ctx):
    ax_name = sd.axis_for("loss.consistency.stage_weights")
    if not ax_name or len(sd.values[ax_name]) < 2:
        return [], None
    summ = ctx["summary"]
    heads = [m for m in (sd.primary(h) for h in style.DIAGNOSTICS) if m]
    if summ is None or not heads:
        return [], f"heatmap skipped: table.csv has no diagnostics (run `catlab analyze {sd.name}`)"
    k = int(summ[summ["metric"].isin(heads)]["stage"].max()) + 1
    rows = sd.arms
    names = [_weights_text(sd, ax_name, sd.arm_values(a)[ax_name], k) if len(sd.axes) == 1 else a for a in rows]
    fig, axes = plt.subplots(1, len(heads), figsize=(3.3 * len(heads), 0.55 * len(rows) + 1.6), squeeze=False)
    for ax, metric in zip(axes[0], heads):
        s = summ[summ["metric"] == metric].pivot_table(index="arm", columns="stage", values="mean")
        s = s.reindex(rows)
        cmap = "rocket" if style.better(metric) == "higher" else "rocket_r"   # light = better
        sns.heatmap(s.to_numpy(), ax=ax, annot=True, fmt=".3g", cmap=cmap, linewidths=0.5,
                    xticklabels=[str(int(c)) for c in s.columns], yticklabels=names if ax is axes[0][0] else False,
                    cbar_kws={"label": style.metric_label(metric), "orientation": "horizontal", "pad": 0.33})
        ax.set_xlabel("stage k (1 = coarsest)")
        ax.set_title(style.metric_label(metric, short=True) + ", mean over seeds", fontsize="small")
    axes[0][0].set_ylabel(f"{ax_name}\n(weights of stages 1..{k - 1})")
    fig.suptitle(f"{sd.name}: the stage-weight presets (light = better)")
    fig.tight_layout(rect=(0, style.legend_room(fig, 0.3), 1, 1))
    n = int(summ["n"].max()) if "n" in summ.columns and summ["n"].notna().any() else 0
    fig.legend(handles=[Patch(facecolor="white", edgecolor="black", label=f"cell: mean over {n} seeds"),
                        Patch(facecolor="grey", label="colour: the value on the bar below each panel")],
               loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.02))
    return style.save(fig, out_dir, "heatmap"), None
