"""calibration-consistency: the sweep that picks the cpu recipe of ablation-consistency, by a rule fixed in
advance (RULE, below; committed before the sweep ran). The table and the pick are in docs/cpu-recipe.md.

    catlab ablate calibration-consistency --workers 2     # 15 settings x 3 seeds = 45 cells on `layouts`
    python bench/select_recipe.py                          # measures the snapshots, applies RULE

Expected wall time: about 2.5 min per cell on one core; the 45 cells take about 1 h on 2 quiet cores
(estimated from its step time; 1 h 47 min measured on 2026-12-02 beside other work).
Expected outcome: whether some consistency setting lowers the cross-scale discrepancy at every
intermediate stage without costing final quality; "nothing qualified" is a possible answer.
"""
from experiments import Study
from experiments import common
from experiments.common import profiles

BUDGETS = (300, 400, 500)           # step budgets, read from the EMA snapshots of 500-step runs
R1 = {"loss.reg.kind": "approx", "loss.reg.gamma": 0.1}
OFF = {"loss.consistency.weight": 0.0}


def setting(weight: float, detach: bool = False, own: bool = False, reg: bool = False) -> dict:
    return {"loss.consistency.weight": weight, "loss.consistency.detach_anchor": detach,
            "loss.consistency.compare_at": "own-scale" if own else "full", **(R1 if reg else {})}


SETTINGS = {
    "off": OFF,
    **{f"l{w:g}": setting(w) for w in (3, 10, 30, 100)},
    **{f"l{w:g}-detached": setting(w, detach=True) for w in (3, 10, 30, 100)},
    **{f"l{w:g}-own": setting(w, own=True) for w in (10, 30)},
    "off+r1": {**OFF, **R1},
    **{f"{name}+r1": {**setting(w, detach=d), **R1} for name, w, d in (("l10", 10, False), ("l30", 30, False),
                                                                  ("l10-detached", 10, True))},
}
OFF_OF = {s: ("off+r1" if s.endswith("+r1") else "off") for s in SETTINGS}     # each setting's paired off arm

RULE = """
Selection rule (fixed before the sweep ran). For every setting s other than the off arms, and every
budget N in BUDGETS (the EMA snapshot at step N of 500-step runs; bitwise the EMA generator of an N-step
run), paired by seed (seeds 0, 1, 2) with the off arm of the same recipe (OFF_OF[s]):
  1. consistency works: at every intermediate stage (1..K-1) the Student-t 95 % CI of the paired
     difference of discrepancy_l2 (s - off; 256 samples of the fixed evaluation set) lies below 0;
  2. final quality is not worse: the final stage's mean FID (the data set's domain extractor, 500
     samples) is at most the off arm's mean plus the standard deviation of the off arm's seeds, and its
     mean shape_acc (500 samples) at least the off arm's mean minus that arm's seed standard deviation;
  3. it fits: `make ablation-consistency` (5 seeds, 2 arms, 2 workers) at budget N is predicted to take
     at most 10 min from the step time measured in this sweep (N_max: the largest budget that fits).
Among the qualifying (s, N), take the lowest mean final FID (ties: the larger N). The off arm of the
pick becomes ablation-consistency's "off"; if nothing qualifies, the default study keeps lambda = 3
(attached, full, no R1/R2) at N_max, and docs/cpu-recipe.md says so with this sweep's table.
"""

def space(trial) -> dict:
    """A search over what the sweep varies: lambda and the anchor (catlab search calibration-consistency)."""
    return {**common.lam(trial), **common.anchor(trial)}


STUDY = Study(
    name="calibration-consistency",
    summary="the cpu recipe's consistency setting and step budget, picked by a rule fixed in advance",
    base={},
    profiles=profiles(cpu={"data.name": "layouts", "train.steps": max(BUDGETS), "train.fakes": "shared"}),
    axes={"setting": SETTINGS},
    seeds=3,
    space=space,
    doc=__doc__ + RULE,
)
