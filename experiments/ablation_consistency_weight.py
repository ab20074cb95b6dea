"""ablation-consistency-weight: the strength lambda of the consistency loss, 0 (off) to 1.

    catlab ablate ablation-consistency-weight             # cpu: 6 weights x 3 seeds = 18 cells
    catlab ablate ablation-consistency-weight --profile gpu
    catlab search ablation-consistency-weight --trials 8  # tunes lambda (log-uniform) with the lr

loss.consistency.weight in {0, 0.01, 0.03, 0.1 (the paper's, [reimpl]), 0.3, 1}.
Expected wall time: cpu about 5 min per cell, 18 cells in about 1.5 h; gpu roughly 10-20 min per cell.
Expected outcome: discrepancy and rewrite fall monotonically with lambda and direction alignment rises;
final-scale FID is flat for small lambda and worsens once the term dominates the adversarial loss (the
stages collapse onto the final image). On the small CPU model, 0.1 barely differs from 0 in 600 steps
(DESIGN.md), which is why the CPU default is calibrated separately.
"""
from experiments import Study
from experiments.common import lam, lrs, profiles

WEIGHTS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)


def space(trial) -> dict:
    return {**lam(trial), **lrs(trial)}


STUDY = Study(
    name="ablation-consistency-weight",
    summary="consistency weight lambda in {0, 0.01, 0.03, 0.1, 0.3, 1}",
    base={},
    profiles=profiles(),
    axes={"weight": {f"{w:g}": {"loss.consistency.weight": w} for w in WEIGHTS}},
    seeds=3,
    space=space,
    doc=__doc__,
)
