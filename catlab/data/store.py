"""A latent store: latents too large for RAM, in one folder that `data.name=latents:FOLDER` reads.

    FOLDER/manifest.json   {"format": "catlab-latents", "version": 1, "shape": [N, C, H, W], "dtype": "float16",
                            "scale_factor": 0.18215, "encoder": {...}, "class_names": [...],
                            "class_counts": [...], "preprocess": {...}, "source": {...}}
    FOLDER/latents.npy     (N, C, H, W) float16 | float32, already multiplied by scale_factor: what the model
                           trains on (a decoder divides by scale_factor). A plain .npy: np.load(mmap_mode="r").
    FOLDER/labels.npy      (N,) int64 in [0, num_classes)

The manifest is written last (atomically), so a folder with one is complete. While `catlab encode` writes the
store, FOLDER/progress.json says how many rows are final; a re-run continues from there, writing the same
bytes an uninterrupted run would (see catlab.encode).

Reading: `open_store` maps latents.npy (nothing is read) and loads labels.npy (8 bytes a row). A LatentSet of
a store holds the mapped array as its `images` tensor, so code that indexes a few rows (analysis) reads only
those. The Batcher reads each batch's rows with `RowReader` (pread): the rows a run has touched stay in the
page cache, shared and reclaimable, and never enter the process's resident set, so training from a store of
any size takes the RAM of a small one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from catlab.errors import UserError
from catlab.files import atomic_text

FORMAT, VERSION = "catlab-latents", 1
MANIFEST, LATENTS, LABELS, PROGRESS = "manifest.json", "latents.npy", "labels.npy", "progress.json"
DTYPES = ("float16", "float32")


def is_store(path: str | Path) -> bool:
    """Whether path names a store: a folder (or its manifest.json), as opposed to an .npz."""
    p = Path(path).expanduser()
    return p.is_dir() or p.name == MANIFEST


def store_folder(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p.parent if p.name == MANIFEST else p


def _fail(path, what: str):
    raise UserError(f"data.name=latents:PATH must name a latent store folder with {what}, but got "
                    f"name='latents:{path}'")


def read_manifest(path: str | Path) -> dict:
    """The manifest of a complete store, checked (one-line UserError naming what is wrong)."""
    folder = store_folder(path)
    m_path = folder / MANIFEST
    if not m_path.is_file():
        why = ("catlab encode has not finished writing it; run the same command again to finish"
               if (folder / PROGRESS).exists() else "it does not exist" if not folder.exists() else
               "no manifest.json in it")
        _fail(path, f"{MANIFEST} ({why})")
    try:
        m = json.loads(m_path.read_text())
    except (OSError, ValueError) as e:
        _fail(path, f"a readable {MANIFEST} (it cannot be read: {type(e).__name__})")
    if not isinstance(m, dict) or m.get("format") != FORMAT or m.get("version") != VERSION:
        _fail(path, f'a {MANIFEST} of format "{FORMAT}" version {VERSION}')
    shape = m.get("shape")
    if (not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape)
            or shape[2] != shape[3]):
        _fail(path, f"a {MANIFEST} whose shape is [N, C, H, H] (positive ints), not {shape!r}")
    if m.get("dtype") not in DTYPES:
        _fail(path, f"a {MANIFEST} whose dtype is one of {', '.join(DTYPES)}, not {m.get('dtype')!r}")
    sf = m.get("scale_factor")
    if not isinstance(sf, (int, float)) or not np.isfinite(sf) or sf <= 0:
        _fail(path, f"a {MANIFEST} whose scale_factor is one finite number > 0, not {sf!r}")
    return m


def npy_offset(path: Path) -> tuple[int, tuple, np.dtype]:
    """(data offset, shape, dtype) of a C-order .npy, from its header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError(f"{path} is Fortran-ordered")
        return f.tell(), shape, dtype


