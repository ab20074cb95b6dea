"""A study's grid: every cell's Config, built and validated before anything runs, and the dry-run table.
Cells go seed by seed (every arm of seed 0, then seed 1, ...), so an interrupted grid leaves complete pairs."""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from catlab.config import Config, flatten, load_config, parse_overrides
from catlab.errors import UserError
from catlab.text import text_table
from experiments import STUDIES, Study

STUDIES_ROOT = Path("studies")
SET_BY_STUDY = ("seed", "run.root", "run.experiment")   # a user override of these is refused


def variant(profile: str | None, overrides=(), default_profile: str = "cpu") -> str:
    """"" for a study run as declared (default profile, no overrides but run.*), else a digest of both."""
    changes = sorted(o.strip() for o in overrides if not o.strip().startswith("run."))
    if (profile or default_profile) == default_profile and not changes:
        return ""
    return hashlib.sha256(json.dumps([profile or default_profile, changes]).encode()).hexdigest()[:8]


def study_dir(name: str, profile: str | None = None, overrides=()) -> Path:
    """Where a study's tables go: studies/<name> as declared, studies/<name>@<variant> otherwise."""
    default = next(iter(STUDIES[name].profiles)) if name in STUDIES else "cpu"
    key = variant(profile, overrides, default)
    return STUDIES_ROOT / (f"{name}@{key}" if key else name)


def one_of(option: str, value, choices) -> None:
    """A UserError unless value is one of choices."""
    if value not in choices:
        raise UserError(f"{option} must be one of {', '.join(choices)}, but got {option.lstrip('-')}={value!r}")


def positive_int(option: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{option} must be an int >= 1, but got {option.lstrip('-')}={value!r}")


def get_study(name: str) -> Study:
    one_of("study", name, STUDIES)
    return STUDIES[name]


@dataclass
class Cell:
    study: str
    arm: dict[str, str]        # {axis: label}
    seed: int
    cfg: Config
    changed: dict              # flat key -> value: what differs from the defaults (arm keys always shown)

    @property
    def name(self) -> str:
        return ",".join([*(f"{a}={v}" for a, v in self.arm.items()), f"seed={self.seed}"])

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run.root) / self.cfg.run_name()

    def tags(self, profile: str) -> dict:
        return {"study": self.study, "cell": self.name, "seed": self.seed, **self.arm, "profile": profile}


def check_options(study: Study, profile: str, seeds: int | None, workers: int) -> int:
    """Validate the command-line options; return the number of seeds."""
    one_of("--profile", profile, study.profiles)
    if seeds is not None:
        positive_int("--seeds", seeds)
    positive_int("--workers", workers)
    return study.seeds if seeds is None else seeds


def build_grid(study: Study, profile: str, seeds: int, overrides=()) -> list[Cell]:
    """Every cell's validated Config; an override invalid for any cell is a UserError naming the cell."""
    user = parse_overrides(list(overrides))
    for key in SET_BY_STUDY:
        if key in user:
            hint = "use --seeds N" if key == "seed" else f"it is {study_dir(study.name) / 'runs'}" \
                if key == "run.root" else f"it is {study.name}"
            raise UserError(f"{key} is set by the study for every cell ({hint}), but got {key}={user[key]}")
    by_axis = {key: axis for axis, labels in study.axes.items() for over in labels.values() for key in over}
    clash = [k for k in user if k in by_axis]
    if clash:
        k = clash[0]
        raise UserError(f"{k} is set by the axis '{by_axis[k]}' of study {study.name} (it is what the study "
                        f"compares), but got {k}={user[k]}; drop the override or run another study")
    fixed = {"run.root": str(study_dir(study.name) / "runs"), "run.experiment": study.name}
    defaults = flatten(Config().to_dict())
    cells = []
    for seed in range(seeds):
        for arm in study.arms():
            arm_over = study.arm_overrides(arm)
            pairs = {**study.base, **study.profiles[profile], **arm_over, "seed": seed, **user, **fixed}
            name = ",".join([*(f"{a}={v}" for a, v in arm.items()), f"seed={seed}"])
            try:
                cfg = load_config(pairs)
            except UserError as e:
                raise UserError(f"{e} (in cell {name} of {study.name}, profile {profile})") from None
            changed = {k: v for k, v in cfg.flat().items()
                       if not k.startswith("run.") and k != "seed" and (defaults.get(k) != v or k in arm_over)}
            cells.append(Cell(study.name, arm, seed, cfg, changed))
    return cells


def _fmt(v) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def common_changes(cells: list[Cell]) -> dict:
    """The changes every cell shares, shown once above the table."""
    shared = set(cells[0].changed.items()) if cells else set()
    for c in cells[1:]:
        shared &= set(c.changed.items())
    return dict(sorted(shared))


def command(study: str, profile: str, seeds: int, overrides=()) -> str:
    return " ".join(["catlab ablate", study, f"--profile {profile}", f"--seeds {seeds}", *overrides])


def print_grid(study: Study, profile: str, cells: list[Cell], file=None) -> None:
    """The dry-run table: cell, seed, axis values, config hash, changed keys."""
    file = file or sys.stdout
    common = common_changes(cells)
    n_arms = len(study.arms())
    print(f"{study.name} (profile {profile}): {n_arms} arm{'s' * (n_arms != 1)} x {len(cells) // n_arms} "
          f"seeds = {len(cells)} cells, run dirs under {study_dir(study.name) / 'runs'}", file=file)
    print("common changes: " + (", ".join(f"{k}={_fmt(v)}" for k, v in common.items()) or "none"), file=file)
    head = ["cell", "seed", *study.axes, "config", "changed"]
    rows = [[c.name, str(c.seed), *c.arm.values(), c.cfg.hash(),
             ", ".join(f"{k}={_fmt(v)}" for k, v in c.changed.items() if k not in common) or "-"]
            for c in cells]
    print(text_table(head, rows), file=file)
