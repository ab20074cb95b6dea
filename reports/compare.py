"""Per-arm summaries and paired tests, in the arm labels of reports.data.

    summary(sd)      arm, metric, stage, n, mean, std, ci_low, ci_high, method   (summary.csv, or recomputed
                     from table.csv with analysis.stats.summarize when summary.csv is missing or unusable)
    test_pairs(sd)   metric, stage, arm_a, arm_b, mean_a, mean_b, p, significant  (from tests.csv)
    summarize_seeds(df)  the same CI (analysis.stats.summarize) over a per-seed frame, by arm
"""
from __future__ import annotations

import math

import pandas as pd

ALPHA = 0.05
SUMMARY_COLS = ["arm", "metric", "stage", "n", "mean", "std", "ci_low", "ci_high", "method"]


def summary(sd) -> pd.DataFrame | None:
    """The per-arm x metric x stage summary; records in sd.notes where it came from."""
    s = sd.summary
    need = {"arm", "metric", "stage", "mean", "ci_low", "ci_high"}
    if s is not None and need <= set(s.columns) and s["arm"].notna().all():
        s = s.copy()
        for c in ("n", "std", "method"):
            if c not in s.columns:
                s[c] = math.nan if c != "method" else ""
        return s[SUMMARY_COLS]
    if sd.table is None:
        return None
    from analysis.stats import summarize
    out = summarize(sd.table, by=["arm", "metric", "stage"])
    sd.notes.append("summary.csv " + ("missing" if sd.summary is None else "unusable")
                    + ": 95 % CIs recomputed from table.csv with analysis.stats.summarize")
    return out[SUMMARY_COLS]


def summarize_seeds(df: pd.DataFrame, by=("arm",)) -> pd.DataFrame:
    """n, mean, std, ci_low, ci_high per group of a per-seed frame (column `value`)."""
    from analysis.stats import summarize
    return summarize(df, by=list(by))


def _axis_of(sd, a: str, b: str, row: dict) -> str | None:
    if row.get("axis") in sd.axes:
        return row["axis"]
    hits = [ax for ax in sd.axes if a in sd.values[ax] and b in sd.values[ax]]
    return hits[0] if len(hits) == 1 else None


def _full(sd, axis: str, value: str, row: dict) -> str | None:
    parts = {}
    for ax in sd.axes:
        if ax == axis:
            parts[ax] = value
        elif ax in row and pd.notna(row[ax]):
            parts[ax] = str(row[ax])
        elif len(sd.values[ax]) == 1:
            parts[ax] = sd.values[ax][0]
        else:
            return None
    return sd.label(parts)


def test_pairs(sd) -> pd.DataFrame:
    """One row per tested pair of arms: which arm is which, the means and the paired p (t-test)."""
    cols = ["metric", "stage", "arm_a", "arm_b", "mean_a", "mean_b", "p", "significant"]
    t = sd.tests
    if t is None or not {"a", "b", "metric"} <= set(t.columns):
        return pd.DataFrame(columns=cols)
    arms, rows, dropped = set(sd.arms), [], 0
    for row in t.to_dict("records"):
        a, b = str(row["a"]), str(row["b"])
        if a in arms and b in arms:
            fa, fb = a, b
        else:
            axis = _axis_of(sd, a, b, row)
            fa, fb = (_full(sd, axis, a, row), _full(sd, axis, b, row)) if axis else (None, None)
        if fa is None or fb is None:
            dropped += 1
            continue
        p = float(row.get("p_ttest", math.nan))
        sig = (p < ALPHA) if math.isfinite(p) else str(row.get("significant", "")).lower() == "true"
        rows.append({"metric": row["metric"], "stage": row.get("stage", math.nan), "arm_a": fa, "arm_b": fb,
                     "mean_a": row.get("mean_a", math.nan), "mean_b": row.get("mean_b", math.nan),
                     "p": p, "significant": bool(sig)})
    if dropped:
        sd.notes.append(f"tests.csv: {dropped} rows name arms I cannot match to {sd.axes}; not marked")
    return pd.DataFrame(rows, columns=cols)


def marks(sd, pairs: pd.DataFrame, summ: pd.DataFrame) -> set[tuple[str, str, object]]:
    """{(arm, metric, stage)} to mark with a dagger: the better arm of a pair whose paired p < ALPHA."""
    from reports.style import better
    out = set()
    for r in pairs[pairs["significant"]].to_dict("records"):
        way = better(r["metric"])
        if way is None:
            continue
        ma, mb = r["mean_a"], r["mean_b"]
        if not (isinstance(ma, float) and math.isfinite(ma) and math.isfinite(mb)):
            sel = summ[(summ["metric"] == r["metric"]) & (summ["stage"] == r["stage"])].set_index("arm")["mean"]
            ma, mb = sel.get(r["arm_a"], math.nan), sel.get(r["arm_b"], math.nan)
        if not (math.isfinite(ma) and math.isfinite(mb)) or ma == mb:
            continue
        a_wins = (ma < mb) if way == "lower" else (ma > mb)
        out.add((r["arm_a"] if a_wins else r["arm_b"], r["metric"], r["stage"]))
    return out
