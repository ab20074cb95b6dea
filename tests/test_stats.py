"""analysis.stats: analytic summaries, agreement with scipy, effect sizes on constructed cases."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import _hedges_correction, paired_tests, summarize
from catlab.errors import UserError


def test_summarize_t_interval_analytic():
    df = pd.DataFrame({"value": [1.0, 2, 3, 4, 5]})
    row = summarize(df, method="t").iloc[0]
    assert row["n"] == 5 and row["mean"] == 3.0 and row["std"] == pytest.approx(math.sqrt(2.5), abs=1e-12)
    h = stats.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)           # 1.963243...
    assert h == pytest.approx(1.9632432, abs=1e-6)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((3 - h, 3 + h), abs=1e-12)
    assert row["method"] == "t"


def test_summarize_auto_picks_method_and_is_reproducible():
    df = pd.DataFrame({"arm": ["a"] * 5 + ["b"] * 2 + ["c"] * 3 + ["d"],
                       "value": [1.0, 2, 3, 4, 5, 1, 2, 7, 7, 7, 9]})
    out = summarize(df, by=["arm"]).set_index("arm")
    assert list(out["method"]) == ["bootstrap", "t", "t", "t"]
    assert list(out["n"]) == [5, 2, 3, 1]
    a = out.loc["a"]
    assert a["ci_low"] < 3 < a["ci_high"] and 1 <= a["ci_low"] and a["ci_high"] <= 5
    res = stats.bootstrap(([1.0, 2, 3, 4, 5],), np.mean, rng=np.random.default_rng(0))
    assert (a["ci_low"], a["ci_high"]) == (res.confidence_interval.low, res.confidence_interval.high)
    again = summarize(df, by=["arm"]).set_index("arm")
    assert again.loc["a", "ci_low"] == a["ci_low"]
    b = out.loc["b"]                                  # n = 2: t with 1 df, half width 12.706 * 0.5
    assert b["ci_high"] - b["mean"] == pytest.approx(stats.t.ppf(0.975, 1) * 0.5, abs=1e-9)
    c = out.loc["c"]                                  # all equal: zero-width interval
    assert (c["ci_low"], c["ci_high"], c["std"]) == (7.0, 7.0, 0.0)
    d = out.loc["d"]
    assert d["mean"] == 9.0 and math.isnan(d["std"]) and math.isnan(d["ci_low"]) and math.isnan(d["ci_high"])


def test_summarize_bootstrap_is_bca_and_nan_values_are_dropped():
    """On a skewed sample BCa and the percentile interval differ: summarize gives scipy's BCa; a NaN value
    (a cell whose metric could not be computed) is left out, not counted."""
    x = [1.0, 1.1, 1.2, 1.3, 9.0]
    df = pd.DataFrame({"value": x + [math.nan]})
    row = summarize(df).iloc[0]
    res = {m: stats.bootstrap((x,), np.mean, method=m, rng=np.random.default_rng(0)).confidence_interval
           for m in ("BCa", "percentile")}
    assert (res["BCa"].low, res["BCa"].high) != pytest.approx((res["percentile"].low, res["percentile"].high))
    assert (row["ci_low"], row["ci_high"]) == (res["BCa"].low, res["BCa"].high)
    assert row["n"] == 5 and row["mean"] == pytest.approx(np.mean(x)) and row["method"] == "bootstrap"


def test_summarize_no_by_and_errors():
    df = pd.DataFrame({"v": [1.0, 2.0]})
    assert list(summarize(df, value="v").columns) == ["n", "mean", "std", "ci_low", "ci_high", "method"]
    with pytest.raises(UserError, match="value must be a column"):
        summarize(df)
    with pytest.raises(UserError, match="by must name columns"):
        summarize(df, value="v", by=["arm"])
    with pytest.raises(UserError, match="method"):
        summarize(df, value="v", method="bca")


def _table():
    """Two metrics, two arms, five seeds; seed 5 of arm base has no partner in arm cat for metric m2."""
    a = [0.50, 0.61, 0.47, 0.58, 0.55]
    b = [0.62, 0.70, 0.60, 0.64, 0.71]
    rows = [{"metric": "m1", "arm": "cat", "seed": s, "value": v} for s, v in enumerate(a)]
    rows += [{"metric": "m1", "arm": "base", "seed": s, "value": v} for s, v in enumerate(b)]
    rows += [{"metric": "m2", "arm": "cat", "seed": s, "value": v} for s, v in enumerate([1.0, 2.0, 3.0, 4.0])]
    rows += [{"metric": "m2", "arm": "base", "seed": s, "value": v} for s, v in enumerate([1.0, 2.0, 3.0, 4.0, 9.0])]
    return pd.DataFrame(rows[::-1]), a, b          # reversed: pairing must not depend on row order


def test_paired_tests_match_scipy():
    df, a, b = _table()
    out = paired_tests(df, "arm", a="cat", b="base", by=["metric"]).set_index("metric")
    m1 = out.loc["m1"]
    tt, w = stats.ttest_rel(a, b), stats.wilcoxon(a, b)
    diff = np.subtract(a, b)
    assert m1["n_pairs"] == 5 and (m1["a"], m1["b"]) == ("cat", "base")
    assert m1["mean_diff"] == pytest.approx(diff.mean(), abs=1e-12) and m1["mean_diff"] == pytest.approx(-0.112)
    assert m1["t"] == pytest.approx(tt.statistic, abs=1e-12) and m1["p_ttest"] == pytest.approx(tt.pvalue, abs=1e-12)
    assert m1["p_wilcoxon"] == pytest.approx(w.pvalue, abs=1e-12) and m1["p_wilcoxon"] == pytest.approx(0.0625)
    assert m1["cohen_dz"] == pytest.approx(diff.mean() / diff.std(ddof=1), abs=1e-12)
    assert m1["cohen_dz"] * math.sqrt(5) == pytest.approx(m1["t"], abs=1e-9)        # t = dz sqrt(n)
    assert tt.pvalue < 0.05 and bool(m1["significant"]) is True
    m2 = out.loc["m2"]                                 # identical pairs, the unmatched seed is dropped
    assert m2["n_pairs"] == 4 and m2["mean_diff"] == 0.0
    assert math.isnan(m2["p_wilcoxon"]) and math.isnan(m2["cohen_dz"]) and "all differences zero" in m2["note"]
    assert not bool(m2["significant"])


def test_effect_sizes_constructed():
    # diffs (a - b) = [1, 2, 3]: mean 2, sd 1 -> dz = 2; sd_a = sd_b = 0.5 -> d_av = 4, g_av = 4 J(2)
    df = pd.DataFrame({"arm": ["x"] * 3 + ["y"] * 3, "seed": [0, 1, 2] * 2,
                       "value": [2.0, 2.5, 3.0, 1.0, 0.5, 0.0]})
    row = paired_tests(df, "arm", a="x", b="y").iloc[0]
    assert row["mean_diff"] == 2.0 and row["sd_diff"] == 1.0 and row["cohen_dz"] == 2.0
    assert _hedges_correction(2) == pytest.approx(1 / math.sqrt(math.pi), abs=1e-12)   # Gamma(1)/Gamma(1/2)
    assert row["hedges_g_av"] == pytest.approx(4 / math.sqrt(math.pi), abs=1e-12)
    assert _hedges_correction(100) == pytest.approx(1 - 3 / (4 * 100 - 1), abs=1e-5)    # Hedges' approximation
    flipped = paired_tests(df, "arm", a="y", b="x").iloc[0]
    assert flipped["cohen_dz"] == -2.0 and flipped["t"] == pytest.approx(-row["t"])


def test_paired_small_n_and_defaults():
    df = pd.DataFrame({"arm": ["p", "q"], "seed": [0, 0], "value": [1.0, 2.0]})
    row = paired_tests(df, "arm").iloc[0]                      # a, b default to the two sorted arms
    assert (row["a"], row["b"], row["n_pairs"], row["mean_diff"]) == ("p", "q", 1, -1.0)
    assert math.isnan(row["p_ttest"]) and math.isnan(row["p_wilcoxon"]) and "n_pairs < 2" in row["note"]
    assert not bool(row["significant"])


def test_paired_errors():
    df, _, _ = _table()
    with pytest.raises(UserError, match="b must be a value of arm"):
        paired_tests(df, "arm", a="cat", b="nope")
    with pytest.raises(UserError, match="arm_col must be a column"):
        paired_tests(df, "group", a="cat", b="base")
    with pytest.raises(UserError, match="seed must be unique"):
        paired_tests(df, "arm", a="cat", b="base")            # without by=metric, seeds repeat per arm
    three = pd.concat([df, df.assign(arm="third")])
    with pytest.raises(UserError, match="a and b must name the two arms"):
        paired_tests(three, "arm", by=["metric"])
