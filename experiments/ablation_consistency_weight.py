"""ablation-consistency-weight: the strength lambda of the consistency loss, 0 (off) to 10.

    catlab ablate ablation-consistency-weight             # cpu: 8 weights x 3 seeds = 24 cells
    catlab ablate ablation-consistency-weight --seeds 1   # cpu: 8 cells, about 15 min on 2 cores
    catlab ablate ablation-consistency-weight --profile gpu
    catlab search ablation-consistency-weight --trials 8  # tunes lambda (log-uniform) with the lr

loss.consistency.weight in {0, 0.01, 0.03, 0.1 (the paper's, [reimpl]), 0.3, 1, 3, 10}.
Expected wall time: cpu about 3 min per cell on one core (two cells run at once on 2 cores) plus
about 25 s of analysis per cell; gpu roughly 10-20 min per cell.
Expected outcome: discrepancy and rewrite fall with lambda and direction alignment rises; final-scale FID
is flat or better up to a few units of lambda and worsens once the term dominates (stages collapse onto
the final image).
The dated sweeps of lambda on `shapes` are in docs/cpu-recipe.md.
"""
from experiments import Study
from experiments.common import lam, lrs, profiles

WEIGHTS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def space(trial) -> dict:
    return {**lam(trial), **lrs(trial)}


STUDY = Study(
    name="ablation-consistency-weight",
    summary="consistency weight lambda in {0, 0.01, 0.03, 0.1, 0.3, 1, 3, 10}",
    base={},
    profiles=profiles(),
    axes={"weight": {f"{w:g}": {"loss.consistency.weight": w} for w in WEIGHTS}},
    seeds=3,
    space=space,
    doc=__doc__,
)
