"""Reports: a real (tiny) study output in, an HTML report with valid PNGs, Type-42 PDFs and marked tables out.

The study output is built from real runs: 2 arms (consistency on / off) x 2 seeds, trained for 3 steps each,
then the contract's tables computed with analysis.misalignment and analysis.stats (table, summary, tests),
drift between EMA snapshots and a Frechet distance on pooled pixels per scale for curve.csv / quality.
The HTML check is conftest.py's strict_html; the check itself is pinned in test_reports_checks.py.
"""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import FAST, strict_html

STUDY = "tiny-consistency"          # not in the registry: reports must work from the files alone
ARMS = {"on": 1.0, "off": 0.0}
SEEDS = (0, 1)
TINY = FAST + ["train.batch=4", "data.resolution=16", "model.stages=3", "train.steps=3", "train.ckpt_every=1",
               "run.experiment=tiny-consistency"]
N_EVAL = 32


# ---- building a real study output ------------------------------------------------------------------------
def _frechet_pool(x: torch.Tensor, real: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to 2x2-average-pooled pixels (float64, scipy sqrtm)."""
    import numpy as np
    from scipy import linalg
    f = [torch.nn.functional.adaptive_avg_pool2d(t.double(), 2).flatten(1).numpy() for t in (x, real)]
    mu = [a.mean(0) for a in f]
    cov = [np.cov(a, rowvar=False) for a in f]
    root = linalg.sqrtm(cov[0] @ cov[1]).real
    return float(((mu[0] - mu[1]) ** 2).sum() + np.trace(cov[0] + cov[1] - 2 * root))


def _stages(run_dir: Path, snapshot=None):
    from catlab.checkpoint import load_generator, safe_load
    G, cfg = load_generator(run_dir, snapshot=snapshot)
    ev = safe_load(run_dir / "eval_set.pt")
    with torch.no_grad():
        return G(ev["z"][:N_EVAL], ev["y"][:N_EVAL]), cfg


POOL: list[pd.DataFrame] = []      # metric, stage, value of every EMA snapshot of every run (12 generators)


def build_study(root: Path) -> Path:
    """studies/<STUDY>/ in the contract's format, from 4 real runs."""
    from analysis.misalignment import cross_scale_metrics, metrics_frame
    from analysis.stats import paired_tests, summarize
    from catlab.checkpoint import snapshots
    from catlab.config import load_config
    from catlab.data import build_dataset, pyramid, to_float
    from catlab.tracking import MLflow
    from catlab.trainer import train

    sdir = root / "studies" / STUDY
    parent = MLflow().create_run(STUDY, STUDY, tags={"study": STUDY})
    cells, table, drift, curve = [], [], [], []
    real = None
    for arm, lam in ARMS.items():
        for seed in SEEDS:
            cfg = load_config(TINY + [f"loss.consistency.weight={lam}", f"seed={seed}",
                                      f"run.root={sdir / 'runs'}"])
            res = train(cfg, parent_run_id=parent, tags={"study": STUDY, "cell": f"consistency={arm},seed={seed}"})
            labels = {"cell": f"consistency={arm},seed={seed}", "seed": seed, "consistency": arm}
            cells.append({**labels, "run_dir": str(res.run_dir.resolve()), "status": res.status, "reason": "",
                          "config_hash": cfg.hash(), "mlflow_run_id": res.mlflow_run_id})
            if real is None:
                data = build_dataset(cfg.data)
                real = pyramid(to_float(data.images[:N_EVAL]), [4, 8, 16])
            stages, _ = _stages(res.run_dir)
            frame = metrics_frame(cross_scale_metrics(stages, "l2"), **labels)
            frame["metric"] = frame["metric"] + "_l2"
            table.append(frame)
            table += [pd.DataFrame([{**labels, "metric": "fid_pool2_32", "stage": k + 1,
                                     "value": _frechet_pool(x, real[k])} for k, x in enumerate(stages)])]
            prev = None
            for step, snap in snapshots(res.run_dir):
                now, _ = _stages(res.run_dir, snap)
                res_snap = metrics_frame(cross_scale_metrics(now, "l2"))
                POOL.append(pd.concat([res_snap.assign(metric=res_snap["metric"] + "_l2"), pd.DataFrame(
                    [{"metric": "fid_pool2_32", "stage": k + 1, "value": _frechet_pool(x, real[k])}
                     for k, x in enumerate(now)])], ignore_index=True))
                for k, x in enumerate(now):
                    curve.append({**labels, "step": step, "images_seen": step * cfg.train.batch,
                                  "metric": "fid_pool2_32", "stage": k + 1, "value": _frechet_pool(x, real[k])})
                    if prev is not None:
                        drift.append({**labels, "step": step, "stage": k + 1,
                                      "drift": float((x - prev[k]).pow(2).mean())})
                prev = now
    table = pd.concat(table, ignore_index=True)[["cell", "seed", "consistency", "metric", "stage", "value"]]
    sdir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(cells).to_csv(sdir / "cells.csv", index=False)
    table.to_csv(sdir / "table.csv", index=False)
    summarize(table, by=["consistency", "metric", "stage"]).to_csv(sdir / "summary.csv", index=False)
    paired_tests(table, "consistency", a="on", b="off", by=["metric", "stage"]).to_csv(sdir / "tests.csv",
                                                                                       index=False)
    pd.DataFrame(drift).to_csv(sdir / "drift.csv", index=False)
    pd.DataFrame(curve).to_csv(sdir / "curve.csv", index=False)
    from analysis.study import write_samples                  # fig8's images: the analysis writes them
    write_samples(sdir, pd.DataFrame(cells), ["consistency"])
    (sdir / "study.json").write_text(json.dumps({
        "study": STUDY, "profile": "cpu", "overrides": [], "command": f"catlab ablate {STUDY} --profile cpu",
        "parent_run_id": parent, "cells": [c["cell"] for c in cells]}))
    return sdir


def declared(axis: str, value: str) -> dict:
    """The overrides each test axis declares (the report finds an axis' role from these alone)."""
    key = {"size": "model.size", "discriminator": "model.discriminator", "weight": "loss.consistency.weight",
           "consistency": "loss.consistency.weight", "stage_weights": "loss.consistency.stage_weights"}[axis]
    if axis == "consistency":
        return {key: 1.0 if value == "on" else 0.0}
    return {key: float(value) if axis == "weight" else value}


def relabelled_study(root: Path, name: str, axes: dict[str, list[str]], seeds=SEEDS) -> Path:
    """table/summary/tests.csv of a grid study whose cells take the POOL's real per-snapshot measurements in
    turn. The numbers are real diagnostics of real (tiny) generators; only the arm labels are assigned, so
    that the size / discriminator / lambda / stage-weight builders can be exercised without training 30 runs.
    """
    import itertools
    from analysis.stats import paired_tests, summarize
    sdir = root / "studies" / name
    sdir.mkdir(parents=True)
    rows, i = [], 0
    for combo in itertools.product(*axes.values()):
        for seed in seeds:
            labels = dict(zip(axes, combo))
            cell = ",".join(f"{a}={v}" for a, v in labels.items()) + f",seed={seed}"
            rows.append(POOL[i % len(POOL)].assign(cell=cell, seed=seed, **labels))
            i += 1
    table = pd.concat(rows, ignore_index=True)[["cell", "seed", *axes, "metric", "stage", "value"]]
    table.to_csv(sdir / "table.csv", index=False)
    summarize(table, by=[*axes, "metric", "stage"]).to_csv(sdir / "summary.csv", index=False)
    tests = [paired_tests(table, ax, by=[*(o for o in axes if o != ax), "metric", "stage"]).assign(axis=ax)
             for ax, vals in axes.items() if len(vals) == 2]
    if tests:
        pd.concat(tests).to_csv(sdir / "tests.csv", index=False)
    decl = {ax: {v: declared(ax, v) for v in vals} for ax, vals in axes.items()}
    (sdir / "study.json").write_text(json.dumps({"study": name, "profile": "cpu", "overrides": [],
                                                 "axes": decl, "parent_run_id": None, "cells": []}))
    return sdir


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(root, studies/<STUDY>) built once for the module; cwd and MLflow point into a fresh folder."""
    root = tmp_path_factory.mktemp("reports")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # these ops are tiny: one thread is as fast, and far faster on a busy box
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
            sdir = build_study(root)
    finally:
        torch.set_num_threads(threads)
    yield root, sdir


@pytest.fixture(scope="module")
def built(study):
    from reports.build import report
    root, sdir = study
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        assert report(STUDY, strict=True) == 0
    return root / "reports" / "out" / STUDY


# ---- the end-to-end report ----------------------------------------------------------------------------
def test_html_is_strictly_well_formed_and_every_image_is_a_valid_png(built):
    text = (built / "index.html").read_text()
    p = strict_html(built / "index.html")                # balanced tags; every reference exists
    imgs = [ref for tag, key, ref, _ in p.refs if tag == "img"]
    links = [ref for tag, key, ref, _ in p.refs if tag == "a"]
    assert {"html", "table", "img"} <= set(p.tags)
    assert {"fig4.png", "fig5.png", "fig8.png", "drift.png"} <= set(imgs)
    assert {h for h in links if h.endswith((".pdf", ".md", ".tex"))}, links
    for src in imgs:
        with Image.open(built / src) as im:
            im.verify()
            assert im.format == "PNG"
    assert not any((built / f"{n}.png").exists() for n in ("fig6", "fig7", "sweep", "heatmap"))
    # the config, the commands and the MLflow run ids (parent and every cell) are in the page
    cells = pd.read_csv(built.parents[2] / "studies" / STUDY / "cells.csv")
    meta = json.loads((built.parents[2] / "studies" / STUDY / "study.json").read_text())
    for rid in [meta["parent_run_id"], *cells["mlflow_run_id"]]:
        assert rid in text
    assert f"catlab ablate {STUDY} --profile cpu" in text and f"catlab report {STUDY}" in text
    assert text.count("FINISHED") >= 2 * len(cells)      # cells.csv status and the MLflow status


def test_pdfs_embed_no_type3_fonts(built):
    pdfs = sorted(built.glob("*.pdf"))
    assert {p.stem for p in pdfs} >= {"fig4", "fig5", "fig8", "drift"}
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert b"/Type3" not in data and b"/Subtype /Type3" not in data, pdf.name
        assert b"/TrueType" in data or b"/CIDFontType2" in data, pdf.name     # Type 42 fonts are embedded


def test_tables_have_bold_best_and_are_consistent_with_tests(built, study):
    _, sdir = study
    md = (built / "table-diagnostics.md").read_text()
    tex = (built / "table-diagnostics.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "\\textbf{" in tex
    summ = pd.read_csv(sdir / "summary.csv")
    rows = [ln for ln in md.splitlines() if ln.startswith("| discrepancy")]
    assert len(rows) == summ[summ.metric == "discrepancy_l2"].shape[0] // 2 == 2     # K - 1 stages
    for ln, stage in zip(rows, (1, 2)):
        s = summ[(summ.metric == "discrepancy_l2") & (summ.stage == stage)].set_index("consistency")["mean"]
        cells = dict(zip(("on", "off"), [c.strip() for c in ln.strip("|").split("|")[2:4]]))
        best, other = ("on", "off") if s["on"] <= s["off"] else ("off", "on")
        assert cells[best].startswith("**")            # lower discrepancy is better
        if cells[other].startswith("**"):              # a tie at the precision shown
            assert cells[other].split(" ")[0] == cells[best].split(" ")[0]
    sig = pd.read_csv(sdir / "tests.csv")
    body = [ln for ln in (md + (built / "table-quality.md").read_text()).splitlines() if ln.startswith("| ")]
    assert any("\u2020" in ln for ln in body) == bool((sig.p_ttest < 0.05).any())


def test_skips_with_a_note_when_a_table_is_missing(study, tmp_path, monkeypatch, capsys):
    import shutil
    from reports.build import report
    root, sdir = study
    copy = tmp_path / "studies" / STUDY
    shutil.copytree(sdir, copy, ignore=shutil.ignore_patterns("runs"))
    (copy / "curve.csv").unlink()
    (copy / "summary.csv").unlink()
    (copy / "samples.pt").unlink()
    cells = pd.read_csv(copy / "cells.csv")
    cells.assign(run_dir=[f"runs/{Path(p).name}" for p in cells["run_dir"]]).to_csv(copy / "cells.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    assert report(STUDY, figures_only=True) == 0
    out = tmp_path / "reports" / "out" / STUDY
    assert (out / "fig4.png").exists() and not (out / "fig5.png").exists() and not (out / "index.html").exists()
    err = capsys.readouterr().err
    assert "fig5 skipped: curve.csv is missing" in err and "recomputed from table.csv" in err
    assert "fig8 skipped: samples.pt is missing" in err              # reports never load checkpoints


def test_fig8_from_samples_pt_without_run_dirs(study, tmp_path, monkeypatch, capsys):
    """samples.pt (z, y and per-cell stage images) is all fig8 needs: the run dirs may be gone."""
    import shutil
    from reports.build import report
    root, sdir = study
    copy = tmp_path / "studies" / STUDY
    shutil.copytree(sdir, copy, ignore=shutil.ignore_patterns("runs"))
    cells = pd.read_csv(sdir / "cells.csv")
    per_cell = {c: _stages(Path(r))[0] for c, r in zip(cells["cell"], cells["run_dir"])}
    ev = torch.load(Path(cells["run_dir"][0]) / "eval_set.pt", weights_only=True)
    torch.save({"z": ev["z"][:N_EVAL], "y": ev["y"][:N_EVAL], "cells": per_cell}, copy / "samples.pt")
    cells.assign(run_dir="gone").to_csv(copy / "cells.csv", index=False)
    monkeypatch.chdir(tmp_path)
    assert report(STUDY, figures_only=True, strict=True) == 0
    with Image.open(tmp_path / "reports" / "out" / STUDY / "fig8.png") as im:
        im.verify()
    assert "fig8" not in capsys.readouterr().err


# ---- the builders that need a grid: fig6, fig7, the lambda sweep, the stage-weight heatmap --------------
GRIDS = {
    "tiny-size": ({"size": ["tiny", "small"], "consistency": ["on", "off"]}, "fig6"),
    "tiny-disc": ({"discriminator": ["scalewise", "aggregated", "concat"]}, "fig7"),
    "tiny-weight": ({"weight": ["0", "0.1", "1"]}, "sweep"),
    "tiny-stage-weights": ({"stage_weights": ["paper", "uniform", "coarse-heavy"]}, "heatmap"),
}


def test_grid_figures_only_where_the_study_has_the_axis(study, built, capsys):
    import shutil
    from reports.build import report
    root, _ = study
    only = {"fig6", "fig7", "sweep", "heatmap"}
    search = root / "reports" / "out" / "search-tiny-weight"      # where the search helper puts its plots
    search.mkdir(parents=True)
    shutil.copy(built / "fig4.png", search / "optimization_history.png")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name, (axes, fig) in GRIDS.items():
            relabelled_study(root, name, axes)
            assert report(name, strict=True) == 0
            out = root / "reports" / "out" / name
            made = {p.stem for p in out.glob("*.png")}
            assert made & only == {fig}, (name, made)
            assert "fig4" in made and not {"fig5", "fig8", "drift"} & made
            with Image.open(out / f"{fig}.png") as im:
                im.verify()
            assert b"/Type3" not in (out / f"{fig}.pdf").read_bytes()
            html = (out / "index.html").read_text()
            assert f"src='{fig}.png'" in html and "fig5 skipped: curve.csv is missing" in html
    err = capsys.readouterr().err
    assert "fig8 skipped" in err
    html = (root / "reports" / "out" / "tiny-weight" / "index.html").read_text()
    assert "src='../search-tiny-weight/optimization_history.png'" in html
    assert "search-tiny-weight" not in (root / "reports" / "out" / "tiny-size" / "index.html").read_text()
