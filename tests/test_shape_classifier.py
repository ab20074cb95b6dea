"""catlab.metrics.shape_classifier: the packaged colour-blind shape classifier and shape_acc.

Pins: it recognises fresh real shapes at 16 and 32 px whatever their colour family, it scores exactly
chance (1/10) on images that carry no shape, uint8 and float inputs agree, batch size does not matter,
and its training is deterministic (slow).
"""
import pytest
import torch

from catlab.errors import UserError
from catlab.metrics.shape_classifier import (HELDOUT_SEED, SCORERS, TRAIN_SEED, WEIGHTS, colour_blind_shapes,
                                             layouts_images,
                                             load_shape_classifier, predict, shape_accuracy, train)
from catlab.data.pyramid import resample
from catlab.data.shapes import CLASS_NAMES, render, shape_params

FRESH_SEED = 2024                      # neither the classifier's training nor its held-out images


def test_packaged_weights_meta():
    meta = torch.load(WEIGHTS, weights_only=True)["meta"]
    acc = meta["heldout_accuracy"]
    assert acc["32px"] >= 0.97 and acc["16px"] >= 0.97 and acc["8px"] >= 0.6
    assert meta["train_seed"] == TRAIN_SEED and meta["heldout_seed"] == HELDOUT_SEED


@pytest.mark.parametrize("size", [16, 32])
def test_recognises_fresh_shapes(size):
    x, y = colour_blind_shapes(500, FRESH_SEED)
    assert shape_accuracy(resample(x, size, "area"), y) >= 0.95


def test_colour_does_not_decide():
    """The same 200 shapes drawn in every class's colour family: each family scores well, so it is the shape."""
    labels, params = shape_params(200, FRESH_SEED, len(CLASS_NAMES))
    for colour in range(len(CLASS_NAMES)):
        x = torch.empty(200, 3, 32, 32)
        for c in range(len(CLASS_NAMES)):
            idx = (labels == c).nonzero()[:, 0]
            x[idx] = render(c, params[idx], 32, colour=colour) * 2 - 1
        assert shape_accuracy(x, labels) >= 0.85, CLASS_NAMES[colour]


def test_no_shape_scores_exactly_chance():
    """Flat images of any colour standardise to zeros: one prediction for all, so balanced labels give 1/10."""
    flat = torch.rand(50, 3, 1, 1).expand(-1, -1, 32, 32) * 2 - 1
    labels = torch.arange(50) % 10
    assert shape_accuracy(flat, labels) == pytest.approx(0.1)
    assert len(set(predict(flat).tolist())) == 1


def test_uint8_float_and_batch_size_agree():
    x, y = colour_blind_shapes(64, FRESH_SEED)
    u8 = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    p = predict(x, batch=64)
    assert torch.equal(predict(x, batch=5), p)
    assert (predict(u8) == p).float().mean() >= 0.98          # uint8 rounding may flip a borderline image
    assert shape_accuracy(x, y, batch=7) == shape_accuracy(x, y, batch=64)


def test_the_layouts_scorer_is_its_own_and_recognises_fresh_layouts():
    """shape_acc of the main study: `layouts` images are scored by the layouts classifier (data="layouts"),
    which recognises fresh ones at 32 and 16 px (the shapes classifier scores 0.58 on these 300 images)."""
    meta = torch.load(SCORERS["layouts"].weights, weights_only=True)["meta"]
    assert meta["dataset"] == "layouts" and meta["heldout_accuracy"]["32px"] >= 0.97
    x, y = layouts_images(300, FRESH_SEED)
    assert shape_accuracy(x, y, data="layouts") >= 0.95
    assert shape_accuracy(resample(x, 16, "area"), y, data="layouts") >= 0.85


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="as many labels"):
        shape_accuracy(torch.zeros(3, 3, 16, 16), torch.zeros(2, dtype=torch.long))
    with pytest.raises(UserError, match="python -m catlab.metrics.shape_classifier"):
        load_shape_classifier(tmp_path / "missing.pt")


@pytest.mark.slow
def test_training_is_deterministic(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    train(epochs=1, n=1000, heldout=200, out=a)
    train(epochs=1, n=1000, heldout=200, out=b)
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa["meta"] == sb["meta"]
    for k in sa["state_dict"]:
        assert torch.equal(sa["state_dict"][k], sb["state_dict"][k]), k
