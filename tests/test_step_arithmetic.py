"""The step's speed-ups and their arithmetic: where the arithmetic is unchanged (AdamW foreach), the weights
after N steps are bitwise those of the plain for-loop update; where it changes (the conv D in channels_last),
D's logits and gradients equal the contiguous D's up to float rounding, and the faster layout is in use."""
import pytest
import torch

from catlab.checkpoint import safe_load
from catlab.config import load_config
from catlab.data import Batcher, build_dataset
from catlab.phases import build_state
from catlab.trainer import train
from conftest import FAST, state_equal

STEPS = ["train.steps=4", "run.mlflow=false"]


def _weights(result) -> dict:
    return safe_load(result.run_dir / "ckpt" / "last.pt")


def test_foreach_adamw_is_bitwise_the_for_loop_update(workdir, monkeypatch):
    """4 trainer steps with the AdamW the trainer builds (foreach) against the same steps with AdamW's
    per-parameter for-loop: G, D, the EMA and both optimisers' moments are bitwise equal."""
    fast = train(load_config(FAST + STEPS + ["run.root=foreach"]))
    adamw = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW",
                        lambda params, **kw: adamw(params, **{**kw, "foreach": False, "fused": False}))
    plain = train(load_config(FAST + STEPS + ["run.root=plain"]))
    a, b = _weights(fast), _weights(plain)
    for key in ("G", "D", "G_ema"):
        assert state_equal(a[key], b[key]), key
    for key in ("opt_g", "opt_d"):                       # the moments; param_groups differ in the kernel flags only
        assert state_equal(a[key]["state"], b[key]["state"]), key
        assert [{**g, "foreach": None, "fused": None} for g in a[key]["param_groups"]] == \
            [{**g, "foreach": None, "fused": None} for g in b[key]["param_groups"]]


def _conv_d(layout: str):
    cfg = load_config(FAST + STEPS + [f"train.channels_last={layout == 'channels_last'}"])
    data = build_dataset(cfg.data)
    torch.manual_seed(0)
    return build_state(cfg, data.num_classes, data.channels, Batcher(data, 8, seed=0), torch.device("cpu")).D


def test_channels_last_d_is_in_use_and_equals_contiguous_to_rounding():
    """train.channels_last=true puts every conv weight of the scale-wise conv D in channels_last. The same
    weights and inputs give the same logits, weight gradients (D's update) and input gradients (what G
    receives) as the contiguous D up to float rounding, but not bitwise: the kernels sum in another order.
    The ViT D (no 4-D weights) is unaffected. (Weights after several AdamW steps are no test of rounding:
    the first update is lr * sign(g), so a gradient near 0 may flip it.)"""
    last, flat = _conv_d("channels_last"), _conv_d("contiguous")
    convs = [p for p in last.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                         for p in convs)
    assert all(p.is_contiguous() for p in flat.parameters())
    assert all(torch.equal(a, b) for a, b in zip(last.parameters(), flat.parameters()))
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(16, 3, s, s, generator=g) for s in last.scales]
    y = torch.randint(0, last.num_classes, (16,), generator=g)
    out = {}
    for name, D in (("last", last), ("flat", flat)):
        x = [v.clone().requires_grad_(True) for v in images]
        logits = D(x, y)
        (logits * torch.linspace(-1, 1, logits.numel()).reshape(logits.shape)).sum().backward()
        out[name] = [logits.detach()] + [v.grad for v in x] + [p.grad for p in D.parameters()]
    bitwise = True
    for a, b in zip(out["last"], out["flat"]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max())), (a - b).abs().max()
        bitwise = bitwise and torch.equal(a, b)
    assert not bitwise, "bitwise equal: the channels_last D did not run other kernels"

    cfg = load_config(FAST + ["model.discriminator=scalewise"])
    data = build_dataset(cfg.data)
    vit = build_state(cfg, data.num_classes, data.channels, Batcher(data, 8, seed=0), torch.device("cpu")).D
    assert cfg.train.channels_last and all(p.is_contiguous() for p in vit.parameters())


def test_bf16_trains_in_bf16_with_fp32_master_weights(workdir):
    """train.precision=bf16: the forwards of G's linear layers and of D's convolutions run in bf16 during the
    steps, while every weight, EMA weight and optimiser moment stays fp32 (the master copy AdamW updates);
    the run finishes (finite losses) and ends with other weights than the same run in fp32."""
    seen = {"G": set(), "D": set()}

    def watch(step, s):                  # after step 1: record the dtypes that steps 2 and 3 compute in
        if step != 1:
            return
        for name, net, kind in (("G", s.G, torch.nn.Linear), ("D", s.D, torch.nn.Conv2d)):
            for m in net.modules():
                if isinstance(m, kind):
                    m.register_forward_hook(lambda mod, inp, out, name=name: seen[name].add(out.dtype))
    from catlab.trainer import Hooks
    half = train(load_config(FAST + ["train.steps=3", "run.mlflow=false", "run.root=bf16", "train.precision=bf16"]),
                 Hooks(step_fn=watch))
    full = train(load_config(FAST + ["train.steps=3", "run.mlflow=false", "run.root=fp32"]))
    assert half.status == "FINISHED", half.reason
    assert seen == {"G": {torch.bfloat16}, "D": {torch.bfloat16}}, seen
    a = _weights(half)
    tensors = [*a["G"].values(), *a["D"].values(), *a["G_ema"].values(),
               *(v for k in ("opt_g", "opt_d") for st in a[k]["state"].values() for v in st.values())]
    assert all(t.dtype == torch.float32 for t in tensors if t.is_floating_point() and t.dim() > 0)
    assert not state_equal(a["G"], _weights(full)["G"])


def _one_step(overrides: list[str]):
    """One step of the phases the trainer runs (D, then G) on a real batch; returns (stats, state)."""
    from contextlib import nullcontext

    from catlab.data import pyramid
    from catlab.phases import make_phases
    cfg = load_config(FAST + ["run.mlflow=false", *overrides])
    data = build_dataset(cfg.data)
    s = build_state(cfg, data.num_classes, data.channels, Batcher(data, 8, seed=0), torch.device("cpu"))
    real, y = next(s.batcher)
    real, stats = pyramid(real, s.G.scales, cfg.data.resampler), {}
    for phase in make_phases(cfg, s, nullcontext):
        stats.update(phase.fn(0, real, y))
    return stats, s


def test_both_players_losses_are_the_scale_weighted_sums_and_final_only_leaves_the_coarse_cnns_untouched():
    from catlab.losses import scale_weights
    stats, _ = _one_step(["loss.scale_weights=1,2,3,4"])
    w = scale_weights("1,2,3,4", 4)
    for total, part in (("d_loss", "d_loss_s"), ("g_loss", "g_adv_s")):
        want = sum(float(w[i]) * float(stats[f"{part}{i + 1}"]) for i in range(4))
        assert float(stats[total]) == pytest.approx(want, rel=1e-6), total
    _, s = _one_step(["loss.scale_weights=final-only", "loss.reg.kind=none"])   # the conv D: a CNN per scale
    for net in s.D.nets[:-1]:
        assert all(p.grad is None or not p.grad.any() for p in net.parameters())
    assert any(p.grad is not None and p.grad.any() for p in s.D.nets[-1].parameters())
