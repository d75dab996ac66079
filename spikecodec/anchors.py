"""Anchors: the conventional coders the SCI codec is measured against.

Settings as DESIGN.md, "Anchor settings", defines them.

Two families, both answering with :class:`RatePoint` s (bits, bpp over the *spike* stream's
T x H x W, PSNR / SSIM against ground truth, encode and decode seconds):

- **ATC video anchors** (analyze-then-compress): frames reconstructed from the raw spikes are coded
  as a video through imageio-ffmpeg's bundled ffmpeg and decoded back.

  * ``x265``: ``libx265 -preset medium``, constant QP (``qp=``; x265 switches adaptive
    quantisation off in constant-QP mode), ``bframes=0``, ``keyint = min-keyint = GOP``,
    ``scenecut=0`` (no extra I frames), ``info=0`` (no SEI with x265's version string and
    options: about 2 kB per stream that decoding does not need), 8-bit ``yuv420p``.
  * ``vvc``: ``libvvenc -preset medium``, constant QP (``-qp``, perceptual QP adaptation ``qpa``
    off since the metric is PSNR), low delay like our codec (``PicReordering=0``, ``GOPSize=8``,
    ``DecodingRefreshType=0``: no picture reordering, references in the past only) and an intra
    picture every GOP (``IntraPeriod``), 10-bit ``yuv420p10le`` (the only input libvvenc takes).

  Gray frames enter as 4:2:0 with constant mid-grey chroma (128, or 512 at 10 bits); the bits are
  those of the whole raw elementary stream (``.hevc`` / ``.266``, chroma included, no container).
  The stream is decoded back with ffmpeg's ``hevc`` / ``vvc`` decoders and PSNR is taken on the
  luma plane. Frames with an odd height or width are padded to even by repeating the last row /
  column (4:2:0 needs even sizes); the padding is coded and cropped after decoding, and the bits
  are still divided by the true T x H x W. Encode and decode seconds are the wall time of the
  ffmpeg process (start-up and raw-frame piping included).

- **Lossless anchors** of the raw spikes: the ``.dat`` layout itself (1 bpp), zstd -19, xz -9 and
  JBIG (jbigkit's ``pbmtojbg`` on the frames stacked into one tall bi-level image). Lossless rate
  points carry no PSNR / SSIM: the spikes come back exactly, so quality is that of whatever
  reconstruction is applied afterwards.

A missing tool raises :class:`AnchorUnavailable` (with the reason) so that callers report it and
go on with the other anchors.
"""

from __future__ import annotations

import dataclasses
import functools
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from spikecodec.io import pack_frames, unpack_frames
from spikecodec.metrics import bpp as bits_per_pixel
from spikecodec.metrics import psnr_per_frame, ssim_per_frame

#: Default constant-QP sweep of the video anchors (wide enough for TFP-quality frames, 25-45 dB).
DEFAULT_QPS: tuple[int, ...] = (22, 27, 32, 37, 42, 47)
#: Frames per intra period of the video anchors: our codec's default GOP (DESIGN.md).
DEFAULT_GOP = 32
#: Frame rate written into the raw input; with constant QP it changes nothing but is required.
_NOMINAL_FPS = 25


class AnchorUnavailable(RuntimeError):
    """An anchor cannot run here (tool or codec missing); the message says what is missing."""


class AnchorError(RuntimeError):
    """An anchor tool ran and failed (its last error lines are in the message)."""


@dataclass(frozen=True)
class RatePoint:
    """One rate point of an anchor (or of our codec) on one input.

    ``bits`` is the whole coded stream, ``bpp`` = bits / (T x H x W) of the spike input.
    ``psnr`` / ``ssim`` are the means over the frames scored against ground truth (``None`` for
    lossless spike coders, whose quality is that of the reconstruction applied afterwards).
    """

    codec: str
    setting: str
    bits: int
    bpp: float
    psnr: float | None
    ssim: float | None
    encode_seconds: float
    decode_seconds: float
    frames_scored: int = 0
    qp: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# ffmpeg and the video anchors


