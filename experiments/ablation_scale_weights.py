"""ablation-scale-weights: how the adversarial loss is weighted across scales, with and without consistency.

    catlab ablate ablation-scale-weights                  # cpu: 4 presets x on/off x 3 seeds = 24 cells
    catlab ablate ablation-scale-weights --profile gpu

loss.scale_weights presets (normalised to sum 1): uniform; coarse-heavy (halving toward fine); fine-heavy
(doubling toward fine); final-only (only the final scale is judged: the single-scale baseline with no
intermediate supervision).
Expected wall time: cpu about 5 min per cell, 24 cells in about 2 h; gpu roughly 10-20 min per cell.
Expected outcome: final-only leaves the intermediate stages unsupervised, so without consistency their
discrepancy to the final image is largest and consistency matters most there; coarse-heavy tends to
fix the layout early (lower rewrite) at some cost in final-scale FID; uniform with consistency is CAT.
"""
from experiments import Study
from experiments.common import CONSISTENCY, lam, lrs, profiles

PRESETS = ("uniform", "coarse-heavy", "fine-heavy", "final-only")


def space(trial) -> dict:
    key = "loss.scale_weights"
    return {key: trial.suggest_categorical(key, list(PRESETS)), **lam(trial), **lrs(trial)}


STUDY = Study(
    name="ablation-scale-weights",
    summary="adversarial scale weights (uniform, coarse-heavy, fine-heavy, final-only) x consistency on/off",
    base={},
    profiles=profiles(),
    axes={"scale_weights": {p: {"loss.scale_weights": p} for p in PRESETS}, "consistency": CONSISTENCY},
    seeds=3,
    space=space,
    doc=__doc__,
)
