"""Tests of spikecodec.training: smoothness measures, data determinism, checkpoints, DDP, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from click.testing import CliRunner

from spikecodec.models.registry import TINY_SCI
from spikecodec.training import (
    Clip, TrainConfig, clip_geometry, feature_smoothness, image_loss, laplacian_norms, load_checkpoint, make_clip,
    smoothness_penalty, train, training_batches,
)

torch.set_num_threads(1)

TINY_A = {"fem": TINY_SCI.fem.to_dict(), "proxy_width": 4}
TINY_B = {key: value for key, value in TINY_SCI.to_dict().items() if key != "fem"}
FAKE_PHOTOS = {"train": [np.zeros((4, 4), np.float32)], "val": [np.zeros((4, 4), np.float32)]}


def fake_clip(config, photos, rng, size, geometry, speed_bin=None) -> Clip:
    """A cheap stand-in for S-Motion: a static random smooth scene, Bernoulli spikes at 0.6 * I."""
    length, before, _ = geometry
    coarse = rng.random((3, 3))
    intensity = np.kron(coarse, np.ones((size // 3 + 1, size // 3 + 1)))[:size, :size].astype(np.float32)
    spikes = (rng.random((length, size, size)) < 0.6 * intensity).astype(np.uint8)
    gt = np.repeat(intensity[None], config.moment_range, axis=0)
    return Clip(spikes=spikes, gt=gt, first_moment=before, speed_bin=speed_bin or "slow")


def tiny_config(**changes) -> TrainConfig:
    base = dict(stage="a", model=TINY_A, steps=4, steps_per_epoch=2, batch_size=2, crop=12,
                pool_size=3, pool_refresh=1, val_samples=2, val_crop=12, log_every=1, lr=1e-2,
                warmup_steps=1)
    base.update(changes)
    return TrainConfig(**base)


def run(config, out, **kwargs):
    return train(config, out, progress=False, make=fake_clip, photos=FAKE_PHOTOS, **kwargs)


# ---------------------------------------------------------------------------------- smoothness


def test_laplacian_norms():
    ramp = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 2, 8, 10).contiguous()
    assert laplacian_norms(ramp)["l1"] == 0 and laplacian_norms(ramp)["l2"] == 0
    spike = torch.zeros(1, 1, 5, 5)
    spike[0, 0, 2, 2] = 1.0
    norms = laplacian_norms(spike)
    assert norms["l1"] == pytest.approx(8 / 9)  # |-4| + 4 * |1| over 3x3 interior pixels
    assert norms["l2"] == pytest.approx(20 / 9)


def test_feature_smoothness_on_clips():
    from spikecodec.models.fem import FEM

    config = tiny_config()
    clips = [fake_clip(config, None, np.random.default_rng(i), 12, clip_geometry(config)) for i in range(2)]
    torch.manual_seed(0)
    norms = feature_smoothness(FEM(TINY_SCI.fem), clips, config.moment_range)
    assert set(norms) == {"l1", "l2", "l1_relative", "l2_relative"} and norms["l2"] > 0


def test_smoothness_penalty_ignores_scale():
    features = torch.randn(2, 3, 10, 10)
    for norm in ("l1", "l2"):
        assert smoothness_penalty(3 * features, norm).item() == pytest.approx(
            smoothness_penalty(features, norm).item(), rel=1e-5)
    smooth = torch.linspace(0, 1, 10).view(1, 1, 1, 10).expand(2, 3, 10, 10)
    assert smoothness_penalty(smooth + 0.01 * features) < smoothness_penalty(features)
    with pytest.raises(ValueError, match="norm"):
        smoothness_penalty(features, "l3")


# ---------------------------------------------------------------------------------- data


def test_batches_depend_only_on_seed_rank_and_step():
    config = tiny_config()
    from_start = training_batches(config, 0, 0, FAKE_PHOTOS["train"], fake_clip)
    for _ in range(3):
        _, batch_3 = next(from_start)
    step, resumed = next(training_batches(config, 0, 2, FAKE_PHOTOS["train"], fake_clip))
    assert step == 2
    assert torch.equal(batch_3["spikes"], resumed["spikes"]) and torch.equal(batch_3["gt"], resumed["gt"])
    _, other_rank = next(training_batches(config, 1, 2, FAKE_PHOTOS["train"], fake_clip))
    assert not torch.equal(other_rank["spikes"], resumed["spikes"])
    length, before, after = clip_geometry(config)
    assert (before, after) == (59, 26) and resumed["spikes"].shape == (2, before + 1 + after, 12, 12)


def test_clip_workers_give_the_same_batches():
    config = tiny_config()
    in_process = training_batches(config, 0, 1, FAKE_PHOTOS["train"], fake_clip)
    with_workers = training_batches(dataclasses.replace(config, data_workers=2), 0, 1, FAKE_PHOTOS["train"], fake_clip)
    for _ in range(4):
        (step, expected), (same_step, batch) = next(in_process), next(with_workers)
        assert step == same_step
        assert torch.equal(expected["spikes"], batch["spikes"]) and torch.equal(expected["gt"], batch["gt"])
    with_workers.close()
    with pytest.raises(ValueError, match="data_workers"):
        dataclasses.replace(config, data_workers=-1)


def test_real_clips_come_from_smotion():
    config = tiny_config(crop=16)
    geometry = clip_geometry(config)
    photos = [np.random.default_rng(0).random((64, 64)).astype(np.float32)]
    clip = make_clip(config, photos, np.random.default_rng(1), 16, geometry, "fast")
    assert clip.spikes.shape == (geometry[0], 16, 16) and clip.gt.shape == (config.moment_range, 16, 16)
    assert clip.spikes.dtype == np.uint8 and 0 < clip.spikes.mean() < 0.6


def test_invalid_training_configs():
    with pytest.raises(ValueError, match="stage"):
        TrainConfig(stage="c")
    with pytest.raises(ValueError, match="fem_weights"):
        TrainConfig(stage="b")
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"stepz": 3})


# ---------------------------------------------------------------------------------- training


def test_resume_matches_uninterrupted(tmp_path):
    config = tiny_config()
    whole = run(config, tmp_path / "whole")
    run(config, tmp_path / "parts", until=2)
    state = json.loads((tmp_path / "parts" / "checkpoint.json").read_text())
    assert state["step"] == 2
    resumed = run(config, tmp_path / "parts", resume=True)
    assert resumed.step == 4
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    log = [json.loads(line) for line in (tmp_path / "parts" / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e["event"] == "train"] == [1, 2, 3, 4]
    assert [e["step"] for e in log if e["event"] == "val"] == [2, 4]
    assert (tmp_path / "parts" / "fem.safetensors").exists()


def test_resume_refuses_another_config(tmp_path):
    run(tiny_config(), tmp_path, until=2)
    with pytest.raises(ValueError, match="differs in"):
        run(tiny_config(lr=5e-3), tmp_path, resume=True)
    config = tiny_config()
    from spikecodec.training import build_training_model, lr_schedule

    model = build_training_model(config, torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(config))
    assert load_checkpoint(tmp_path, model, optimizer, scheduler, config)["step"] == 2


def test_stage_b_keeps_the_fem_frozen(tmp_path):
    stage_a = run(tiny_config(), tmp_path / "a")
    config = tiny_config(stage="b", model=TINY_B, fem_weights=str(tmp_path / "a"), steps=2)
    result = run(config, tmp_path / "b")
    for a, b in zip(stage_a.model.fem.state_dict().values(), result.model.fem.state_dict().values()):
        assert torch.equal(a, b)
    assert result.last_validation is not None and np.isfinite(result.last_validation["psnr"])
    assert (tmp_path / "b" / "analysis.safetensors").exists()


def test_cnn_stage_runs(tmp_path):
    result = run(tiny_config(stage="cnn", model={"width": 4, "layers": 2}, steps=2), tmp_path)
    assert result.step == 2 and (tmp_path / "plain-cnn.safetensors").exists()


def test_log_mse_loss_is_the_mean_log_of_each_sample():
    gt = torch.zeros(2, 1, 4, 4)
    image = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.01)])
    loss, mse = image_loss(image, gt, "log_mse")
    assert loss.item() == pytest.approx((np.log(0.01) + np.log(1e-4)) / 2, rel=1e-5)
    assert mse.item() == pytest.approx((0.01 + 1e-4) / 2, rel=1e-5)
    assert image_loss(image, gt, "mse")[0].item() == pytest.approx(mse.item())
    with pytest.raises(ValueError, match="image_loss"):
        TrainConfig(image_loss="l1")


def test_init_weights_start_a_stage_from_trained_weights(tmp_path):
    cnn = {"width": 4, "layers": 2}
    first = run(tiny_config(stage="cnn", model=cnn, steps=2), tmp_path / "first")
    again = tiny_config(stage="cnn", model=cnn, steps=2, init_weights=str(tmp_path / "first" / "plain-cnn.safetensors"),
                        image_loss="log_mse")
    from spikecodec.training import build_training_model

    for a, b in zip(first.model.state_dict().values(), build_training_model(again, torch.device("cpu")).state_dict().values()):
        assert torch.equal(a, b)
    assert run(again, tmp_path / "again").step == 2

    run(tiny_config(), tmp_path / "a")
    b_config = tiny_config(stage="b", model=TINY_B, fem_weights=str(tmp_path / "a"), steps=2)
    trained_b = run(b_config, tmp_path / "b").model
    exported = str(tmp_path / "b" / "analysis.safetensors")  # AFR and head only
    started = build_training_model(dataclasses.replace(b_config, init_weights=exported), torch.device("cpu"))
    for (name, a), b in zip(trained_b.state_dict().items(), started.state_dict().values()):
        assert torch.equal(a, b), name
    # weights that hold a FEM (as a registry reconstructor does) must hold the one of fem_weights
    from safetensors.torch import save_file

    save_file(trained_b.state_dict(), str(tmp_path / "whole.safetensors"))
    run(tiny_config(seed=5), tmp_path / "a2")
    with pytest.raises(ValueError, match="another FEM"):
        build_training_model(dataclasses.replace(b_config, fem_weights=str(tmp_path / "a2"),
                                                 init_weights=str(tmp_path / "whole.safetensors")),
                             torch.device("cpu"))
    with pytest.raises(ValueError, match="init_weights applies"):
        tiny_config(init_weights=str(tmp_path / "b" / "analysis.safetensors"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = run(tiny_config(steps=3, steps_per_epoch=3), out)
        flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world_size)]
        dist.all_gather(gathered, flat)
        torch.manual_seed(0)
        initial = torch.cat([p.flatten() for p in tiny_initial_model().parameters()])
        if rank == 0:
            report = {
                "equal": all(torch.equal(gathered[0], g) for g in gathered[1:]),
                "moved": not torch.equal(gathered[0], initial),
            }
            with open(os.path.join(out, "ddp.json"), "w") as handle:
                json.dump(report, handle)
    finally:
        dist.destroy_process_group()


def tiny_initial_model():
    from spikecodec.training import build_training_model

    return build_training_model(tiny_config(), torch.device("cpu"))


def test_ddp_two_processes_keep_parameters_equal(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    report = json.loads((tmp_path / "ddp.json").read_text())
    assert report == {"equal": True, "moved": True}
    assert (tmp_path / "checkpoint.json").exists()


# ---------------------------------------------------------------------------------- CLI


def test_cli_train(tmp_path):
    from spikecodec.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["train", "--stage", "b", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "fem_weights" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stage": "a", "nonsense": 1}))
    result = runner.invoke(main, ["train", "--config", str(bad), "--out", str(tmp_path)])
    assert result.exit_code != 0 and "unknown training config keys" in result.output
    # init weights whose FEM lacks the count_skip path of fem_weights' FEM; an unknown id
    result = runner.invoke(main, ["train", "--stage", "b", "--fem-weights", "sci-small-v2", "--init-weights",
                                  "sci-small-v1-recon", "--out", str(tmp_path / "ft")])
    assert result.exit_code == 1 and "holds another FEM" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["train", "--stage", "cnn", "--init-weights", "no-such-model", "--out", str(tmp_path / "ft")])
    assert result.exit_code == 1 and "unknown model id 'no-such-model'" in result.output
    assert not (tmp_path / "ft").exists()
    assert runner.invoke(main, ["train", "--help"]).exit_code == 0


@pytest.mark.slow
def test_loss_decreases_on_real_clips(tmp_path):
    config = TrainConfig(stage="a", model=TINY_A, steps=150, steps_per_epoch=150, batch_size=4, crop=32,
                         pool_size=8, val_samples=3, val_crop=48, log_every=10, lr=3e-3)
    train(config, tmp_path, progress=False)
    losses = [json.loads(line)["mse"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "train"]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


# ---------------------------------------------------------------------------------- stage c


def _codec_config(stage: str, **changes) -> TrainConfig:
    from spikecodec.models.codec import TINY_CODEC_CONFIG

    model = {**TINY_CODEC_CONFIG.to_dict(), "lambdas": [4.0, 16.0, 64.0, 256.0]} if stage == "c1" else {}
    settings = dict(stage=stage, model=model, analysis_weights="sci-tiny-test-recon", crop=32, val_crop=32,
                    steps=2, steps_per_epoch=2)
    return tiny_config(**{**settings, **changes})


def test_codec_stages_give_the_analysis_the_quality_each_sample_was_coded_at(tmp_path, monkeypatch):
    """As decode does: a quality-aware analysis is modulated for the sample's quality."""
    from spikecodec.models.sci import SCIReconstructor

    seen = []
    analyze = SCIReconstructor.analyze

    def recording(self, *args, quality=None, **kwargs):
        seen.append(quality)
        return analyze(self, *args, quality=quality, **kwargs)

    monkeypatch.setattr(SCIReconstructor, "analyze", recording)
    run(_codec_config("c1", steps=1), tmp_path / "c1")
    assert seen and all(isinstance(q, torch.Tensor) and q.dtype == torch.long for q in seen)
    assert all(0 <= int(v) < 4 for q in seen for v in q)


