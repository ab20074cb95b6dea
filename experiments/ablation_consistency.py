"""ablation-consistency: CAT with and without the generator-side consistency loss (its central claim).

    catlab ablate ablation-consistency                    # cpu: layouts, tiny model, 2 arms x 6 seeds
    catlab ablate ablation-consistency --profile gpu      # CIFAR-10, S model, bf16, 20k steps
    make ablation-consistency                             # the same as the first line

The cpu recipe is the pick of calibration-consistency's sweep under its rule (docs/cpu-recipe.md): the
embedded `layouts` data (whose coarse stages leave layout and colour open, so later stages can rewrite
them), lambda = 30 (attached anchor, full resolution, no R1/R2) against lambda = 0, 300 steps; lambda ramps
in linearly over the first 150 steps (adopted 2026-12-04 by a rule read on ten new seeds).

Expected wall time: cpu 0.5-1 min per cell on one core; `--workers 2` (what make runs) trains the 12
cells in 3-6 min on 2 cores, then the analysis and the report: 4-8.5 min in all (2-core machines, 2026-12).
gpu roughly 10-20 min per cell.
Expected outcome [paper figs 4, 6]: with consistency, cross-scale discrepancy and inter-stage rewrite go
down at every intermediate stage and refinement-direction alignment goes up; final-stage quality (domain
FID, shape_acc) is no worse. The claims table printed at the end gives each claim's verdict. Arms are
paired by seed (same initialisation, data order and evaluation set).
Measured on cpu (docs/cpu-recipe.md): the alignment claims hold; final domain FID is worse with the loss,
by about 17 points without the warm-up (25 seeds) and about 13 with it (15 unseen seeds; 9 over 40).
"""
from experiments import Study
from experiments.common import (CONSISTENCY, CPU_RECIPE, anchor, consistency_claims, gamma, lam, lrs, profiles,
                                stage_weights)


def space(trial) -> dict:
    """Everything that shapes the consistency term, plus the GAN's own lr and R1 strength."""
    return {**lam(trial), **stage_weights(trial), **anchor(trial), **lrs(trial), **gamma(trial)}


STUDY = Study(
    name="ablation-consistency",
    summary="consistency loss on vs off, paired by seed",
    base={},
    profiles=profiles(cpu=CPU_RECIPE),
    axes={"consistency": CONSISTENCY},
    seeds=6,                      # by power (docs/cpu-recipe.md, 2026-12-04)
    space=space,
    doc=__doc__,
    claims=consistency_claims(),
)