class RowReader:
    """rows(idx (B,) int) -> (B, C, H, W) tensor: rows of latents.npy read with pread (in idx order).

    Consecutive indices are read in one call. The file is opened lazily in each process (torchrun ranks,
    forks), so a reader can be handed to any of them."""

    def __init__(self, path: Path, offset: int, shape: tuple, dtype: np.dtype):
        self.path, self.offset, self.row_shape, self.dtype = Path(path), offset, tuple(shape[1:]), np.dtype(dtype)
        self.n = shape[0]
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self._fd, self._pid = None, None

    def _file(self) -> int:
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.cpu().numpy().astype(np.int64)                           # (B,)
        out = np.empty((len(idx), *self.row_shape), self.dtype)            # (B, C, H, W)
        buf, fd = memoryview(out).cast("B"), self._file()
        i = 0
        while i < len(idx):                                                 # runs of consecutive rows
            j = i + 1
            while j < len(idx) and idx[j] == idx[j - 1] + 1:
                j += 1
            want = (j - i) * self.row_bytes
            got = os.preadv(fd, [buf[i * self.row_bytes:j * self.row_bytes]], self.offset + int(idx[i]) * self.row_bytes)
            if got != want:
                raise OSError(f"{self.path}: short read at row {int(idx[i])} ({got} of {want} bytes)")
            i = j
        return torch.from_numpy(out)

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass


def open_store(path: str | Path) -> tuple[dict, np.ndarray, np.ndarray, RowReader]:
    """(manifest, latents memory-mapped read-only (N, C, H, W), labels (N,) int64, a RowReader of latents)."""
    folder = store_folder(path)
    m = read_manifest(path)
    n = m["shape"][0]
    try:
        offset, shape, dtype = npy_offset(folder / LATENTS)
        if list(shape) != m["shape"] or str(dtype) != m["dtype"]:
            _fail(path, f"{LATENTS} of the manifest's shape {m['shape']} {m['dtype']}, not {list(shape)} {dtype}")
        if os.path.getsize(folder / LATENTS) < offset + int(np.prod(shape)) * dtype.itemsize:
            _fail(path, f"a whole {LATENTS} (it is truncated)")
        lat = np.load(folder / LATENTS, mmap_mode="c")                     # copy-on-write: never writes the file
        lab = np.load(folder / LABELS, allow_pickle=False)
    except (OSError, ValueError) as e:
        _fail(path, f"readable {LATENTS} and {LABELS} ({type(e).__name__}: {e})")
    if lab.shape != (n,) or lab.dtype.kind not in "iu" or (n and lab.min() < 0):
        _fail(path, f"{LABELS} (N,) int >= 0 for N={n}, not {lab.dtype} {lab.shape}")
    return m, lat, lab.astype(np.int64, copy=False), RowReader(folder / LATENTS, offset, shape, dtype)


# ---- writing (catlab encode; tests and benchmarks make synthetic stores with it) -------------------------
def _atomic_json(path: Path, obj) -> None:
    atomic_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


