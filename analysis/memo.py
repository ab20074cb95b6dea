"""Results kept beside the run they describe: <run_dir>/analysis/<kind>-<key>.json.

    df = memo(run_dir, "eval", spec, compute)      # compute() -> DataFrame, unless spec's table is kept

The key hashes everything that changes the table (checkpoint size and mtime: fingerprint, n, metrics,
distances, extractor weights digests); evaluating an unchanged run again reads it back (reuse=False
recomputes, still with the cached reference statistics).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from catlab.errors import UserError
from catlab.files import atomic_text

MEMO_VERSION = 2                  # bump when a change in analysis changes results


def fingerprint(path: Path) -> list:
    """[name, size, mtime_ns] of a checkpoint file: what says it changed."""
    if not Path(path).is_file():
        raise UserError(f"checkpoint {path} does not exist (has the run saved a checkpoint yet?)")
    st = Path(path).stat()
    return [Path(path).name, st.st_size, st.st_mtime_ns]


def memo_path(run_dir: Path, kind: str, spec: dict) -> Path:
    """Where memo() keeps the table of (kind, spec)."""
    key = hashlib.sha256(json.dumps([MEMO_VERSION, kind, spec], sort_keys=True, default=str).encode()).hexdigest()
    return Path(run_dir) / "analysis" / f"{kind}-{key[:12]}.json"


def memo(run_dir: Path, kind: str, spec: dict, compute, reuse: bool = True) -> pd.DataFrame:
    """compute() -> DataFrame, kept in <run_dir>/analysis/<kind>-<key>.json and read back while spec holds."""
    path = memo_path(run_dir, kind, spec)
    if reuse and path.is_file():
        saved = json.loads(path.read_text())
        df = pd.DataFrame(saved["rows"], columns=saved["columns"])
        df.attrs["info"] = {**saved["info"], "reused": True}
        return df
    df = compute()
    df.attrs.setdefault("info", {})["reused"] = False
    try:
        atomic_text(path, json.dumps({"spec": spec, "columns": list(df.columns), "rows": df.values.tolist(),
                                      "info": df.attrs["info"]}, default=str), shared=True)
    except OSError:                                          # a read-only run dir: nothing kept, nothing lost
        pass
    return df
