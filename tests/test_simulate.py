"""Tests of the integrate-and-fire simulator (spikecodec.simulate) and `simulate still`."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner

from spikecodec import baselines
from spikecodec import simulate as sim
from spikecodec.cli import main
from spikecodec.metrics import psnr

SAMPLE = Path(sim.__file__).resolve().parent / "data" / "sample.png"


def constant(intensity: float, frames: int, shape=(16, 16)) -> np.ndarray:
    return np.full((frames,) + shape, intensity, dtype=np.float32)


def tfp(spikes: np.ndarray, moment: int, window: int) -> np.ndarray:
    return baselines.tfp(spikes, [moment], window=window)[0]


# --- integrate and fire ---------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.6, 0.3, 1.0])
@pytest.mark.parametrize("intensity", [0.05, 0.37, 0.8, 1.0])
def test_mean_firing_rate_is_rate_times_intensity(rate, intensity):
    frames = 1000
    spikes = sim.integrate_and_fire(constant(intensity, frames), rate=rate, seed=1)
    assert spikes.dtype == np.uint8 and set(np.unique(spikes)) <= {0, 1}
    counts = spikes.sum(axis=0, dtype=np.int64)
    # Reset by subtraction keeps the remainder: every pixel's count is within 1 of T * rate * I,
    # so the mean firing rate is rate * I within 1 / T.
    assert np.all(np.abs(counts - frames * rate * intensity) <= 1.0 + 1e-3)
    assert abs(spikes.mean() - rate * intensity) <= 1.0 / frames


def test_reset_by_subtraction_gives_three_spikes_every_five_frames():
    spikes = sim.integrate_and_fire(constant(1.0, 200), rate=0.6, seed=3)
    windows = np.lib.stride_tricks.sliding_window_view(spikes, 5, axis=0).sum(axis=-1)
    assert np.all(windows == 3)  # not just on average: in every 5-frame window of every pixel


def test_zero_intensity_never_fires_and_first_frame_depends_on_start_potential():
    assert sim.integrate_and_fire(constant(0.0, 50), seed=0).sum() == 0
    first = sim.integrate_and_fire(constant(0.5, 1, (64, 64)), seed=0)[0]
    # initial potential uniform in [0, 1): P(v0 + 0.3 >= 1) = 0.3
    assert abs(first.mean() - 0.3) < 0.05


def test_same_seed_same_spikes_other_seed_other_spikes():
    intensity = np.random.default_rng(0).random((30, 20, 20)).astype(np.float32)
    first = sim.integrate_and_fire(intensity, seed=5)
    assert np.array_equal(first, sim.integrate_and_fire(intensity, seed=5))
    assert not np.array_equal(first, sim.integrate_and_fire(intensity, seed=6))


def test_iter_integrate_and_fire_matches_whole_array_and_yields_intensity():
    intensity = np.random.default_rng(1).random((12, 8, 10)).astype(np.float32)
    streamed = np.stack(list(sim.iter_integrate_and_fire(iter(intensity), seed=2)))
    assert np.array_equal(streamed, sim.integrate_and_fire(intensity, seed=2))
    pairs = list(sim.iter_simulation(intensity, seed=2, intensity_levels=256))
    quantized = np.stack([gt for _, gt in pairs])
    assert np.array_equal(quantized * 255, np.round(quantized * 255))
    assert np.abs(quantized - intensity).max() <= 0.5 / 255 + 1e-6


def test_dark_current_adds_its_probability_to_the_firing_rate():
    frames = 2000
    clean = sim.integrate_and_fire(constant(0.3, frames, (32, 32)), seed=4)
    noisy = sim.integrate_and_fire(constant(0.3, frames, (32, 32)), seed=4, dark_current=0.02)
    assert abs((noisy.mean() - clean.mean()) - 0.02) < 0.002
    dark_only = sim.integrate_and_fire(constant(0.0, frames, (32, 32)), seed=4, dark_current=0.02)
    per_pixel = dark_only.mean(axis=0)
    assert dark_only.sum() > 0
    assert per_pixel.std() > 0.004  # pixels differ in dark current ("hot" pixels)


def test_threshold_mismatch_spreads_pixel_rates():
    frames, intensity = 2000, 0.5
    clean = sim.integrate_and_fire(constant(intensity, frames, (32, 32)), seed=7).mean(axis=0)
    mismatched = sim.integrate_and_fire(
        constant(intensity, frames, (32, 32)), seed=7, threshold_sigma=0.1
    ).mean(axis=0)
    assert clean.std() <= 1.0 / frames
    # rate_i = 0.6 I / theta_i with theta_i ~ N(1, 0.1): relative spread about 10 %
    relative_spread = mismatched.std() / mismatched.mean()
    assert 0.07 < relative_spread < 0.13
    assert abs(mismatched.mean() - 0.6 * intensity) < 0.02


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rate": 0.0}, "conversion rate"),
        ({"rate": 1.5}, "conversion rate"),
        ({"theta": -1.0}, "theta"),
        ({"dark_current": 1.0}, "dark_current"),
        ({"threshold_sigma": -0.1}, "threshold_sigma"),
        ({"intensity_levels": 1}, "intensity_levels"),
    ],
)
def test_invalid_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        sim.integrate_and_fire(constant(0.5, 3), **options)


def test_invalid_intensities_are_refused():
    with pytest.raises(ValueError, match="outside"):
        sim.integrate_and_fire(constant(1.2, 3))
    bad = constant(0.5, 3)
    bad[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="frame 2"):
        sim.integrate_and_fire(bad)
    with pytest.raises(ValueError, match="shape"):
        list(sim.iter_integrate_and_fire([np.zeros((4, 4)), np.zeros((4, 5))]))
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        sim.integrate_and_fire(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="initial_potential"):
        list(sim.iter_simulation([np.zeros((2, 2))], initial_potential=np.ones((2, 2))))


def test_to_intensity_converts_dtypes_and_colour():
    assert sim.to_intensity(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert sim.to_intensity(np.array([[65535]], np.uint16)).tolist() == [[1.0]]
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 1] = 255
    assert np.allclose(sim.to_intensity(rgb), 0.7154)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sim.to_intensity(np.array([[2.0]]))
    with pytest.raises(ValueError, match="dtype"):
        sim.to_intensity(np.array([[1]], np.int32))
    with pytest.raises(ValueError, match="shape"):
        sim.to_intensity(np.zeros((2, 2, 2, 2)))


# --- frame sequences ------------------------------------------------------------------------


def test_frame_sequence_is_linearly_interpolated():
    frames = np.stack([np.zeros((4, 6)), np.full((4, 6), 0.8), np.full((4, 6), 0.4)]).astype(
        np.float32
    )
    result = sim.simulate_frames(frames, 4, seed=0)
    assert result.spikes.shape == (9, 4, 6) and result.intensity.shape == (9, 4, 6)
    expected = [0.0, 0.2, 0.4, 0.6, 0.8, 0.7, 0.6, 0.5, 0.4]
    assert np.allclose(result.intensity[:, 0, 0], expected, atol=1e-6)
    assert np.array_equal(result.moments, np.arange(9))
    # uint8 frames are scaled to [0, 1] first
    as_uint8 = sim.simulate_frames((frames * 255).round().astype(np.uint8), 4, seed=0)
    assert np.allclose(as_uint8.intensity, result.intensity, atol=1e-6)
    with pytest.raises(ValueError, match="no video frames"):
        sim.simulate_frames([], 4)
    with pytest.raises(ValueError, match="spike_frames_per_frame"):
        sim.simulate_frames(frames, 0)


def test_single_video_frame_gives_one_spike_frame():
    result = sim.simulate_frames([np.full((3, 3), 0.5)], 10, seed=0)
    assert result.spikes.shape == (1, 3, 3)


# --- camera motion and still images ---------------------------------------------------------


def test_translation_speed_is_measured_exactly():
    frames = 20
    centers = np.stack([np.full(frames, 50.0), 60.0 + 0.3 * np.arange(frames)], -1)
    motion = sim.camera_motion(centers, height=30, width=40)
    assert motion.mean_speed(30, 40) == pytest.approx(0.3, rel=1e-9)
    # zoom 2x (scale 0.5): the same image velocity is seen twice as fast
    zoomed = sim.camera_motion(centers, scales=0.5, height=30, width=40)
    assert zoomed.mean_speed(30, 40) == pytest.approx(0.6, rel=1e-9)
    # pure rotation: flow speed is the angular step times the mean radius
    spin = sim.camera_motion(np.zeros((5, 2)), angles=0.01 * np.arange(5), height=31, width=31)
    rows, cols = np.meshgrid(np.r_[0:31:8, 30] - 15.0, np.r_[0:31:8, 30] - 15.0, indexing="ij")
    expected = 2 * np.sin(0.005) * np.hypot(rows, cols).mean()
    assert spin.mean_speed(31, 31) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("speed", [0.02, 0.3, 1.5])
def test_random_camera_motion_reaches_the_requested_speed(speed):
    rng = np.random.default_rng(11)
    motion = sim.random_camera_motion(rng, 60, speed, 40, 60)
    assert len(motion) == 60
    assert motion.mean_speed(40, 60) == pytest.approx(speed, rel=0.011)


def test_fitted_motion_samples_inside_the_image():
    rng = np.random.default_rng(2)
    image = rng.random((120, 90)).astype(np.float32)
    motion = sim.random_camera_motion(rng, 80, 1.5, 40, 60)
    working, fitted = sim.fit_motion_to_image(image, motion, rng, 40, 60)
    corners = np.array([[0, 0], [0, 59], [39, 0], [39, 59]], float)
    mapped = fitted.map_points(corners)
    assert mapped.min() >= -1e-6
    assert np.all(mapped.max(axis=(0, 1)) <= np.array(image.shape) - 1 + 1e-6)
    assert fitted.mean_speed(40, 60) == pytest.approx(motion.mean_speed(40, 60), rel=1e-9)
    assert working.shape == image.shape


def test_static_still_matches_the_image_and_tfp_reaches_35_db():
    image = sim.to_intensity(iio.imread(SAMPLE))
    assert image.shape == (250, 400)
    height, width = image.shape
    centers = np.tile([[(height - 1) / 2, (width - 1) / 2]], (201, 1))
    result = sim.simulate_still(
        image, sim.camera_motion(centers, height=height, width=width), height, width, seed=0
    )
    assert np.abs(result.intensity - image[None]).max() < 1e-4  # identity map, no resampling error
    # TFP41 of a static scene: the count is exact to +-1 spike per pixel; measured 35.6 dB
    assert psnr(image, tfp(result.spikes, 100, 41)) > 34.0
    # a longer window halves the count error: about 6 dB better (measured 41.6 dB)
    assert psnr(image, tfp(result.spikes, 100, 81)) > 40.0


def test_moving_still_has_moving_ground_truth_and_matching_rate():
    rng = np.random.default_rng(5)
    image = sim.to_intensity(iio.imread(SAMPLE))
    motion = sim.random_camera_motion(rng, 50, 0.5, 32, 48)
    working, motion = sim.fit_motion_to_image(image, motion, rng, 32, 48)
    result = sim.simulate_still(working, motion, 32, 48, seed=1)
    assert result.spikes.shape == result.intensity.shape == (50, 32, 48)
    assert result.intensity.dtype == np.float32
    assert 0.0 <= result.intensity.min() and result.intensity.max() <= 1.0
    assert np.abs(result.intensity[-1] - result.intensity[0]).mean() > 0.01  # the view moved
    assert abs(result.spikes.mean() - 0.6 * result.intensity.mean()) < 0.01


def test_sprite_is_composited_only_where_it_is():
    rng = np.random.default_rng(8)
    background = np.full((60, 80), 0.2, np.float32)
    source = np.full((50, 50), 0.9, np.float32)
    sprite = sim.random_sprite(rng, source, 10, 0.5, 40, 60)
    centers = np.tile([[29.5, 39.5]], (10, 1))
    still = sim.camera_motion(centers, height=40, width=60)
    frames = np.stack(list(sim.iter_still_intensity(background, still, 40, 60, sprites=[sprite])))
    inside = frames > 0.85
    assert inside.any(axis=(1, 2)).all()  # the opaque core of the sprite is in every frame
    assert np.all((np.abs(frames - 0.2) < 1e-5) | (frames > 0.2))  # elsewhere untouched
    assert (frames > 0.2 + 1e-5).mean() < 0.6
    with pytest.raises(ValueError, match="sprite path"):
        list(
            sim.iter_still_intensity(
                background,
                sim.camera_motion(centers[:5], height=40, width=60),
                40,
                60,
                sprites=[sprite],
            )
        )


def test_invalid_motion_is_refused():
    with pytest.raises(ValueError, match=r"\(T, 2, 3\)"):
        sim.CameraMotion(np.zeros((4, 3, 3)))
    with pytest.raises(ValueError, match="invertible"):
        sim.CameraMotion(np.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match="mean_speed"):
        sim.random_camera_motion(np.random.default_rng(0), 10, -1.0)
    with pytest.raises(ValueError, match="order"):
        list(
            sim.iter_still_intensity(np.zeros((4, 4)), sim.camera_motion(np.zeros((1, 2))), order=2)
        )


# --- command line ---------------------------------------------------------------------------


def test_cli_still_writes_a_dat_and_ground_truth(tmp_path):
    from spikecodec.io import load_spikes

    out, gt_path = tmp_path / "scene.dat", tmp_path / "scene_gt.npz"
    args = [
        "simulate",
        "still",
        "-o",
        str(out),
        "--frames",
        "60",
        "--speed",
        "0.4",
        "--height",
        "40",
        "--width",
        "64",
        "--gt",
        str(gt_path),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size == 60 * 40 * 64 // 8  # no header, 8 pixels per byte
    spikes = load_spikes(out, height=40, width=64)
    with np.load(gt_path) as gt_file:
        gt = gt_file["gt"].astype(np.float32) / 255
        assert np.array_equal(gt_file["moments"], np.arange(60))
        assert gt_file["mean_speed"] == pytest.approx(0.4, rel=0.02)
    assert spikes.shape == gt.shape == (60, 40, 64)
    # spikes follow the ground truth in space (rows not flipped): per-pixel counts are within
    # 1 + the motion's effect of 0.6 * the summed intensity
    assert np.corrcoef(spikes.sum(0).ravel(), gt.sum(0).ravel())[0, 1] > 0.9
    first = out.read_bytes()
    again = CliRunner().invoke(main, args + ["--force"])
    assert again.exit_code == 0 and out.read_bytes() == first  # same seed, same stream


def test_cli_still_refuses_bad_input(tmp_path):
    runner = CliRunner()
    existing = tmp_path / "x.dat"
    existing.write_bytes(b"")
    result = runner.invoke(main, ["simulate", "still", "-o", str(existing), "--frames", "2"])
    assert result.exit_code != 0 and "exists" in result.output
    result = runner.invoke(
        main, ["simulate", "still", str(tmp_path / "missing.png"), "-o", str(tmp_path / "y.dat")]
    )
    assert result.exit_code != 0 and "cannot use image" in result.output
    result = runner.invoke(
        main, ["simulate", "still", "-o", str(tmp_path / "y.txt"), "--frames", "2"]
    )
    assert result.exit_code != 0 and "extension" in result.output
    assert not (tmp_path / "y.dat").exists() and not (tmp_path / "y.txt").exists()
