"""Small statistics over tidy tables (one row per observation): per-arm summaries and paired tests.

    summarize(df, by=["arm", "metric"])                              # n, mean, std, 95 % CI per arm
    paired_tests(df, "arm", a="cat", b="base", by=["metric"])        # seeds paired across two arms

Both take and return pandas DataFrames and use scipy.stats. Seeds are few (3-5 per arm), so the tables
say which method produced each interval and why a test is NaN (`note`).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from catlab.errors import UserError

CONFIDENCE = 0.95
ALPHA = 0.05


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------

def _groups(df: pd.DataFrame, by: list[str]):
    """(key dict, sub-frame) per group of `by`, in sorted order; one group holding everything when by=[]."""
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise UserError(f"by must name columns of the table ({', '.join(map(str, df.columns))}), "
                        f"but got by={missing}")
    if not by:
        yield {}, df
        return
    for key, sub in df.groupby(by, sort=True, dropna=False):
        yield dict(zip(by, key)), sub


def _need(df: pd.DataFrame, col: str, field: str) -> None:
    if col not in df.columns:
        raise UserError(f"{field} must be a column of the table ({', '.join(map(str, df.columns))}), "
                        f"but got {field}={col!r}")


def t_interval(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean: mean -/+ t_{(1+c)/2, n-1} * sd / sqrt(n). NaN for n < 2."""
    n = len(x)
    if n < 2:
        return math.nan, math.nan
    m, se = float(np.mean(x)), float(np.std(x, ddof=1)) / math.sqrt(n)
    h = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * se
    return m - h, m + h


def bootstrap_interval(x: np.ndarray, confidence: float = CONFIDENCE, seed: int = 0,
                       n_resamples: int = 9999) -> tuple[float, float]:
    """BCa bootstrap interval of the mean (scipy.stats.bootstrap) with a fixed rng: reproducible."""
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="BCa", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


# ----------------------------------------------------------------------------------------------------------
# Per-arm summaries
# ----------------------------------------------------------------------------------------------------------

def summarize(df: pd.DataFrame, value: str = "value", by: list[str] | None = None, method: str = "auto",
              confidence: float = CONFIDENCE, seed: int = 0) -> pd.DataFrame:
    """One row per group of `by`: the `by` columns, n, mean, std (ddof=1), ci_low, ci_high, method.

    method="auto": "bootstrap" (BCa, rng seeded by `seed`) when n >= 3 and the values are not all equal,
    else "t" (Student t on n-1 df; all-equal values give a zero-width interval). n = 1 gives NaN std and CI.
    method="t" or "bootstrap" forces one (bootstrap still falls back to t where it is undefined, or if
    it returns a non-finite interval). NaN values are dropped before counting.
    """
    by = list(by or [])
    _need(df, value, "value")
    if method not in ("auto", "t", "bootstrap"):
        raise UserError(f"method must be one of auto, t, bootstrap, but got method={method!r}")
    rows = []
    for key, sub in _groups(df, by):
        x = sub[value].dropna().to_numpy(dtype=float)
        n = len(x)
        boot_ok = n >= 3 and np.ptp(x) > 0
        used = "bootstrap" if method != "t" and boot_ok else "t"
        lo, hi = bootstrap_interval(x, confidence, seed) if used == "bootstrap" else t_interval(x, confidence)
        if used == "bootstrap" and not (math.isfinite(lo) and math.isfinite(hi)):
            used, (lo, hi) = "t", t_interval(x, confidence)
        rows.append({**key, "n": n, "mean": float(np.mean(x)) if n else math.nan,
                     "std": float(np.std(x, ddof=1)) if n > 1 else math.nan,
                     "ci_low": lo, "ci_high": hi, "method": used})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "std", "ci_low", "ci_high", "method"])


# ----------------------------------------------------------------------------------------------------------
# Paired tests between two arms
# ----------------------------------------------------------------------------------------------------------

def _hedges_correction(df: int) -> float:
    """Exact small-sample correction J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)) (Hedges 1981)."""
    return math.exp(math.lgamma(df / 2) - math.lgamma((df - 1) / 2)) / math.sqrt(df / 2)


