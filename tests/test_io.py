"""Tests of spikecodec.io: .dat layout pinned by hand-written bytes, round trips, errors."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from spikecodec.io import (
    DatReader,
    DatWriter,
    H5Reader,
    NpzReader,
    SpikeFileError,
    frame_bytes,
    load_spikes,
    open_spike_writer,
    open_spikes,
    save_spikes,
)

FORMATS = (".dat", ".npz", ".h5", ".hdf5")


def random_spikes(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((frames, height, width)) < 0.3).astype(np.uint8)


def reference_dat_decode(raw: bytes, frames: int, height: int, stored_width: int) -> np.ndarray:
    """Independent decoding for byte-aligned frames: the DESIGN.md recipe, written out plainly."""
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    return bits.reshape(frames, height, stored_width)[:, ::-1, :]


# --- the .dat layout, pinned by bytes written literally --------------------------------------

# Two 2x8 frames. A frame stores the bottom row first, each byte's least significant bit is the
# leftmost pixel of its group of 8.
HAND_DAT_2X8 = bytes([0x01, 0x82, 0x00, 0xF0])
HAND_PIXELS_2X8 = np.array(
    [
        [[0, 1, 0, 0, 0, 0, 0, 1],  # top row: stored second, 0x82 = bits 1 and 7
         [1, 0, 0, 0, 0, 0, 0, 0]],  # bottom row: stored first, 0x01 = bit 0
        [[0, 0, 0, 0, 1, 1, 1, 1],  # 0xF0 = bits 4..7
         [0, 0, 0, 0, 0, 0, 0, 0]],
    ],
    dtype=np.uint8,
)


def test_hand_written_dat_decodes_lsb_first_bottom_up(tmp_path: Path) -> None:
    path = tmp_path / "hand.dat"
    path.write_bytes(HAND_DAT_2X8)
    with open_spikes(path, height=2, width=8) as reader:
        assert reader.num_frames == 2
        np.testing.assert_array_equal(reader.read(), HAND_PIXELS_2X8)


def test_writer_produces_the_hand_written_bytes(tmp_path: Path) -> None:
    path = tmp_path / "written.dat"
    save_spikes(path, HAND_PIXELS_2X8)
    assert path.read_bytes() == HAND_DAT_2X8


def test_hand_written_dat_with_head_columns(tmp_path: Path) -> None:
    # 8 image columns + 8 head columns per stored line; the head bytes (0xFF, 0xAA) are dropped.
    path = tmp_path / "head.dat"
    path.write_bytes(bytes([0x01, 0xFF, 0x82, 0xAA]))
    pixels = load_spikes(path, height=2, width=8, head_columns=8)
    np.testing.assert_array_equal(pixels, HAND_PIXELS_2X8[:1])


# 3x5 frames: 15 bits, so each frame is padded with one zero bit to 2 whole bytes.
# Frame 0: top row 10001, middle 01010, bottom 00100. Bits in storage order (bottom row first):
# 00100 01010 10001 + pad 0 -> byte 0 = bits 2, 6 = 0x44; byte 1 = bits 8, 10, 14 = 0x45.
# Frame 1: all ones -> 15 ones + pad -> 0xFF 0x7F. Without per-frame padding frame 1 would start
# at bit 15 and the file would be 4 bytes of another content.
HAND_DAT_3X5 = bytes([0x44, 0x45, 0xFF, 0x7F])
HAND_PIXELS_3X5 = np.array(
    [
        [[1, 0, 0, 0, 1], [0, 1, 0, 1, 0], [0, 0, 1, 0, 0]],
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]],
    ],
    dtype=np.uint8,
)


def test_non_multiple_of_8_frames_are_padded_per_frame(tmp_path: Path) -> None:
    assert frame_bytes(3, 5) == 2
    path = tmp_path / "odd.dat"
    save_spikes(path, HAND_PIXELS_3X5)
    assert path.read_bytes() == HAND_DAT_3X5
    np.testing.assert_array_equal(load_spikes(path, height=3, width=5), HAND_PIXELS_3X5)


@pytest.mark.parametrize(
    "shape,head", [((6, 3, 5), 0), ((5, 7, 13), 3), ((4, 9, 12), 4), ((3, 2, 8), 16)]
)
def test_dat_round_trip_unaligned_resolutions(tmp_path: Path, shape, head: int) -> None:
    spikes = random_spikes(*shape, seed=sum(shape) + head)
    path = tmp_path / "odd.dat"
    save_spikes(path, spikes, head_columns=head)
    frames, height, width = shape
    assert path.stat().st_size == frames * frame_bytes(height, width, head)
    got = load_spikes(path, height=height, width=width, head_columns=head)
    assert got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, spikes)


def test_250x400_writer(tmp_path: Path) -> None:
    spikes = random_spikes(3, 250, 400, seed=1)
    spikes[0] = 0
    spikes[0, 0, 0] = 1  # top-left: last stored line, first byte, bit 0
    spikes[0, 249, 399] = 1  # bottom-right: first stored line, byte 49, bit 7
    path = tmp_path / "cam.dat"
    save_spikes(path, spikes)
    raw = path.read_bytes()
    assert len(raw) == 3 * 12500
    first = np.frombuffer(raw[:12500], dtype=np.uint8)
    assert np.flatnonzero(first).tolist() == [49, 249 * 50]
    assert first[49] == 0x80 and first[249 * 50] == 0x01
    np.testing.assert_array_equal(reference_dat_decode(raw, 3, 250, 400), spikes)
    with open_spikes(path) as reader:  # default resolution is 250x400
        assert reader.shape == (3, 250, 400)
        np.testing.assert_array_equal(reader.read(), spikes)


def test_416_wide_lines_drop_the_last_16_columns(tmp_path: Path) -> None:
    # A camera file of 416-wide lines, written as a plain 250x416 stream.
    lines = random_spikes(4, 250, 416, seed=2)
    path = tmp_path / "wide.dat"
    save_spikes(path, lines)
    assert path.stat().st_size == 4 * 13000
    with open_spikes(path, head_columns=16) as reader:
        assert reader.shape == (4, 250, 400)
        np.testing.assert_array_equal(reader.read(), lines[:, :, :400])
        np.testing.assert_array_equal(reader[2], lines[2, :, :400])


def test_head_columns_writer_writes_zero_heads(tmp_path: Path) -> None:
    spikes = random_spikes(2, 250, 400, seed=3)
    path = tmp_path / "head.dat"
    save_spikes(path, spikes, head_columns=16)
    stored = reference_dat_decode(path.read_bytes(), 2, 250, 416)
    assert not stored[:, :, 400:].any()
    np.testing.assert_array_equal(stored[:, :, :400], spikes)
    np.testing.assert_array_equal(load_spikes(path, head_columns=16), spikes)


# --- round trips and access patterns -----------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("shape", [(7, 250, 400), (5, 3, 5), (4, 10, 12)])
def test_round_trip_every_format(tmp_path: Path, suffix: str, shape) -> None:
    spikes = random_spikes(*shape, seed=4)
    path = tmp_path / f"stream{suffix}"
    assert save_spikes(path, spikes) == path
    frames, height, width = shape
    with open_spikes(path, height=height, width=width) as reader:
        assert (reader.num_frames, reader.height, reader.width) == shape
        assert len(reader) == frames
        got = reader.read()
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, spikes)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


@pytest.mark.parametrize("suffix", (".npz", ".h5"))
def test_containers_store_resolution_and_are_bit_packed(tmp_path: Path, suffix: str) -> None:
    spikes = random_spikes(41, 250, 400, seed=5)
    path = tmp_path / f"stream{suffix}"
    save_spikes(path, spikes)
    # Packed is spikes.size / 8 bytes; allow for a partly filled last h5 chunk.
    assert path.stat().st_size < spikes.size / 4
    with open_spikes(path) as reader:  # no resolution given: the stored one is used
        assert reader.shape == (41, 250, 400)
        np.testing.assert_array_equal(reader.read(), spikes)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int64, np.float32])
def test_writers_accept_numeric_dtypes(tmp_path: Path, dtype) -> None:
    spikes = random_spikes(3, 4, 8, seed=6)
    path = tmp_path / "typed.dat"
    save_spikes(path, spikes.astype(dtype))
    np.testing.assert_array_equal(load_spikes(path, height=4, width=8), spikes)


@pytest.mark.parametrize("suffix", (".dat", ".npz", ".h5"))
def test_block_iteration_equals_full_read(tmp_path: Path, suffix: str) -> None:
    spikes = random_spikes(23, 250, 400, seed=7)
    path = tmp_path / f"stream{suffix}"
    save_spikes(path, spikes)
    with open_spikes(path) as reader:
        blocks = list(reader.iter_blocks(5))
        assert [len(b) for b in blocks] == [5, 5, 5, 5, 3]
        np.testing.assert_array_equal(np.concatenate(blocks), spikes)
        partial = list(reader.iter_blocks(4, start=3, stop=12))
        assert [len(b) for b in partial] == [4, 4, 1]
        np.testing.assert_array_equal(np.concatenate(partial), spikes[3:12])
        np.testing.assert_array_equal(np.concatenate(list(reader.iter_blocks())), spikes)
        np.testing.assert_array_equal(np.stack(list(reader)), spikes)


@pytest.mark.parametrize("suffix", (".dat", ".npz", ".h5"))
def test_random_access(tmp_path: Path, suffix: str) -> None:
    spikes = random_spikes(17, 6, 16, seed=8)
    path = tmp_path / f"stream{suffix}"
    save_spikes(path, spikes)
    with open_spikes(path, height=6, width=16) as reader:
        np.testing.assert_array_equal(reader.read(4, 9), spikes[4:9])
        np.testing.assert_array_equal(reader.read(16), spikes[16:])
        np.testing.assert_array_equal(reader[11], spikes[11])
        np.testing.assert_array_equal(reader[-1], spikes[-1])
        for index in (slice(2, 8), slice(None, None, 3), slice(1, 15, 4), slice(None, None, -1),
                      slice(14, 2, -5), slice(-4, None), slice(0, 100), slice(9, 3)):
            got = reader[index]
            np.testing.assert_array_equal(got, spikes[index], err_msg=str(index))
            assert got.flags.c_contiguous
        np.testing.assert_array_equal(
            load_spikes(path, height=6, width=16, start=5, stop=7), spikes[5:7]
        )


def test_convert_between_formats_by_streaming(tmp_path: Path) -> None:
    spikes = random_spikes(9, 250, 400, seed=9)
    source = tmp_path / "in.dat"
    save_spikes(source, spikes)
    with open_spikes(source) as reader:
        save_spikes(tmp_path / "out.h5", reader, block_frames=4)
    np.testing.assert_array_equal(load_spikes(tmp_path / "out.h5"), spikes)


def test_block_writer_and_h5_key(tmp_path: Path) -> None:
    spikes = random_spikes(10, 5, 9, seed=10)
    path = tmp_path / "many.h5"
    with open_spike_writer(path, 5, 9, key="seq0/spikes") as writer:
        writer.write(spikes[:3])
        writer.write(spikes[3:])
        assert writer.num_frames == 10
    with open_spikes(path, key="seq0/spikes") as reader:
        assert isinstance(reader, H5Reader)
        np.testing.assert_array_equal(reader.read(), spikes)
    with pytest.raises(SpikeFileError, match="no spike dataset 'spikes'"):
        open_spikes(path)


def test_dispatch_on_extension(tmp_path: Path) -> None:
    spikes = random_spikes(2, 4, 8)
    expected = {".dat": DatReader, ".npz": NpzReader, ".h5": H5Reader, ".HDF5": H5Reader}
    for suffix, cls in expected.items():
        path = tmp_path / f"s{suffix}"
        save_spikes(path, spikes)
        with open_spikes(path, 4, 8) as reader:
            assert type(reader) is cls


# --- errors ------------------------------------------------------------------------------------


def test_wrong_size_suggests_head_columns(tmp_path: Path) -> None:
    path = tmp_path / "wide.dat"
    path.write_bytes(bytes(3 * 13000))  # three 250x416 frames
    with pytest.raises(SpikeFileError) as info:
        open_spikes(path)
    message = str(info.value)
    assert "39000 bytes" in message and "12500 bytes per frame" in message
    assert "head_columns=16" in message and "(3 frames)" in message


def test_wrong_size_suggests_other_cameras(tmp_path: Path) -> None:
    path = tmp_path / "big.dat"
    path.write_bytes(bytes(125000))  # one 1000x1000 frame (also ten 250x400 frames)
    with pytest.raises(SpikeFileError) as info:
        open_spikes(path, head_columns=16)
    message = str(info.value)
    assert "13000 bytes per frame" in message
    assert "1000x1000 (1 frames)" in message and "250x400 (10 frames)" in message


def test_truncated_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "cut.dat"
    path.write_bytes(bytes(12500 * 2 + 7))
    with pytest.raises(SpikeFileError, match=r"2 whole frames and 7 bytes left over.*truncated"):
        open_spikes(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.touch()
    with pytest.raises(SpikeFileError, match="empty file"):
        open_spikes(path)


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(SpikeFileError, match="no such file"):
        open_spikes(tmp_path / "absent.dat")
    directory = tmp_path / "folder.dat"
    directory.mkdir()
    with pytest.raises(SpikeFileError, match="is a directory"):
        load_spikes(directory)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "locked.dat"
    path.write_bytes(bytes(12500))
    path.chmod(0)
    with pytest.raises(SpikeFileError, match="cannot read"):
        open_spikes(path)


@pytest.mark.parametrize("name", ["spikes.txt", "spikes", "spikes.dat.gz"])
def test_unknown_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(bytes(12500))
    with pytest.raises(SpikeFileError, match="unknown spike file extension"):
        open_spikes(path)
    with pytest.raises(SpikeFileError, match="unknown spike file extension"):
        save_spikes(path, np.zeros((1, 2, 8), np.uint8))


@pytest.mark.parametrize(
    "spikes,match",
    [
        (np.zeros((250, 400), np.uint8), r"3-D.*spikes\[None\]"),
        (np.zeros((1, 1, 250, 400), np.uint8), "3-D"),
        (np.zeros((0, 250, 400), np.uint8), "empty"),
        (np.full((2, 4, 8), 2, np.uint8), "only 0 and 1"),
        (np.full((2, 4, 8), -1, np.int16), "only 0 and 1"),
        (np.full((2, 4, 8), 0.5, np.float32), "only 0 and 1"),
        (np.full((2, 4, 8), np.nan), "only 0 and 1"),
        (np.full((2, 4, 8), "1"), "dtype"),
        ([[[0, 1]], [[1]]], "array"),
    ],
)
@pytest.mark.parametrize("suffix", (".dat", ".npz", ".h5"))
def test_bad_spikes_arrays(tmp_path: Path, spikes, match: str, suffix: str) -> None:
    path = tmp_path / f"bad{suffix}"
    with pytest.raises(SpikeFileError, match=match):
        save_spikes(path, spikes)
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_frames_of_another_size(tmp_path: Path) -> None:
    with pytest.raises(SpikeFileError, match="frames are 4x8, expected 250x400"):
        with DatWriter(tmp_path / "x.dat") as writer:
            writer.write(np.zeros((2, 4, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "keep.h5"
    old = random_spikes(2, 4, 8, seed=11)
    save_spikes(path, old)
    with pytest.raises(RuntimeError):
        with open_spike_writer(path, 4, 8) as writer:
            writer.write(random_spikes(3, 4, 8, seed=12))
            raise RuntimeError("interrupted")
    np.testing.assert_array_equal(load_spikes(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.h5"]


@pytest.mark.parametrize("suffix", (".dat", ".npz", ".h5"))
def test_writing_no_frames_is_an_error(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(SpikeFileError, match="no frames written"):
        with open_spike_writer(tmp_path / f"none{suffix}", 4, 8):
            pass
    assert list(tmp_path.iterdir()) == []


def test_write_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SpikeFileError, match="does not exist"):
        save_spikes(tmp_path / "no" / "such.dat", np.zeros((1, 2, 8), np.uint8))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"height": 0}, "height must be >= 1"),
        ({"width": -8}, "width must be >= 1"),
        ({"height": "250"}, "height must be an integer"),
        ({"height": 2.5}, "height must be an integer"),
        ({"head_columns": -16}, "head_columns must be >= 0"),
    ],
)
def test_bad_resolution_arguments(tmp_path: Path, kwargs, match: str) -> None:
    path = tmp_path / "s.dat"
    path.write_bytes(bytes(12500))
    with pytest.raises(SpikeFileError, match=match):
        open_spikes(path, **kwargs)


def test_containers_reject_head_columns_and_other_resolutions(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    save_spikes(path, random_spikes(2, 4, 8))
    with pytest.raises(SpikeFileError, match="head_columns applies to raw .dat"):
        open_spikes(path, head_columns=16)
    with pytest.raises(SpikeFileError, match="stores 4x8 frames, but 250x400 was asked for"):
        open_spikes(path, height=250, width=400)


@pytest.mark.parametrize("suffix", (".npz", ".h5"))
def test_corrupt_containers(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(b"this is not a container" * 10)
    with pytest.raises(SpikeFileError, match="not a readable"):
        open_spikes(path)


def test_npz_that_is_not_a_spike_container(tmp_path: Path) -> None:
    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros((2, 3)))
    with pytest.raises(SpikeFileError, match="missing height, num_frames, spikes, width"):
        open_spikes(other)
    single = tmp_path / "single.npz"
    with open(single, "wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(SpikeFileError, match="single array"):
        open_spikes(single)
    inconsistent = tmp_path / "bad.npz"
    np.savez(inconsistent, spikes=np.zeros((2, 3), np.uint8), height=4, width=8, num_frames=2)
    with pytest.raises(SpikeFileError, match=r"expected uint8 \(2, 4\)"):
        open_spikes(inconsistent)


def test_h5_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.h5"
    save_spikes(path, random_spikes(2, 4, 8))
    with h5py.File(path, "r+") as handle:
        handle["spikes"].attrs["format_version"] = 99
    with pytest.raises(SpikeFileError, match="version 99 is newer"):
        open_spikes(path)


@pytest.mark.parametrize("suffix", (".dat", ".h5"))
def test_out_of_range_access_and_closed_reader(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"s{suffix}"
    save_spikes(path, random_spikes(5, 4, 8))
    reader = open_spikes(path, 4, 8)
    with pytest.raises(IndexError, match="not inside the stream's 5 frames"):
        reader.read(3, 6)
    with pytest.raises(IndexError):
        reader.read(4, 4)
    with pytest.raises(IndexError, match="frame 5 out of range"):
        reader[5]
    with pytest.raises(IndexError):
        reader[-6]
    with pytest.raises(IndexError):
        reader.iter_blocks(2, stop=9)  # refused when called, not at the first block
    with pytest.raises(SpikeFileError, match="block_frames must be >= 1"):
        reader.iter_blocks(0)
    with pytest.raises(TypeError, match="int or a slice"):
        reader[1.0]
    reader.close()
    with pytest.raises(SpikeFileError, match="closed"):
        reader.read()


def test_disk_full_is_reported_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def no_space(self, spikes):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DatWriter, "_write_checked", no_space)
    with pytest.raises(SpikeFileError, match="cannot write.*No space left"):
        save_spikes(tmp_path / "full.dat", np.zeros((2, 4, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []
