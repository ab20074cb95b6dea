"""index.html of a study report: config, commands, tables, figures, Optuna plots, MLflow run ids.

Plain HTML (no scripts, no external assets); images are referenced relative to index.html.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.2em;font-size:0.9em}
th,td{border-bottom:1px solid #ccc;padding:0.2em 0.6em;text-align:right}
th:first-child,td:first-child{text-align:left}
caption{caption-side:bottom;text-align:left;font-size:0.85em;color:#555;padding-top:0.3em}
pre,code{background:#f5f5f5;padding:0.1em 0.3em}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:0.85em;color:#555}
.note{color:#8a5a00}
td.holds{color:#1a7f37}td.contrary{color:#b42318}td.worse{color:#b54708}td.not{color:#6b6b6b}"""

CAPTIONS = {
    "fig4": "The three diagnostics per stage: bars are means over seeds, error bars the 95 % CI, dots the seeds.",
    "fig5": "Quality per scale against training images seen: mean over seeds, shaded 95 % CI (Student t).",
    "fig6": "The consistency effect against model size: diagnostics averaged over stages, FID at the final scale.",
    "fig7": "Discriminator variants: diagnostics averaged over stages, FID at the final scale.",
    "fig8": "Samples per stage: each row is one (z, y), the same in every column group; stages left to right, "
            "upsampled (nearest) to the final size.",
    "diagnostics_curve": "The three diagnostics at every EMA snapshot, per intermediate stage (rewrite and "
                         "direction at stage K-1 hold by definition and are left out): mean over seeds, shaded 95 % "
                         "CI (Student t). It shows when an effect appears and whether it fades.",
    "drift": "Drift of each stage over training (change between EMA snapshots): mean, 95 % CI over seeds.",
    "sweep": "The consistency weight sweep: mean over seeds, 95 % CI band, coloured dots = seeds.",
    "heatmap": "The stage-weight presets: diagnostic means per stage (light = better).",
}


def _e(x) -> str:
    return html.escape(str(x))


def _kv_table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>\n" for k, v in rows)
    return f"<table>\n{body}</table>\n"


def _config(sd, profile: str) -> str:
    spec, meta = sd.spec, sd.meta
    prof = meta.get("profile", profile)
    rows = [("study", sd.name), ("profile", prof)]
    if spec is not None:
        rows.append(("base", json.dumps(getattr(spec, "base", {}))))
        rows.append((f"profile {prof}", json.dumps((getattr(spec, "profiles", {}) or {}).get(prof, {}))))
        for ax, vals in (getattr(spec, "axes", {}) or {}).items():
            for label, ov in vals.items():
                rows.append((f"axis {ax} = {label}", json.dumps(ov)))
        rows.append(("seeds", getattr(spec, "seeds", "")))
    else:
        rows += [(f"axis {ax}", ", ".join(sd.values[ax])) for ax in sd.axes]
    if meta.get("overrides"):
        rows.append(("user overrides", " ".join(meta["overrides"]) if isinstance(meta["overrides"], list)
                     else json.dumps(meta["overrides"])))
    doc = getattr(spec, "doc", "") if spec is not None else ""
    return _kv_table(rows) + (f"<p>The study's declaration (command, expected time and the <i>expected</i> "
                              f"outcome; what was measured is in Claims and Tables):</p><pre>{_e(doc.strip())}</pre>\n"
                              if doc and doc.strip() else "")


def _commands(sd, profile: str, make_targets: set) -> str:
    prof = sd.meta.get("profile", profile)
    ov = sd.meta.get("overrides") or []
    ov = " ".join(ov) if isinstance(ov, list) else " ".join(f"{k}={v}" for k, v in dict(ov).items())
    ablate = f"catlab ablate {sd.name} --profile {prof}" + (f" {ov}" if ov else "")
    cmds = ["# the whole study: trains every cell (running it again resumes), analyses it, writes this report"]
    if sd.name in make_targets and prof == "cpu" and not ov:
        cmds.append(f"make {sd.name}          # or: {ablate}")
    else:
        cmds.append(ablate)
    cmds += ["# only the analysis tables (studies/<study>/*.csv), then only this report",
             f"catlab analyze {sd.name} --profile {prof}",
             f"catlab report {sd.name}" + (f"          # or: make report STUDY={sd.name}"
                                           if "report" in make_targets else "")]
    out = "<pre>" + "\n".join(_e(c) for c in cmds) + "</pre>\n"
    if sd.meta.get("command"):
        out += f"<p>These results were produced by <code>{_e(sd.meta['command'])}</code>.</p>\n"
    return out