@dataclass(frozen=True)
class VideoCodec:
    """How one video anchor is driven through ffmpeg."""

    name: str  # anchor name used in method names ("tfp41+x265")
    encoder: str  # ffmpeg encoder
    decoder: str  # ffmpeg decoder
    muxer: str  # raw elementary-stream muxer / demuxer
    suffix: str
    pix_fmt: str
    bit_depth: int


VIDEO_CODECS: dict[str, VideoCodec] = {
    "x265": VideoCodec("x265", "libx265", "hevc", "hevc", ".hevc", "yuv420p", 8),
    "vvc": VideoCodec("vvc", "libvvenc", "vvc", "vvc", ".266", "yuv420p10le", 10),
}


@dataclass(frozen=True)
class FfmpegCapabilities:
    """What an ffmpeg binary can do, as listed by ``-encoders``, ``-decoders`` and ``-formats``."""

    executable: str
    version: str
    encoders: frozenset[str]
    decoders: frozenset[str]
    muxers: frozenset[str]
    demuxers: frozenset[str]


def ffmpeg_executable() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg (AnchorUnavailable when there is none)."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        raise AnchorUnavailable(f"no ffmpeg: imageio-ffmpeg cannot provide one ({error})") from None


def _listed_names(output: str) -> frozenset[str]:
    # "-encoders" / "-decoders" lines look like " V....D libx265   libx265 H.265 / HEVC"
    names = set()
    for line in output.splitlines():
        match = re.match(r"^\s*[VAS][A-Z.]{5}\s+(\S+)", line)
        if match:
            names.add(match.group(1))
    return frozenset(names)


def _listed_formats(output: str) -> tuple[frozenset[str], frozenset[str]]:
    # "-formats" lines look like " DE hevc   raw HEVC video" (D: demuxer, E: muxer)
    muxers, demuxers = set(), set()
    for line in output.splitlines():
        match = re.match(r"^\s*([D ])([E ])d?\s+(\S+)", line)
        if match and (match.group(1) == "D" or match.group(2) == "E"):
            for name in match.group(3).split(","):
                if match.group(1) == "D":
                    demuxers.add(name)
                if match.group(2) == "E":
                    muxers.add(name)
    return frozenset(muxers), frozenset(demuxers)


@functools.lru_cache(maxsize=4)
def ffmpeg_capabilities(executable: str | None = None) -> FfmpegCapabilities:
    """Encoders, decoders and (de)muxers of ``executable`` (default: imageio-ffmpeg's)."""
    executable = executable or ffmpeg_executable()

    def listing(flag: str) -> str:
        try:
            done = subprocess.run([executable, "-hide_banner", flag], capture_output=True,
                                  text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise AnchorUnavailable(f"cannot run ffmpeg at {executable}: {error}") from None
        return done.stdout

    version_line = listing("-version").splitlines()
    version = version_line[0] if version_line else "unknown"
    muxers, demuxers = _listed_formats(listing("-formats"))
    return FfmpegCapabilities(executable, version, _listed_names(listing("-encoders")),
                              _listed_names(listing("-decoders")), muxers, demuxers)


def video_codec_problem(codec: str) -> str | None:
    """Why the video anchor ``codec`` cannot run here, or None when it can."""
    spec = _video_codec(codec)
    try:
        found = ffmpeg_capabilities()
    except AnchorUnavailable as error:
        return str(error)
    if spec.encoder not in found.encoders:
        return f"{spec.name}: encoder {spec.encoder} missing in {found.version}"
    if spec.muxer not in found.muxers:
        return f"{spec.name}: muxer {spec.muxer} missing in {found.version}"
    if spec.decoder not in found.decoders or spec.muxer not in found.demuxers:
        return f"{spec.name}: {spec.name.upper()} decode unavailable ({spec.decoder} decoder " \
               f"or {spec.muxer} demuxer missing in {found.version})"
    return None


def _video_codec(codec: str) -> VideoCodec:
    try:
        return VIDEO_CODECS[codec]
    except KeyError:
        raise ValueError(
            f"unknown video anchor {codec!r}; choose one of {', '.join(VIDEO_CODECS)}"
        ) from None


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.ndim != 3 or 0 in frames.shape:
        raise ValueError(
            "frames must be a non-empty (N, H, W) array, got shape "
            f"{getattr(frames, 'shape', None)}"
        )
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"frames must be float intensities in [0, 1], got dtype {frames.dtype}")
    if not np.all(np.isfinite(frames)):
        raise ValueError("frames hold NaN or infinite values")
    return frames


