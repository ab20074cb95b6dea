"""ablation-anchor: stop-gradient on the anchor (the final output) x where stages are compared.

    catlab ablate ablation-anchor                         # cpu: 2 x 2 arms x 3 seeds = 12 cells
    catlab ablate ablation-anchor --profile gpu

loss.consistency.detach_anchor true/false: whether the consistency loss may also move the final output
toward the earlier stages. loss.consistency.compare_at full/own-scale: compare the accumulated
full-resolution outputs, or each stage at its own scale against the final output resampled there.
Consistency is on at the config default lambda in every arm.
Expected wall time: cpu about 5 min per cell, 12 cells in about 1 h; gpu roughly 10-20 min per cell.
Expected outcome: a detached anchor keeps final-scale FID closest to no consistency, while an attached
anchor lowers discrepancy more (both ends move); own-scale comparison ignores detail the coarse scale
cannot show, so it constrains the fine stages less than full.
"""
from experiments import Study
from experiments.common import ON, anchor, lam, profiles


def space(trial) -> dict:
    return {**anchor(trial), **lam(trial)}


STUDY = Study(
    name="ablation-anchor",
    summary="detach_anchor true/false x compare_at own-scale/full, consistency on",
    base=dict(ON),
    profiles=profiles(),
    axes={"detach_anchor": {"true": {"loss.consistency.detach_anchor": True},
                            "false": {"loss.consistency.detach_anchor": False}},
          "compare_at": {"own-scale": {"loss.consistency.compare_at": "own-scale"},
                         "full": {"loss.consistency.compare_at": "full"}}},
    seeds=3,
    space=space,
    doc=__doc__,
)
