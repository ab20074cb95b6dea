"""The study registry: one file per study, each declaring a `Study` (its grid, profiles, claims and search
space); docs/architecture.md ("Studies") gives a cell's config. Study files import nothing heavy."""
from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Claim:
    """An expected outcome: arm `a` of `axis` against arm `b`, paired by seed (analysis.claims says how)."""
    metric: str
    axis: str
    a: str
    b: str
    better: str = "lower"
    kind: str = "better"
    stages: str = "intermediate"

    def __post_init__(self):
        if self.kind not in ("better", "not-worse") or self.better not in ("lower", "higher") \
                or self.stages not in ("intermediate", "final"):
            raise ValueError(f"claim {self} needs kind better|not-worse, better lower|higher, "
                             "stages intermediate|final")


@dataclass(frozen=True)
class Study:
    name: str                     # "ablation-consistency"
    summary: str                  # one line
    base: dict                    # overrides for every profile, e.g. {"train.steps": 400}
    profiles: dict                # {"cpu": {...overrides}, "gpu": {...overrides}}; the first is the default
    axes: dict                    # axis -> {value label -> overrides}; cells = product(axes) x seeds
    seeds: int = 3
    space: Callable | None = None  # Optuna search space: space(trial) -> overrides dict
    doc: str = ""                 # the module docstring: command, expected wall time, expected outcome
    claims: tuple = ()            # Claim(...) each: the expected outcomes the summary gives verdicts on

    def __post_init__(self):
        if not self.axes or any(not labels for labels in self.axes.values()):
            raise ValueError(f"study {self.name!r} needs at least one axis with at least one value")
        if self.seeds < 1:
            raise ValueError(f"study {self.name!r} needs seeds >= 1, got {self.seeds}")
        for c in self.claims:
            if c.axis not in self.axes or not {c.a, c.b} <= set(self.axes[c.axis]):
                raise ValueError(f"study {self.name!r}: claim {c} names arms that its axes do not have")

    def arms(self) -> list[dict[str, str]]:
        """Every combination of axis labels, in declaration order: [{"consistency": "on"}, ...]."""
        names = list(self.axes)
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.axes[a] for a in names))]

    def arm_overrides(self, arm: dict[str, str]) -> dict:
        out: dict = {}
        for axis, label in arm.items():
            out.update(self.axes[axis][label])
        return out


STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Add a study under its name; a name can be registered once."""
    if study.name in STUDIES:
        raise ValueError(f"study {study.name!r} is already registered")
    STUDIES[study.name] = study
    return study


# One module per study; each defines STUDY. Module names are the study names with '_' for '-'.
MODULES = (
    "ablation_consistency",
    "ablation_scale_weights",
    "ablation_consistency_stage_weights",
    "ablation_consistency_weight",
    "ablation_anchor",
    "ablation_distance",
    "ablation_discriminator",
    "ablation_model_size",
    "calibration_consistency",
    "calibration_quality",
)

for _module in MODULES:
    register(importlib.import_module(f"experiments.{_module}").STUDY)