def _check_qp(qp: int, codec: VideoCodec) -> int:
    limit = 51 if codec.bit_depth == 8 else 63
    if isinstance(qp, bool) or int(qp) != qp or not 0 <= qp <= limit:
        raise ValueError(f"{codec.name} QP must be an integer 0..{limit}, got {qp!r}")
    return int(qp)


def _yuv420_bytes(frames: np.ndarray, bit_depth: int) -> bytes:
    """Planar 4:2:0 raw video of gray frames (N, H, W) in [0, 1], H and W even: luma, then
    constant mid-grey U and V planes; 10 bits little-endian in 16-bit words."""
    peak = (1 << bit_depth) - 1
    dtype = np.uint8 if bit_depth == 8 else np.dtype("<u2")
    num, height, width = frames.shape
    planes = np.empty((num, height * width * 3 // 2), dtype=dtype)
    planes[:, : height * width] = np.rint(np.clip(frames, 0.0, 1.0) * peak).reshape(num, -1)
    planes[:, height * width:] = 1 << (bit_depth - 1)
    return planes.tobytes()


def _luma_from_yuv420(raw: bytes, num: int, height: int, width: int, bit_depth: int) -> np.ndarray:
    dtype = np.uint8 if bit_depth == 8 else np.dtype("<u2")
    frame_samples = height * width * 3 // 2
    samples = np.frombuffer(raw, dtype=dtype)
    if samples.size != num * frame_samples:
        raise AnchorError(
            f"decoder returned {samples.size} samples, expected {num} frames of {height}x{width}"
        )
    luma = samples.reshape(num, frame_samples)[:, : height * width].reshape(num, height, width)
    return luma.astype(np.float32) / np.float32((1 << bit_depth) - 1)


def _run_ffmpeg(arguments: list[str], stdin: bytes | None, what: str) -> tuple[bytes, float]:
    started = time.perf_counter()
    try:
        done = subprocess.run(arguments, input=stdin, capture_output=True)
    except OSError as error:
        raise AnchorUnavailable(f"cannot run ffmpeg: {error}") from None
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise AnchorError(f"{what} failed (exit {done.returncode}): {' | '.join(lines[-3:])}")
    return done.stdout, seconds


def _encoder_arguments(spec: VideoCodec, qp: int, gop: int, threads: int | None) -> list[str]:
    if spec.name == "x265":
        # info=0: no SEI message with x265's version and options (about 2 kB a stream, which
        # decoding does not need and which would dominate small streams)
        params = (f"qp={qp}:bframes=0:keyint={gop}:min-keyint={gop}:scenecut=0:info=0"
                  ":log-level=error")
        if threads is not None:
            params += f":pools={threads}:frame-threads={min(threads, 4)}"
        return ["-c:v", "libx265", "-preset", "medium", "-x265-params", params]
    arguments = ["-c:v", "libvvenc", "-preset", "medium", "-qp", str(qp), "-qpa", "0",
                 "-vvenc-params",
                 f"IntraPeriod={gop}:PicReordering=0:GOPSize=8:DecodingRefreshType=0"]
    if threads is not None:
        arguments += ["-threads", str(threads)]
    return arguments


@dataclass(frozen=True)
class CodedVideo:
    """A video anchor's elementary stream size and its decoded luma (N, H, W) in [0, 1]."""

    bits: int
    decoded: np.ndarray
    encode_seconds: float
    decode_seconds: float


def code_video(
    frames: np.ndarray,
    codec: str,
    qp: int,
    gop: int = DEFAULT_GOP,
    threads: int | None = None,
    keep_stream: str | os.PathLike | None = None,
) -> CodedVideo:
    """Code gray frames (N, H, W) in [0, 1] with the video anchor ``codec`` at constant ``qp`` and
    decode them back (settings in the module docstring).

    ``threads`` caps the encoder's and decoder's threads (default: the codec's own choice);
    ``keep_stream`` also saves the elementary stream there. Raises AnchorUnavailable when ffmpeg
    lacks the codec and AnchorError when ffmpeg fails.
    """
    spec = _video_codec(codec)
    frames = _check_frames(frames)
    qp = _check_qp(qp, spec)
    if isinstance(gop, bool) or int(gop) != gop or gop < 1:
        raise ValueError(f"GOP must be a positive number of frames, got {gop!r}")
    if threads is not None and (int(threads) != threads or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    problem = video_codec_problem(codec)
    if problem:
        raise AnchorUnavailable(problem)
    executable = ffmpeg_executable()
    num, height, width = frames.shape
    # 4:2:0 needs even sizes: repeat the last row / column, crop after decoding
    padded = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2)), mode="edge")
    coded_height, coded_width = padded.shape[1:]
    thread_option = [] if threads is None else ["-threads", str(threads)]
    with tempfile.TemporaryDirectory(prefix="spikecodec-anchor-") as folder:
        stream = Path(folder) / f"stream{spec.suffix}"
        _, encode_seconds = _run_ffmpeg(
            [executable, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
             "-f", "rawvideo", "-pix_fmt", spec.pix_fmt, "-s", f"{coded_width}x{coded_height}",
             "-r", str(_NOMINAL_FPS), "-i", "pipe:0",
             *_encoder_arguments(spec, qp, int(gop), threads), "-f", spec.muxer, str(stream)],
            _yuv420_bytes(padded, spec.bit_depth), f"{spec.encoder} encoding (QP {qp})",
        )
        bits = stream.stat().st_size * 8
        raw, decode_seconds = _run_ffmpeg(
            [executable, "-hide_banner", "-nostdin", "-loglevel", "error", *thread_option,
             "-f", spec.muxer, "-c:v", spec.decoder, "-i", str(stream),
             "-f", "rawvideo", "-pix_fmt", spec.pix_fmt, "pipe:1"],
            None, f"{spec.decoder} decoding (QP {qp})",
        )
        if keep_stream is not None:
            shutil.copyfile(stream, keep_stream)
    decoded = _luma_from_yuv420(raw, num, coded_height, coded_width, spec.bit_depth)
    return CodedVideo(bits, decoded[:, :height, :width], encode_seconds, decode_seconds)


