"""bench/consistency_gradient.py measures the consistency term where it can act: at each head's output.

Pins: with the anchor attached, head 1 gets no gradient from the term (x_k - x_K = -sum_{j>k} h_j) and
heads 2..K do; with it detached, the last head gets none and head 1 does; the adversarial gradient
reaches every head.
"""
import importlib.util
from pathlib import Path

import pytest

from catlab.config import load_config
from catlab.trainer import train
from conftest import FAST

SPEC = importlib.util.spec_from_file_location("consistency_gradient",
                                              Path(__file__).parents[1] / "bench" / "consistency_gradient.py")
probe = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(probe)


@pytest.mark.parametrize("detach", [False, True])
def test_the_probe_sees_what_the_term_can_move(workdir, detach):
    r = train(load_config(FAST + ["train.steps=2", "run.mlflow=false", f"loss.consistency.detach_anchor={detach}"]))
    rows = {row["head"]: row for row in probe.gradient_norms(str(r.run_dir), batch=8)}
    assert all(rows[str(j)]["adv_out"] > 0 for j in range(1, 5))
    if not detach:
        assert rows["1"]["cons_out"] < 1e-6 * rows["2"]["cons_out"] and "attached" in rows["1"]["note"]
        assert all(rows[str(j)]["cons_out"] > 0 for j in (2, 3, 4))
    else:
        assert rows["4"]["cons_out"] == 0 and "detached" in rows["4"]["note"]
        assert all(rows[str(j)]["cons_out"] > 0 for j in (1, 2, 3))
    assert rows["trunk"]["cons_params"] > 0
