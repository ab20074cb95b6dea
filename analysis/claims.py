"""Claims with verdicts: a study's expected outcomes, confronted with the measured paired differences.

    rows = verdicts(table, claims, axes)      # one row per claim and stage: diff, 95 % CI, p, verdict
    print(claims_text(rows))                  # the terminal table of `catlab ablate` / `catlab analyze`

A claim (experiments.Claim; here any object with these attributes) says that arm `a` of `axis` is, against
arm `b`, paired by seed:
  kind="better":     lower (better="lower") or higher (better="higher") `metric` at `stages`;
  kind="not-worse":  no worse than b beyond the seed spread (margin = the standard deviation of b's seeds).
`metric` is a table metric (discrepancy_l2) or a family (fid: fid_domain_500, not fid_*_std); `stages` is
"intermediate" (1..K-1 without the rows that hold by definition) or "final" (K).

Per claim and stage, with d = a - b over the n paired seeds: mean, the Student-t 95 % CI of the mean of d,
the paired t-test p and the Wilcoxon signed-rank p (scipy.stats). Verdicts, with w = d signed so that
positive is worse for a (w = d when lower is better):
  better:     holds        the CI of w lies below 0 (equivalently paired t p < 0.05 and a better);
              contrary     the CI of w lies above 0 (a significantly worse);
              not significant otherwise.
  not-worse:  holds        the CI of w lies below the margin;
              contrary     the CI of w lies above the margin (worse beyond the seed spread);
              worse, margin undecided  the CI of w lies above 0 but reaches below the margin: a is
                         significantly worse, by an amount the seed spread cannot rule in or out;
              not significant otherwise (the data cannot tell).
Rows that hold by definition are never claims, tests or table rows: at stage K-1 rewrite equals
discrepancy and direction is 1 (by_definition).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from catlab.errors import UserError
from catlab.text import text_table

CONFIDENCE = 0.95
COLUMNS = ["claim", "metric", "stage", "a", "b", "n_pairs", "mean_a", "mean_b", "diff", "ci_low", "ci_high",
           "p_ttest", "p_wilcoxon", "margin", "verdict"]
KINDS = ("better", "not-worse")


def by_definition(metric: pd.Series, stage: pd.Series) -> pd.Series:
    """True for the rows that hold by construction: rewrite_* and direction_* at stage K-1, where x_{k+1} is
    the final image (rewrite = discrepancy, direction = 1). K is the last stage of the per-scale rows
    (quality) when there are any, else one more than the last diagnostic stage."""
    metric = metric.astype(str)
    diag = metric.str.startswith(("discrepancy_", "rewrite_", "direction_"))
    if (~diag & stage.notna()).any():
        last = stage.where(~diag).max() - 1
    else:
        last = stage.where(diag).max() if diag.any() else math.nan
    return metric.str.startswith(("rewrite_", "direction_")) & (stage == last)


def drop_by_definition(df: pd.DataFrame) -> pd.DataFrame:
    """The table without the rows that hold by definition (needs metric and stage columns)."""
    if df is None or df.empty or not {"metric", "stage"} <= set(df.columns):
        return df
    return df[~by_definition(df["metric"], df["stage"])]


def _matches(metric: pd.Series, name: str) -> pd.Series:
    metric = metric.astype(str)
    return (metric == name) | (metric.str.startswith(name + "_") & ~metric.str.contains("_std"))


def _stages(claim, rows: pd.DataFrame) -> list[int]:
    stages = sorted(int(s) for s in rows["stage"].dropna().unique())
    if claim.stages == "final":
        return stages[-1:]
    if claim.stages == "intermediate":
        return stages
    raise UserError(f"claim stages must be intermediate or final, but got stages={claim.stages!r}")


def describe(claim) -> str:
    if claim.kind == "better":
        return f"{claim.metric} {claim.better} with {claim.axis}={claim.a} than {claim.b}"
    return f"{claim.metric} with {claim.axis}={claim.a} not worse than {claim.b}"


def _row(claim, metric: str, stage: int, xa: np.ndarray, xb: np.ndarray) -> dict:
    n, d = len(xa), xa - xb
    row = {"claim": describe(claim), "metric": metric, "stage": stage, "a": claim.a, "b": claim.b, "n_pairs": n,
           "mean_a": float(xa.mean()) if n else math.nan, "mean_b": float(xb.mean()) if n else math.nan,
           "diff": float(d.mean()) if n else math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "p_ttest": math.nan, "p_wilcoxon": math.nan, "margin": math.nan, "verdict": "not significant"}
    if claim.kind == "not-worse":
        row["margin"] = float(xb.std(ddof=1)) if n > 1 else math.nan
    if n < 2:
        return {**row, "verdict": "not significant (n < 2)"}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * sd / math.sqrt(n)
    row.update(ci_low=row["diff"] - half, ci_high=row["diff"] + half)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        row["p_ttest"] = float(stats.ttest_rel(xa, xb).pvalue) if sd > 0 else (0.0 if row["diff"] else 1.0)
        if np.any(d != 0):
            row["p_wilcoxon"] = float(stats.wilcoxon(xa, xb).pvalue)
    sign = 1.0 if claim.better == "lower" else -1.0            # w = sign * d > 0: a is worse
    lo, hi = sorted((sign * row["ci_low"], sign * row["ci_high"]))
    bound = 0.0 if claim.kind == "better" else row["margin"]
    row["verdict"] = "holds" if hi < bound else "contrary" if lo > bound else \
        "worse, margin undecided" if lo > 0 else "not significant"
    return row


def verdicts(table: pd.DataFrame, claims, axes: list[str], pair_col: str = "seed") -> pd.DataFrame:
    """One row per claim x stage (x the values of the other axes), COLUMNS plus those axes."""
    rows = []
    table = drop_by_definition(table)
    for claim in claims:
        if claim.kind not in KINDS or claim.better not in ("lower", "higher"):
            raise UserError(f"claim kind must be one of {', '.join(KINDS)} and better lower or higher, but got "
                            f"kind={claim.kind!r}, better={claim.better!r}")
        if claim.axis not in axes:
            raise UserError(f"claim axis must be one of the study's axes ({', '.join(axes)}), but got "
                            f"axis={claim.axis!r}")
        sub = table[_matches(table["metric"], claim.metric)]
        others = [a for a in axes if a != claim.axis]
        groups = sub.groupby(others, sort=False) if others else [((), sub)]
        for key, part in groups:
            labels = dict(zip(others, key if isinstance(key, tuple) else (key,)))
            for metric in dict.fromkeys(part["metric"].astype(str)):
                rows_m = part[part["metric"].astype(str) == metric]
                for stage in _stages(claim, rows_m):
                    at = rows_m[rows_m["stage"] == stage]
                    side = {arm: at[at[claim.axis].astype(str) == arm].set_index(pair_col)["value"]
                            for arm in (claim.a, claim.b)}
                    both = pd.concat(side, axis=1, join="inner").dropna().sort_index()
                    r = _row(claim, metric, stage, both[claim.a].to_numpy(float), both[claim.b].to_numpy(float))
                    rows.append({**r, **labels})
    extra = [a for a in axes if any(a in r for r in rows)]
    return pd.DataFrame(rows, columns=[*COLUMNS, *extra])


def _num(x) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def claims_text(rows: pd.DataFrame) -> str:
    """The claims table as aligned text: claim, stage, paired difference a - b, its 95 % CI, p, verdict."""
    if rows is None or rows.empty:
        return "(no claims)"
    head = ["claim", "stage", "diff (a - b)", "95 % CI", "p (t / Wilcoxon)", "n", "verdict"]
    body = [[r.claim, f"s{int(r.stage)}", _num(r.diff), f"[{_num(r.ci_low)}, {_num(r.ci_high)}]",
             f"{_num(r.p_ttest)} / {_num(r.p_wilcoxon)}", str(int(r.n_pairs)),
             r.verdict + (f" (margin {_num(r.margin)})" if isinstance(r.margin, float) and not math.isnan(r.margin)
                          else "")] for r in rows.itertuples()]
    return text_table(head, body)
