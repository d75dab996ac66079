"""Encoder and decoder pipelines: spike stream -> ``.sci`` bitstream -> reconstructed frames.

Encoding (end side) reads the spikes in blocks of moments, so memory stays bounded whatever the
file length: for each block the FEM turns the spike windows into features, the feature codec codes
them (an I frame every ``gop`` moments, P frames in between) and each coded moment goes to disk as a
frame unit through :class:`~spikecodec.bitstream.SciWriter` (the file appears only when complete).

Decoding (cloud side) reads the frame units in order, decodes the features with the codec, and
reconstructs the image of moment k from the decoded features of k - 1, k and k + 1 (the stream's
ends repeat the feature that exists) with AFR, which reads the FMVR-refined decoded motion of P
frames. The end unit's hash of the decoded integer latents is checked after a full decode.
``at`` decodes only the moment nearest a spike index, starting from the I frame of the GOP that
holds the previous moment (its neighbour).

The Python API mirrors the command line: :func:`encode_file`, :func:`decode_file`, and
:func:`decode_stream` (frames in memory, no file written).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from spikecodec import (
    DEFAULT_CODEC_MODEL, DEFAULT_CONVERSION_RATE, DEFAULT_GOP, DEFAULT_QUALITY, DEFAULT_SPIKE_RATE_HZ,
    DEFAULT_STRIDE,
)

ENTROPY_CODER = "ans"  # compressai's rANS coder
MOMENTS_PER_BLOCK = 8  # moments whose spikes and features are in memory at once while encoding


class CodecError(ValueError):
    """A stream cannot be encoded or decoded as asked (the message says why)."""


@dataclass
class EncodeResult:
    path: Path
    header: Any
    frames: int
    bytes: int
    bpp: float
    seconds: float
    moments: np.ndarray = field(repr=False)
    payload_bytes: int = 0  # entropy-coded strings only (no headers, framing or CRCs)


@dataclass
class DecodeResult:
    frames: np.ndarray = field(repr=False)  # (N, H, W) float32 in [0, 1]
    moments: np.ndarray  # spike index of each frame
    header: Any
    seconds: float
    hash_verified: bool
    paths: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------ models


@dataclass
class EndSide:
    """What encoding needs: the FEM, the codec (CDF tables built) and the identity the stream records."""

    model_id: str
    identity: str
    fem: Any
    codec: Any


def load_end_side(model_id: str) -> EndSide:
    """The registered codec ``model_id`` with its FEM (weights checked against the registry)."""
    from spikecodec.models.registry import get_spec, load_model, stream_identity

    spec = get_spec(model_id)
    if spec.kind != "codec":
        raise CodecError(f"model {model_id!r} is a {spec.kind}; encoding needs a codec id "
                         f"(default {DEFAULT_CODEC_MODEL!r})")
    return EndSide(model_id, stream_identity(model_id), load_model(spec.base), load_model(model_id))


def _threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise CodecError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------ encode


def _check_options(quality: int, stride: int, gop: int, qualities: int) -> None:
    if isinstance(quality, bool) or int(quality) != quality or not 0 <= quality < qualities:
        raise CodecError(f"quality must be an integer in 0..{qualities - 1}, got {quality!r}")
    if int(stride) != stride or stride < 1:
        raise CodecError(f"stride must be a positive number of spike frames, got {stride!r}")
    if int(gop) != gop or gop < 1:
        raise CodecError(f"gop must be a positive number of moments, got {gop!r}")


def encode_reader(
    reader: Any, output: str | os.PathLike, *, quality: int = DEFAULT_QUALITY, stride: int = DEFAULT_STRIDE,
    phase: int | None = None, gop: int = DEFAULT_GOP, model: str | EndSide = DEFAULT_CODEC_MODEL, force: bool = False,
    progress: bool = False, threads: int | None = None,
) -> EncodeResult:
    """Encode an open spike reader (:func:`spikecodec.io.open_spikes`) to ``output``.

    ``model`` is a registered codec id, or loaded :class:`EndSide` models (experiments)."""
    from tqdm import tqdm

    from spikecodec.bitstream import FrameUnit, LatentHasher, SciWriter, SequenceHeader
    from spikecodec.models.codec import latent_sizes
    from spikecodec.models.fem import extract_features
    from spikecodec.moments import moments_for

    began = time.perf_counter()
    _threads(threads)
    models = model if isinstance(model, EndSide) else load_end_side(model)
    fem, codec = models.fem, models.codec
    _check_options(quality, stride, gop, codec.config.qualities)
    before, after = fem.window_before, fem.window_after
    total = reader.num_frames
    moments = moments_for(total, int(stride), before=before, after=after, phase=phase)
    if moments.size == 0:
        raise CodecError(f"the stream holds {total} spike frames, fewer than one FEM window of "
                         f"{before + after + 1}; use a longer stream")
    header = SequenceHeader(
        height=reader.height, width=reader.width, spike_frames=total, spike_rate_hz=DEFAULT_SPIKE_RATE_HZ,
        window=before + after + 1, stride=int(stride), phase=int(moments[0]), gop_length=int(gop),
        quality=int(quality), conversion_rate=DEFAULT_CONVERSION_RATE, model_id=models.model_id,
        model_sha256=models.identity, entropy_coder=ENTROPY_CODER,
    )
    sizes = latent_sizes(reader.height, reader.width, codec.config.latent_stride)
    hasher = LatentHasher()
    payload = 0
    state = None
    with torch.no_grad(), SciWriter(output, header, force=force) as writer:
        bar = tqdm(total=int(moments.size), desc="encode", unit="moment", disable=not progress)
        try:
            for first in range(0, moments.size, MOMENTS_PER_BLOCK):
                block = moments[first:first + MOMENTS_PER_BLOCK]
                start, stop = int(block[0]) - before, int(block[-1]) + after + 1
                features = extract_features(fem, reader.read(start, stop), block - start)
                for offset, feature in enumerate(features):
                    index = first + offset
                    reference = None if index % gop == 0 else state
                    coded = codec.compress(feature[None], int(quality), reference)
                    state = coded["state"]
                    names = tuple(coded["strings"])  # LATENT_NAMES order; a motionless P frame has fewer
                    writer.write_frame(FrameUnit.make(coded["frame_type"], index, int(moments[index]), {
                        name: (sizes[name], coded["strings"][name]) for name in names
                    }))
                    for name in names:
                        hasher.update(coded["latents"][name][0].cpu().numpy())
                        payload += sum(len(s) for s in coded["strings"][name])
                    bar.update(1)
        finally:
            bar.close()
        size = writer.finish(hasher.digest())
    seconds = time.perf_counter() - began
    bpp = 8.0 * size / (total * reader.height * reader.width)
    return EncodeResult(Path(output), header, int(moments.size), size, bpp, seconds, moments, payload)


def encode_file(
    input: str | os.PathLike, output: str | os.PathLike, *, height: int | None = None, width: int | None = None,
    head_columns: int = 0, quality: int = DEFAULT_QUALITY, stride: int = DEFAULT_STRIDE, phase: int | None = None,
    gop: int = DEFAULT_GOP, model: str = DEFAULT_CODEC_MODEL, force: bool = False, progress: bool = False,
    threads: int | None = None,
) -> EncodeResult:
    """Encode a spike file (``.dat``/``.npz``/``.h5``) to a ``.sci`` bitstream (``spikecodec encode``).

    ``quality`` 0 is the lowest rate; ``stride`` spike frames between coded moments (20: a 1,000 fps
    video at 20 kHz); ``phase`` the spike index of one moment (default: the first valid one); an I
    frame every ``gop`` moments. ``output`` is written only when complete and never overwritten
    unless ``force``.
    """
    from spikecodec.io import open_spikes

    with open_spikes(input, height=height, width=width, head_columns=head_columns) as reader:
        return encode_reader(reader, output, quality=quality, stride=stride, phase=phase, gop=gop, model=model,
                             force=force, progress=progress, threads=threads)


# ------------------------------------------------------------------------------------ decode


def load_stream_codec(header: Any) -> Any:
    """The installed codec a stream names, after checking its weights identity (ModelMismatch if
    this installation does not have those weights)."""
    from spikecodec.bitstream import ModelMismatch, check_model
    from spikecodec.models.registry import ModelNotFoundError, get_spec, load_model, stream_identity

    try:
        spec = get_spec(header.model_id)
    except ModelNotFoundError as error:
        raise ModelMismatch(f"the stream was made with model {header.model_id!r}, which this installation "
                            f"does not have ({error})") from None
    if spec.kind != "codec":
        raise ModelMismatch(f"the stream names model {header.model_id!r}, a {spec.kind}, not a codec")
    check_model(header, header.model_id, stream_identity(header.model_id))
    return load_model(header.model_id)


def analysis_spec(codec_id: str, analysis: str | None) -> Any:
    """Registry entry of ``analysis`` or of the reconstructor codec ``codec_id`` names, checked."""
    from spikecodec.models.registry import get_spec

    spec = get_spec(codec_id)
    analysis_id = analysis or spec.analysis
    if analysis_id is None:
        raise CodecError(f"codec {codec_id!r} names no reconstructor; pass one (--analysis)")
    found = get_spec(analysis_id)
    if found.kind != "reconstructor" or found.base != spec.base:
        raise CodecError(f"{analysis_id!r} does not analyse the features of {codec_id!r} "
                         f"(it is a {found.kind} on {found.base!r}, the codec codes {spec.base!r})")
    return found


def load_cloud_side(header: Any, analysis: str | None) -> tuple[Any, Any]:
    """(codec, reconstructor) for decoding a stream: ``analysis`` or the one the codec names."""
    from spikecodec.models.registry import load_model

    codec = load_stream_codec(header)
    return codec, load_model(analysis_spec(header.model_id, analysis).model_id)


def reads_decoded_motion(header: Any, analysis: str | None) -> bool:
    """Whether the reconstructor decoding this stream reads the decoded motion (see ModelSpec)."""
    return analysis_spec(header.model_id, analysis).decoded_motion


def _frame_strings(frame: Any, kind: str, sizes: dict[str, tuple[int, int]]) -> dict[str, list[bytes]]:
    from spikecodec.bitstream import MalformedUnit
    from spikecodec.models.codec import LATENT_NAMES, MOTIONLESS_P_NAMES

    present = tuple(latent.name for latent in frame.latents)
    allowed = (LATENT_NAMES[kind],) + ((MOTIONLESS_P_NAMES,) if kind == "P" else ())
    if present not in allowed:
        raise MalformedUnit(f"frame {frame.moment_index}: latents {list(present)}, a {frame.frame_type.name} "
                            f"frame has {' or '.join(str(list(names)) for names in allowed)}")
    strings = {}
    for latent in frame.latents:
        if tuple(latent.shape) != tuple(sizes[latent.name]) or len(latent.strings) != 1:
            raise MalformedUnit(f"frame {frame.moment_index}: latent {latent.name!r} has shape {latent.shape} "
                                f"and {len(latent.strings)} strings; the header's size needs {sizes[latent.name]} "
                                f"and 1")
        strings[latent.name] = list(latent.strings)
    return strings


def _decoded_features(codec: Any, header: Any, frames: Iterator[Any], hasher: Any) -> Iterator[tuple[int, Any, Any]]:
    """(moment index, decoded feature, refined motion or None) per frame unit, in stream order."""
    from spikecodec.bitstream import FrameType, MalformedUnit
    from spikecodec.models.codec import latent_sizes

    sizes = latent_sizes(header.height, header.width, codec.config.latent_stride)
    shapes = {"x": (header.height, header.width), "z": sizes["z"], "motion_z": sizes["motion_z"]}
    state = None
    expected = None
    for frame in frames:
        if expected is not None and frame.moment_index != expected:
            raise MalformedUnit(f"frame units out of order: moment {frame.moment_index} after {expected - 1}")
        kind = "I" if frame.frame_type == FrameType.I else "P"
        if kind == "P" and state is None:
            raise MalformedUnit(f"frame {frame.moment_index} is a P frame with no decoded reference before it")
        out = codec.decompress(_frame_strings(frame, kind, sizes), shapes, header.quality,
                               None if kind == "I" else state)
        state = out["state"]
        if hasher is not None:
            for latents in out["latents"].values():  # in the frame unit's order
                hasher.update(latents[0].cpu().numpy())
        expected = frame.moment_index + 1
        yield frame.moment_index, out["x_hat"], out["motion_refined"]


def decoded_features(input: str | os.PathLike, codec: Any) -> Iterator[tuple[int, Any]]:
    """(moment index, decoded feature (1, C, H, W)) of every moment of a ``.sci`` file, in stream
    order, decoded by the loaded ``codec`` exactly as ``decode`` does (stage c2 trains on them)."""
    from spikecodec.bitstream import SciReader

    with torch.no_grad(), SciReader(input) as reader:
        for index, feature, _ in _decoded_features(codec, reader.header, reader.frames(), None):
            yield index, feature


def neighbourhoods(decoded: Iterator[tuple[int, Any, Any]], count: int) -> Iterator[tuple[Any, Any, Any]]:
    """(previous, current, next) decoded items of each moment, as soon as the next one is decoded.

    ``decoded`` yields (moment index, feature, motion) in stream order, possibly starting after
    moment 0 (a seek: the first item then only serves as the previous neighbour). The stream's
    first and last moments stand in for their missing neighbour; ``count`` is the stream's number
    of moments.
    """
    window: list[tuple[int, Any, Any]] = []
    for item in decoded:
        window.append(item)
        if len(window) == 2 and window[0][0] == 0:
            yield window[0], window[0], window[1]
        if len(window) == 3:
            yield window[0], window[1], window[2]
            window.pop(0)
    if window and window[-1][0] == count - 1:
        yield (window[-2] if len(window) > 1 else window[-1]), window[-1], window[-1]


def _analyse(analysis: Any, previous: Any, current: Any, following: Any, refined_motion: bool,
             quality: int) -> np.ndarray:
    (_, f_prev, _), (_, f_cur, motion), (_, f_next, _) = previous, current, following
    use = motion if refined_motion and previous is not current else None
    image = analysis.analyze(f_prev, f_cur, f_next, motion_prev=use, quality=quality)["image"]
    return image[0, 0].clamp(0.0, 1.0).cpu().numpy()


def nearest_moment(header: Any, frame_count: int, spike_index: int) -> int:
    """Index of the coded moment nearest ``spike_index`` (ties go to the earlier moment)."""
    if isinstance(spike_index, bool) or int(spike_index) != spike_index:
        raise CodecError(f"--at takes a spike-frame index, got {spike_index!r}")
    if not 0 <= spike_index < header.spike_frames:
        raise CodecError(f"spike index {spike_index} is outside the stream's 0..{header.spike_frames - 1}")
    k = math.floor((spike_index - header.phase) / header.stride + 0.5 - 1e-9)
    return min(max(k, 0), frame_count - 1)


def decode_stream(
    input: str | os.PathLike, *, at: int | None = None, analysis: str | None = None, progress: bool = False,
    threads: int | None = None, models: tuple[Any, Any] | None = None, refined_motion: bool | None = None,
) -> DecodeResult:
    """Decode a ``.sci`` file to frames in memory (every moment, or the one nearest spike index ``at``).

    ``analysis`` overrides the reconstructor the codec names. For experiments, ``models`` gives
    loaded (codec, reconstructor) instead of the registry (the stream's model identity is then
    not checked). ``refined_motion``: AFR reads the FMVR-refined decoded motion (True) or estimates
    motion itself (False); None: as the reconstructor was trained (registry), True with ``models``.
    """
    from tqdm import tqdm

    from spikecodec.bitstream import LatentHasher, SciReader

    began = time.perf_counter()
    _threads(threads)
    with torch.no_grad(), SciReader(input) as reader:
        header = reader.header
        codec, analyser = models if models is not None else load_cloud_side(header, analysis)
        if refined_motion is None:
            refined_motion = models is not None or reads_decoded_motion(header, analysis)
        count = reader.end.frame_count
        if count < 1:
            raise CodecError(f"{input} holds no coded moments")
        if at is not None:
            target = nearest_moment(header, count, at)
            hasher = None
            frames = reader.seek_moment(max(target - 1, 0))
        else:
            target = None
            hasher = LatentHasher()
            frames = reader.frames()
        images, moments = [], []
        bar = tqdm(total=count if at is None else None, desc="decode", unit="moment", disable=not progress)
        try:
            for previous, current, following in neighbourhoods(_decoded_features(codec, header, frames, hasher), count):
                bar.update(1)
                if target is None or current[0] == target:
                    images.append(_analyse(analyser, previous, current, following, refined_motion, header.quality))
                    moments.append(header.phase + current[0] * header.stride)
                if target is not None and current[0] == target:
                    break
        finally:
            bar.close()
        if at is None:
            if len(images) != count:
                raise CodecError(f"decoded {len(images)} moments, the end unit announces {count}")
            reader.verify_content_hash(hasher.digest())  # type: ignore[union-attr]
    return DecodeResult(np.stack(images), np.asarray(moments, dtype=np.int64), header,
                        time.perf_counter() - began, hash_verified=at is None)


def decode_file(
    input: str | os.PathLike, output: str | os.PathLike, *, at: int | None = None, analysis: str | None = None,
    fps: float | None = None, force: bool = False, progress: bool = False, threads: int | None = None,
) -> DecodeResult:
    """Decode ``input`` and write ``output`` (``spikecodec decode``): ``.mp4`` (with a
    ``.timestamps.json`` sidecar), ``.npz``/``.h5`` (float32 ``frames`` in [0, 1] and ``timestamps``)
    or a directory of PNGs; each frame's moment is recorded."""
    from spikecodec.outputs import DEFAULT_PLAYBACK_FPS, output_kind, write_frames

    output_kind(output)  # an unsupported output fails before the decode
    target = Path(output)
    if target.exists() and not force:
        raise CodecError(f"{target} exists; pass --force (force=True) to overwrite it")
    result = decode_stream(input, at=at, analysis=analysis, progress=progress, threads=threads)
    result.paths = write_frames(
        output, result.frames, result.moments, spike_rate_hz=result.header.spike_rate_hz,
        fps=DEFAULT_PLAYBACK_FPS if fps is None else fps, force=force,
        metadata={"method": "sci", "source": str(input), "model_id": result.header.model_id,
                  "quality": result.header.quality},
    )
    return result


__all__ = [
    "CodecError", "DecodeResult", "EncodeResult", "EndSide", "decode_file", "decode_stream", "encode_file",
    "encode_reader", "load_end_side", "load_stream_codec", "nearest_moment", "neighbourhoods",
]