class StoreWriter:
    """Writes a store of n rows in order, resumably.

    settings: whatever determines the bytes (source, encoder, preprocessing, batch); a folder started with
    other settings is refused (UserError naming the first setting that differs). `done` is the number of
    final rows; `write(start, latents, labels)` writes rows start.. (start == done) and then advances `done`
    in progress.json, so a run killed at any point redoes at most the rows after the last recorded ones.
    `finish(manifest)` writes manifest.json last and removes progress.json."""

    def __init__(self, folder: str | Path, n: int, row_shape: tuple, dtype: str, settings: dict):
        if dtype not in DTYPES:
            raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, but got dtype={dtype!r}")
        self.folder, self.n, self.row_shape, self.dtype = Path(folder), n, tuple(row_shape), np.dtype(dtype)
        self.settings = {**settings, "n": n, "row_shape": list(row_shape), "dtype": dtype}
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        progress = self.folder / PROGRESS
        if (self.folder / MANIFEST).exists():
            raise UserError(f"--out {self.folder} already holds a complete store (manifest.json); "
                            "remove it or pick another --out")
        if progress.exists():
            state = json.loads(progress.read_text())
            old = state.get("settings", {})
            for key in sorted(set(old) | set(self.settings)):
                if old.get(key) != self.settings.get(key):
                    raise UserError(f"--out {self.folder} was started with other settings ({key}: "
                                    f"{old.get(key)!r} then, {self.settings.get(key)!r} now); run the same "
                                    "command as before, or remove the folder to start again")
            self.done = int(state["done"])
            self.offset = npy_offset(self.folder / LATENTS)[0]
        else:
            if self.folder.exists() and any(self.folder.iterdir()):
                raise UserError(f"--out {self.folder} must be a new or empty folder (it holds files but no "
                                "progress.json of an interrupted encode)")
            self.folder.mkdir(parents=True, exist_ok=True)
            self.offset = self._create(self.folder / LATENTS, self.dtype, (n, *self.row_shape))
            self._create(self.folder / LABELS, np.dtype(np.int64), (n,))
            self.done = 0
            _atomic_json(progress, {"settings": self.settings, "done": 0})
        self.label_offset = npy_offset(self.folder / LABELS)[0]

    @staticmethod
    def _create(path: Path, dtype: np.dtype, shape: tuple) -> int:
        """An .npy header for shape, and the file extended to its full size (sparse). Returns the data offset."""
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                     "fortran_order": False, "shape": tuple(shape)})
            offset = f.tell()
            f.truncate(offset + int(np.prod(shape)) * dtype.itemsize)
        return offset

    def write(self, start: int, latents: np.ndarray, labels: np.ndarray) -> None:
        """latents (b, C, H, W), labels (b,): rows start..start+b (start must be `done`)."""
        if start != self.done or start + len(latents) > self.n or len(labels) != len(latents):
            raise ValueError(f"write of {len(latents)} rows at {start}, but {self.done} of {self.n} are done")
        lat = np.ascontiguousarray(latents, dtype=self.dtype)
        if lat.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {lat.shape[1:]}, but the store holds {self.row_shape}")
        for name, offset, arr, row in ((LATENTS, self.offset, lat, self.row_bytes),
                                       (LABELS, self.label_offset, np.ascontiguousarray(labels, np.int64), 8)):
            with open(self.folder / name, "r+b") as f:
                f.seek(offset + start * row)
                f.write(arr.tobytes())
        self.done = start + len(lat)
        _atomic_json(self.folder / PROGRESS, {"settings": self.settings, "done": self.done})

    def finish(self, manifest: dict) -> dict:
        """Write manifest.json (format, shape, dtype, class counts added) and remove progress.json."""
        if self.done != self.n:
            raise ValueError(f"finish with {self.done} of {self.n} rows written")
        labels = np.load(self.folder / LABELS)
        num_classes = max(int(labels.max()) + 1 if self.n else 0, len(manifest.get("class_names", [])))
        for name in (LATENTS, LABELS):
            with open(self.folder / name, "rb+") as f:
                os.fsync(f.fileno())
        full = {"format": FORMAT, "version": VERSION, "shape": [self.n, *self.row_shape], "dtype": str(self.dtype),
                **manifest, "num_classes": num_classes,
                "class_counts": np.bincount(labels, minlength=num_classes).tolist()}
        _atomic_json(self.folder / MANIFEST, full)
        (self.folder / PROGRESS).unlink()
        return full


def write_store(folder: str | Path, latents: np.ndarray, labels: np.ndarray, scale_factor: float = 1.0,
                chunk: int = 4096, **manifest) -> dict:
    """A whole store from arrays (latents already multiplied by scale_factor), written in chunks."""
    lat = latents
    w = StoreWriter(folder, len(lat), lat.shape[1:], str(lat.dtype), {"source": "arrays"})
    for i in range(0, len(lat), chunk):
        w.write(i, lat[i:i + chunk], labels[i:i + chunk])
    return w.finish({"scale_factor": float(scale_factor), "encoder": {}, **manifest})
