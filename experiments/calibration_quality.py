"""calibration-quality: does a weaker or warmed-up consistency loss keep the alignment without the final-FID
cost that lambda = 30 pays at 300 cpu steps? A sweep with a selection rule fixed in advance (RULE, below;
committed before any cell ran). The table and the verdict are in docs/cpu-recipe.md.

    catlab ablate calibration-quality --workers 2          # 6 settings x 5 seeds = 30 cells on `layouts`

Expected wall time: 0.5-1 min per cell on one core; 9.5 min in all on 2 cores (measured 2026-12-04,
analysis and report included), up to about 20 min on a slower machine.
Expected outcome: the claims table, one block per setting against off; whether some setting lowers
discrepancy at every intermediate stage and is not worse in final quality. "Nothing qualified" is a
possible answer.
"""
from experiments import Claim, Study
from experiments.common import CPU_RECIPE, lam, profiles, warmup


def setting(weight: float, warmup: int = 0) -> dict:
    return {"loss.consistency.weight": weight, "loss.consistency.warmup": warmup}


SETTINGS = {
    "off": setting(0.0),
    "l30": setting(30.0),                     # the cpu recipe when this sweep ran (plain lambda = 30)
    "l1": setting(1.0),
    "l0.3": setting(0.3),
    "l30-warm150": setting(30.0, 150),        # lambda ramps linearly from 0 over the first half (today's recipe)
    "l30-warm300": setting(30.0, 300),        # ... over the whole run
}
CANDIDATES = [s for s in SETTINGS if s != "off"]


def claims(s: str) -> tuple:
    """What a setting must show against off to qualify (rule items 1 and 2)."""
    return (Claim("discrepancy_l2", "setting", s, "off", "lower"),
            Claim("fid", "setting", s, "off", "lower", "not-worse", "final"),
            Claim("shape_acc", "setting", s, "off", "higher", "not-worse", "final"))


def space(trial) -> dict:
    """A search over what the sweep varies: lambda and its warm-up (catlab search calibration-quality)."""
    return {**lam(trial), **warmup(trial)}


RULE = """
Selection rule (fixed before the sweep ran). Every setting s in CANDIDATES is paired by seed (0..4) with
"off"; the verdicts are those the claims table prints (analysis.claims: Student-t 95 % CI of the paired
difference; a not-worse margin is the standard deviation of the off arm's seeds). s qualifies when
  1. its discrepancy_l2 claim (s lower than off) holds at every intermediate stage (1..K-1), and
  2. its final-stage fid and shape_acc not-worse claims both hold.
Among the qualifying settings take the lowest mean final-stage FID. If one is picked, it is confirmed on
ten new pairs before it becomes ablation-consistency's cpu recipe: in a clone with CPU_RECIPE set to the
pick, `catlab ablate ablation-consistency --seeds 15 --workers 2`, read on seeds 5..14 only; the pick is
adopted if items 1 and 2 hold there too. Otherwise (nothing qualifies, or the confirmation fails)
ablation-consistency keeps lambda = 30 and docs/cpu-recipe.md says so with this sweep's table. No seed
is dropped and no run is repeated to replace one; a failed cell is reported as failed.
"""

STUDY = Study(
    name="calibration-quality",
    summary="weaker or warmed-up consistency against off: alignment without the final-FID cost?",
    base={},
    profiles=profiles(cpu=CPU_RECIPE),
    axes={"setting": SETTINGS},
    seeds=5,
    space=space,
    doc=__doc__ + RULE,
    claims=tuple(c for s in CANDIDATES for c in claims(s)),
)