def score_frames(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Mean per-frame PSNR (dB) and SSIM of ``test`` against ``reference`` (both (K, H, W))."""
    return (float(psnr_per_frame(reference, test).mean()),
            float(ssim_per_frame(reference, test).mean()))


def _scoring(frames: np.ndarray, reference: np.ndarray, positions: Sequence[int] | None):
    reference = np.asarray(reference)
    if positions is None:
        positions = np.arange(frames.shape[0])
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    if positions.size == 0:
        raise ValueError("no frame to score: reference_positions is empty")
    if positions.min() < 0 or positions.max() >= frames.shape[0]:
        raise ValueError(f"reference positions must index the {frames.shape[0]} frames coded")
    if reference.shape != (positions.size,) + frames.shape[1:]:
        raise ValueError(
            f"reference must be ({positions.size}, {frames.shape[1]}, {frames.shape[2]}) "
            f"to match the frames scored, got {reference.shape}"
        )
    return reference, positions


def video_anchor(
    frames: np.ndarray,
    codec: str,
    qps: Sequence[int],
    num_spike_frames: int,
    reference: np.ndarray,
    reference_positions: Sequence[int] | None = None,
    gop: int = DEFAULT_GOP,
    threads: int | None = None,
) -> list[RatePoint]:
    """Rate points of coding ``frames`` (N, H, W) with ``codec`` ("x265" or "vvc") at each QP.

    bpp divides the stream bits by ``num_spike_frames`` x H x W (the spike input the frames were
    reconstructed from). PSNR / SSIM compare the decoded frames at ``reference_positions``
    (default: all) with ``reference`` (K, H, W), the ground truth of those frames.
    """
    frames = _check_frames(frames)
    reference, positions = _scoring(frames, reference, reference_positions)
    if not len(qps):
        raise ValueError("no QP given")
    points = []
    for qp in qps:
        coded = code_video(frames, codec, qp, gop=gop, threads=threads)
        quality, similarity = score_frames(reference, coded.decoded[positions])
        points.append(RatePoint(
            codec=codec, setting=f"qp={int(qp)}", bits=coded.bits,
            bpp=bits_per_pixel(coded.bits, num_spike_frames, *frames.shape[1:]),
            psnr=quality, ssim=similarity, encode_seconds=coded.encode_seconds,
            decode_seconds=coded.decode_seconds, frames_scored=int(positions.size), qp=int(qp),
        ))
    return points


# ---------------------------------------------------------------------------------------------
# lossless anchors of the raw spikes

#: Lossless coders: the label of each in :func:`lossless_bits` (benchmark tables) and its
#: method name in evaluation results.
LOSSLESS_CODERS: dict[str, str] = {
    "raw .dat": "raw", "zstd -19": "zstd-19", "xz -9": "xz-9", "JBIG (jbigkit)": "jbig",
}


def find_jbig_tools() -> tuple[str, str | None] | None:
    """``(pbmtojbg, jbgtopbm or None)`` from jbigkit (Debian ``jbigkit-bin``), or None."""
    encoder = shutil.which("pbmtojbg")
    return None if encoder is None else (encoder, shutil.which("jbgtopbm"))


def _dat_bytes(spikes: np.ndarray) -> bytes:
    return pack_frames(spikes[:, ::-1]).tobytes()  # the .dat layout: rows bottom-up, LSB first


def _spikes_from_dat(raw: bytes, height: int, width: int) -> np.ndarray:
    packed = np.frombuffer(raw, dtype=np.uint8).reshape(-1, (height * width + 7) // 8)
    return unpack_frames(packed, height, width)[:, ::-1]


def _pbm_bytes(spikes: np.ndarray) -> bytes:
    num_frames, height, width = spikes.shape
    rows = np.packbits(spikes.reshape(num_frames * height, width), axis=1)  # PBM: MSB first
    return f"P4\n{width} {num_frames * height}\n".encode() + rows.tobytes()


def _spikes_from_pbm(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    # header: "P4", width, height, separated by whitespace (comments do not occur in jbgtopbm's)
    match = re.match(rb"P4\s+(\d+)\s+(\d+)\s", data)
    if match is None:
        raise AnchorError("jbgtopbm wrote no P4 PBM image")
    width, rows = int(match.group(1)), int(match.group(2))
    num_frames, height, frame_width = shape
    if (width, rows) != (frame_width, num_frames * height):
        raise AnchorError(f"JBIG decoded a {width}x{rows} image, expected "
                          f"{frame_width}x{num_frames * height}")
    packed = np.frombuffer(data[match.end():], dtype=np.uint8).reshape(rows, -1)
    return np.unpackbits(packed, axis=1, count=width).reshape(shape)


def _jbig_encode(spikes: np.ndarray, encoder: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="spikecodec-jbig-") as folder:
        pbm, jbg = Path(folder) / "s.pbm", Path(folder) / "s.jbg"
        pbm.write_bytes(_pbm_bytes(spikes))
        done = subprocess.run([encoder, str(pbm), str(jbg)], capture_output=True)
        if done.returncode != 0:
            raise AnchorError(f"pbmtojbg failed: {done.stderr.decode(errors='replace').strip()}")
        return jbg.read_bytes()


def _jbig_decode(data: bytes, decoder: str, shape: tuple[int, int, int]) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="spikecodec-jbig-") as folder:
        jbg, pbm = Path(folder) / "s.jbg", Path(folder) / "s.pbm"
        jbg.write_bytes(data)
        done = subprocess.run([decoder, str(jbg), str(pbm)], capture_output=True)
        if done.returncode != 0:
            raise AnchorError(f"jbgtopbm failed: {done.stderr.decode(errors='replace').strip()}")
        return _spikes_from_pbm(pbm.read_bytes(), shape)


def _lossless_coders(
    spikes: np.ndarray, jbig: tuple[str, str | None] | None
) -> Iterator[tuple[str, Callable[[], bytes], Callable[[bytes], np.ndarray] | None]]:
    """(label, encode, decode or None) of each lossless coder that can run."""
    import zstandard

    height, width = spikes.shape[1:]
    yield "raw .dat", lambda: _dat_bytes(spikes), lambda data: _spikes_from_dat(data, height, width)
    yield ("zstd -19",
           lambda: zstandard.ZstdCompressor(level=19).compress(_dat_bytes(spikes)),
           lambda data: _spikes_from_dat(zstandard.ZstdDecompressor().decompress(data),
                                         height, width))
    yield ("xz -9", lambda: lzma.compress(_dat_bytes(spikes), preset=9),
           lambda data: _spikes_from_dat(lzma.decompress(data), height, width))
    if jbig is not None:
        encoder, decoder = jbig
        yield ("JBIG (jbigkit)", lambda: _jbig_encode(spikes, encoder),
               None if decoder is None else lambda data: _jbig_decode(data, decoder, spikes.shape))


def _check_spikes(spikes: np.ndarray) -> np.ndarray:
    if not isinstance(spikes, np.ndarray) or spikes.ndim != 3 or 0 in spikes.shape:
        raise ValueError(
            "spikes must be a non-empty (T, H, W) array, got shape "
            f"{getattr(spikes, 'shape', None)}"
        )
    return spikes.astype(np.uint8, copy=False)


def lossless_bits(spikes: np.ndarray, tool: str | None) -> dict[str, int]:
    """Bits of each lossless coder on (T, H, W) 0/1 spikes, keyed by the labels of
    :data:`LOSSLESS_CODERS` ("raw .dat", "zstd -19", "xz -9", and "JBIG (jbigkit)" when ``tool``,
    the path of jbigkit's ``pbmtojbg``, is given). zstd and xz code the ``.dat`` layout; JBIG codes
    the frames stacked vertically as one bi-level image."""
    spikes = _check_spikes(spikes)
    jbig = None if tool is None else (tool, None)
    return {label: len(encode()) * 8 for label, encode, _ in _lossless_coders(spikes, jbig)}


def lossless_anchor(
    spikes: np.ndarray, jbig: tuple[str, str | None] | None | bool = True
) -> list[RatePoint]:
    """Rate points of the lossless coders on (T, H, W) 0/1 spikes, each decoded and checked.

    ``jbig``: True finds jbigkit on the PATH (JBIG is left out when it is missing), False leaves
    it out, or a ``(pbmtojbg, jbgtopbm)`` pair. Decode seconds are NaN where no decoder exists.
    Raises AnchorError when a coder does not give the spikes back exactly.
    """
    spikes = _check_spikes(spikes)
    if jbig is True:
        jbig = find_jbig_tools()
    elif jbig is False:
        jbig = None
    points = []
    for label, encode, decode in _lossless_coders(spikes, jbig):
        started = time.perf_counter()
        data = encode()
        encode_seconds = time.perf_counter() - started
        decode_seconds = float("nan")
        if decode is not None:
            started = time.perf_counter()
            restored = decode(data)
            decode_seconds = time.perf_counter() - started
            if not np.array_equal(restored, spikes):
                raise AnchorError(f"{label} did not give the spikes back exactly")
        bits = len(data) * 8
        points.append(RatePoint(
            codec=LOSSLESS_CODERS[label], setting="lossless", bits=bits,
            bpp=bits_per_pixel(bits, *spikes.shape), psnr=None, ssim=None,
            encode_seconds=encode_seconds, decode_seconds=decode_seconds,
        ))
    return points


__all__ = [
    "AnchorError", "AnchorUnavailable", "CodedVideo", "DEFAULT_GOP", "DEFAULT_QPS",
    "FfmpegCapabilities", "LOSSLESS_CODERS", "RatePoint", "VIDEO_CODECS", "VideoCodec",
    "code_video", "ffmpeg_capabilities", "ffmpeg_executable", "find_jbig_tools", "lossless_anchor",
    "lossless_bits", "score_frames", "video_anchor", "video_codec_problem",
]
