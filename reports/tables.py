"""Result tables (Markdown, LaTeX booktabs, HTML) from the per-arm summary.

    tabs = build_tables(summ, arms, marked)          # {"diagnostics": Table, "quality": Table}
    tabs["diagnostics"].markdown() / .latex() / .html()

A cell is "mean ± h" with h the half-width of the 95 % CI ((ci_high - ci_low) / 2). In each row the best
arm is bold (lower is better for discrepancy, rewrite, FID and KID, higher for direction; ties all bold);
a dagger marks an arm that beats its paired arm at paired p < 0.05 (tests.csv).
"""
from __future__ import annotations

import html as _html
import math
from dataclasses import dataclass, field

import pandas as pd

from reports.style import DIAGNOSTICS, better, metric_label

DAGGER = "\u2020"


@dataclass
class Cell:
    mean: float
    half: float          # CI half-width (NaN when n < 2)
    n: int
    bold: bool = False
    dagger: bool = False


@dataclass
class Table:
    name: str
    caption: str
    arms: list[str]
    rows: list[tuple[str, str, dict]] = field(default_factory=list)   # (metric label, stage, {arm: Cell})

    # ---- number formatting: two significant digits of the CI, or four of the mean ----------------------
    @staticmethod
    def _decimals(cells) -> int:
        """Decimals for a row; -1 means scientific notation (every value below 1e-4 in magnitude)."""
        means = [abs(c.mean) for c in cells if math.isfinite(c.mean) and c.mean != 0]
        if means and max(means) < 1e-4:
            return -1
        halves = [c.half for c in cells if math.isfinite(c.half) and c.half > 0]
        if halves:
            return int(min(6, max(0, 1 - math.floor(math.log10(min(halves))))))
        return int(min(6, max(0, 3 - math.floor(math.log10(max(means)))))) if means else 3

    def _text(self, c: Cell | None, d: int, pm: str) -> str:
        if c is None or not math.isfinite(c.mean):
            return "--"
        spec = ".2e" if d < 0 else f".{d}f"
        s = f"{c.mean:{spec}}"
        return s + (f"{pm}{c.half:{spec}}" if math.isfinite(c.half) else "")

    def _cells(self, fmt):
        for metric, stage, cells in self.rows:
            d = self._decimals([c for c in cells.values() if c is not None])
            yield metric, stage, [fmt(cells.get(a), d) for a in self.arms]

    def markdown(self) -> str:
        def fmt(c, d):
            s = self._text(c, d, " ± ")
            return (f"**{s}**" if c is not None and c.bold else s) + (DAGGER if c is not None and c.dagger else "")
        lines = [f"**{self.caption}**", "", "| metric | stage | " + " | ".join(self.arms) + " |",
                 "|---|---:|" + "---:|" * len(self.arms)]
        lines += [f"| {m} | {s} | " + " | ".join(v) + " |" for m, s, v in self._cells(fmt)]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        def fmt(c, d):
            s = self._text(c, d, " $\\pm$ ")
            return (f"\\textbf{{{s}}}" if c is not None and c.bold else s) + \
                ("$^\\dagger$" if c is not None and c.dagger else "")
        out = ["% requires \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering", "\\small",
               f"\\begin{{tabular}}{{ll{'r' * len(self.arms)}}}", "\\toprule",
               "metric & stage & " + " & ".join(_tex(a) for a in self.arms) + " \\\\", "\\midrule"]
        last = None
        for m, s, v in self._cells(fmt):
            if last is not None and m != last:
                out.append("\\addlinespace")
            out.append(f"{_tex(m) if m != last else ''} & {s} & " + " & ".join(v) + " \\\\")
            last = m
        out += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{_tex(self.caption)}}}",
                f"\\label{{tab:{self.name}}}", "\\end{table}"]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        def fmt(c, d):
            s = _html.escape(self._text(c, d, " ± "))
            return (f"<b>{s}</b>" if c is not None and c.bold else s) + \
                ("&dagger;" if c is not None and c.dagger else "")
        head = "".join(f"<th>{_html.escape(a)}</th>" for a in self.arms)
        body = "".join(f"<tr><td>{_html.escape(m)}</td><td>{s}</td>" + "".join(f"<td>{x}</td>" for x in v)
                       + "</tr>\n" for m, s, v in self._cells(fmt))
        return (f"<table><caption>{_html.escape(self.caption)}</caption>\n<thead><tr><th>metric</th>"
                f"<th>stage</th>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n")


TEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
       "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
       "\u2193": "$\\downarrow$", "\u2191": "$\\uparrow$", "\u03bb": "$\\lambda$", "\u00b1": "$\\pm$",
       DAGGER: "$^\\dagger$"}


def _tex(s: str) -> str:
    return "".join(TEX.get(ch, ch) for ch in str(s))


