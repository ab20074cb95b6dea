"""A study's outputs as reports see them: the analysis tables (studies/<study>/*.csv), study.json, the
registry entry when it exists, and the arms.

    sd = load("ablation-consistency")          # StudyData; UserError (one line) when there is nothing yet
    sd.table, sd.summary, sd.tests, sd.claims, sd.drift, sd.curve, sd.diagnostics_curve   # or None (missing)
    sd.arms                                    # arm labels in registry order, "consistency=on"
    sd.axis_for("model.size")                  # the axis that sets a config key, or None
    sd.seed_values("discrepancy_l2")           # per-seed value (mean over stages) per arm

Reports never touch trainer internals: everything here comes from files analysis and the registry wrote.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from catlab.errors import UserError

META_COLS = ("cell", "seed", "run_dir", "status", "reason", "config_hash", "mlflow_run_id", "arm")
VALUE_COLS = ("metric", "stage", "value", "step", "images_seen", "drift", "n", "mean", "std", "ci_low",
              "ci_high", "method")
TABLES = ("cells", "table", "summary", "tests", "claims", "drift", "curve", "diagnostics_curve")


def registry():
    """experiments.STUDIES."""
    from experiments import STUDIES
    return STUDIES


def _read(path: Path, str_cols) -> pd.DataFrame | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    head = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, dtype={c: str for c in head if c in str_cols}, keep_default_na=True)


@dataclass
class StudyData:
    name: str
    dir: Path
    meta: dict                          # study.json ({} when absent)
    spec: object | None                 # experiments.STUDIES[name] when the registry has it
    axes: list[str]
    values: dict[str, list[str]]        # axis -> value labels, in registry order
    frames: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __getattr__(self, name):        # sd.table, sd.summary, ... (None when the CSV is missing)
        if name in TABLES:
            return self.frames.get(name)
        raise AttributeError(name)

    # ---- arms -----------------------------------------------------------------------------------------
    def label(self, row) -> str:
        return ",".join(f"{ax}={row[ax]}" for ax in self.axes)

    @property
    def arms(self) -> list[str]:
        """Every arm label present in the data, in the registry's (product) order."""
        import itertools
        combos = itertools.product(*(self.values[ax] for ax in self.axes))
        every = [",".join(f"{ax}={v}" for ax, v in zip(self.axes, c)) for c in combos]
        seen = set()
        for df in self.frames.values():
            if df is not None and "arm" in df.columns:
                seen.update(df["arm"].dropna().unique())
        return [a for a in every if a in seen] or every

    def arm_values(self, arm: str) -> dict[str, str]:
        return dict(part.split("=", 1) for part in arm.split(",")) if arm else {}

    # ---- axis roles -----------------------------------------------------------------------------------
    def overrides(self, axis: str, value: str) -> dict:
        """The config overrides of arm `axis=value`: study.json's declaration ("axes"), else the registry's."""
        axes = self.meta.get("axes") or getattr(self.spec, "axes", None) or {}
        return dict(axes.get(axis, {}).get(value, {}) or {})

    def axis_for(self, key: str) -> str | None:
        """The axis whose arms set config `key`, from the study's declaration (its axes' overrides); None
        without one (the figures that need a role then say so)."""
        for ax in self.axes:
            if any(key in self.overrides(ax, v) for v in self.values[ax]):
                return ax
        return None

    def setting(self, axis: str, value: str, key: str):
        """The value an arm label sets for `key` (registry); the label itself when the registry is absent."""
        ov = self.overrides(axis, value)
        return ov.get(key, value)

    # ---- per-seed values ------------------------------------------------------------------------------
    def metrics(self, prefix: str = "") -> list[str]:
        if self.table is None:
            return []
        return sorted(m for m in self.table["metric"].unique() if str(m).startswith(prefix))

    def primary(self, head: str) -> str | None:
        """The metric to show for a family: the l2 variant of a diagnostic, else the first one found."""
        names = self.metrics(head + "_")
        return (f"{head}_l2" if f"{head}_l2" in names else names[0]) if names else None

    def seed_values(self, metric: str) -> pd.DataFrame:
        """arm, <axes>, seed, value: diagnostics averaged over stages 1..K-1; quality at the final scale."""
        t = self.table[self.table["metric"] == metric]
        if not str(metric).startswith(("discrepancy", "rewrite", "direction")):
            t = t[t["stage"] == t["stage"].max()]
        out = t.groupby(["arm", "seed"], as_index=False)["value"].mean()
        for ax in self.axes:
            out[ax] = out["arm"].map(lambda a, ax=ax: self.arm_values(a).get(ax))
        return out