def _paired_row(xa: np.ndarray, xb: np.ndarray, alpha: float) -> dict:
    """Statistics of paired samples xa, xb (same order); diff = a - b, as scipy's ttest_rel(a, b)."""
    n, diff, notes = len(xa), xa - xb, []
    out = dict(n_pairs=n, mean_a=math.nan, mean_b=math.nan, mean_diff=math.nan, sd_diff=math.nan,
               t=math.nan, p_ttest=math.nan, p_wilcoxon=math.nan, cohen_dz=math.nan, hedges_g_av=math.nan)
    if n == 0:
        return {**out, "significant": False, "note": "no pairs"}
    out.update(mean_a=float(xa.mean()), mean_b=float(xb.mean()), mean_diff=float(diff.mean()))
    if n < 2:
        return {**out, "significant": False, "note": "n_pairs < 2: no test"}
    sd = float(diff.std(ddof=1))
    out["sd_diff"] = sd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tt = stats.ttest_rel(xa, xb)
        out.update(t=float(tt.statistic), p_ttest=float(tt.pvalue))
        if np.all(diff == 0):
            notes.append("all differences zero: no wilcoxon")
        else:
            out["p_wilcoxon"] = float(stats.wilcoxon(xa, xb).pvalue)
    if sd > 0:
        out["cohen_dz"] = out["mean_diff"] / sd
    else:
        notes.append("zero sd of differences: no effect size")
    sd_av = (float(xa.std(ddof=1)) + float(xb.std(ddof=1))) / 2
    if n >= 3 and sd_av > 0:
        out["hedges_g_av"] = out["mean_diff"] / sd_av * _hedges_correction(n - 1)
    elif n < 3:
        notes.append("n_pairs < 3: no hedges_g_av")
    significant = bool(math.isfinite(out["p_ttest"]) and out["p_ttest"] < alpha)
    return {**out, "significant": significant, "note": "; ".join(notes)}


def paired_tests(df: pd.DataFrame, arm_col: str, pair_col: str = "seed", value: str = "value",
                 a=None, b=None, by: list[str] | None = None, alpha: float = ALPHA) -> pd.DataFrame:
    """Arm a against arm b, observations paired by `pair_col` (a seed run in both arms), per group of `by`.

    Rows of a and b are matched on pair_col; unmatched rows are dropped, a duplicated (arm, pair) within a
    group is a UserError. a, b default to the two values of arm_col when it has exactly two (sorted).
    Columns: the `by` columns, a, b, n_pairs, mean_a, mean_b, mean_diff (a - b), sd_diff,
      t, p_ttest            scipy.stats.ttest_rel(a, b), two-sided;
      p_wilcoxon            scipy.stats.wilcoxon(a, b) (exact for small n without ties); NaN when n < 2 or
                            all differences are zero. With n <= 5 its smallest two-sided p is 0.0625;
      cohen_dz              mean_diff / sd_diff (standardised by the spread of the differences);
      hedges_g_av           mean_diff / mean(sd_a, sd_b), times the exact Hedges correction J(n-1)
                            (Lakens 2013's g_av: comparable with between-group effect sizes); NaN for n < 3;
      significant           p_ttest < alpha;  note: why a value is NaN.
    """
    by = list(by or [])
    for col, field in ((arm_col, "arm_col"), (pair_col, "pair_col"), (value, "value")):
        _need(df, col, field)
    if a is None or b is None:
        arms = sorted(df[arm_col].dropna().unique())
        if len(arms) != 2:
            raise UserError(f"a and b must name the two arms to compare, but got a={a!r}, b={b!r} with "
                            f"{arm_col} values {arms}")
        a, b = arms
    for name, arm in (("a", a), ("b", b)):
        if not (df[arm_col] == arm).any():
            raise UserError(f"{name} must be a value of {arm_col} ({', '.join(map(str, df[arm_col].unique()))}), "
                            f"but got {name}={arm!r}")
    rows = []
    for key, sub in _groups(df, by):
        sides = []
        for arm in (a, b):
            part = sub[sub[arm_col] == arm]
            if part[pair_col].duplicated().any():
                raise UserError(f"{pair_col} must be unique per arm and group, but got duplicated "
                                f"{pair_col} in {arm_col}={arm!r} {key}")
            sides.append(part.set_index(pair_col)[value])
        both = pd.concat(sides, axis=1, keys=["a", "b"], join="inner").dropna().sort_index()
        xa, xb = both["a"].to_numpy(dtype=float), both["b"].to_numpy(dtype=float)
        rows.append({**key, "a": a, "b": b, **_paired_row(xa, xb, alpha)})
    cols = [*by, "a", "b", "n_pairs", "mean_a", "mean_b", "mean_diff", "sd_diff", "t", "p_ttest",
            "p_wilcoxon", "cohen_dz", "hedges_g_av", "significant", "note"]
    return pd.DataFrame(rows, columns=cols)
