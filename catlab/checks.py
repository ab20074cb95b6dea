"""Checks the config's sections run on their fields: each failure is one line that names the field.

    choice("train.device", "gpu", ("auto", "cpu", "cuda"))
    # UserError: train.device must be one of auto, cpu, cuda, but got device='gpu'
"""
from __future__ import annotations

import math
import typing

from catlab.errors import UserError


def _fail(key: str, expected: str, value) -> typing.NoReturn:
    raise UserError(f"{key} must be {expected}, but got {key.rsplit('.', 1)[-1]}={value!r}")


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        _fail(key, "one of " + ", ".join(map(str, allowed)), value)


def _positive(key: str, value, zero_ok: bool = False) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        _fail(key, "a finite number", value)
    if value < 0 or (value == 0 and not zero_ok):
        _fail(key, ">= 0" if zero_ok else "> 0", value)


def _unit(key: str, value, closed_right: bool = True) -> None:
    ok = 0 <= value <= 1 if closed_right else 0 <= value < 1
    if not (math.isfinite(value) and ok):
        _fail(key, "in [0, 1]" if closed_right else "in [0, 1)", value)


def parse_weights(spec: str, n: int, presets: tuple[str, ...], key: str) -> str:
    """Check a weight spec: a preset name, or a comma list of n finite numbers >= 0 (not all zero)."""
    if spec in presets:
        return spec
    try:
        values = [float(v) for v in spec.split(",")]
    except ValueError:
        _fail(key, f"a preset ({', '.join(presets)}) or a comma list of {n} numbers", spec)
    if len(values) != n:
        _fail(key, f"a preset ({', '.join(presets)}) or a comma list of {n} numbers (one per stage)", spec)
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) == 0:
        _fail(key, "weights that are finite, >= 0 and not all zero", spec)
    return spec
