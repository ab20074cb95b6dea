"""catlab.models: shapes, masking, accumulation, invariances, init and FLOP counts (pinned)."""
import pytest
import torch
import torch.nn.functional as F

from catlab.config import ModelConfig
from catlab.models import (DISCRIMINATORS, SIZES, Generator, build_discriminator, build_generator,
                           count_flops, discriminator_stats, generator_stats)
from catlab.models.discriminator import d_patch_size
from catlab.models.generator import head_positions
from catlab.models.layers import swiglu_hidden

R, C, NC = 32, 3, 10


def make_g(size="tiny", seed=0, **kw):
    torch.manual_seed(seed)
    return Generator(R, C, NC, **SIZES[size], **kw)


def make_d(kind="scalewise", size="tiny", seed=0, **kw):
    torch.manual_seed(seed)
    return DISCRIMINATORS[kind](R, C, NC, **SIZES[size], **kw)


def inputs(B=3, z_dim=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, z_dim, generator=g), torch.randint(0, NC, (B,), generator=g)


def images(B=2, seed=2, sizes=(4, 8, 16, 32)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, C, s, s, generator=g) for s in sizes]


# ---- masking: scale-wise D keeps the scales apart, aggregated D does not -----------------------
@pytest.mark.parametrize("kind", ["scalewise", "scalewise-conv", "scalewise-conv-lean"])
@pytest.mark.parametrize("k", range(4))
def test_scalewise_logit_k_has_exactly_zero_gradient_to_other_scales(k, kind):
    D = make_d(kind)
    x = [img.requires_grad_() for img in images()]
    y = torch.tensor([1, 7])
    grads = torch.autograd.grad(D(x, y)[:, k].sum(), x)
    for j, g in enumerate(grads):
        if j == k:
            assert g.abs().sum() > 0
        else:
            assert torch.equal(g, torch.zeros_like(g)), f"logit {k} leaks gradient to scale {j}"


@pytest.mark.parametrize("k", range(4))
def test_aggregated_logit_k_depends_on_every_scale(k):
    D = make_d("aggregated")
    x = [img.requires_grad_() for img in images()]
    grads = torch.autograd.grad(D(x, torch.tensor([1, 7]))[:, k].sum(), x)
    for g in grads:
        assert g.abs().sum() > 1e-6


def test_scalewise_and_aggregated_share_parameters_but_differ_in_output():
    Ds, Da = make_d("scalewise"), make_d("aggregated")
    Da.load_state_dict(Ds.state_dict())
    x, y = images(), torch.tensor([1, 7])
    assert not torch.allclose(Ds(x, y), Da(x, y))


def test_scalewise_patches_and_tokens_at_32px():
    D = make_d("scalewise", d_patch=4)
    assert D.patches == [1, 2, 4, 4]
    assert [e.tokens for e in D.embeds] == [16, 16, 16, 64]
    assert D.starts == [0, 17, 34, 51] and D.mask.shape == (116, 116)
    assert [d_patch_size(s, 2) for s in (4, 8, 16, 32)] == [1, 2, 2, 2]


def test_scalewise_conv_downsamples_each_scale_to_4px_with_doubling_channels():
    D = make_d("scalewise-conv")                              # tiny: width 64, so channels 32 -> 64
    convs = [[(m.in_channels, m.out_channels, m.stride[0]) for m in net.net if isinstance(m, torch.nn.Conv2d)]
             for net in D.nets]
    assert convs[0] == [(3, 32, 1)]                                                # 4 px: the stem only
    assert convs[3] == [(3, 32, 1), (32, 64, 2), (64, 64, 2), (64, 64, 2)]         # 32 -> 16 -> 8 -> 4
    assert [net.width for net in D.nets] == [32, 64, 64, 64]
    x, y = images(), torch.tensor([1, 7])
    assert D(x, y).shape == (2, 4)
    with pytest.raises(ValueError, match=r"shape \(B, 3, 8, 8\)"):
        D([x[0], x[0], x[2], x[3]], y)


def test_scalewise_conv_lean_sets_channels_by_resolution():
    D = make_d("scalewise-conv-lean")                         # tiny: width 64 -> 16 @ 32 px, 32 @ 16, 64 below
    convs = [[(m.in_channels, m.out_channels, m.stride[0]) for m in net.net if isinstance(m, torch.nn.Conv2d)]
             for net in D.nets]
    assert convs[0] == [(3, 64, 1)]
    assert convs[2] == [(3, 32, 1), (32, 64, 2), (64, 64, 2)]
    assert convs[3] == [(3, 16, 1), (16, 32, 2), (32, 64, 2), (64, 64, 2)]
    assert D(images(), torch.tensor([1, 7])).shape == (2, 4)


