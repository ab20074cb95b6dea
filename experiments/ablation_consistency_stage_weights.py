"""ablation-consistency-stage-weights: which stages the consistency loss weighs most.

    catlab ablate ablation-consistency-stage-weights                # cpu: 3 presets x 3 seeds = 9 cells
    catlab ablate ablation-consistency-stage-weights --profile gpu

loss.consistency.stage_weights presets for stages 1..K-1 (K = 4): paper (1/3, 1/2, 1) [reimpl], uniform
(1, 1, 1), coarse-heavy (1, 1/2, 1/3). Consistency is on at the config default lambda in every arm.
Expected wall time: cpu about 5 min per cell, 9 cells in about 45 min; gpu roughly 10-20 min per cell.
Expected outcome: the stages a preset weighs most have the lowest discrepancy; coarse-heavy pulls the
coarsest stage hardest toward the final image and may cost final-scale FID (the anchor is pulled too,
detach_anchor=false); paper and uniform should be close.
"""
from experiments import Study
from experiments.common import ON, lam, profiles, stage_weights

PRESETS = ("paper", "uniform", "coarse-heavy")


def space(trial) -> dict:
    return {**stage_weights(trial), **lam(trial)}


STUDY = Study(
    name="ablation-consistency-stage-weights",
    summary="consistency stage weights (paper, uniform, coarse-heavy), consistency on",
    base=dict(ON),
    profiles=profiles(),
    axes={"stage_weights": {p: {"loss.consistency.stage_weights": p} for p in PRESETS}},
    seeds=3,
    space=space,
    doc=__doc__,
)
