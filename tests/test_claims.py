"""analysis.claims: verdicts of declared claims on paired differences, checked on hand-made tables.

Pins: the paired difference, its Student-t 95 % CI and both p-values against scipy; holds / contrary /
not significant for better-claims in both directions; the not-worse margin is the reference arm's seed SD,
and a significantly worse arm within it is told apart; the rows that hold by definition (rewrite and
direction at K-1) are never claimed; families (fid) match fid_domain_500 but not its _std; a claim's
verdict changes when the data do.
"""
import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from analysis.claims import by_definition, claims_text, verdicts
from experiments import Claim

SEEDS = range(5)


def table(values: dict) -> pd.DataFrame:
    """values: (metric, stage) -> (on per seed, off per seed)."""
    rows = []
    for (metric, stage), (on, off) in values.items():
        for arm, xs in (("on", on), ("off", off)):
            rows += [{"cell": f"consistency={arm},seed={s}", "seed": s, "consistency": arm, "metric": metric,
                      "stage": stage, "value": float(v)} for s, v in zip(SEEDS, xs)]
    return pd.DataFrame(rows)


ON_LOW = [1.0, 1.1, 0.9, 1.2, 1.0]
OFF_HIGH = [2.0, 2.3, 1.8, 2.1, 2.4]


def test_numbers_agree_with_scipy():
    t = table({("discrepancy_l2", 1): (ON_LOW, OFF_HIGH)})
    r = verdicts(t, [Claim("discrepancy_l2", "consistency", "on", "off")], ["consistency"]).iloc[0]
    d = np.array(ON_LOW) - np.array(OFF_HIGH)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert r["diff"] == pytest.approx(d.mean()) and (r.ci_low, r.ci_high) == pytest.approx((lo, hi))
    assert r.p_ttest == pytest.approx(stats.ttest_rel(ON_LOW, OFF_HIGH).pvalue)
    assert r.p_wilcoxon == pytest.approx(stats.wilcoxon(ON_LOW, OFF_HIGH).pvalue) == pytest.approx(0.0625)
    assert r.verdict == "holds" and r.n_pairs == 5


@pytest.mark.parametrize("better, on, off, verdict", [
    ("lower", ON_LOW, OFF_HIGH, "holds"),
    ("lower", OFF_HIGH, ON_LOW, "contrary"),
    ("higher", OFF_HIGH, ON_LOW, "holds"),
    ("higher", ON_LOW, OFF_HIGH, "contrary"),
    ("lower", [1.0, 2.0, 1.0, 2.0, 1.5], [2.0, 1.0, 2.0, 1.0, 1.5], "not significant"),
])
def test_better_claims(better, on, off, verdict):
    t = table({("m", 1): (on, off)})
    assert verdicts(t, [Claim("m", "consistency", "on", "off", better)], ["consistency"]).verdict[0] == verdict


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.01), st.floats(-0.004, 0.004)), min_size=3, max_size=8))
def test_verdicts_are_read_off_scipys_paired_ci_at_any_scale(pairs):
    """At the scale of the discrepancy (about 1e-3), every verdict is the one scipy's paired-t CI gives:
    better holds iff the CI's upper end is below 0, contrary iff its lower end is above 0; not-worse the same
    against the off arm's seed spread."""
    off = np.array([b for b, _ in pairs])
    on = off + np.array([d for _, d in pairs])
    assume(np.std(on - off) > 1e-9)
    seeds = range(len(pairs))
    rows = [{"cell": f"consistency={arm},seed={i}", "seed": i, "consistency": arm, "metric": "m", "stage": 1,
             "value": float(v)} for arm, xs in (("on", on), ("off", off)) for i, v in zip(seeds, xs)]
    lo, hi = stats.ttest_rel(on, off).confidence_interval(0.95)
    margin = np.std(off, ddof=1)
    for kind, bound in (("better", 0.0), ("not-worse", margin)):
        r = verdicts(pd.DataFrame(rows), [Claim("m", "consistency", "on", "off", "lower", kind)],
                     ["consistency"]).iloc[0]
        if min(abs(hi - bound), abs(lo - bound), abs(lo)) < 1e-12:
            continue                                           # on a boundary: rounding decides
        want = "holds" if hi < bound else "contrary" if lo > bound else \
            "worse, margin undecided" if kind == "not-worse" and lo > 0 else "not significant"
        assert r.verdict == want, (kind, lo, hi, bound)


