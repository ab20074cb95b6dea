"""ablation-discriminator: how the discriminator sees the scales [paper fig. 7].

    catlab ablate ablation-discriminator                  # cpu: 4 discriminators x 3 seeds = 12 cells
    catlab ablate ablation-discriminator --profile gpu

model.discriminator: scalewise-conv (the cpu recipe: one small CNN per scale, one logit per scale),
scalewise (CAT: one ViT, block-diagonal attention, one logit per scale), aggregated (the scales attend to
each other, one logit per scale), concat (GAT: every level resized and concatenated channel-wise into one
input, one logit). Consistency is on at the config default lambda.
Expected wall time: cpu about 3 min per cell with the conv D (measured in ablation-consistency) and
roughly 10 with the ViTs (estimated from their 300-step time; aggregated a little slower: full attention
over all tokens), 12 cells in about 50 min on 2 workers; gpu roughly 10-20 min per cell.
Expected outcome [paper fig. 7]: scalewise gives the best final-scale FID; aggregated couples the scales
and does worse; concat supervises the stages only jointly (loss.scale_weights has no effect on it).
"""
from experiments import Study
from experiments.common import ON, gamma, lrs, profiles

DISCRIMINATORS = ("scalewise-conv", "scalewise", "aggregated", "concat")


def space(trial) -> dict:
    """The discriminator-side knobs: its lr (with G's) and the R1/R2 strength."""
    return {**lrs(trial), **gamma(trial)}


STUDY = Study(
    name="ablation-discriminator",
    summary="discriminator scalewise-conv, scalewise, aggregated, concat, consistency on",
    base=dict(ON),
    profiles=profiles(),
    axes={"discriminator": {d: {"model.discriminator": d} for d in DISCRIMINATORS}},
    seeds=3,
    space=space,
    doc=__doc__,
)