# ---- loading ------------------------------------------------------------------------------------------
def _axes_from(df: pd.DataFrame | None) -> list[str]:
    if df is None:
        return []
    return [c for c in df.columns if c not in META_COLS and c not in VALUE_COLS]


def _with_arm(sd: StudyData, name: str, df: pd.DataFrame | None) -> pd.DataFrame | None:
    """Adds the arm label from the axis columns; a frame that carries only an `arm` column is mapped onto
    the labels when it can be (full label, "a=b" pieces, or a single axis' value); otherwise dropped."""
    if df is None or not sd.axes:
        return df
    df = df.copy()
    if all(ax in df.columns for ax in sd.axes):
        df["arm"] = [sd.label(r) for r in df[sd.axes].astype(str).to_dict("records")]
        return df
    if "arm" in df.columns:
        def resolve(v):
            v = str(v)
            if "=" in v:
                parts = dict(p.split("=", 1) for p in v.split(",") if "=" in p)
                if set(parts) == set(sd.axes):
                    return sd.label(parts)
            if len(sd.axes) == 1 and v in sd.values[sd.axes[0]]:
                return f"{sd.axes[0]}={v}"
            return None
        df["arm"] = df["arm"].map(resolve)
        if df["arm"].notna().all():
            for ax in sd.axes:
                df[ax] = df["arm"].map(lambda a, ax=ax: sd.arm_values(a)[ax])
            return df
    sd.notes.append(f"{name}.csv: its rows name no arm I can match to the axes {sd.axes}; not used")
    return None


def load(study: str, root: str | Path = "studies") -> StudyData:
    """Reads studies/<study>/; UserError with the command to run first when the study is unknown or empty."""
    reg = registry()
    sdir = Path(root) / study
    base = study.split("@", 1)[0]                            # studies/<name>@<variant>: another profile/overrides
    if base not in reg and not sdir.exists():
        raise UserError(f"study must be one of {', '.join(sorted(reg))}, but got study={study!r} "
                        "(run `catlab list studies` first)")
    if not sdir.is_dir() or not any((sdir / f).exists() for f in ("study.json", "cells.csv", "table.csv")):
        raise UserError(f"study {study!r} has no results in {sdir} yet: run `catlab ablate {study}` first")
    meta = json.loads((sdir / "study.json").read_text()) if (sdir / "study.json").exists() else {}
    spec = reg.get(base) if reg is not None else None
    cells = _read(sdir / "cells.csv", {"cell", "run_dir", "status", "reason", "config_hash", "mlflow_run_id"})
    if spec is not None and getattr(spec, "axes", None):
        axes = list(spec.axes)
    else:
        axes = _axes_from(cells) or _axes_from(_read(sdir / "table.csv", ()))
    str_cols = {"cell", "arm", "a", "b", "method", "note", "metric", *axes}
    frames = {"cells": _read(sdir / "cells.csv", str_cols | {"run_dir", "status", "reason", "config_hash",
                                                             "mlflow_run_id"})}
    for name in TABLES[1:]:
        frames[name] = _read(sdir / f"{name}.csv", str_cols)
    values = {}
    for ax in axes:
        listed = [str(v) for v in (getattr(spec, "axes", None) or {}).get(ax, {})]
        found = []
        for df in frames.values():
            if df is not None and ax in df.columns:
                found += [v for v in df[ax].dropna().astype(str).unique() if v not in found]
        values[ax] = [v for v in listed if v in found or not found] + [v for v in found if v not in listed]
    sd = StudyData(study, sdir, meta, spec, axes, values)
    for name, df in frames.items():
        sd.frames[name] = _with_arm(sd, name, df) if name not in ("tests", "claims") else df
    if all(sd.frames.get(n) is None for n in ("table", "drift", "curve")):
        raise UserError(f"study {study!r} has no analysis tables in {sdir} yet: run `catlab analyze {study}` first")
    return sd
