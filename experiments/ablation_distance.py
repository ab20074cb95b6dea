"""ablation-distance: the distance inside the consistency loss.

    catlab ablate ablation-distance                       # cpu: 3 distances x 3 seeds = 9 cells
    catlab ablate ablation-distance --profile gpu

loss.consistency.distance: l2 (mean squared, the reimpl's), l1, lpips-domain (LPIPS on catlab's own
domain feature extractor, offline). Consistency is on at the config default lambda: the distances differ
in scale, so the same lambda is not the same strength; the diagnostics are measured with every distance.
Expected wall time: cpu about 5 min per cell for l2/l1 and about twice that for lpips-domain (a feature
network in the generator step), 9 cells in about 1 h; gpu roughly 10-20 min per cell.
Expected outcome: each arm lowers the discrepancy it optimises most; lpips-domain aligns structure rather
than pixels, so its pixel discrepancy stays higher while its perceptual discrepancy is lowest.
"""
from experiments import Study
from experiments.common import ON, lam, lrs, profiles

DISTANCES = ("l2", "l1", "lpips-domain")


def space(trial) -> dict:
    key = "loss.consistency.distance"
    return {key: trial.suggest_categorical(key, list(DISTANCES)), **lam(trial), **lrs(trial)}


STUDY = Study(
    name="ablation-distance",
    summary="consistency distance l2, l1, lpips-domain, consistency on",
    base=dict(ON),
    profiles=profiles(),
    axes={"distance": {d: {"loss.consistency.distance": d} for d in DISTANCES}},
    seeds=3,
    space=space,
    doc=__doc__,
)