def test_not_worse_uses_the_reference_seed_spread():
    off = [10.0, 12.0, 11.0, 9.0, 13.0]                        # sd 1.58
    claim = [Claim("fid", "consistency", "on", "off", "lower", "not-worse", "final")]
    slightly = table({("fid_domain_500", 4): ([x + 0.2 for x in off], off)})
    r = verdicts(slightly, claim, ["consistency"]).iloc[0]
    assert r.margin == pytest.approx(np.std(off, ddof=1)) and r.verdict == "holds"   # worse by 0.2 < 1.58
    much = table({("fid_domain_500", 4): ([x + 5 + 0.1 * i for i, x in enumerate(off)], off)})
    assert verdicts(much, claim, ["consistency"]).verdict[0] == "contrary"
    noisy = table({("fid_domain_500", 4): ([x + d for x, d in zip(off, [-3, 4, -2, 5, 1])], off)})
    assert verdicts(noisy, claim, ["consistency"]).verdict[0] == "not significant"
    worse = table({("fid_domain_500", 4): ([x + d for x, d in zip(off, [1.4, 1.5, 1.6, 1.7, 1.3])], off)})
    r = verdicts(worse, claim, ["consistency"]).iloc[0]                # CI [1.30, 1.70]: above 0, spans 1.58
    assert 0 < r.ci_low < r.margin < r.ci_high and r.verdict == "worse, margin undecided"


def test_every_not_worse_verdict_gets_its_own_colour_in_the_report():
    """The report colours a verdict by the CSS class of its first word: each of the four not-worse
    verdicts must map to a class the report's style sheet defines, and a different one for each."""
    from reports.html import CSS
    from reports.tables import ClaimsTable
    off = [10.0, 12.0, 11.0, 9.0, 13.0]
    claim = [Claim("fid", "consistency", "on", "off", "lower", "not-worse", "final")]
    cases = {"holds": [0.2] * 5, "contrary": [5 + 0.1 * i for i in range(5)], "not significant": [-3, 4, -2, 5, 1],
             "worse, margin undecided": [1.4, 1.5, 1.6, 1.7, 1.3]}
    rows = pd.concat([verdicts(table({("fid_domain_500", 4): ([x + d for x, d in zip(off, ds)], off)}), claim,
                               ["consistency"]) for ds in cases.values()], ignore_index=True)
    assert list(rows.verdict) == list(cases)
    classes = re.findall(r"<td class='verdict ([^']*)'>", ClaimsTable(rows).html())
    styled = set(re.findall(r"td\.([a-z]+)\{", CSS))
    assert len(classes) == 4 and len(set(classes)) == 4 and set(classes) <= styled, (classes, styled)


def test_stages_families_and_rows_that_hold_by_definition():
    vals = {(f"{m}_l2", k): (ON_LOW, OFF_HIGH) for m in ("discrepancy", "rewrite", "direction") for k in (1, 2, 3)}
    vals.update({("fid_domain_500", k): (ON_LOW, OFF_HIGH) for k in (1, 2, 3, 4)})
    vals[("fid_domain_500_std", 4)] = (ON_LOW, OFF_HIGH)
    t = table(vals)
    claims = [Claim("discrepancy_l2", "consistency", "on", "off"), Claim("rewrite_l2", "consistency", "on", "off"),
              Claim("direction_l2", "consistency", "on", "off", "higher"),
              Claim("fid", "consistency", "on", "off", "lower", "not-worse", "final")]
    r = verdicts(t, claims, ["consistency"])
    got = list(zip(r.metric, r.stage))
    assert got == [("discrepancy_l2", 1), ("discrepancy_l2", 2), ("discrepancy_l2", 3), ("rewrite_l2", 1),
                   ("rewrite_l2", 2), ("direction_l2", 1), ("direction_l2", 2), ("fid_domain_500", 4)]
    flags = by_definition(t["metric"], t["stage"])
    assert set(map(tuple, t[flags][["metric", "stage"]].drop_duplicates().values)) == {("rewrite_l2", 3),
                                                                                       ("direction_l2", 3)}
    text = claims_text(r)
    assert "discrepancy_l2 lower with consistency=on than off" in text and "holds" in text and "s3" in text


