"""The ``.sci`` bitstream container (normative specification: ``docs/bitstream.md``).

A stream is a 16-byte preamble (magic, version, CRC) followed by typed units. Every unit carries
its type, its payload length, a CRC of those two (so a length is trusted before anything is read
or allocated) and a CRC of the whole unit. Unit order::

    preamble  HEAD  (FRAM | ancillary)*  [seek]  (ancillary)*  ENDS

This module has no dependency on the models: it moves entropy-coded byte strings, shapes and
hashes, and checks every byte it reads.

Writing::

    with SciWriter("out.sci", header) as writer:
        hasher = LatentHasher()
        for frame, integer_latents in encoded_frames:
            writer.write_frame(frame)
            for array in integer_latents:
                hasher.update(array)
        writer.finish(hasher)          # the file appears only now, atomically

Reading::

    with SciReader("out.sci") as reader:
        reader.check_model(installed_id, installed_sha256)
        for frame in reader.frames():           # or reader.seek_moment(k)
            ...
        reader.verify_content_hash(hasher_of_decoded_latents)
"""

from __future__ import annotations

import enum
import errno
import hashlib
import io
import json
import math
import numbers
import os
import re
import struct
import tempfile
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping, Sequence, Union

from spikecodec.outputs import apply_default_mode

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "BitstreamError",
    "BadMagic",
    "UnsupportedVersion",
    "Truncated",
    "CRCMismatch",
    "UnknownCriticalUnit",
    "MalformedUnit",
    "ImplausibleSize",
    "ModelMismatch",
    "ContentHashMismatch",
    "FrameType",
    "SequenceHeader",
    "Latent",
    "FrameUnit",
    "SeekEntry",
    "EndUnit",
    "LatentHasher",
    "latent_hash",
    "check_model",
    "encode_unit",
    "serialize",
    "SciWriter",
    "SciReader",
    "FrameSummary",
    "StreamSummary",
    "inspect",
    "parse",
    "EXIT_OK",
    "EXIT_DAMAGED",
    "EXIT_NOT_SCI",
    "EXIT_UNSUPPORTED",
    "EXIT_ANCILLARY_DAMAGED",
]

# --------------------------------------------------------------------------------------------
# Constants of the format (docs/bitstream.md, sections 2-4 and 9)
# --------------------------------------------------------------------------------------------

#: High-bit byte (7-bit transfers), name, CR LF (LF->CRLF or CRLF->LF conversion), Ctrl-Z
#: (stops DOS ``type``), LF (CRLF->LF conversion): as PNG's signature does.
MAGIC = b"\x8cSCI\r\n\x1a\n"
FORMAT_VERSION = (1, 0)
PREAMBLE_SIZE = 16
UNIT_HEADER_SIZE = 12  # type(4) length(4) header CRC(4)
UNIT_CRC_SIZE = 4
UNIT_OVERHEAD = UNIT_HEADER_SIZE + UNIT_CRC_SIZE

TYPE_HEAD = b"HEAD"
TYPE_FRAME = b"FRAM"
TYPE_END = b"ENDS"
TYPE_SEEK = b"seek"
TYPE_INFO = b"info"
_KNOWN_TYPES = {TYPE_HEAD, TYPE_FRAME, TYPE_END, TYPE_SEEK, TYPE_INFO}

END_PAYLOAD_SIZE = 44  # content sha256 (32) + frame count u32 + seek offset u64
END_UNIT_SIZE = UNIT_OVERHEAD + END_PAYLOAD_SIZE

# Hard limits: a reader refuses anything above them before allocating.
MAX_UNIT_PAYLOAD = 1 << 28  # 256 MiB
MAX_HEAD_PAYLOAD = 1 << 12
MAX_INFO_PAYLOAD = 1 << 20
MAX_DIMENSION = 1 << 14
MAX_PIXELS = 1 << 24
MAX_SPIKE_FRAMES = 1 << 40
MAX_WINDOW = 1 << 20
MAX_STRIDE = 1 << 20
MAX_GOP_LENGTH = 1 << 16
MAX_NAME_BYTES = 64
MAX_LATENTS_PER_FRAME = 16
MAX_LATENT_NDIM = 8
MAX_LATENT_ELEMENTS = 1 << 28
MAX_STRINGS_PER_LATENT = 1024
MAX_FRAMES = (1 << 32) - 1
_U16_MAX = (1 << 16) - 1
_U32_MAX = (1 << 32) - 1
_READ_CHUNK = 1 << 20

FLAG_LOSSLESS = 0x0001

_IDENTIFIER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*\Z")
_HEAD_FIXED = struct.Struct("<IIQIIIIQdHH32s")
_FRAME_FIXED = struct.Struct("<BBIQ")
_SEEK_ENTRY = struct.Struct("<IQ")
_END = struct.Struct("<32sIQ")

# Exit status of ``spikecodec info`` (docs/bitstream.md, section 10).
EXIT_OK = 0
EXIT_DAMAGED = 3
EXIT_NOT_SCI = 4
EXIT_UNSUPPORTED = 5
EXIT_ANCILLARY_DAMAGED = 6


# --------------------------------------------------------------------------------------------
# Errors: one family, one subclass per cause
# --------------------------------------------------------------------------------------------


class BitstreamError(Exception):
    """Base of every error about a ``.sci`` stream. ``offset`` is the byte where it was found."""

    exit_status = EXIT_DAMAGED

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        if self.offset is None:
            return self.message
        return f"{self.message} (at byte {self.offset})"


class BadMagic(BitstreamError):
    """The data does not start with the ``.sci`` signature."""

    exit_status = EXIT_NOT_SCI


class UnsupportedVersion(BitstreamError):
    """The stream's major version is not one this reader implements."""

    exit_status = EXIT_UNSUPPORTED


class Truncated(BitstreamError):
    """The data ends before the end unit."""


class CRCMismatch(BitstreamError):
    """A CRC-32 does not match the bytes it covers."""


class UnknownCriticalUnit(BitstreamError):
    """A critical unit type this reader does not know (it cannot be skipped safely)."""


class MalformedUnit(BitstreamError, ValueError):
    """A field is out of its allowed range, or units are in an order the format forbids."""


class ImplausibleSize(BitstreamError, ValueError):
    """A declared size or count is above the format's hard limits."""


class ModelMismatch(BitstreamError):
    """The stream was encoded with other model weights than the installed ones."""


class ContentHashMismatch(BitstreamError):
    """The decoded latents do not hash to the end unit's content hash."""


# --------------------------------------------------------------------------------------------
# Field validation helpers (used by constructors, so writer and reader apply the same rules)
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, low: int, high: int, *, size: bool = False) -> int:
    # numbers.Integral admits numpy integers; floats and bools are refused.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MalformedUnit(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or value > high:
        error = ImplausibleSize if size and value > high else MalformedUnit
        raise error(f"{name} = {value} is outside the allowed range {low}..{high}")
    return value


