"""ablation-consistency: CAT with and without the generator-side consistency loss (its central claim).

    catlab ablate ablation-consistency                    # cpu: shapes, tiny model, 2 arms x 3 seeds
    catlab ablate ablation-consistency --profile gpu      # CIFAR-10, S model, bf16, 20k steps
    make ablation-consistency                             # the same as the first line

Expected wall time: cpu about 3 min per cell on one core; `--workers 2` (what make runs) trains the 6
cells in about 9 min on 2 cores, and the analysis and report add about 3 min (12 min in all, measured
2026-11-29). gpu roughly 10-20 min per cell.
Expected outcome [paper figs 4, 6]: with consistency ("on", lambda = the profile's: 3 on cpu, calibrated in
ablation-consistency-weight; 0.1 on gpu), cross-scale discrepancy and inter-stage rewrite go down at
every stage and refinement-direction alignment goes up; final-scale FID is no worse.
Arms are paired by seed (same initialisation, data order and evaluation set),
so tests.csv holds paired tests on/off over the 3 seeds.
"""
from experiments import Study
from experiments.common import CONSISTENCY, anchor, consistency_claims, gamma, lam, lrs, profiles, stage_weights


def space(trial) -> dict:
    """Everything that shapes the consistency term, plus the GAN's own lr and R1 strength."""
    return {**lam(trial), **stage_weights(trial), **anchor(trial), **lrs(trial), **gamma(trial)}


STUDY = Study(
    name="ablation-consistency",
    summary="consistency loss on vs off (3 seeds, paired by seed)",
    base={},
    profiles=profiles(),
    axes={"consistency": CONSISTENCY},
    seeds=3,
    space=space,
    doc=__doc__,
    claims=consistency_claims(),
)
