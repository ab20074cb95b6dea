"""Reports without a study: the strict HTML check (conftest.py's, run on the report by
test_reports_study.py) fails on broken pages, an unknown or empty study names the command to run, and the
tables' bold and dagger marks are pinned on a small summary."""
import math
import re

import pandas as pd
import pytest

from conftest import strict_html


# ---- the strict HTML check; a study that is not there -------------------------------------------------
@pytest.mark.parametrize("html, error", [
    ("<!DOCTYPE html><html><body><div><table></div></table></body></html>", "</div> closes <table>"),
    ("<!DOCTYPE html><html><body><div><p>x</body></html>", "</body> closes <p>"),
    ("<!DOCTYPE html><html><body><div>x</div>", "<body> is never closed"),
    ("<!DOCTYPE html><html><body>x</body></html></div>", "</div> closes nothing"),
    ("<!DOCTYPE html><html><body><img src='fig.png'></img></body></html>", "</img>: img is a void element"),
    ("<html><body>x</body></html>", "no <!DOCTYPE html>"),
    ("<!DOCTYPE html><html><body><img src='nope.png'></body></html>", "'nope.png'>: no such file"),
    ("<!DOCTYPE html><html><body><a href='fig.pdf'>pdf</a></body></html>", "'fig.pdf'>: no such file"),
    ("<!DOCTYPE html><html><body><a href='#claims'>x</a></body></html>", "no element with that id"),
    ("<!DOCTYPE html><html><body><img src=''></body></html>", "<img src> is empty"),
    ("<!DOCTYPE html><html><body><img src='https://x.org/a.png'></body></html>", "points off the page's folder"),
    ("<!DOCTYPE html><html><body><p id='a'></p><p id='a'></p></body></html>", "duplicate id 'a'"),
], ids=["crossed", "unclosed-inner", "unclosed-outer", "stray-end", "void-end", "no-doctype", "missing-img",
        "missing-link", "missing-anchor", "empty-src", "remote", "duplicate-id"])
def test_strict_html_check_fails_on_broken_pages(html, error, tmp_path):
    (tmp_path / "fig.png").write_bytes(b"png")
    ok = ("<!DOCTYPE html><html><body><h2 id='claims'>c</h2><a href='#claims'>x</a><img src='fig.png'><br/>"
          "</body></html>")
    (tmp_path / "ok.html").write_text(ok)
    strict_html(tmp_path / "ok.html")
    (tmp_path / "index.html").write_text(html)
    with pytest.raises(ValueError, match=re.escape(error)):
        strict_html(tmp_path / "index.html")


def test_unknown_or_empty_study_names_the_command_to_run(tmp_path, monkeypatch):
    from catlab.errors import UserError
    from reports.build import report
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"catlab (ablate|list studies)"):
        report("no-such-study")
    (tmp_path / "studies" / "half").mkdir(parents=True)
    (tmp_path / "studies" / "half" / "study.json").write_text("{}")
    with pytest.raises(UserError, match="run `catlab analyze half` first"):
        report("half")


# ---- tables: bold and dagger, pinned on a small summary --------------------------------------------------
def test_table_marks_pinned():
    from reports.tables import build_tables
    summ = pd.DataFrame([
        ("c=on", "discrepancy_l2", 1, 3, 0.10, 0.01, 0.09, 0.11, "t"),
        ("c=off", "discrepancy_l2", 1, 3, 0.20, 0.01, 0.19, 0.21, "t"),
        ("c=on", "direction_l2", 1, 3, 0.30, 0.01, 0.20, 0.40, "t"),
        ("c=off", "direction_l2", 1, 3, 0.50, 0.01, 0.40, 0.60, "t"),
        ("c=on", "fid_x", 4, 3, 7.0, 1.0, 6.0, 8.0, "t"),
        ("c=off", "fid_x", 4, 3, 7.0, 1.0, 5.0, 9.0, "t"),
        ("c=on", "kid_std_x", 4, 3, 2e-16, 1e-16, 1e-16, 3e-16, "t"),
        ("c=off", "kid_std_x", 4, 3, 3e-16, 1e-16, 2e-16, 4e-16, "t")],
        columns=["arm", "metric", "stage", "n", "mean", "std", "ci_low", "ci_high", "method"])
    tabs = build_tables(summ, ["c=on", "c=off"], {("c=on", "discrepancy_l2", 1)})
    md = tabs["diagnostics"].markdown().splitlines()
    assert "| discrepancy (L2) \u2193 | 1 | **0.100 ± 0.010**\u2020 | 0.200 ± 0.010 |" in md
    assert "| direction (L2) \u2191 | 1 | 0.30 ± 0.10 | **0.50 ± 0.10** |" in md
    assert "| FID (x) \u2193 | 4 | **7.0 ± 1.0** | **7.0 ± 2.0** |" in tabs["quality"].markdown()   # a tie
    # a spread (kid_std) has no better side: nothing bold; tiny values in scientific notation
    assert "| KID (std, x) | 4 | 2.00e-16 ± 1.00e-16 | 3.00e-16 ± 1.00e-16 |" in tabs["quality"].markdown()
    tex = tabs["diagnostics"].latex()
    assert "\\textbf{0.100 $\\pm$ 0.010}$^\\dagger$ & 0.200 $\\pm$ 0.010" in tex
    assert math.isclose(tabs["diagnostics"].rows[0][2]["c=on"].half, 0.01)


def test_panels_that_hold_by_definition_say_so():
    """The diagnostics-over-training figure has no rewrite/direction rows at stage K-1 (they hold by
    definition): those panels say why instead of standing empty; panels with data draw lines."""
    from types import SimpleNamespace

    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd
    from reports.figures_train import _grid, by_definition_note
    empty, data = pd.Series([], dtype=float), pd.Series([0.5, 0.7])
    assert by_definition_note("diagnostics_curve", "direction_l2", False, data) is None
    assert by_definition_note("diagnostics_curve", "discrepancy_l2", True, empty) is None
    assert by_definition_note("diagnostics_curve", "rewrite_l2", False, empty) is None   # missing, not K-1
    assert by_definition_note("drift", "drift_ratio", True, pd.Series([1.0, 1.0])).startswith("1 by definition")
    assert by_definition_note("drift", "drift", True, pd.Series([1.0, 1.0])) is None
    df = pd.DataFrame([{"arm": a, "seed": s, "step": t, "stage": k, "metric": m, "value": 0.1 * s + t / 1e3}
                       for a in ("on", "off") for s in (0, 1) for t in (100, 200)
                       for m, stages in (("discrepancy_l2", (1, 2)), ("rewrite_l2", (1,)), ("direction_l2", (1,)))
                       for k in stages])
    rows = [(m, df[df["metric"] == m]) for m in ("discrepancy_l2", "rewrite_l2", "direction_l2")]
    fig = _grid(SimpleNamespace(arms=["on", "off"]), df, rows, "step", "diagnostics_curve", "t", str,
                {"on": "C0", "off": "C1"})
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    n_lines = [len(ax.lines) for ax in fig.axes]
    assert n_lines == [2, 2, 2, 0, 2, 0], n_lines           # rows x stages: discrepancy 1-2, rewrite, direction
    assert texts[3] and texts[3][0].startswith("equals discrepancy by definition"), texts
    assert texts[5] and texts[5][0].startswith("is 1 by definition"), texts
    assert not any(texts[i] for i in (0, 1, 2, 4))