# ---- shapes of every size ------------------------------------------------------------------------
@pytest.mark.parametrize("size", list(SIZES))
def test_every_size_gives_documented_shapes(size):
    device = "cpu" if size in ("tiny", "small") else "meta"
    B, K = 2, 4
    with torch.device(device):
        G = Generator(R, C, NC, **SIZES[size], patch=4, stages=K)
        z, y = torch.randn(B, G.z_dim), torch.zeros(B, dtype=torch.long)
        scale_imgs, full_imgs = G(z, y, full=True)
        assert (G.num_stages, G.resolution, G.scales, G.width) == (K, R, [4, 8, 16, 32], SIZES[size]["width"])
        assert [tuple(x.shape) for x in scale_imgs] == [(B, C, s, s) for s in (4, 8, 16, 32)]
        assert [tuple(x.shape) for x in full_imgs] == [(B, C, R, R)] * K
        for kind, out in (("scalewise", (B, K)), ("aggregated", (B, K)), ("concat", (B, 1)),
                          ("scalewise-conv", (B, K))):
            D = DISCRIMINATORS[kind](R, C, NC, **SIZES[size], stages=K, d_patch=4)
            assert tuple(D(scale_imgs, y).shape) == out
    if device == "cpu":
        assert all(torch.isfinite(x).all() for x in scale_imgs)


def test_builders_follow_model_config():
    cfg = ModelConfig(size="tiny", d_size="small", discriminator="concat", stages=3, patch=2, z_dim=32)
    G = build_generator(cfg, num_classes=5, resolution=16, channels=1)
    D = build_discriminator(cfg, num_classes=5, resolution=16, channels=1)
    assert (G.width, G.depth, G.z_dim, G.patch, G.scales) == (64, 4, 32, 2, [4, 8, 16])
    assert type(D).__name__ == "ConcatDiscriminator" and D.trunk.norm.weight.shape == (128,)
    z, y = torch.randn(2, 32), torch.tensor([0, 4])
    assert tuple(D(G(z, y), y).shape) == (2, 1)
    assert set(DISCRIMINATORS) == {"scalewise", "aggregated", "concat", "scalewise-conv", "scalewise-conv-lean",
                                 "scalewise-conv-capped"}
    assert set(SIZES) == {"tiny", "small", "S", "B", "M", "H"}


def test_head_positions_are_equal_intervals():
    assert head_positions(24, 4) == [6, 12, 18, 24]
    assert head_positions(4, 4) == [1, 2, 3, 4]
    assert head_positions(12, 5) == [2, 5, 7, 10, 12]       # round(i * 12 / 5)
    assert head_positions(4, 8) == [1, 1, 2, 2, 3, 3, 4, 4]
    G = make_g(stages=5, patch=4)                            # more stages than blocks: heads share block 2
    assert G.head_after == [1, 2, 2, 3, 4] and G.scales == [2, 4, 8, 16, 32]
    assert [tuple(x.shape[-2:]) for x in G(*inputs(2))] == [(s, s) for s in G.scales]


# ---- accumulation and resampling ---------------------------------------------------------------
def test_full_outputs_accumulate_head_outputs_and_scales_are_area_resampled():
    G = make_g()
    head_out = []
    hooks = [h.register_forward_hook(lambda m, i, o: head_out.append(o)) for h in G.heads]
    z, y = inputs()
    with torch.no_grad():
        scale_imgs, full_imgs = G(z, y, full=True)
        plain = G(z, y)
    for h in hooks:
        h.remove()
    head_out = head_out[:4]
    for k in range(4):
        torch.testing.assert_close(full_imgs[k], sum(head_out[: k + 1]), rtol=0, atol=1e-6)
        s = G.scales[k]
        expected = full_imgs[k] if s == R else F.interpolate(full_imgs[k], size=(s, s), mode="area")
        assert torch.equal(scale_imgs[k], expected)
        assert torch.equal(plain[k], scale_imgs[k])
    assert scale_imgs[-1] is full_imgs[-1]
    # area resampling of an 8x8 block average, by hand, for the coarsest scale
    torch.testing.assert_close(scale_imgs[0], full_imgs[0].reshape(3, C, 4, 8, 4, 8).mean((3, 5)))


# ---- determinism and batch-size invariance ------------------------------------------------------
def test_same_seed_same_model_same_output():
    z, y = inputs()
    a, b, c = make_g(seed=5), make_g(seed=5), make_g(seed=6)
    with torch.no_grad():
        out_a, out_b, out_c = a(z, y), b(z, y), c(z, y)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert all(torch.equal(p, q) for p, q in zip(out_a, out_b))
    assert not torch.allclose(out_a[-1], out_c[-1])
    da, db = make_d(seed=5), make_d(seed=5)
    x = images()
    assert torch.equal(da(x, y[:2]), db(x, y[:2]))


