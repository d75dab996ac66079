"""Tests of the anchors: x265 / VVC through imageio-ffmpeg's ffmpeg, and the lossless coders."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spikecodec import anchors
from spikecodec.anchors import (
    AnchorUnavailable,
    code_video,
    find_jbig_tools,
    lossless_anchor,
    lossless_bits,
    video_anchor,
    video_codec_problem,
)
from spikecodec.metrics import psnr


def _frames(num: int = 4, height: int = 32, width: int = 48) -> np.ndarray:
    """Smooth moving texture with fine detail, so that QP visibly changes quality and size."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    detail = rng.random((height, width + num)) * 0.15
    return np.stack([
        0.45 + 0.3 * np.sin((xx + 1.5 * t) / 4.0) * np.cos(yy / 5.0) + detail[:, t:t + width]
        for t in range(num)
    ]).astype(np.float32)


def _require(codec: str) -> None:
    problem = video_codec_problem(codec)
    if problem:
        pytest.skip(problem)


@pytest.mark.parametrize("codec", ["x265", "vvc"])
def test_video_anchor_quality_rises_and_bits_fall_with_qp(codec):
    _require(codec)
    frames = _frames()
    num_spike_frames = 100
    low_qp, high_qp = video_anchor(frames, codec, [22, 42], num_spike_frames, frames, threads=1)
    assert (low_qp.qp, high_qp.qp) == (22, 42)
    assert low_qp.psnr > high_qp.psnr + 3.0
    assert low_qp.ssim > high_qp.ssim
    assert high_qp.bits < low_qp.bits
    for point in (low_qp, high_qp):
        assert point.codec == codec and point.frames_scored == 4
        assert point.bpp == pytest.approx(point.bits / (num_spike_frames * 32 * 48))
        assert point.encode_seconds > 0 and point.decode_seconds > 0
    assert low_qp.psnr > 35.0  # a near-transparent QP gives the frames back closely


@pytest.mark.parametrize("codec", ["x265", "vvc"])
def test_odd_sizes_are_padded_and_cropped(codec):
    _require(codec)
    frames = _frames(num=3, height=33, width=47)
    coded = code_video(frames, codec, 22, threads=1)
    assert coded.decoded.shape == frames.shape
    assert coded.decoded.dtype == np.float32
    assert psnr(frames, coded.decoded) > 33.0


def test_x265_stream_holds_no_encoder_info_sei(tmp_path):
    _require("x265")
    stream = tmp_path / "s.hevc"
    code_video(_frames(num=2), "x265", 37, threads=1, keep_stream=stream)
    data = stream.read_bytes()
    assert data[:4] == b"\x00\x00\x00\x01"  # an Annex B elementary stream, no container
    assert b"x265" not in data  # the version / options SEI (info=0) would cost about 2 kB
    assert stream.stat().st_size * 8 < 12_000


def test_scored_positions_select_frames():
    _require("x265")
    frames = _frames()
    wrong = frames[[1]] * 0.0  # ground truth of frame 1 only: black
    (point,) = video_anchor(frames, "x265", [22], 10, wrong, reference_positions=[1], threads=1)
    assert point.frames_scored == 1
    assert point.psnr < 12.0


def test_video_anchor_rejects_bad_input():
    frames = _frames(num=2)
    with pytest.raises(ValueError, match="QP"):
        code_video(frames, "x265", 60)
    with pytest.raises(ValueError, match="unknown video anchor"):
        code_video(frames, "av1", 30)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        code_video(frames[0], "x265", 30)
    with pytest.raises(ValueError, match="float"):
        code_video((frames * 255).astype(np.uint8), "x265", 30)
    with pytest.raises(ValueError, match="GOP"):
        code_video(frames, "x265", 30, gop=0)
    with pytest.raises(ValueError, match="reference must be"):
        video_anchor(frames, "x265", [30], 10, frames[:1])
    with pytest.raises(ValueError, match="no QP"):
        video_anchor(frames, "x265", [], 10, frames)


def test_missing_encoder_and_decoder_are_reported(monkeypatch):
    real = anchors.ffmpeg_capabilities()
    crippled = dataclasses.replace(real, encoders=real.encoders - {"libvvenc"})
    monkeypatch.setattr(anchors, "ffmpeg_capabilities", lambda executable=None: crippled)
    assert "libvvenc" in video_codec_problem("vvc")
    with pytest.raises(AnchorUnavailable, match="libvvenc"):
        code_video(_frames(num=1), "vvc", 30)
    no_decoder = dataclasses.replace(real, decoders=real.decoders - {"vvc"})
    monkeypatch.setattr(anchors, "ffmpeg_capabilities", lambda executable=None: no_decoder)
    assert "VVC decode unavailable" in video_codec_problem("vvc")


def test_capability_listing_parser():
    encoders = anchors._listed_names(
        " V..... = Video\n ------\n V....D libx265   libx265 H.265 / HEVC (codec hevc)\n"
        " A....D aac       AAC (Advanced Audio Coding)\n")
    assert {"libx265", "aac"} <= encoders
    muxers, demuxers = anchors._listed_formats(
        " D.. = Demuxing supported\n .E. = Muxing supported\n ---\n"
        " DE  hevc            raw HEVC video\n  E  mp4             MP4\n"
        " D   mov,mp4,m4a     QuickTime / MOV\n")
    assert muxers == {"hevc", "mp4"}
    assert demuxers == {"hevc", "mov", "mp4", "m4a"}


def _sparse_spikes(num: int = 20, height: int = 16, width: int = 24) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random((num, height, width)) < 0.05).astype(np.uint8)


def test_lossless_bits_labels_and_raw_size():
    spikes = _sparse_spikes()
    bits = lossless_bits(spikes, None)
    assert list(bits) == ["raw .dat", "zstd -19", "xz -9"]
    assert bits["raw .dat"] == spikes.size  # 1 bpp
    assert bits["zstd -19"] < bits["raw .dat"] and bits["xz -9"] < bits["raw .dat"]


def test_lossless_anchor_round_trips_and_reports_bpp():
    spikes = _sparse_spikes()
    points = {p.codec: p for p in lossless_anchor(spikes, jbig=False)}
    assert set(points) == {"raw", "zstd-19", "xz-9"}
    assert points["raw"].bpp == 1.0
    assert points["zstd-19"].bpp < 0.5  # 5% firing compresses well
    for point in points.values():
        assert point.psnr is None and point.ssim is None and point.setting == "lossless"
        assert point.bits == pytest.approx(point.bpp * spikes.size)


def test_lossless_jbig_when_installed():
    tools = find_jbig_tools()
    if tools is None:
        pytest.skip("jbigkit (pbmtojbg) is not installed")
    spikes = _sparse_spikes()
    points = {p.codec: p for p in lossless_anchor(spikes, jbig=tools)}
    assert points["jbig"].bits == lossless_bits(spikes, tools[0])["JBIG (jbigkit)"]
    assert points["jbig"].bpp < 1.0
    if tools[1] is not None:
        assert np.isfinite(points["jbig"].decode_seconds)  # decoded and checked


def test_lossless_rejects_bad_spikes():
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        lossless_bits(np.zeros((4, 4), np.uint8), None)
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        lossless_anchor(np.zeros((0, 4, 4), np.uint8))
