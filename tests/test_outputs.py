import json

import numpy as np
import pytest

from spikecodec.outputs import OutputError, output_kind, read_frames, sidecar_path, write_frames


def frames_and_moments(n=3, h=13, w=17):
    rng = np.random.default_rng(1)
    return rng.random((n, h, w)).astype(np.float32), np.array([20, 40, 60][:n])


@pytest.mark.parametrize("name", ["out.npz", "out.h5"])
def test_array_outputs_round_trip_with_timestamps(tmp_path, name):
    frames, moments = frames_and_moments()
    write_frames(tmp_path / name, frames, moments)
    back, timestamps = read_frames(tmp_path / name)
    np.testing.assert_array_equal(back, frames)
    np.testing.assert_array_equal(timestamps, moments)


def test_mp4_with_odd_size_and_sidecar(tmp_path):
    import imageio_ffmpeg

    frames, moments = frames_and_moments()
    written = write_frames(tmp_path / "v.mp4", frames, moments, fps=25)
    assert written == [tmp_path / "v.mp4", sidecar_path(tmp_path / "v.mp4")]
    record = json.loads(sidecar_path(tmp_path / "v.mp4").read_text())
    assert record["timestamps"] == [20, 40, 60]
    assert record["seconds"][1] == pytest.approx(40 / 20_000)
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "v.mp4"))
    meta = next(reader)
    decoded = list(reader)
    assert meta["size"] == (18, 14)  # padded to even sides for yuv420p
    assert len(decoded) == 3


def test_png_directory(tmp_path):
    import imageio.v3 as iio

    frames, moments = frames_and_moments()
    write_frames(tmp_path / "pngs", frames, moments)
    pngs = sorted((tmp_path / "pngs").glob("frame_*.png"))
    assert len(pngs) == 3
    np.testing.assert_allclose(iio.imread(pngs[1]) / 255.0, frames[1], atol=0.5 / 255 + 1e-6)
    assert json.loads((tmp_path / "pngs" / "timestamps.json").read_text())["timestamps"] == [20, 40, 60]


def test_no_overwrite_without_force_and_nothing_left_on_failure(tmp_path):
    frames, moments = frames_and_moments()
    target = tmp_path / "out.npz"
    write_frames(target, frames, moments)
    with pytest.raises(OutputError, match="force"):
        write_frames(target, frames, moments)
    write_frames(target, frames[:2], moments[:2], force=True)
    assert read_frames(target)[0].shape[0] == 2
    with pytest.raises(OutputError, match="timestamps"):
        write_frames(tmp_path / "bad.npz", frames, moments[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]


def test_unknown_suffix_and_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="format"):
        output_kind("video.avi")
    frames, moments = frames_and_moments()
    with pytest.raises(OutputError, match="does not exist"):
        write_frames(tmp_path / "missing" / "out.npz", frames, moments)


def test_outputs_are_not_private_files(tmp_path):
    import os

    frames, moments = frames_and_moments()
    umask = os.umask(0o022)
    try:
        write_frames(tmp_path / "out.npz", frames, moments)
    finally:
        os.umask(umask)
    assert (tmp_path / "out.npz").stat().st_mode & 0o777 == 0o644
