"""One look for every figure: Agg backend, seaborn paper context, Type-42 fonts, one colour per arm.

    apply()                              # once, before any figure (build.report calls it)
    pal = palette(["consistency=on", "consistency=off"])   # {label: colour}, the same for every figure
    save(fig, out_dir, "fig4")           # -> [fig4.pdf, fig4.png]; closes the figure
    metric_label("discrepancy_l2")       # axis label with its unit
    better("fid_domain_1k")              # "lower" | "higher" | None
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # no display: reports are files

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

RC = {
    "pdf.fonttype": 42,          # TrueType (Type 42) in PDF and PS: no Type 3 fonts for camera-ready
    "ps.fonttype": 42,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "figure.dpi": 100,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}

# Fixed colours: seaborn's colour-blind palette. A study's arms take them in the registry's order, so an arm
# has one colour in every figure of its report; "off"-like arms (no consistency) are always grey.
COLOURS = [tuple(c) for c in sns.color_palette("colorblind", 10)]
GREY = (0.55, 0.55, 0.55)
BASELINE_VALUES = ("off", "none", "0", "0.0", "baseline")
DIAGNOSTICS = ("discrepancy", "rewrite", "direction")
LOWER_IS_BETTER = ("discrepancy", "rewrite", "fid", "kid")
HIGHER_IS_BETTER = ("direction", "isc", "precision", "recall", "f")     # "f" of f_score


def apply() -> None:
    """Set the global theme (idempotent)."""
    sns.set_theme(context="paper", style="ticks", palette=COLOURS, rc=RC)
    matplotlib.rcParams.update(RC)


def _is_baseline(label: str) -> bool:
    parts = [p.split("=", 1)[-1].strip() for p in str(label).split(",")]
    return len(parts) == 1 and parts[0].lower() in BASELINE_VALUES


def palette(labels) -> dict:
    """{label: RGB} in the order given; a single-axis "off"/"0" arm is grey, the others take COLOURS in turn."""
    out, i = {}, 0
    for label in labels:
        if label in out:
            continue
        if _is_baseline(label):
            out[label] = GREY
        else:
            out[label] = COLOURS[i % len(COLOURS)]
            i += 1
    return out


def legend_room(fig, inches: float = 0.45) -> float:
    """The fraction of the figure's height to keep free at the bottom for a legend below the panels."""
    return min(0.3, inches / fig.get_figheight())


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """fig -> <out_dir>/<name>.pdf and .png (PDF fonts embedded as Type 42); the figure is closed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.pdf", out_dir / f"{name}.png"]
    with matplotlib.rc_context(RC):
        fig.savefig(paths[0], metadata={"CreationDate": None})   # reproducible bytes
        fig.savefig(paths[1])
    plt.close(fig)
    return paths


# ---- metric names -> words ---------------------------------------------------------------------------------
def split_metric(metric: str) -> tuple[str, str]:
    """("discrepancy", "l2") from "discrepancy_l2"; ("fid", "domain_1k") from "fid_domain_1k"."""
    head, _, rest = str(metric).partition("_")
    return head.lower(), rest


def better(metric: str) -> str | None:
    """"lower" | "higher" | None (no direction: a spread such as kid_std, or an unknown metric)."""
    head, rest = split_metric(metric)
    if rest.startswith("std") or "_std" in str(metric):
        return None
    if head in LOWER_IS_BETTER:
        return "lower"
    if head in HIGHER_IS_BETTER:
        return "higher"
    return None


DISTANCE_UNITS = {
    "l2": "MSE, pixels in [-1, 1]",
    "l1": "MAE, pixels in [-1, 1]",
}


def metric_label(metric: str, short: bool = False) -> str:
    """A readable axis label with its unit, e.g. 'discrepancy (L2; mean squared error, pixels in [-1, 1])'."""
    head, rest = split_metric(metric)
    arrow = {"lower": " \u2193", "higher": " \u2191"}.get(better(metric) or "", "")
    if head in ("discrepancy", "rewrite"):
        dist = rest or "l2"
        unit = DISTANCE_UNITS.get(dist, f"{dist} distance")
        name = dist.upper() if dist in DISTANCE_UNITS else dist
        return f"{head} ({name})" + arrow + ("" if short else f"\n[{unit}]")
    if head == "direction":
        dist = rest or "l2"
        name = dist.upper() if dist in DISTANCE_UNITS else dist
        return f"direction ({name})" + arrow + ("" if short else "\n[cosine, -1 to 1]")
    if head in ("fid", "kid"):
        proto = rest.replace("_", ", ") if rest else ""
        unit = {"fid": "Frechet distance of features", "kid": "MMD^2 of features"}[head]
        return f"{head.upper()}" + (f" ({proto})" if proto else "") + arrow + ("" if short else f"\n[{unit}]")
    return str(metric)


def arm_title(label: str) -> str:
    return str(label).replace(",", ", ").replace("  ", " ")
