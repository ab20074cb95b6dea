"""Atomic writes: a temp file in the same folder, then a rename, so a reader sees the old file or the new one.

    atomic_text(path, json.dumps(info))           # run.json, config.json, cells.csv, study.json, best.json, ...
    atomic_text(path, text, shared=True)          # a file several processes may write at once (a cache)
    tmp = temp_path(path, shared)                 # catlab.checkpoint.atomic_save writes its torch files there

The temp name is fixed (<name>.tmp) unless shared: then each write gets one of its own (<name>.<uuid>.tmp), so
two concurrent writers never share a temp file and the last rename wins. A temp file a killed process left is
never read (only <name> is), and the next write of a fixed name overwrites it. A write that fails removes its
temp file.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def temp_path(path: Path, shared: bool = False) -> Path:
    return path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp" if shared else f"{path.name}.tmp")


def atomic_text(path, text: str, shared: bool = False) -> None:
    """Write `text` to `path` (its folder made if missing) through a temp file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, shared)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
