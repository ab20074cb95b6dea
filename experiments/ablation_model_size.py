"""ablation-model-size: does consistency help at every model size? [paper figs 4-6]

    catlab ablate ablation-model-size --profile gpu       # 3 sizes x on/off x 3 seeds = 18 cells
    catlab ablate ablation-model-size                     # cpu: the same grid; S is slow on a laptop

model.size in tiny (depth 4, width 64), small (8, 128), S (12, 384), each with consistency on (the
config default lambda) and off. Discriminator size follows the generator (model.d_size="").
Expected wall time: cpu about 5 min per tiny cell, ~15 min per small cell and over an hour per S cell
(about 4 h in all; pass --seeds 1 for a first look); gpu roughly 10-30 min per cell.
Expected outcome [paper]: at every size consistency lowers discrepancy and rewrite and raises direction
alignment; final-scale FID improves with size in both arms.
"""
from experiments import Study
from experiments.common import CONSISTENCY, lam, lrs, profiles

SIZES = ("tiny", "small", "S")


def space(trial) -> dict:
    return {**lam(trial), **lrs(trial)}


STUDY = Study(
    name="ablation-model-size",
    summary="model size tiny, small, S x consistency on/off",
    base={},
    profiles=profiles(),
    axes={"size": {s: {"model.size": s} for s in SIZES}, "consistency": CONSISTENCY},
    seeds=3,
    space=space,
    doc=__doc__,
)