def _table(name: str, caption: str, summ: pd.DataFrame, arms: list[str], marked: set) -> Table:
    tab = Table(name, caption, arms)

    def order(key):            # distance, then discrepancy / rewrite / direction, then stage
        head, _, rest = str(key[0]).partition("_")
        return (rest != "l2", rest, DIAGNOSTICS.index(head) if head in DIAGNOSTICS else 9, head, key[1])
    groups = sorted(summ.groupby(["metric", "stage"], sort=False), key=lambda kv: order(kv[0]))
    for (metric, stage), sub in groups:
        by_arm = sub.set_index("arm")
        cells = {}
        for a in arms:
            if a not in by_arm.index:
                continue
            r = by_arm.loc[a]
            half = (r["ci_high"] - r["ci_low"]) / 2 if pd.notna(r["ci_low"]) and pd.notna(r["ci_high"]) else math.nan
            cells[a] = Cell(float(r["mean"]), float(half), int(r["n"]) if pd.notna(r["n"]) else 0,
                            dagger=(a, metric, stage) in marked)
        way = better(metric)
        d = Table._decimals(list(cells.values()))
        shown = {a: float(f"{c.mean:.2e}") if d < 0 else round(c.mean, d)
                 for a, c in cells.items() if math.isfinite(c.mean)}
        if way and len(shown) > 1:        # best at the precision shown: equal-looking numbers are a tie
            best = min(shown.values()) if way == "lower" else max(shown.values())
            for a, c in cells.items():
                c.bold = shown.get(a) == best
        tab.rows.append((metric_label(metric, short=True), str(int(stage)) if pd.notna(stage) else "", cells))
    return tab


@dataclass
class ClaimsTable:
    """The study's declared claims against the data (claims.csv): one row per claim and stage."""
    rows: pd.DataFrame
    name: str = "claims"
    caption: str = ("Claims the study declares, each tested on the paired difference a - b over seeds: mean, "
                    "Student-t 95 % CI, paired t-test and Wilcoxon p. better-claims hold when the CI excludes 0 in "
                    "the claimed direction; not-worse claims hold when the CI stays within the margin (the seed SD "
                    "of b); contrary when the CI lies wholly on the other side; a not-worse claim whose CI lies above 0 "
                    "but reaches below the margin is worse, margin undecided. Rows that hold by definition "
                    "(rewrite, direction at stage K-1) are not claims.")
    HEAD = ("claim", "stage", "a", "b", "n", "diff (a - b)", "95 % CI", "p (t)", "p (Wilcoxon)", "margin", "verdict")

    def _lines(self):
        def g(x):
            return "--" if pd.isna(x) else f"{x:.3g}"
        for r in self.rows.itertuples():
            yield [str(r.claim), f"{int(r.stage)}", str(r.a), str(r.b), str(int(r.n_pairs)), g(r.diff),
                   f"[{g(r.ci_low)}, {g(r.ci_high)}]", g(r.p_ttest), g(r.p_wilcoxon), g(r.margin), str(r.verdict)]

    def markdown(self) -> str:
        lines = [f"**{self.caption}**", "", "| " + " | ".join(self.HEAD) + " |", "|---" * len(self.HEAD) + "|"]
        lines += ["| " + " | ".join(v[:-1]) + f" | **{v[-1]}** |" for v in self._lines()]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        out = ["% requires \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering", "\\small",
               "\\begin{tabular}{l" + "r" * (len(self.HEAD) - 2) + "l}", "\\toprule",
               " & ".join(_tex(h) for h in self.HEAD) + " \\\\", "\\midrule"]
        out += [" & ".join(_tex(x) for x in v) + " \\\\" for v in self._lines()]
        out += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{_tex(self.caption)}}}", "\\label{tab:claims}",
                "\\end{table}"]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{_html.escape(h)}</th>" for h in self.HEAD)
        body = "".join("<tr>" + "".join(f"<td>{_html.escape(x)}</td>" for x in v[:-1])
                       + f"<td class='verdict {_html.escape(v[-1].split()[0].rstrip(','))}'><b>{_html.escape(v[-1])}</b></td></tr>\n"
                       for v in self._lines())
        return (f"<table class='claims'><caption>{_html.escape(self.caption)}</caption>\n<thead><tr>{head}</tr></thead>\n"
                f"<tbody>\n{body}</tbody></table>\n")


def build_tables(summ: pd.DataFrame | None, arms: list[str], marked: set,
                 claims: pd.DataFrame | None = None) -> dict:
    """{"claims": ..., "diagnostics": ..., "quality": ...}, each only when there is data for it. Summary rows
    that hold by definition (rewrite, direction at stage K-1) are left out."""
    from analysis.claims import drop_by_definition
    out0 = {"claims": ClaimsTable(claims)} if claims is not None and not claims.empty else {}
    if summ is None or summ.empty:
        return out0
    summ = drop_by_definition(summ)
    ns = sorted({int(n) for n in summ["n"].dropna()}) if "n" in summ.columns else []
    nseeds = f"n = {ns[0]} seeds" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]} seeds" if ns else "seeds"
    common = (f"Mean \u00b1 half-width of the 95 % CI over {nseeds}. Bold: best arm per row (lower is better "
              f"for discrepancy, rewrite, FID, KID; higher for direction). {DAGGER}: better than its paired arm, "
              "paired t-test p < 0.05.")
    is_diag = summ["metric"].map(lambda m: str(m).split("_")[0] in DIAGNOSTICS)
    out = dict(out0)
    if is_diag.any():
        out["diagnostics"] = _table("diagnostics", "Cross-scale diagnostics per stage (stage k against the "
                                    "final output). " + common, summ[is_diag], arms, marked)
    if (~is_diag).any():
        out["quality"] = _table("quality", "Sample quality per scale (scale 1 = coarsest). " + common,
                                summ[~is_diag], arms, marked)
    return out