def test_stage_c1_then_c2_export_a_working_codec(tmp_path):
    from spikecodec.models.codec import LATENT_NAMES
    from spikecodec.training import load_codec_weights

    result = run(_codec_config("c1"), tmp_path / "c1")
    assert set(result.exported) == {"codec.safetensors", "weights.safetensors"}
    validation = result.last_validation
    assert set(validation["psnr_by_quality"]) == {"0", "1", "2", "3"}
    assert all(v > 0 for v in validation["spike_bpp_by_quality"].values())
    log = [json.loads(line) for line in (tmp_path / "c1" / "train_log.jsonl").read_text().splitlines()]
    assert {"rate", "mse", "feature_mse"} <= set(log[0])

    codec = load_codec_weights(str(tmp_path / "c1")).eval()
    features = torch.randn(1, 4, 20, 28)
    coded = codec.compress(features, 1)
    decoded = codec.decompress(coded["strings"], coded["shapes"], 1)
    for name in LATENT_NAMES["I"]:
        assert torch.equal(coded["latents"][name], decoded["latents"][name])

    before = {k: v.clone() for k, v in codec.state_dict().items()}
    result = run(_codec_config("c2", codec_weights=str(tmp_path / "c1")), tmp_path / "c2")
    assert {"codec.safetensors", "analysis.safetensors"} <= set(result.exported)
    tuned = load_codec_weights(str(tmp_path / "c2"))
    after = tuned.state_dict()
    # the encoder side and what sets the CDFs are frozen; the decoder side moved
    for name in ("intra.g_a.0.weight", "inter.contextual_encoder.0.weight", "intra.h_s.layers.0.weight"):
        if name in before:
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["intra.g_s.0.weight"], after["intra.g_s.0.weight"])
    assert not torch.equal(before["fmvr.delta.weight"], after["fmvr.delta.weight"])