def test_generator_is_batch_size_invariant():
    G = make_g()
    z, y = inputs(B=8)
    with torch.no_grad():
        whole = G(z, y)
        for i in (0, 5):
            alone = G(z[i:i + 1], y[i:i + 1])
            for w, a in zip(whole, alone):
                torch.testing.assert_close(w[i:i + 1], a, rtol=0, atol=1e-5)


def test_discriminator_is_batch_size_invariant():
    D = make_d()
    x, y = images(B=6), torch.arange(6)
    with torch.no_grad():
        whole, alone = D(x, y), D([img[2:3] for img in x], y[2:3])
    torch.testing.assert_close(whole[2:3], alone, rtol=0, atol=1e-5)


# ---- initialisation: a GAN can start from here --------------------------------------------------
def test_init_outputs_are_in_range_vary_by_sample_and_every_part_gets_gradient():
    G = make_g()
    z, y = inputs(B=16)
    stages, full = G(z, y, full=True)
    stds = [x.std().item() for x in full]                   # each head ~0.5/sqrt(K), the sum ~0.5
    assert 0.15 < stds[0] < stds[1] < stds[2] < stds[3] < 0.8 and full[-1].abs().max() < 4
    assert all(x.std(0).mean() > 0.01 for x in stages)      # samples differ at step 0, at every scale
    sum(x.square().mean() for x in stages).backward()
    for name, p in G.named_parameters():                    # block attn/FFN wait behind closed gates
        closed = name.startswith("blocks.") and ".ada." not in name
        assert (p.grad.abs().sum() == 0) == closed, name
    for block in G.blocks:                                  # adaLN-zero: gates closed, but they open
        assert block.ada.weight.abs().sum() == 0 and block.ada.weight.grad.abs().sum() > 0
    for head in G.heads:
        assert head.out.weight.grad.abs().sum() > 0


def test_class_and_noise_both_change_the_output():
    G = make_g()
    z, _ = inputs(B=2)
    with torch.no_grad():
        base = G(z, torch.tensor([0, 0]))[-1]
        other_y = G(z, torch.tensor([3, 3]))[-1]
        other_z = G(z.flip(0), torch.tensor([0, 0]))[-1]
    assert (base - other_y).abs().mean() > 1e-3 and (base - other_z.flip(0)).abs().max() < 1e-5
    assert (base[0] - base[1]).abs().mean() > 1e-3


# ---- FLOPs (MACs) and parameters ----------------------------------------------------------------
def test_paper_flops_and_params_within_5_percent():
    m, h = generator_stats("M"), generator_stats("H")          # 256 tokens: 32x32x4 latents, patch 2
    assert abs(m["gflops"] / 46 - 1) < 0.05 and abs(h["gflops"] / 167 - 1) < 0.05
    assert abs(m["params"] / 261e6 - 1) < 0.05 and abs(h["params"] / 960e6 - 1) < 0.05
    assert round(m["gflops"], 2) == 46.16 and round(h["gflops"], 2) == 167.19  # pinned


def test_generator_flops_match_the_hand_formula():
    T, w, depth, K, z, p, ch = 64, 64, 4, 4, 64, 4, 3
    hid = swiglu_hidden(w)
    assert hid == 171 and swiglu_hidden(768) == 2048
    per_block = 6 * w * w + T * (4 * w * w + 3 * w * hid) + 2 * T * T * w
    macs = T * w * w + (z + w) * w + w * w + depth * per_block + K * (2 * w * w + T * w * p * p * ch)
    assert generator_stats("tiny", tokens=T, patch=p, channels=ch, num_classes=NC)["macs"] == macs


def test_flop_count_on_cpu_equals_meta_count():
    G = make_g()
    z, y = inputs(B=1)
    meta = generator_stats("tiny", tokens=64, patch=4, channels=C, num_classes=NC)["macs"]
    assert count_flops(G, z, y) == meta
    d = discriminator_stats("tiny", resolution=R, channels=C, num_classes=NC)["macs"]
    assert count_flops(make_d(), images(B=1), y[:1]) == d


def test_config_validation_uses_the_registries():
    from catlab.errors import UserError
    with pytest.raises(UserError, match="model.size"):
        ModelConfig(size="XL")
    with pytest.raises(UserError, match="model.discriminator"):
        ModelConfig(discriminator="multi")