def _check_identifier(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise MalformedUnit(f"{name} must be a string, got {type(value).__name__}")
    encoded = value.encode("ascii", errors="replace")
    if not 1 <= len(encoded) <= MAX_NAME_BYTES or not _IDENTIFIER.match(value):
        raise MalformedUnit(
            f"{name} {value!r} must be 1..{MAX_NAME_BYTES} ASCII characters from "
            "A-Z a-z 0-9 _ . + - (not starting with . + -)"
        )
    return value


def _as_sha256(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise MalformedUnit(f"{name} is not a hexadecimal string") from None
    if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) != 32:
        raise MalformedUnit(f"{name} must be 32 bytes (a sha256 digest)")
    return bytes(value)


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


class FrameType(enum.IntEnum):
    """Coding type of a frame unit: intra (decodable alone) or predicted from the previous one."""

    I = 0  # noqa: E741 - the codec's own name for it
    P = 1


@dataclass(frozen=True)
class SequenceHeader:
    """Everything a decoder needs before the first frame (the ``HEAD`` unit).

    ``phase``, ``window`` and ``stride`` are spike-frame counts (DESIGN.md, "Time");
    ``model_sha256`` is the sha256 of the weights that decoding the latents depends on.
    """

    height: int
    width: int
    spike_frames: int
    spike_rate_hz: int
    window: int
    stride: int
    phase: int
    gop_length: int
    quality: int
    conversion_rate: float
    model_id: str
    model_sha256: bytes
    entropy_coder: str
    lossless: bool = False

    def __post_init__(self) -> None:
        _check_int("height", self.height, 1, MAX_DIMENSION, size=True)
        _check_int("width", self.width, 1, MAX_DIMENSION, size=True)
        if int(self.height) * int(self.width) > MAX_PIXELS:
            raise ImplausibleSize(
                f"height x width = {self.height} x {self.width} is above {MAX_PIXELS} pixels"
            )
        _check_int("spike_frames", self.spike_frames, 1, MAX_SPIKE_FRAMES, size=True)
        _check_int("spike_rate_hz", self.spike_rate_hz, 1, _U32_MAX)
        _check_int("window", self.window, 1, MAX_WINDOW, size=True)
        _check_int("stride", self.stride, 1, MAX_STRIDE, size=True)
        _check_int("gop_length", self.gop_length, 1, MAX_GOP_LENGTH, size=True)
        _check_int("phase", self.phase, 0, int(self.spike_frames) - 1)
        _check_int("quality", self.quality, 0, _U16_MAX)
        for name in ("height", "width", "spike_frames", "spike_rate_hz", "window", "stride",
                     "phase", "gop_length", "quality"):
            object.__setattr__(self, name, int(getattr(self, name)))
        rate = self.conversion_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise MalformedUnit(f"conversion_rate must be a number, got {rate!r}")
        if not math.isfinite(rate) or rate <= 0:
            raise MalformedUnit(f"conversion_rate = {rate} must be finite and > 0")
        object.__setattr__(self, "conversion_rate", float(rate))
        _check_identifier("model_id", self.model_id)
        _check_identifier("entropy_coder", self.entropy_coder)
        object.__setattr__(self, "model_sha256", _as_sha256("model_sha256", self.model_sha256))
        if not isinstance(self.lossless, bool):
            raise MalformedUnit("lossless must be a bool")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (sha256 as hex)."""
        return {
            "height": self.height,
            "width": self.width,
            "spike_frames": self.spike_frames,
            "spike_rate_hz": self.spike_rate_hz,
            "window": self.window,
            "stride": self.stride,
            "phase": self.phase,
            "gop_length": self.gop_length,
            "quality": self.quality,
            "conversion_rate": self.conversion_rate,
            "model_id": self.model_id,
            "model_sha256": self.model_sha256.hex(),
            "entropy_coder": self.entropy_coder,
            "lossless": self.lossless,
        }


@dataclass(frozen=True)
class Latent:
    """One entropy-coded latent of a frame: its name, the shape the decoder needs, its strings.

    For a compressai hyperprior model a frame has e.g. ``Latent("z", z_shape, [z_string])`` and
    ``Latent("y", y_shape, [y_string])``.
    """

    name: str
    shape: tuple[int, ...]
    strings: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_identifier("latent name", self.name)
        try:
            shape = tuple(self.shape)
        except TypeError:
            raise MalformedUnit(f"latent {self.name!r}: shape must be a sequence") from None
        if not 1 <= len(shape) <= MAX_LATENT_NDIM:
            raise MalformedUnit(
                f"latent {self.name!r}: shape must have 1..{MAX_LATENT_NDIM} dimensions"
            )
        shape = tuple(
            _check_int(f"latent {self.name!r} dimension", d, 1, _U32_MAX, size=True) for d in shape
        )
        if math.prod(shape) > MAX_LATENT_ELEMENTS:
            raise ImplausibleSize(
                f"latent {self.name!r}: shape {shape} has more than {MAX_LATENT_ELEMENTS} elements"
            )
        strings = self.strings
        if isinstance(strings, (bytes, bytearray, memoryview)):
            strings = (strings,)
        try:
            strings = tuple(strings)
        except TypeError:
            raise MalformedUnit(f"latent {self.name!r}: strings must be a sequence") from None
        if not 1 <= len(strings) <= MAX_STRINGS_PER_LATENT:
            raise ImplausibleSize(
                f"latent {self.name!r}: {len(strings)} strings, allowed 1..{MAX_STRINGS_PER_LATENT}"
            )
        for s in strings:
            if not isinstance(s, (bytes, bytearray, memoryview)):
                raise MalformedUnit(f"latent {self.name!r}: strings must be bytes objects")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "strings", tuple(bytes(s) for s in strings))


@dataclass(frozen=True)
class FrameUnit:
    """One coded moment (the ``FRAM`` unit).

    ``moment_index`` counts the coded moments from 0 (consecutive); ``spike_time`` is the
    moment's absolute spike-frame index. ``offset`` and ``size`` are filled in by the reader.
    """

    frame_type: FrameType
    moment_index: int
    spike_time: int
    latents: tuple[Latent, ...]
    offset: int | None = field(default=None, compare=False, repr=False)
    size: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            kind = self.frame_type
            kind = FrameType[kind] if isinstance(kind, str) else FrameType(kind)
        except (KeyError, ValueError):
            raise MalformedUnit(f"frame_type {self.frame_type!r} is not I or P") from None
        object.__setattr__(self, "frame_type", kind)
        object.__setattr__(
            self, "moment_index", _check_int("moment_index", self.moment_index, 0, MAX_FRAMES - 1)
        )
        object.__setattr__(
            self,
            "spike_time",
            _check_int("spike_time", self.spike_time, 0, MAX_SPIKE_FRAMES - 1, size=True),
        )
        latents = self.latents
        if isinstance(latents, Mapping):
            raise MalformedUnit("latents must be a sequence of Latent (see FrameUnit.make)")
        latents = tuple(latents)
        if not 1 <= len(latents) <= MAX_LATENTS_PER_FRAME:
            raise ImplausibleSize(
                f"a frame has {len(latents)} latents, allowed 1..{MAX_LATENTS_PER_FRAME}"
            )
        names = set()
        for latent in latents:
            if not isinstance(latent, Latent):
                raise MalformedUnit("latents must be Latent objects")
            if latent.name in names:
                raise MalformedUnit(f"latent name {latent.name!r} appears twice in a frame")
            names.add(latent.name)
        object.__setattr__(self, "latents", latents)

    @classmethod
    def make(
        cls,
        frame_type: FrameType | str,
        moment_index: int,
        spike_time: int,
        latents: Mapping[str, tuple[Sequence[int], Sequence[bytes]]],
    ) -> "FrameUnit":
        """Build a frame from ``{name: (shape, strings)}`` (insertion order is kept)."""
        return cls(
            frame_type,
            moment_index,
            spike_time,
            tuple(Latent(name, shape, strings) for name, (shape, strings) in latents.items()),
        )

    def latent(self, name: str) -> Latent:
        """The latent called ``name``; KeyError if the frame has none."""
        for latent in self.latents:
            if latent.name == name:
                return latent
        raise KeyError(f"frame {self.moment_index} has no latent {name!r}")


@dataclass(frozen=True)
class SeekEntry:
    """An I frame's moment index and the byte offset of its unit from the start of the stream."""

    moment_index: int
    offset: int


@dataclass(frozen=True)
class EndUnit:
    """The ``ENDS`` unit: content hash, frame unit count, offset of the seek index (0: none)."""

    content_hash: bytes
    frame_count: int
    seek_offset: int


# --------------------------------------------------------------------------------------------
# Content hash of the decoded integer latents
# --------------------------------------------------------------------------------------------


def _as_int32_array(latent: Any):
    import numpy as np

    if hasattr(latent, "detach"):  # a torch tensor, without importing torch here
        latent = latent.detach().cpu().numpy()
    array = np.asarray(latent)
    if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
        raise ValueError(f"latents must be integer-valued numbers, got dtype {array.dtype}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError("a floating-point latent must hold integer values (round it first)")
    if array.size and (array.min() < -(1 << 31) or array.max() > (1 << 31) - 1):
        raise ValueError("latent values must fit in int32")
    return np.ascontiguousarray(array.astype("<i4"))


class LatentHasher:
    """Running sha256 of integer latents in the canonical form of docs/bitstream.md, section 8.

    Each ``update(array)`` adds: ndim (u32 LE), each dimension (u64 LE), then the values as
    int32 little-endian in C order. Encoder and decoder feed, for each frame in stream order,
    each latent's integer symbols in the frame unit's latent order.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.arrays = 0

    def update(self, latent: Any) -> None:
        """Add one integer array (numpy array, torch tensor or nested list)."""
        array = _as_int32_array(latent)
        self._sha.update(struct.pack("<I", array.ndim))
        self._sha.update(struct.pack(f"<{array.ndim}Q", *array.shape))
        self._sha.update(array.tobytes(order="C"))
        self.arrays += 1

    def digest(self) -> bytes:
        """The 32-byte sha256 digest so far."""
        return self._sha.digest()

    def hexdigest(self) -> str:
        """The digest as hex."""
        return self._sha.hexdigest()

    def copy(self) -> "LatentHasher":
        """An independent copy of the running state."""
        other = LatentHasher()
        other._sha = self._sha.copy()
        other.arrays = self.arrays
        return other


def latent_hash(latents: Iterable[Any]) -> bytes:
    """sha256 digest of integer arrays in the canonical form (see :class:`LatentHasher`)."""
    hasher = LatentHasher()
    for latent in latents:
        hasher.update(latent)
    return hasher.digest()


def _digest_of(content_hash: Any) -> bytes:
    if hasattr(content_hash, "digest"):
        content_hash = content_hash.digest()
    if not isinstance(content_hash, (bytes, bytearray)) or len(content_hash) != 32:
        raise ValueError("content hash must be 32 bytes or an object whose digest() gives them")
    return bytes(content_hash)


def check_model(header: SequenceHeader, model_id: str, weights_sha256: bytes | str) -> None:
    """Raise :class:`ModelMismatch` naming both models if the stream needs other weights."""
    installed = _as_sha256("installed weights sha256", weights_sha256)
    if header.model_id == model_id and header.model_sha256 == installed:
        return
    same_id = " (same id, different weights)" if header.model_id == model_id else ""
    raise ModelMismatch(
        f"stream was encoded with model {header.model_id!r} (weights sha256 "
        f"{header.model_sha256.hex()[:12]}) but the installed model is {model_id!r} "
        f"(weights sha256 {installed.hex()[:12]}){same_id}"
    )


# --------------------------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------------------------


def _is_unit_type(unit_type: bytes) -> bool:
    return len(unit_type) == 4 and all(65 <= b <= 90 or 97 <= b <= 122 for b in unit_type)


def _is_ancillary(unit_type: bytes) -> bool:
    return bool(unit_type[0] & 0x20)


def _type_name(unit_type: bytes) -> str:
    return unit_type.decode("ascii", errors="backslashreplace")


def encode_unit(unit_type: bytes | str, payload: bytes) -> bytes:
    """Frame ``payload`` as a unit: type, length, header CRC, payload, unit CRC."""
    if isinstance(unit_type, str):
        unit_type = unit_type.encode("ascii")
    if not _is_unit_type(unit_type):
        raise ValueError(f"unit type {unit_type!r} must be 4 ASCII letters")
    if len(payload) > MAX_UNIT_PAYLOAD:
        raise ImplausibleSize(
            f"a {_type_name(unit_type)} unit of {len(payload)} bytes is above {MAX_UNIT_PAYLOAD}"
        )
    head = unit_type + struct.pack("<I", len(payload))
    head_crc = zlib.crc32(head)
    unit_crc = zlib.crc32(payload, head_crc)  # = crc32(type + length + payload)
    return b"".join((head, struct.pack("<I", head_crc), payload, struct.pack("<I", unit_crc)))


def _preamble(version: tuple[int, int] = FORMAT_VERSION) -> bytes:
    body = MAGIC + struct.pack("<HH", *version)
    return body + struct.pack("<I", zlib.crc32(body))


def _encode_str8(text: str) -> bytes:
    raw = text.encode("ascii")
    return bytes((len(raw),)) + raw


def _encode_head(header: SequenceHeader) -> bytes:
    flags = FLAG_LOSSLESS if header.lossless else 0
    fixed = _HEAD_FIXED.pack(
        header.height, header.width, header.spike_frames, header.spike_rate_hz, header.window,
        header.stride, header.gop_length, header.phase, header.conversion_rate, header.quality,
        flags, header.model_sha256,
    )
    return fixed + _encode_str8(header.model_id) + _encode_str8(header.entropy_coder)


def _encode_frame(frame: FrameUnit) -> bytes:
    parts = [_FRAME_FIXED.pack(int(frame.frame_type), len(frame.latents), frame.moment_index,
                               frame.spike_time)]
    for latent in frame.latents:
        parts.append(_encode_str8(latent.name))
        parts.append(struct.pack(f"<B{len(latent.shape)}I", len(latent.shape), *latent.shape))
        parts.append(struct.pack("<H", len(latent.strings)))
        for s in latent.strings:
            parts.append(struct.pack("<I", len(s)))
            parts.append(s)
    return b"".join(parts)


class _StreamEncoder:
    """Writes a valid unit sequence to a binary file object and enforces the unit order."""

    def __init__(self, out: BinaryIO, header: SequenceHeader) -> None:
        if not isinstance(header, SequenceHeader):
            raise TypeError("header must be a SequenceHeader")
        self._out = out
        self.header = header
        self.position = 0
        self.frame_count = 0
        self._last_spike_time = -1
        self._seek: list[SeekEntry] = []
        self.finished = False
        self._emit(_preamble())
        self._emit(encode_unit(TYPE_HEAD, _encode_head(header)))

    def _emit(self, data: bytes) -> int:
        offset = self.position
        self._out.write(data)
        self.position += len(data)
        return offset

    def _check_open(self) -> None:
        if self.finished:
            raise RuntimeError("the stream is already finished")

    def write_frame(self, frame: FrameUnit) -> int:
        self._check_open()
        if not isinstance(frame, FrameUnit):
            raise TypeError("write_frame takes a FrameUnit")
        if frame.moment_index != self.frame_count:
            raise MalformedUnit(
                f"frame moment_index {frame.moment_index} must be {self.frame_count} "
                "(moments are numbered consecutively from 0)"
            )
        if self.frame_count == 0 and frame.frame_type != FrameType.I:
            raise MalformedUnit("the first frame must be an I frame")
        if frame.spike_time <= self._last_spike_time:
            raise MalformedUnit(
                f"spike_time {frame.spike_time} must be after the previous frame's "
                f"{self._last_spike_time}"
            )
        if frame.spike_time >= self.header.spike_frames:
            raise MalformedUnit(
                f"spike_time {frame.spike_time} is outside the stream's "
                f"{self.header.spike_frames} spike frames"
            )
        if self.frame_count >= MAX_FRAMES:
            raise ImplausibleSize(f"more than {MAX_FRAMES} frames")
        offset = self._emit(encode_unit(TYPE_FRAME, _encode_frame(frame)))
        if frame.frame_type == FrameType.I:
            self._seek.append(SeekEntry(frame.moment_index, offset))
        self.frame_count += 1
        self._last_spike_time = frame.spike_time
        return offset

    def write_ancillary(self, unit_type: bytes | str, payload: bytes) -> int:
        self._check_open()
        if isinstance(unit_type, str):
            unit_type = unit_type.encode("ascii")
        if not _is_unit_type(unit_type) or not _is_ancillary(unit_type):
            raise ValueError(f"{unit_type!r} is not an ancillary type (4 letters, first lowercase)")
        if unit_type == TYPE_SEEK:
            raise ValueError("the seek index is written by finish()")
        if unit_type == TYPE_INFO:
            _decode_info(payload, 0)  # same check a reader applies
        return self._emit(encode_unit(unit_type, bytes(payload)))

    def write_info(self, info: Mapping[str, Any]) -> int:
        if not isinstance(info, Mapping):
            raise TypeError("info must be a mapping (a JSON object)")
        payload = json.dumps(dict(info), sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(payload) > MAX_INFO_PAYLOAD:
            raise ImplausibleSize(f"info unit of {len(payload)} bytes is above {MAX_INFO_PAYLOAD}")
        return self.write_ancillary(TYPE_INFO, payload)

    def finish(self, content_hash: Any) -> int:
        self._check_open()
        digest = _digest_of(content_hash)
        payload = struct.pack("<I", len(self._seek)) + b"".join(
            _SEEK_ENTRY.pack(e.moment_index, e.offset) for e in self._seek
        )
        seek_offset = self._emit(encode_unit(TYPE_SEEK, payload))
        self._emit(encode_unit(TYPE_END, _END.pack(digest, self.frame_count, seek_offset)))
        self.finished = True
        return self.position


def serialize(
    header: SequenceHeader,
    frames: Iterable[FrameUnit],
    content_hash: Any,
    *,
    info: Mapping[str, Any] | None = None,
) -> bytes:
    """A whole stream in memory (tests, tools); encoders use :class:`SciWriter`."""
    buffer = io.BytesIO()
    encoder = _StreamEncoder(buffer, header)
    if info is not None:
        encoder.write_info(info)
    for frame in frames:
        encoder.write_frame(frame)
    encoder.finish(content_hash)
    return buffer.getvalue()


def _discard_partial(file: BinaryIO, temp_path: str) -> None:
    try:
        file.close()
    finally:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass


class SciWriter:
    """Streaming ``.sci`` writer: frames go to disk as they are encoded.

    Bytes go to a hidden temporary file beside ``path``; :meth:`finish` writes the seek index
    and the end unit and renames it to ``path`` atomically. An exception in the ``with`` block,
    :meth:`abort`, or leaving without :meth:`finish` removes the temporary file: a failed encode
    never leaves a file at ``path``. An existing ``path`` is refused unless ``force=True``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        header: SequenceHeader,
        *,
        force: bool = False,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.force = force
        self._refuse_existing()
        directory = self.path.parent
        if not directory.is_dir():
            raise FileNotFoundError(errno.ENOENT, "output directory does not exist", str(directory))
        fd, self._temp_path = tempfile.mkstemp(
            dir=directory, prefix=f".{self.path.name}.", suffix=".partial"
        )
        self._file = os.fdopen(fd, "wb")
        # Removes the temporary file if the writer is dropped without finish() or abort().
        self._cleanup = weakref.finalize(self, _discard_partial, self._file, self._temp_path)
        try:
            self._encoder = _StreamEncoder(self._file, header)
            if info is not None:
                self._encoder.write_info(info)
        except BaseException:
            self.abort()
            raise
        self._closed = False

    def _refuse_existing(self) -> None:
        if self.path.exists() and not self.force:
            raise FileExistsError(
                errno.EEXIST, f"{self.path} exists; pass force=True (--force) to overwrite",
                str(self.path),
            )

    def _guard(self) -> _StreamEncoder:
        if self._closed:
            raise RuntimeError("this SciWriter is closed (finished or aborted)")
        return self._encoder

    @property
    def header(self) -> SequenceHeader:
        """The sequence header being written."""
        return self._encoder.header

    @property
    def bytes_written(self) -> int:
        """Bytes written so far."""
        return self._encoder.position

    @property
    def frame_count(self) -> int:
        """Frames written so far."""
        return self._encoder.frame_count

    def write_frame(self, frame: FrameUnit) -> int:
        """Append one frame; returns its unit's byte offset."""
        try:
            return self._guard().write_frame(frame)
        except OSError:
            self.abort()
            raise

    def write_info(self, info: Mapping[str, Any]) -> int:
        """Append an ancillary ``info`` unit holding ``info`` as a JSON object."""
        return self._guard().write_info(info)

    def write_ancillary(self, unit_type: bytes | str, payload: bytes) -> int:
        """Append an ancillary unit of another type (readers that do not know it skip it)."""
        return self._guard().write_ancillary(unit_type, payload)

    def finish(self, content_hash: Any) -> int:
        """Write seek index and end unit, then publish the file. Returns its size in bytes.

        ``content_hash``: 32 bytes, or a :class:`LatentHasher` / hashlib sha256 object fed with
        the integer latents of every frame.
        """
        encoder = self._guard()
        try:
            size = encoder.finish(content_hash)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._refuse_existing()  # it may have appeared while we were encoding
            apply_default_mode(Path(self._temp_path), 0o666)  # mkstemp made it private
            os.replace(self._temp_path, self.path)
        except BaseException:
            self.abort()
            raise
        self._cleanup.detach()
        self._closed = True
        return size

    def abort(self) -> None:
        """Discard everything written; no file is left behind. Safe to call twice."""
        self._closed = True
        self._cleanup()

    def __enter__(self) -> "SciWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        if not self._closed:
            self.abort()
            raise RuntimeError(f"SciWriter left without finish(): {self.path} was not written")


# --------------------------------------------------------------------------------------------
# Parsing of unit payloads
# --------------------------------------------------------------------------------------------


class _Cursor:
    """Reads fields from a payload whose CRC already matched; every read is bounds-checked."""

    def __init__(self, data: bytes | memoryview, what: str, offset: int) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what
        self.offset = offset

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field_name: str) -> bytes:
        if n > self.remaining:
            raise MalformedUnit(
                f"{self.what} ends inside {field_name} (needs {n} bytes, {self.remaining} left)",
                offset=self.offset,
            )
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct, field_name: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, field_name))

    def u8(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def u16(self, field_name: str) -> int:
        return struct.unpack("<H", self.take(2, field_name))[0]

    def u32(self, field_name: str) -> int:
        return struct.unpack("<I", self.take(4, field_name))[0]

    def identifier(self, field_name: str) -> str:
        raw = self.take(self.u8(field_name + " length"), field_name)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedUnit(
                f"{self.what}: {field_name} is not ASCII", offset=self.offset
            ) from None
        try:
            return _check_identifier(field_name, text)
        except MalformedUnit as e:
            e.offset = self.offset
            raise


def _decode_head(payload: bytes, offset: int) -> SequenceHeader:
    cursor = _Cursor(payload, "HEAD unit", offset)
    (height, width, spike_frames, rate, window, stride, gop, phase, conversion, quality, flags,
     sha) = cursor.unpack(_HEAD_FIXED, "fixed fields")
    model_id = cursor.identifier("model_id")
    coder = cursor.identifier("entropy_coder")
    # Bytes after the known fields are a later minor version's additions: ignored (section 3).
    try:
        return SequenceHeader(
            height=height, width=width, spike_frames=spike_frames, spike_rate_hz=rate,
            window=window, stride=stride, phase=phase, gop_length=gop, quality=quality,
            conversion_rate=conversion, model_id=model_id, model_sha256=sha,
            entropy_coder=coder, lossless=bool(flags & FLAG_LOSSLESS),
        )
    except BitstreamError as e:
        e.offset = offset
        raise


def _decode_frame(payload: bytes, offset: int) -> FrameUnit:
    cursor = _Cursor(payload, "FRAM unit", offset)
    kind, count, moment, spike_time = cursor.unpack(_FRAME_FIXED, "fixed fields")
    if kind not in (0, 1):
        raise MalformedUnit(f"frame type {kind} is neither I (0) nor P (1)", offset=offset)
    if not 1 <= count <= MAX_LATENTS_PER_FRAME:
        raise ImplausibleSize(
            f"frame declares {count} latents, allowed 1..{MAX_LATENTS_PER_FRAME}", offset=offset
        )
    latents = []
    for index in range(count):
        name = cursor.identifier(f"latent {index} name")
        ndim = cursor.u8(f"latent {name!r} ndim")
        if not 1 <= ndim <= MAX_LATENT_NDIM:
            raise MalformedUnit(
                f"latent {name!r} has {ndim} dimensions, allowed 1..{MAX_LATENT_NDIM}",
                offset=offset,
            )
        shape = struct.unpack(f"<{ndim}I", cursor.take(4 * ndim, f"latent {name!r} shape"))
        n_strings = cursor.u16(f"latent {name!r} string count")
        if not 1 <= n_strings <= MAX_STRINGS_PER_LATENT:
            raise ImplausibleSize(
                f"latent {name!r} declares {n_strings} strings, "
                f"allowed 1..{MAX_STRINGS_PER_LATENT}",
                offset=offset,
            )
        strings = []
        for s in range(n_strings):
            length = cursor.u32(f"latent {name!r} string {s} length")
            strings.append(cursor.take(length, f"latent {name!r} string {s}"))
        latents.append((name, shape, strings))
    try:
        return FrameUnit(
            kind, moment, spike_time, tuple(Latent(n, sh, st) for n, sh, st in latents)
        )
    except BitstreamError as e:
        e.offset = offset
        raise


def _decode_seek(payload: bytes, offset: int) -> list[SeekEntry]:
    cursor = _Cursor(payload, "seek unit", offset)
    count = cursor.u32("entry count")
    if count * _SEEK_ENTRY.size > cursor.remaining:
        raise ImplausibleSize(f"seek index declares {count} entries, larger than the unit",
                              offset=offset)
    entries = [SeekEntry(*cursor.unpack(_SEEK_ENTRY, "entry")) for _ in range(count)]
    for before, after in zip(entries, entries[1:], strict=False):
        if after.moment_index <= before.moment_index or after.offset <= before.offset:
            raise MalformedUnit("seek index entries are not increasing", offset=offset)
    return entries


def _decode_info(payload: bytes, offset: int) -> dict[str, Any]:
    try:
        value = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedUnit("info unit is not UTF-8 JSON", offset=offset) from None
    if not isinstance(value, dict):
        raise MalformedUnit("info unit is not a JSON object", offset=offset)
    return value


def _decode_end(payload: bytes, offset: int) -> EndUnit:
    if len(payload) != END_PAYLOAD_SIZE:
        raise MalformedUnit(
            f"end unit payload is {len(payload)} bytes, must be {END_PAYLOAD_SIZE}", offset=offset
        )
    digest, count, seek_offset = _END.unpack(bytes(payload))
    return EndUnit(digest, count, seek_offset)


def _describe_bad_magic(start: bytes) -> str:
    if start[:1] == bytes((MAGIC[0] & 0x7F,)) and start[1:4] == MAGIC[1:4]:
        return "not a .sci stream: the first byte lost its high bit (7-bit transfer damage)"
    if start[:4] == MAGIC[:4]:
        if start[4:6] == b"\n\x1a" or start[4:7] == b"\r\r\n":
            return "not a .sci stream: line endings were converted (text-mode transfer damage)"
        return "not a .sci stream: damaged signature"
    return "not a .sci stream (no SCI signature)"


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


@dataclass
class _Unit:
    unit_type: bytes
    offset: int
    size: int  # whole unit, overhead included
    payload: bytes | None  # None: skipped (unknown ancillary, or ancillary with a bad CRC)


class SciReader:
    """Streaming ``.sci`` reader with seeking.

    ``source`` is a path, the bytes of a stream, or a binary file object (a non-seekable one,
    e.g. a pipe, supports one pass of :meth:`frames`). Opening reads and checks the preamble and
    the sequence header; frames are read one at a time as iterated. Each declared length is
    checked against the bytes left and the hard limits before it is read.
    """

    def __init__(self, source: Source) -> None:
        self._owns_file = False
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._file: BinaryIO = io.BytesIO(bytes(source))
            self._owns_file = True
        elif isinstance(source, (str, os.PathLike)):
            self._file = open(source, "rb")
            self._owns_file = True
        elif isinstance(source, io.TextIOBase):
            raise TypeError("open the .sci file in binary mode ('rb')")
        else:
            self._file = source
        self.warnings: list[str] = []
        self.skipped_units: list[tuple[str, int]] = []
        self._info_units: dict[int, dict[str, Any]] = {}
        self.units_checked = 0
        self._end: EndUnit | None = None
        self._seek_index: list[SeekEntry] | None = None
        self._seek_loaded = False
        self._passes = 0
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _note(notes: list, item: Any) -> None:
        if item not in notes:  # several passes over a unit report it once
            notes.append(item)

    def _warn(self, message: str) -> None:
        self._note(self.warnings, message)

    @property
    def info(self) -> list[dict[str, Any]]:
        """Contents of the ``info`` units read so far (all of them after :meth:`frames`)."""
        return [self._info_units[k] for k in sorted(self._info_units)]

    # -- low-level reading ----------------------------------------------------------------

    def _setup(self) -> None:
        seekable = False
        try:
            seekable = bool(self._file.seekable())
        except (AttributeError, OSError, ValueError):
            pass
        if seekable:
            self._base = self._file.tell()
            end = self._file.seek(0, io.SEEK_END)
            self._file.seek(self._base)
            self.file_size: int | None = end - self._base
        else:
            self._base = 0
            self.file_size = None
        self._stream_pos = 0  # position of a non-seekable source
        start = self._read(0, 8, "the signature", allow_short=True)
        if not start:
            raise Truncated("the stream is empty", offset=0)
        if start != MAGIC:
            if len(start) < 8 and MAGIC.startswith(start):
                raise Truncated("stream ends inside the signature", offset=0)
            raise BadMagic(_describe_bad_magic(start), offset=0)
        rest = self._read(8, 8, "the version")
        major, minor, crc = struct.unpack("<HHI", rest)
        if zlib.crc32(start + rest[:4]) != crc:
            raise CRCMismatch("preamble CRC mismatch (version field damaged)", offset=8)
        if major != FORMAT_VERSION[0]:
            raise UnsupportedVersion(
                f"stream format version {major}.{minor}; this reader implements "
                f"{FORMAT_VERSION[0]}.x (a newer spikecodec may read it)",
                offset=8,
            )
        self.version = (major, minor)
        unit = self._read_unit(PREAMBLE_SIZE, expect=TYPE_HEAD)
        self.header = _decode_head(unit.payload, unit.offset)
        self._first_unit = PREAMBLE_SIZE + unit.size

    def _read(self, pos: int, n: int, what: str, *, allow_short: bool = False) -> bytes:
        """``n`` bytes at stream position ``pos``; Truncated if the stream ends first."""
        if self.file_size is not None:
            left = max(self.file_size - pos, 0)
            if n > left and not allow_short:
                raise Truncated(
                    f"stream ends inside {what} (needs {n} bytes, {left} left)", offset=pos
                )
            self._file.seek(self._base + pos)
            data = self._file.read(min(n, left))
        else:
            if pos < self._stream_pos:
                raise ValueError("this source is not seekable: it can be read in one pass only")
            self._skip_forward(pos - self._stream_pos, what)
            chunks, got = [], 0
            while got < n:  # bounded chunks: never allocate a declared size up front
                chunk = self._file.read(min(n - got, _READ_CHUNK))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            data = b"".join(chunks)
            self._stream_pos += len(data)
        if len(data) < n and not allow_short:
            raise Truncated(f"stream ends inside {what} (needs {n} bytes, {len(data)} left)",
                            offset=pos)
        return data

    def _skip_forward(self, n: int, what: str) -> None:
        while n > 0:
            chunk = self._file.read(min(n, _READ_CHUNK))
            if not chunk:
                raise Truncated(f"stream ends inside {what}", offset=self._stream_pos)
            n -= len(chunk)
            self._stream_pos += len(chunk)

    def _read_unit(self, pos: int, *, expect: bytes | None = None) -> _Unit:
        head = self._read(pos, UNIT_HEADER_SIZE, "a unit header")
        unit_type, length, head_crc = struct.unpack("<4sII", head)
        if zlib.crc32(head[:8]) != head_crc:
            raise CRCMismatch("unit header CRC mismatch (type or length damaged)", offset=pos)
        if not _is_unit_type(unit_type):
            raise MalformedUnit(f"unit type {unit_type!r} is not 4 ASCII letters", offset=pos)
        name = _type_name(unit_type)
        if expect is not None and unit_type != expect:
            raise MalformedUnit(f"expected a {_type_name(expect)} unit, found {name}", offset=pos)
        limit = {TYPE_HEAD: MAX_HEAD_PAYLOAD, TYPE_INFO: MAX_INFO_PAYLOAD,
                 TYPE_END: END_PAYLOAD_SIZE}.get(unit_type, MAX_UNIT_PAYLOAD)
        if length > limit:
            raise ImplausibleSize(
                f"{name} unit declares {length} bytes, above the limit of {limit}", offset=pos
            )
        size = UNIT_OVERHEAD + length
        if self.file_size is not None and pos + size > self.file_size:
            raise Truncated(
                f"stream ends inside {name} unit ({size} bytes declared, "
                f"{self.file_size - pos} left)",
                offset=pos,
            )
        known = unit_type in _KNOWN_TYPES
        ancillary = _is_ancillary(unit_type)
        if not known and not ancillary:
            raise UnknownCriticalUnit(
                f"unknown critical unit {name}: this stream needs a newer reader", offset=pos
            )
        if not known:
            self._note(self.skipped_units, (name, pos))
        # Unknown ancillary units are read too: their CRC is checked (a warning if wrong) so
        # that `spikecodec info` can vouch for every byte; their payload is then dropped.
        body = self._read(pos + UNIT_HEADER_SIZE, length + UNIT_CRC_SIZE, f"{name} unit")
        payload = memoryview(body)[:length]  # no copy: fields are sliced out of it once
        if zlib.crc32(payload, head_crc) != struct.unpack("<I", body[length:])[0]:
            if ancillary:
                self._warn(f"ancillary {name} unit at byte {pos} has a bad CRC: ignored")
                return _Unit(unit_type, pos, size, None)
            raise CRCMismatch(f"{name} unit CRC mismatch", offset=pos)
        self.units_checked += 1
        return _Unit(unit_type, pos, size, payload if known else None)

    # -- passes ---------------------------------------------------------------------------

    def _scan(self, start: int, first_moment: int, last_spike_time: int) -> Iterator[FrameUnit]:
        """Units from ``start`` to the end unit, checking their order and the frame sequence."""
        pos = start
        expected_moment = first_moment
        from_start = start == self._first_unit
        i_frames: list[SeekEntry] = []
        seek_at: int | None = None
        seek_entries: list[SeekEntry] | None = None
        while True:
            unit = self._read_unit(pos)
            kind = unit.unit_type
            if kind == TYPE_FRAME:
                if seek_at is not None:
                    raise MalformedUnit("frame unit after the seek index", offset=pos)
                frame = _decode_frame(unit.payload, pos)
                if frame.moment_index != expected_moment:
                    raise MalformedUnit(
                        f"frame has moment index {frame.moment_index}, expected {expected_moment}"
                        " (a frame is missing or out of order)",
                        offset=pos,
                    )
                if expected_moment == first_moment and frame.frame_type != FrameType.I:
                    raise MalformedUnit("decoding must start at an I frame", offset=pos)
                spike_frames = self.header.spike_frames
                if not last_spike_time < frame.spike_time < spike_frames:
                    raise MalformedUnit(
                        f"frame spike_time {frame.spike_time} is not after {last_spike_time} "
                        f"and before {spike_frames}",
                        offset=pos,
                    )
                if frame.frame_type == FrameType.I:
                    i_frames.append(SeekEntry(frame.moment_index, pos))
                expected_moment += 1
                last_spike_time = frame.spike_time
                object.__setattr__(frame, "offset", pos)
                object.__setattr__(frame, "size", unit.size)
                yield frame
            elif kind == TYPE_HEAD:
                raise MalformedUnit("a second HEAD unit", offset=pos)
            elif kind == TYPE_SEEK:
                if seek_at is not None:
                    raise MalformedUnit("a second seek index", offset=pos)
                seek_at = pos
                if unit.payload is not None:
                    try:
                        seek_entries = _decode_seek(unit.payload, pos)
                    except BitstreamError as e:
                        self._warn(f"seek index ignored: {e}")
                    else:
                        if from_start and seek_entries != i_frames:
                            self._warn(
                                f"seek index at byte {pos} does not list the stream's I frames: "
                                "ignored"
                            )
                            seek_entries = None
            elif kind == TYPE_INFO:
                if unit.payload is not None:
                    try:
                        info = _decode_info(unit.payload, pos)
                    except BitstreamError as e:
                        self._warn(f"info unit ignored: {e}")
                    else:
                        self._info_units[pos] = info
            elif kind == TYPE_END:
                end = _decode_end(unit.payload, pos)
                if end.frame_count != expected_moment:
                    raise MalformedUnit(
                        f"end unit counts {end.frame_count} frames, the stream has "
                        f"{expected_moment}",
                        offset=pos,
                    )
                if end.seek_offset != (seek_at or 0):
                    self._warn(
                        f"end unit points to a seek index at byte {end.seek_offset}, "
                        f"found {seek_at or 'none'}"
                    )
                self._check_nothing_after(pos + unit.size)
                self._end = end
                if from_start:
                    self._seek_index = seek_entries
                    self._seek_loaded = True
                return
            pos += unit.size

    def _check_nothing_after(self, pos: int) -> None:
        if self.file_size is not None:
            extra = self.file_size - pos
        else:
            extra = len(self._file.read(1))
            self._stream_pos += extra
        if extra:
            raise MalformedUnit(f"{extra} byte(s) after the end unit", offset=pos)

    def _start_pass(self) -> None:
        if self.file_size is None:
            if self._passes:
                raise ValueError("this source is not seekable: it can be read in one pass only")
        self._passes += 1

    def frames(self) -> Iterator[FrameUnit]:
        """All frames in order. Reaching the end checks the end unit (see :attr:`end`)."""
        self._start_pass()
        return self._scan(self._first_unit, 0, -1)

    def _need_seekable(self, what: str) -> None:
        if self.file_size is None:
            raise ValueError(f"{what} needs a seekable source (a file or bytes, not a pipe)")

    def _read_end_from_tail(self) -> EndUnit:
        """The end unit, read from the last bytes of the file (the end unit has a fixed size)."""
        pos = self.file_size - END_UNIT_SIZE
        if pos < self._first_unit:
            raise Truncated("stream ends before its end unit", offset=self.file_size)
        raw = self._read(pos, END_UNIT_SIZE, "the end unit")
        head_ok = raw[:8] == TYPE_END + struct.pack("<I", END_PAYLOAD_SIZE)
        if not head_ok or zlib.crc32(raw[:8]) != struct.unpack("<I", raw[8:12])[0]:
            raise Truncated(
                "stream does not end with an end unit (truncated, or bytes appended)",
                offset=self.file_size,
            )
        unit = self._read_unit(pos, expect=TYPE_END)
        return _decode_end(unit.payload, pos)

    @property
    def end(self) -> EndUnit:
        """The end unit. Seekable sources read it from the tail; a pipe after :meth:`frames`."""
        if self._end is None:
            if self.file_size is None:
                raise ValueError("on a non-seekable source the end unit is known after frames()")
            self._end = self._read_end_from_tail()
        return self._end

    @property
    def end_hash(self) -> bytes:
        """sha256 of the decoded integer latents, as written by the encoder."""
        return self.end.content_hash

    def seek_index(self) -> list[SeekEntry] | None:
        """The I frames' (moment, offset) pairs from the seek unit; None if it is absent/damaged."""
        self._need_seekable("the seek index")
        if self._seek_loaded:
            return self._seek_index
        self._seek_loaded = True
        offset = self.end.seek_offset
        entries = None
        if offset:
            try:
                if not self._first_unit <= offset < self.file_size - END_UNIT_SIZE:
                    raise MalformedUnit("seek index offset outside the stream", offset=offset)
                unit = self._read_unit(offset, expect=TYPE_SEEK)
                if unit.payload is not None:
                    entries = _decode_seek(unit.payload, offset)
            except BitstreamError as e:
                self._warn(f"seek index unusable, falling back to a scan: {e}")
        self._seek_index = entries
        return entries

    def _i_frame_at(self, entry: SeekEntry) -> bool:
        try:
            if not self._first_unit <= entry.offset < self.file_size:
                return False
            unit = self._read_unit(entry.offset, expect=TYPE_FRAME)
            frame = _decode_frame(unit.payload, entry.offset)
        except BitstreamError:
            return False
        return frame.frame_type == FrameType.I and frame.moment_index == entry.moment_index

    def seek_moment(self, moment_index: int) -> Iterator[FrameUnit]:
        """Frames from the I frame of the GOP that holds ``moment_index`` to the end.

        Uses the seek index (one read of the end unit and of the index); without a usable index
        it scans the frames from the start once.
        """
        self._need_seekable("seeking")
        count = self.end.frame_count
        if isinstance(moment_index, bool) or not isinstance(moment_index, int):
            raise TypeError("moment_index must be an integer")
        if not 0 <= moment_index < count:
            raise IndexError(f"moment {moment_index} is outside the stream's 0..{count - 1}")
        entries = self.seek_index()
        start = None
        if entries:
            candidates = [e for e in entries if e.moment_index <= moment_index]
            if candidates and self._i_frame_at(candidates[-1]):
                start = candidates[-1]
            else:
                self._warn("seek index points at no I frame: falling back to a scan")
        if start is None:
            for frame in self._scan(self._first_unit, 0, -1):
                if frame.moment_index > moment_index:
                    break
                if frame.frame_type == FrameType.I:
                    start = SeekEntry(frame.moment_index, frame.offset)
            if start is None:
                raise MalformedUnit(f"no I frame at or before moment {moment_index}")
        return self._scan(start.offset, start.moment_index, -1)

    # -- checks -----------------------------------------------------------------------------

    def check_model(self, model_id: str, weights_sha256: bytes | str) -> None:
        """Raise :class:`ModelMismatch` if the stream needs other weights than these."""
        check_model(self.header, model_id, weights_sha256)

    def verify_content_hash(self, content_hash: Any) -> None:
        """Compare the decoder's hash of the decoded latents with the end unit's."""
        if _digest_of(content_hash) != self.end_hash:
            raise ContentHashMismatch(
                f"decoded latents hash to {_digest_of(content_hash).hex()[:16]}, the encoder "
                f"wrote {self.end_hash.hex()[:16]}: the decode differs from the encode"
            )

    def verify(self) -> "StreamSummary":
        """Read and check every unit (CRCs, order, counts, seek index); returns the summary."""
        return _summarize(self)

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> "SciReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Summary (spikecodec info)
# --------------------------------------------------------------------------------------------


@dataclass
class FrameSummary:
    """A frame's place and size in the stream, without its strings."""

    frame_type: str
    moment_index: int
    spike_time: int
    offset: int
    size: int
    latents: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame_type": self.frame_type,
            "moment_index": self.moment_index,
            "spike_time": self.spike_time,
            "offset": self.offset,
            "size": self.size,
            "latents": self.latents,
        }