def test_stage_densities_refits_only_what_sets_probabilities(tmp_path):
    from spikecodec.models.codec import with_hyperprior_per_quality
    from spikecodec.training import load_codec_weights

    run(_codec_config("c1"), tmp_path / "c1")
    result = run(_codec_config("densities", codec_weights=str(tmp_path / "c1"), steps=8, steps_per_epoch=8,
                               lr=0.05, log_every=1), tmp_path / "d")
    assert "codec.safetensors" in result.exported
    log = [json.loads(line) for line in (tmp_path / "d" / "train_log.jsonl").read_text().splitlines()]
    rates = [entry["rate"] for entry in log if entry["event"] == "train"]
    assert np.mean(rates[-2:]) < np.mean(rates[:2])

    before = load_codec_weights(str(tmp_path / "c1")).eval()
    after = load_codec_weights(str(tmp_path / "d")).eval()
    assert not before.config.hyperprior_per_quality and after.config.hyperprior_per_quality
    start = with_hyperprior_per_quality(before).state_dict()
    moved = {name for name, value in after.state_dict().items() if not torch.equal(value, start[name])}
    kinds = ("entropy_bottleneck", "heads.scale", "scale_offset")
    assert all(any(kind in name for name in moved) for kind in kinds), sorted(moved)
    assert all(any(kind in name for kind in kinds) for name in moved), sorted(moved)
    # z^ is rounded around unchanged medians, the scales pick CDFs only: the same features decode
    # to the same values
    torch.manual_seed(0)
    frames = [torch.randn(1, 4, 20, 28) for _ in range(3)]
    for quality in (0, 3):
        state_before = state_after = None
        for frame in frames:
            coded_before = before.compress(frame, quality, state_before)
            coded_after = after.compress(frame, quality, state_after)
            decoded = after.decompress(coded_after["strings"], coded_after["shapes"], quality, state_after)
            assert torch.equal(coded_before["x_hat"], decoded["x_hat"])
            state_before, state_after = coded_before["state"], decoded["state"]


