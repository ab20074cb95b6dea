"""Apply the recipe-selection rule of experiments/calibration_consistency.py to its finished sweep.

    python bench/select_recipe.py [studies/calibration-consistency] [--budgets 300,400,500] [--max-budget N]

For every cell and budget N it reads the EMA snapshot at step N (bitwise the EMA generator of an N-step
run: nothing in a step depends on train.steps) and measures, on the run's fixed evaluation set:
  discrepancy_l2 of stages 1..K-1 (256 samples), the final stage's FID (the data set's domain extractor)
  and shape_acc (500 samples).
Then, per candidate setting and budget, against the "off" arm of the same recipe (its `off_of` label),
paired by seed: the 95 % Student-t CI of on - off for each stage's discrepancy, and the means of FID and
shape_acc. The rule (RULE in the study file) picks among the qualifying (setting, budget) pairs. Writes
<study>/selection.csv and prints the table and the pick.

Rule 3 (the time limit) predicts the default study's training from the sweep's own step time (see
step_seconds), unless --max-budget is given. Measurements are kept in <study>/selection_measurements.csv,
so the script can run while the sweep is still going; it measures FINISHED cells only.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from analysis.cells import read_cells
from analysis.inputs import generate
from analysis.measures import diagnostics, scale_quality, shape_rows
from catlab.rundir import fixed_inputs
from catlab.checkpoint import load_generator


def measure(run_dir: Path, step: int, n: int = 500, n_diag: int = 256) -> dict:
    G, cfg = load_generator(run_dir, snapshot=run_dir / "snapshots" / f"ema_{step:06d}.pt")
    z, y = fixed_inputs(run_dir, n, cfg.seed, G.z_dim, G.num_classes)
    stages = generate(G, z, y)
    out = {f"{m}_s{k}": v for m, k, v in diagnostics([x[:n_diag] for x in stages], ("l2",), cfg.data.resampler)
           if m == "discrepancy_l2"}
    out["fid"] = scale_quality([stages[-1]], cfg.data, n, ("fid",))[0][0][2]
    out["shape_acc"] = shape_rows([stages[-1]], y, 256, cfg.data.name)[0][2] if cfg.data.name in ("shapes", "layouts") \
        else math.nan
    return out


def step_seconds(cells: pd.DataFrame) -> float:
    """Seconds per step: the 10th percentile of every img_per_s value the sweep's finished runs logged.
    Not the median: the machine ran other work beside the sweep (a share of its steps ran on a loaded
    machine), so the fast end is the cell's own speed; the timed `make ablation-consistency` run checks it."""
    import json
    per_step = []
    for r in cells[cells["status"] == "FINISHED"].to_dict("records"):
        cfg = json.loads((Path(r["run_dir"]) / "config.json").read_text())
        batch = cfg["train"]["batch"]
        for line in (Path(r["run_dir"]) / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec.get("name") == "img_per_s" and rec["value"] > 0:
                per_step.append(batch / rec["value"])
    return float(np.percentile(per_step, 10))


def predicted_minutes(budget: int, step_s: float, cells: int = 10, workers: int = 2) -> float:
    """Rule 3's prediction: the training of 5 seeds x 2 arms, ceil(cells / workers) cells per worker."""
    return math.ceil(cells / workers) * budget * step_s / 60


def t_ci(d: np.ndarray) -> tuple[float, float]:
    if len(d) < 2:
        return math.nan, math.nan
    h = float(stats.t.ppf(0.975, len(d) - 1)) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return float(d.mean()) - h, float(d.mean()) + h


def select(per: pd.DataFrame, off_of: dict, max_budget: int) -> pd.DataFrame:
    rows = []
    stages = sorted(c for c in per.columns if c.startswith("discrepancy_l2_s"))
    for (setting, budget), part in per.groupby(["setting", "budget"]):
        off = off_of.get(setting)
        if off is None or off == setting:
            continue
        ref = per[(per["setting"] == off) & (per["budget"] == budget)].set_index("seed")
        on = part.set_index("seed")
        seeds = sorted(set(on.index) & set(ref.index))
        row = {"setting": setting, "off": off, "budget": budget, "n": len(seeds)}
        lowers = True
        for s in stages:
            d = (on.loc[seeds, s] - ref.loc[seeds, s]).to_numpy(float)
            lo, hi = t_ci(d)
            row[f"{s}_on"], row[f"{s}_off"], row[f"{s}_ci_high"] = on.loc[seeds, s].mean(), ref.loc[seeds, s].mean(), hi
            lowers &= bool(hi < 0)
        fid_on, fid_off, fid_sd = on.loc[seeds, "fid"].mean(), ref.loc[seeds, "fid"].mean(), ref.loc[seeds, "fid"].std()
        acc_on, acc_off, acc_sd = (on.loc[seeds, "shape_acc"].mean(), ref.loc[seeds, "shape_acc"].mean(),
                                   ref.loc[seeds, "shape_acc"].std())
        fid_ok = fid_on - fid_off <= fid_sd
        acc_ok = (acc_off - acc_on <= acc_sd) if not math.isnan(acc_on) else True
        row.update(fid_on=fid_on, fid_off=fid_off, fid_sd_off=fid_sd, acc_on=acc_on, acc_off=acc_off,
                   acc_sd_off=acc_sd, lowers_every_stage=lowers, quality_not_worse=bool(fid_ok and acc_ok),
                   fits_time=budget <= max_budget)
        row["qualifies"] = bool(lowers and fid_ok and acc_ok and budget <= max_budget)
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study_dir", nargs="?", default="studies/calibration-consistency", type=Path)
    p.add_argument("--budgets", default="300,400,500")
    p.add_argument("--max-budget", type=int, default=None, help="the largest budget that fits the time limit")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    from experiments.calibration_consistency import OFF_OF
    budgets = [int(b) for b in a.budgets.split(",")]
    cells, axes = read_cells(a.study_dir)
    cache = a.study_dir / "selection_measurements.csv"         # measured (setting, seed, budget) rows are kept
    done = pd.read_csv(cache, dtype={"setting": str}) if cache.exists() else pd.DataFrame()
    rows = done.to_dict("records")
    have = {(r["setting"], int(r["seed"]), int(r["budget"])) for r in rows}
    for r in cells.to_dict("records"):
        if r["status"] != "FINISHED":
            continue
        for b in budgets:
            if (r["setting"], int(r["seed"]), b) in have:
                continue
            if (Path(r["run_dir"]) / "snapshots" / f"ema_{b:06d}.pt").exists():
                rows.append({"setting": r["setting"], "seed": r["seed"], "budget": b,
                             **measure(Path(r["run_dir"]), b)})
        pd.DataFrame(rows).to_csv(cache, index=False)
        print(f"measured {r['cell']}", file=sys.stderr, flush=True)
    per = pd.DataFrame(rows)
    step_s = step_seconds(cells)
    fits = [b for b in budgets if predicted_minutes(b, step_s) <= 10.0]
    max_budget = a.max_budget or (max(fits) if fits else 0)
    print(f"step time (10th percentile of the sweep's logged steps, 2 workers x 1 thread): {step_s:.3f} s; "
          + ", ".join(f"{b} steps -> {predicted_minutes(b, step_s):.1f} min" for b in budgets)
          + f" predicted for 5 seeds x 2 arms on 2 workers; N_max = {max_budget or 'none'}")
    sel = select(per, OFF_OF, max_budget)
    sel.to_csv(a.study_dir / "selection.csv", index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(sel.round(5).to_string(index=False))
    ok = sel[sel["qualifies"]]
    if ok.empty:
        print("\nselection: nothing qualified")
    else:
        best = ok.sort_values(["fid_on", "budget"], ascending=[True, False]).iloc[0]
        print(f"\nselection: {best['setting']} at {int(best['budget'])} steps (final FID {best['fid_on']:.3g} vs off "
              f"{best['fid_off']:.3g}; shape_acc {best['acc_on']:.3g} vs {best['acc_off']:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