def _runs(sd, mlflow_status: dict) -> str:
    parent = sd.meta.get("parent_run_id") or ""
    out = f"<p>MLflow parent run: <code>{_e(parent or 'none recorded')}</code>. Browse with " \
          "<code>make mlflow-ui</code>.</p>\n"
    cells = sd.cells
    if cells is None:
        return out + "<p class='note'>cells.csv is missing: no cell runs to list.</p>\n"
    cols = [c for c in ("cell", "seed", "status", "reason", "mlflow_run_id", "run_dir") if c in cells.columns]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols) + ("<th>MLflow status</th>" if mlflow_status else "")
    body = ""
    for r in cells.to_dict("records"):
        tds = "".join(f"<td>{_e('' if str(r[c]) == 'nan' else r[c])}</td>" for c in cols)
        if mlflow_status:
            tds += f"<td>{_e(mlflow_status.get(str(r.get('mlflow_run_id')), 'not found'))}</td>"
        body += f"<tr>{tds}</tr>\n"
    return out + f"<table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n"


def _figures(written: list[Path], out_dir: Path) -> str:
    parts = []
    for png in [p for p in written if p.suffix == ".png"]:
        pdf = png.with_suffix(".pdf")
        link = f" (<a href='{_e(pdf.name)}'>PDF</a>)" if pdf in written else ""
        parts.append(f"<figure><img src='{_e(png.name)}' alt='{_e(png.stem)}'>"
                     f"<figcaption><b>{_e(png.stem)}</b>. {_e(CAPTIONS.get(png.stem, ''))}{link}</figcaption>"
                     "</figure>\n")
    return "".join(parts) or "<p class='note'>No figures: see the notes.</p>\n"


def _search(sd, out_root: Path) -> str:
    folder = out_root / f"search-{sd.name}"
    pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not pngs:
        return ""
    imgs = "".join(f"<figure><img src='../{_e(folder.name)}/{_e(p.name)}' alt='{_e(p.stem)}'>"
                   f"<figcaption>{_e(p.stem)}</figcaption></figure>\n" for p in pngs)
    return f"<h2>Optuna search</h2>\n<p>From <code>catlab search {_e(sd.name)}</code>.</p>\n{imgs}"


def write_index(sd, out_dir: Path, tables: dict, table_files: list[Path], figures: list[Path],
                notes: list[str], profile: str, make_targets: set, mlflow_status: dict) -> Path:
    summary = getattr(sd.spec, "summary", "") if sd.spec is not None else ""
    files = " ".join(f"<a href='{_e(p.name)}'>{_e(p.name)}</a>" for p in table_files)
    notes_html = "".join(f"<li class='note'>{_e(n)}</li>\n" for n in notes)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>catlab report: {_e(sd.name)}</title>
<style>{CSS}</style></head>
<body>
<h1>catlab report: {_e(sd.name)}</h1>
{f"<p>{_e(summary)}</p>" if summary else ""}
<h2>Configuration</h2>
{_config(sd, profile)}
<h2>Reproduce</h2>
{_commands(sd, profile, make_targets)}
{"<h2>Notes</h2><ul>" + notes_html + "</ul>" if notes else ""}
<h2>Claims</h2>
{tables["claims"].html() if "claims" in tables else "<p class='note'>The study declares no claims, or claims.csv is missing.</p>"}
<h2>Tables</h2>
{"".join(t.html() for k, t in tables.items() if k != "claims") or "<p class='note'>No tables: see the notes.</p>"}
<p>Markdown and LaTeX (booktabs): {files}</p>
<h2>Figures</h2>
{_figures(figures, out_dir)}
{_search(sd, out_dir.parent)}
<h2>Runs</h2>
{_runs(sd, mlflow_status)}
</body></html>
"""
    path = out_dir / "index.html"
    path.write_text(doc)
    return path
