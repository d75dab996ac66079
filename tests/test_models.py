"""Tests of spikecodec.models: FEM, AFR, heads, the reconstructor, the registry and cost counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikecodec import DEFAULT_RECONSTRUCTION_MODEL
from spikecodec.models import registry
from spikecodec.models.afr import AFR, AFRConfig, deform_conv3x3_sampled, flow_warp
from spikecodec.models.cost import afr_cost, fem_cost, fem_cost_summary, total_macs
from spikecodec.models.fem import (
    FEM, FEM_WINDOW_AFTER, FEM_WINDOW_BEFORE, FEM_WINDOW_LENGTH, FEMConfig, SpikePrefix, binarize_ste,
    check_moments, extract_features, iter_feature_chunks,
)
from spikecodec.models.heads import HeadConfig, ReconstructionHead
from spikecodec.models.registry import TINY_FEM, TINY_SCI, ModelNotFoundError, WeightsError, load_model
from spikecodec.models.sci import (
    PlainCNN, PlainCNNConfig, SCIConfig, SCIReconstructor, neighbour_moments,
)
from spikecodec.models.weights_io import save_weights

torch.set_num_threads(1)


def random_spikes(shape, p=0.3, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) < p).float()


def tiny_fem(seed=0, **changes) -> FEM:
    torch.manual_seed(seed)
    config = FEMConfig.from_dict({**TINY_FEM.to_dict(), **changes})
    return FEM(config)


# ---------------------------------------------------------------------------------- window


def test_default_window_geometry():
    assert (FEM_WINDOW_BEFORE, FEM_WINDOW_AFTER, FEM_WINDOW_LENGTH) == (39, 6, 46)
    config = FEMConfig()
    assert (config.window_before, config.window_after, config.window_length) == (39, 6, 46)
    ventral_only = FEMConfig(dual_pathway=False)
    assert (ventral_only.window_before, ventral_only.window_after) == (6, 6)


def test_filter_spans_follow_the_paper():
    fem = FEM(FEMConfig())
    # ventral: fields 7/9/11/13 centred on frame 39 of the window
    assert fem.ventral_filter.spans == [(36, 7), (35, 9), (34, 11), (33, 13)]
    # dorsal: 4 windows of 10 sliding backward from t (frames t-9..t, t-19..t-10, ...)
    assert fem.dorsal_filter.spans == [(30, 10), (20, 10), (10, 10), (0, 10)]


def test_fem_reads_exactly_its_window():
    fem = tiny_fem().eval()
    window = random_spikes((1, fem.window_length, 12, 10))
    base = fem(window)
    for frame in (0, fem.window_length - 1):  # the oldest dorsal frame and the newest ventral one
        changed = window.clone()
        changed[0, frame] = 1 - changed[0, frame]
        assert not torch.allclose(fem(changed), base)
    with pytest.raises(ValueError, match="spike windows"):
        fem(window[:, 1:])


def test_invalid_configs_raise():
    with pytest.raises(ValueError, match="odd"):
        FEMConfig(ventral_fields=(7, 8))
    with pytest.raises(ValueError, match="channels"):
        FEMConfig(channels=0)
    with pytest.raises(ValueError, match="unknown FEM config keys"):
        FEMConfig.from_dict({"chanels": 4})
    with pytest.raises(ValueError, match="mode"):
        AFRConfig(mode="flow")
    with pytest.raises(ValueError, match="must equal FEM channels"):
        SCIConfig(fem=FEMConfig(channels=8))


def test_configs_round_trip():
    for config in (TINY_SCI, SCIConfig(), SCIConfig(afr=AFRConfig(mode="warp"))):
        assert SCIConfig.from_dict(config.to_dict()) == config
    assert PlainCNNConfig.from_dict(PlainCNNConfig(width=8).to_dict()) == PlainCNNConfig(width=8)


# ---------------------------------------------------------------------------------- binarized filters


def test_inference_uses_only_binary_weights():
    fem = tiny_fem().eval()
    weights = fem.binarized_weights()
    for tensor in weights.values():
        assert set(torch.unique(tensor).tolist()) <= {0.0, 1.0}
    window = random_spikes((2, fem.window_length, 9, 11))
    out = fem(window)
    # The responses are exactly spike counts with those 0/1 weights, scaled by the sub-filter length.
    expected = F.conv2d(window, weights["ventral"][:, :, None, None]) * fem.ventral_filter.scale.view(1, -1, 1, 1)
    assert torch.equal(fem.ventral_filter(window), expected)
    # Rescaling the latent reals keeps their signs: the inference output must not change at all.
    with torch.no_grad():
        for latent in list(fem.ventral_filter.latent) + list(fem.dorsal_filter.latent):
            latent.mul_(7.3)
    assert torch.equal(fem(window), out)


def test_prefix_sum_path_equals_dense_path():
    fem = tiny_fem(seed=3)
    with torch.no_grad():  # arbitrary, non-contiguous binary patterns
        for latent in list(fem.ventral_filter.latent) + list(fem.dorsal_filter.latent):
            latent.copy_(torch.randn(latent.shape))
    window = random_spikes((3, fem.window_length, 8, 7), seed=1)
    fem.train()
    dense = fem(window)
    fem.eval()
    assert torch.equal(fem(window), dense.detach())
    # the batched inference that devices other than the CPU take
    assert torch.allclose(fem(window, batched=True), dense.detach(), atol=1e-6)


def test_trained_latents_inside_unit_interval_keep_inference_equal_to_training():
    # Latents in (-1, 1), as training leaves them, once made 1 + s - s = 0.99999994 for some s,
    # which the run-length inference path truncated to 0 (a bug caught on a real run).
    fem = tiny_fem(seed=4)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for latent in list(fem.ventral_filter.latent) + list(fem.dorsal_filter.latent):
            latent.copy_(torch.rand(latent.shape, generator=generator) * 1.8 - 0.9)
    fem.train()
    for bank in fem.filter_banks():
        assert set(torch.unique(bank.dense_weight().detach()).tolist()) <= {0.0, 1.0}
    window = random_spikes((2, fem.window_length, 8, 7), seed=2)
    dense = fem(window).detach()
    fem.eval()
    assert torch.equal(fem(window), dense)


@pytest.mark.parametrize("count_skip", [False, True])
def test_strips_equal_whole_frame_and_dense_path(count_skip):
    fem = tiny_fem(seed=4, pfu_layers=2, count_skip=count_skip)
    with torch.no_grad():  # attention that really depends on the input
        for attention in (fem.ventral_attention, fem.dorsal_attention):
            attention.excite.weight.normal_(0, 1.0)
    window = random_spikes((1, fem.window_length, 17, 9), seed=5)
    fem.train()
    dense = fem(window).detach()
    fem.eval()
    prefix = SpikePrefix.of(window[0])
    runs = [bank.runs() for bank in fem.filter_banks()]
    whole = fem.features_from_prefix(prefix, 0, runs=runs, strip_rows=None)
    strips = fem.features_from_prefix(prefix, 0, runs=runs, strip_rows=4)
    assert torch.allclose(whole, dense, atol=1e-5)
    assert torch.allclose(strips, whole, atol=1e-5)


def test_straight_through_estimator_passes_gradients():
    latent = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    binary = binarize_ste(latent)
    assert binary.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    binary.sum().backward()
    assert latent.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # clamp(-1, 1) gradient

    fem = tiny_fem().train()
    fem(random_spikes((2, fem.window_length, 8, 8))).pow(2).mean().backward()
    for latent in fem.ventral_filter.latent:
        assert latent.grad is not None and latent.grad.abs().sum() > 0


def test_extract_features_shares_prefix_sums_exactly():
    fem = tiny_fem().eval()
    spikes = random_spikes((90, 10, 12), seed=2).numpy().astype(np.uint8)
    moments = [39, 40, 55, 83]  # 83 is the last valid moment (83 + 6 = 89)
    features = extract_features(fem, spikes, moments, chunk=3)
    assert features.shape == (4, TINY_FEM.channels, 10, 12)
    for index, t in enumerate(moments):
        window = torch.from_numpy(spikes[t - 39:t + 7]).float()[None]
        assert torch.allclose(features[index], fem(window)[0], atol=1e-6)
    # moments far apart, out of order, with a tiny memory budget: same features, in the given order
    order = [83, 39, 55, 40]
    chunks = list(iter_feature_chunks(fem, spikes, order, chunk=4, prefix_budget_bytes=1))
    assert [part.tolist() for part, _ in chunks] == [[83], [39], [55], [40]]
    spread = torch.cat([block for _, block in chunks])
    assert torch.allclose(spread, features[[3, 0, 2, 1]], atol=1e-6)
    with pytest.raises(ValueError, match="not valid"):
        extract_features(fem, spikes, [38])
    with pytest.raises(ValueError, match="not valid"):
        extract_features(fem, spikes, [84])
    with pytest.raises(ValueError, match="integer"):
        check_moments([40.5], 90, 39, 6)


# ---------------------------------------------------------------------------------- AFR


def test_flow_warp_shifts_by_integer_motion():
    features = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(1, 2, 5, 6)
    flow = torch.zeros(1, 2, 5, 6)
    flow[:, 0] = 1.0  # every pixel reads its right neighbour
    warped = flow_warp(features, flow)
    assert torch.allclose(warped[..., :-1], features[..., 1:])
    with pytest.raises(ValueError, match="motion field"):
        flow_warp(features, torch.zeros(1, 2, 4, 6))


@pytest.mark.parametrize("groups", [1, 2])
def test_sampled_deform_conv_matches_torchvision(groups):
    from torchvision.ops import deform_conv2d

    generator = torch.Generator().manual_seed(groups)
    x = torch.randn(2, 4, 9, 11, generator=generator, requires_grad=True)
    offset = (2.5 * torch.randn(2, 18 * groups, 9, 11, generator=generator)).requires_grad_()
    mask = torch.rand(2, 9 * groups, 9, 11, generator=generator, requires_grad=True)
    weight = torch.randn(3, 4, 3, 3, generator=generator, requires_grad=True)
    bias = torch.randn(3, generator=generator, requires_grad=True)
    reference = deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
    ours = deform_conv3x3_sampled(x, offset, weight, bias, mask)
    assert torch.allclose(ours, reference, atol=1e-4)
    inputs = [x, offset, mask, weight, bias]
    expected = torch.autograd.grad(reference.square().sum(), inputs)
    for got, want in zip(torch.autograd.grad(ours.square().sum(), inputs), expected):
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-3 * want.abs().max().item())


@pytest.mark.parametrize("mode", ["full", "warp", "deform"])
def test_afr_modes_forward_backward(mode):
    torch.manual_seed(0)
    config = AFRConfig(channels=4, mode=mode, motion_channels=8, offset_channels=8, fuse_channels=8)
    afr = AFR(config)
    f_prev, f_cur, f_next = (torch.randn(2, 4, 13, 18, requires_grad=True) for _ in range(3))
    out = afr(f_prev, f_cur, f_next)
    assert out["fused"].shape == (2, 8, 13, 18)
    assert (out["motion_prev"] is None) == (mode == "deform")
    out["fused"].mean().backward()
    assert f_prev.grad is not None and f_prev.grad.abs().sum() > 0


def test_afr_uses_given_motion():
    torch.manual_seed(0)
    afr = AFR(AFRConfig(channels=4, motion_channels=8, offset_channels=8, fuse_channels=8))
    features = [torch.randn(1, 4, 12, 12) for _ in range(3)]
    motion = torch.full((1, 2, 12, 12), 2.0)
    out = afr(*features, motion_prev=motion, motion_next=-motion)
    assert torch.equal(out["motion_prev"], motion) and torch.equal(out["motion_next"], -motion)
    other = afr(*features, motion_prev=torch.zeros_like(motion), motion_next=-motion)
    assert not torch.allclose(out["fused"], other["fused"])
    with pytest.raises(ValueError, match="f_prev"):
        afr(features[0][:, :, :6], features[1], features[2])


def test_quality_aware_afr_starts_as_the_blind_one_and_modulates_per_item():
    torch.manual_seed(0)
    sizes = dict(channels=4, motion_channels=8, offset_channels=8, fuse_channels=8)
    blind = AFR(AFRConfig(**sizes))
    aware = AFR(AFRConfig(**sizes, qualities=3))
    missing, unexpected = aware.load_state_dict(blind.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == sorted(
        f"{name}_{part}" for name in ("input", "fuse1", "fuse2") for part in ("log_scale", "shift"))
    features = [torch.randn(2, 4, 12, 12) for _ in range(3)]
    reference = blind(*features)["fused"]
    assert torch.equal(aware(*features)["fused"], reference)  # no quality: no modulation
    assert torch.allclose(aware(*features, quality=1)["fused"], reference)  # identity at initialisation
    assert torch.equal(blind(*features, quality=2)["fused"], reference)  # a blind AFR ignores the quality
    with torch.no_grad():
        aware.fuse2_shift[2] += 0.5
    per_item = aware(*features, quality=torch.tensor([0, 2]))["fused"]
    assert torch.allclose(per_item[0], reference[0]) and not torch.allclose(per_item[1], reference[1])
    assert torch.allclose(per_item[1:], aware([f[1:] for f in features][0], features[1][1:], features[2][1:],
                                              quality=2)["fused"])
    with pytest.raises(ValueError, match="qualities 0..2"):
        aware(*features, quality=3)
    with pytest.raises(ValueError, match="batch of 2"):
        aware(*features, quality=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="qualities"):
        AFRConfig(**sizes, qualities=-1)


# ---------------------------------------------------------------------------------- reconstructor


def test_tiny_reconstructor_forward_backward():
    torch.manual_seed(0)
    model = SCIReconstructor(TINY_SCI).train()
    windows = random_spikes((2, 3, 46, 16, 20))
    out = model(windows)
    assert out["features"].shape == (2, 4, 16, 20) and out["image"].shape == (2, 1, 16, 20)
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    out["image"].mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    single = model(windows[:, 1])  # one window: the current moment stands in for its neighbours
    assert single["image"].shape == (2, 1, 16, 20)
    with pytest.raises(ValueError, match="spike windows"):
        model(windows[:, :2])


def test_reconstruct_interface():
    model = load_model("sci-tiny-test-recon")
    spikes = random_spikes((100, 14, 17), seed=4).numpy().astype(np.uint8)
    images = model.reconstruct(spikes, [39, 59, 93], chunk=2)
    assert images.shape == (3, 14, 17) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    # One moment at a time gives the same frames as chunks (caching changes nothing).
    again = np.concatenate([model.reconstruct(spikes, [t], chunk=1) for t in (39, 59, 93)])
    np.testing.assert_allclose(images, again, atol=1e-6)
    with pytest.raises(ValueError, match="not valid"):
        model.reconstruct(spikes, [10])
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        model.reconstruct(spikes[0], [39])


def test_neighbours_at_stream_ends_replicate():
    moments = np.array([39, 59, 79])
    previous, following = neighbour_moments(moments, 20, 90, 39, 6)
    assert previous.tolist() == [39, 39, 59]
    assert following.tolist() == [59, 79, 79]


def test_plain_cnn():
    torch.manual_seed(0)
    model = PlainCNN(PlainCNNConfig(width=8, layers=3))
    out = model(random_spikes((2, 41, 10, 10)))["image"]
    assert out.shape == (2, 1, 10, 10)
    spikes = random_spikes((60, 10, 10)).numpy().astype(np.uint8)
    assert model.reconstruct(spikes, [20, 39]).shape == (2, 10, 10)
    with pytest.raises(ValueError, match="not valid"):
        model.reconstruct(spikes, [19])


def test_heads_check_input():
    head = ReconstructionHead(HeadConfig(in_channels=4, width=4, layers=2))
    with pytest.raises(ValueError, match="head expects"):
        head(torch.zeros(1, 3, 5, 5))


# ---------------------------------------------------------------------------------- registry


def test_registry_unknown_and_missing(tmp_path):
    with pytest.raises(ModelNotFoundError, match="known ids: .*sci-tiny-test"):
        load_model("sci-nonexistent")
    with pytest.raises(WeightsError, match="missing"):
        load_model("sci-small-v1", weights_dir=tmp_path)


def test_registry_tiny_is_deterministic_and_untrained():
    spec = registry.get_spec("sci-tiny-test-recon")
    assert spec.untrained and "UNTRAINED" in spec.description
    first, second = load_model("sci-tiny-test-recon"), load_model("sci-tiny-test-recon")
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert not first.training


def test_registry_checks_sha256(tmp_path, monkeypatch):
    torch.manual_seed(5)
    fem = FEM(TINY_FEM)
    path = tmp_path / "fem-x.safetensors"
    digest = save_weights(fem.state_dict(), path, "fem", TINY_FEM.to_dict())
    spec = registry.ModelSpec("fem-x", "fem", TINY_FEM.to_dict(), weights=path.name, sha256=digest)
    monkeypatch.setitem(registry.REGISTRY, "fem-x", spec)
    loaded = load_model("fem-x", weights_dir=tmp_path)
    for a, b in zip(loaded.state_dict().values(), fem.state_dict().values()):
        assert torch.equal(a, b)
    unregistered = registry.ModelSpec("fem-y", "fem", TINY_FEM.to_dict(), weights=path.name)
    monkeypatch.setitem(registry.REGISTRY, "fem-y", unregistered)
    with pytest.raises(WeightsError, match=f"sha256='{digest}'"):
        load_model("fem-y", weights_dir=tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="do not match"):
        load_model("fem-x", weights_dir=tmp_path)


# ---------------------------------------------------------------------------------- cost


def test_fem_cost_counts_per_operation():
    from torch.utils.flop_counter import FlopCounterMode

    fem = tiny_fem().eval()
    height, width = 12, 16
    costs = fem_cost(fem, height, width)
    names = [op.name for op in costs]
    assert names[0].startswith("temporal prefix sum")
    assert costs[0].macs == fem.window_length * height * width
    counted = sum(op.macs for op in costs if op.name.startswith("fem."))
    ventral = torch.zeros(1, fem.ventral_filter.out_channels, height, width)
    dorsal = torch.zeros(1, fem.dorsal_filter.out_channels, height, width)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            fem.fuse(ventral, dorsal)
    assert counted == counter.get_total_flops() // 2  # flop_counter counts 2 flops per MAC
    summary = fem_cost_summary(fem, height, width, stride=20)
    assert summary["macs_per_moment"] == total_macs(costs)
    assert summary["macs_per_moment_shared_prefix_sum"] == total_macs(costs) - 2 * 26 * height * width


def test_default_fem_is_cheap():
    fem = FEM(FEMConfig())
    assert total_macs(fem_cost(fem, 250, 400)) < 1e9  # the end side stays under 1 GMAC per moment


def test_afr_cost_counts_hand_ops():
    torch.manual_seed(0)
    model = SCIReconstructor(TINY_SCI)
    costs = afr_cost(model.afr, 16, 16, model.head)
    names = " ".join(op.name for op in costs)
    assert "grid_sample" in names and "deform_conv2d bilinear" in names
    assert total_macs(costs) > 0 and "quality modulation" not in names
    aware = AFR(AFRConfig.from_dict({**TINY_SCI.afr.to_dict(), "qualities": 4}))
    modulation = [op for op in afr_cost(aware, 16, 16) if "quality modulation" in op.name]
    assert [(op.macs, op.kind) for op in modulation] == [((3 * 4 + 2 * 8) * 16 * 16, "elementwise")]


# ---------------------------------------------------------------------------------- shipped weights


def _shipped(model_id: str) -> bool:
    spec = registry.get_spec(model_id)
    base = registry.get_spec(spec.base) if spec.base else None
    return spec.sha256 is not None and (base is None or base.sha256 is not None)


@pytest.mark.skipif(not _shipped(DEFAULT_RECONSTRUCTION_MODEL), reason="reconstruction weights not shipped yet")
def test_shipped_reconstruction_beats_tfp_on_a_static_scene():
    # sci-small-v3-recon-long: 40.8 dB vs TFP41 35.6 (sci-small-v3-recon 39.0; sci-small-v2-recon, short ventral fields and plain MSE: 33.6)
    from data_tools.photos import load_photo

    from spikecodec.baselines import tfp
    from spikecodec.metrics import psnr
    from spikecodec.simulate import fit_motion_to_image, random_camera_motion, simulate_still

    rng = np.random.default_rng(7)
    height, width, frames = 64, 96, 110
    motion = random_camera_motion(rng, frames, 0.0, height, width)
    image, motion = fit_motion_to_image(load_photo("chelsea"), motion, rng, height, width)
    stream = simulate_still(image, motion, height, width, seed=8)
    moments = [39, 59, 79]
    model = load_model(DEFAULT_RECONSTRUCTION_MODEL)
    ours = psnr(stream.intensity[moments], model.reconstruct(stream.spikes, moments))
    baseline = psnr(stream.intensity[moments], tfp(stream.spikes, moments))
    assert ours > baseline