@dataclass
class StreamSummary:
    """What :func:`inspect` found; ``error`` is set (and later fields may be missing) if damaged."""

    file_size: int | None = None
    version: tuple[int, int] | None = None
    header: SequenceHeader | None = None
    frames: list[FrameSummary] = field(default_factory=list)
    seek_index: list[SeekEntry] | None = None
    end: EndUnit | None = None
    info: list[dict[str, Any]] = field(default_factory=list)
    skipped_units: list[tuple[str, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    units_checked: int = 0
    error: BitstreamError | None = None

    @property
    def valid(self) -> bool:
        """True when every critical check passed (warnings may remain)."""
        return self.error is None

    @property
    def bpp(self) -> float | None:
        """Bits of the whole stream per spike pixel (T x H x W)."""
        if self.header is None or self.file_size is None:
            return None
        h = self.header
        return self.file_size * 8 / (h.spike_frames * h.height * h.width)

    @property
    def exit_status(self) -> int:
        """The ``spikecodec info`` exit status for this stream."""
        if self.error is not None:
            return self.error.exit_status
        return EXIT_ANCILLARY_DAMAGED if self.warnings else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (the ``spikecodec info --json`` output)."""
        return {
            "valid": self.valid,
            "exit_status": self.exit_status,
            "error": None if self.error is None else {
                "type": type(self.error).__name__,
                "message": self.error.message,
                "offset": self.error.offset,
            },
            "file_size": self.file_size,
            "version": None if self.version is None else "%d.%d" % self.version,
            "header": None if self.header is None else self.header.to_dict(),
            "bpp": self.bpp,
            "frame_count": len(self.frames),
            "frames": [f.to_dict() for f in self.frames],
            "seek_index": None if self.seek_index is None else [
                {"moment_index": e.moment_index, "offset": e.offset} for e in self.seek_index
            ],
            "end": None if self.end is None else {
                "content_hash": self.end.content_hash.hex(),
                "frame_count": self.end.frame_count,
                "seek_offset": self.end.seek_offset,
            },
            "info": self.info,
            "skipped_units": [{"type": t, "offset": o} for t, o in self.skipped_units],
            "units_checked": self.units_checked,
            "warnings": self.warnings,
        }


def _summarize(reader: SciReader, summary: StreamSummary | None = None) -> StreamSummary:
    summary = summary if summary is not None else StreamSummary()
    summary.version = reader.version
    summary.header = reader.header
    summary.file_size = reader.file_size
    try:
        for frame in reader.frames():
            latents = [
                {"name": latent.name, "shape": list(latent.shape),
                 "string_sizes": [len(s) for s in latent.strings]}
                for latent in frame.latents
            ]
            summary.frames.append(FrameSummary(
                frame.frame_type.name, frame.moment_index, frame.spike_time, frame.offset,
                frame.size, latents,
            ))
        summary.end = reader.end
        summary.seek_index = reader._seek_index
    finally:
        summary.info = list(reader.info)
        summary.warnings = list(reader.warnings)
        summary.skipped_units = list(reader.skipped_units)
        summary.units_checked = reader.units_checked
        if reader.file_size is None:
            summary.file_size = reader._stream_pos
    return summary


def inspect(source: Source) -> StreamSummary:
    """Check a whole stream; damage is reported in ``.error`` with what was read before it."""
    summary = StreamSummary()
    try:
        with SciReader(source) as reader:
            _summarize(reader, summary)
    except BitstreamError as e:
        summary.error = e
    return summary


def parse(source: Source) -> StreamSummary:
    """Check a whole stream and return its summary; raises the BitstreamError that stops it."""
    summary = inspect(source)
    if summary.error is not None:
        raise summary.error
    return summary