@pytest.mark.parametrize("stage, frames, coder, trained", [
    ("intra", 2, "intra.", ("intra.g_s.", "intra.g_a.")),
    ("inter", 4, "inter.", ("inter.contextual_encoder.", "inter.contextual_decoder.")),
])
def test_stages_intra_and_inter_train_only_their_coder(tmp_path, stage, frames, coder, trained):
    from spikecodec.training import load_codec_weights

    run(_codec_config("c1"), tmp_path / "c1")
    result = run(_codec_config(stage, codec_weights=str(tmp_path / "c1"), codec_frames=frames, steps=3,
                               steps_per_epoch=3), tmp_path / stage)
    assert "codec.safetensors" in result.exported
    before = load_codec_weights(str(tmp_path / "c1")).state_dict()
    after = load_codec_weights(str(tmp_path / stage)).state_dict()
    moved = {name for name, value in after.items() if not torch.equal(value, before[name])}
    for prefix in trained:
        assert any(name.startswith(prefix) for name in moved), sorted(moved)
    # the CDF tables are rebuilt at export for every coder; no trained weight of the other coder moves
    assert all(name.startswith(coder) or "_cdf" in name or "_offset" in name or "quantiles" in name
               for name in moved), sorted(moved)


def test_stage_c_needs_its_inputs():
    with pytest.raises(ValueError, match="analysis_weights"):
        TrainConfig(stage="c1")
    for stage in ("c2", "densities", "intra", "inter"):
        with pytest.raises(ValueError, match="codec_weights"):
            TrainConfig(stage=stage, analysis_weights="sci-tiny-test-recon")
    # intra reconstructs the I frame and its next neighbour, inter a P frame and its two neighbours
    with pytest.raises(ValueError, match="codec_frames"):
        TrainConfig(stage="intra", analysis_weights="sci-tiny-test-recon", codec_weights="x", codec_frames=1)
    with pytest.raises(ValueError, match="codec_frames"):
        TrainConfig(stage="inter", analysis_weights="sci-tiny-test-recon", codec_weights="x", codec_frames=2)


def test_stage_c1_resumes_to_the_same_weights(tmp_path):
    whole = run(_codec_config("c1", steps=3, steps_per_epoch=1), tmp_path / "whole")
    run(_codec_config("c1", steps=3, steps_per_epoch=1), tmp_path / "parts", until=1)
    resumed = run(_codec_config("c1", steps=3, steps_per_epoch=1), tmp_path / "parts", resume=True)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
