"""catlab.data.photo_crops: an image folder of real photos, offline and deterministic."""
import hashlib

import pytest

from catlab.config import DataConfig
from catlab.data import build_dataset
from catlab.data.photo_crops import make, sources
from catlab.errors import UserError


def digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*.png")))).hexdigest()


def test_crops_load_as_an_image_folder_and_repeat_exactly(tmp_path):
    assert {"china", "flower", "grace_hopper"} <= set(sources())
    counts = make(tmp_path / "a", n_per_class=4, seed=3)
    make(tmp_path / "b", n_per_class=4, seed=3)
    make(tmp_path / "c", n_per_class=4, seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    ds = build_dataset(DataConfig(name=f"imagefolder:{tmp_path / 'a'}", n=0))
    assert ds.class_names == sorted(counts) and len(ds) == 4 * len(counts) and ds.images.shape[1:] == (3, 32, 32)
    assert ds.images.float().std() > 20                               # photos, not flat images
    with pytest.raises(UserError, match="empty or new folder"):
        make(tmp_path / "a", n_per_class=1)