def test_one_seed_is_not_a_test():
    t = table({("m", 1): ([1.0], [2.0])})
    r = verdicts(t, [Claim("m", "consistency", "on", "off")], ["consistency"]).iloc[0]
    assert r.n_pairs == 1 and math.isnan(r.ci_low) and r.verdict.startswith("not significant")


def test_a_seed_missing_from_one_arm_is_left_out_of_the_pairs():
    """A cell that failed leaves its seed in one arm only: the claim pairs the seeds both arms have."""
    t = table({("discrepancy_l2", 1): (ON_LOW, OFF_HIGH)})
    t = t[~((t["consistency"] == "on") & (t["seed"] == 2))]
    r = verdicts(t, [Claim("discrepancy_l2", "consistency", "on", "off")], ["consistency"]).iloc[0]
    keep = [0, 1, 3, 4]
    d = np.array(ON_LOW)[keep] - np.array(OFF_HIGH)[keep]
    assert r.n_pairs == 4 and r["diff"] == pytest.approx(d.mean())
    assert r.p_ttest == pytest.approx(stats.ttest_rel(np.array(ON_LOW)[keep], np.array(OFF_HIGH)[keep]).pvalue)


def test_the_reports_claims_table_shows_each_field_of_claims_csv_in_its_column():
    """Markdown, LaTeX and HTML of reports.tables.ClaimsTable, and the text table the grid prints: every row
    shows claims.csv's fields under their headers (a and b, the two p-values, ... not swapped)."""
    from reports.tables import ClaimsTable
    on, off = [1.0, 1.3, 0.9, 1.6, 1.0], [2.0, 2.3, 1.8, 2.1, 2.4]
    t = table({("discrepancy_l2", 1): (on, off), ("fid_domain_500", 4): (off, on)})
    claims = [Claim("discrepancy_l2", "consistency", "on", "off"),
              Claim("fid", "consistency", "on", "off", "lower", "not-worse", "final")]
    df = verdicts(t, claims, ["consistency"])
    assert df.p_ttest.iloc[0] != pytest.approx(df.p_wilcoxon.iloc[0])
    tab = ClaimsTable(df)
    lines = tab.markdown().splitlines()[4:]
    g = lambda x: "--" if pd.isna(x) else f"{x:.3g}"  # noqa: E731
    for line, r in zip(lines, df.itertuples(), strict=True):
        cells = dict(zip(ClaimsTable.HEAD, [c.strip() for c in line.strip("|").split("|")]))
        assert cells == {"claim": r.claim, "stage": str(r.stage), "a": "on", "b": "off", "n": "5",
                         "diff (a - b)": g(r.diff), "95 % CI": f"[{g(r.ci_low)}, {g(r.ci_high)}]",
                         "p (t)": g(r.p_ttest), "p (Wilcoxon)": g(r.p_wilcoxon), "margin": g(r.margin),
                         "verdict": f"**{r.verdict}**"}
    html = tab.html()
    for r in df.itertuples():
        assert f"<td>on</td><td>off</td><td>5</td><td>{g(r.diff)}</td>" in html
        assert f"<td>{g(r.p_ttest)}</td><td>{g(r.p_wilcoxon)}</td><td>{g(r.margin)}</td>" in html
    assert tab.latex().count(" & on & off & 5 & ") == 2
    text = claims_text(df).splitlines()[1:]                        # what `catlab ablate` prints
    for line, r in zip(text, df.itertuples(), strict=True):
        assert line.startswith(r.claim) and f" s{r.stage} " in line and line.rstrip().endswith(
            r.verdict + (f" (margin {g(r.margin)})" if not pd.isna(r.margin) else ""))
        assert f" {g(r.diff)} " in line and f" [{g(r.ci_low)}, {g(r.ci_high)}] " in line
        assert f" {g(r.p_ttest)} / {g(r.p_wilcoxon)} " in line and " 5 " in line
