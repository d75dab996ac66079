"""Build the golden ``.sci`` stream and its expected parse, and print its annotated hex dump.

    python tests/data/make_golden.py            # writes golden.sci and golden.json beside this file
    python tests/data/make_golden.py --dump     # prints the annotated dump of docs/bitstream.md

Run it only when the format changes on purpose (and bump the version in the spec): the tests
compare the committed files with what the writer and the reader produce now.

The dump is made by a small walker written from docs/bitstream.md alone (it does not use the
reader), so the spec's example is checked against a second reading of the format.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from spikecodec.bitstream import FrameUnit, LatentHasher, SequenceHeader, parse, serialize

HERE = Path(__file__).resolve().parent
GOLDEN_SCI = HERE / "golden.sci"
GOLDEN_JSON = HERE / "golden.json"


def golden_header() -> SequenceHeader:
    """A 16x16 stream of 64 spike frames, three moments (12, 28, 44), GOP of 2."""
    return SequenceHeader(
        height=16, width=16, spike_frames=64, spike_rate_hz=20000, window=13, stride=16,
        phase=12, gop_length=2, quality=3, conversion_rate=0.6, model_id="sci-test-v1",
        model_sha256=hashlib.sha256(b"spikecodec golden weights").digest(),
        entropy_coder="ans",
    )


def _fake_string(tag: str, length: int) -> bytes:
    return hashlib.sha256(tag.encode()).digest()[:length]


def golden_frames() -> tuple[list[FrameUnit], bytes]:
    """Frames I, P, I with made-up entropy-coded strings, and the content hash of their latents."""
    frames = []
    hasher = LatentHasher()
    for k, kind in enumerate("IPI"):
        names = ("z", "y") if kind == "I" else ("motion", "y")
        shapes = {"z": (1, 1), "y": (8, 4, 4), "motion": (2, 4, 4)}
        latents = {}
        for name in names:
            latents[name] = (shapes[name], [_fake_string(f"{k}{name}", 3 + 2 * len(name))])
            # The "decoded integer latents" of this fake frame: small deterministic integers.
            hasher.update(np.arange(np.prod(shapes[name]), dtype=np.int32).reshape(shapes[name])
                          - 3 * k)
        frames.append(FrameUnit.make(kind, k, 12 + 16 * k, latents))
    return frames, hasher.digest()


def build_golden() -> bytes:
    """The golden stream's bytes (deterministic)."""
    frames, content_hash = golden_frames()
    return serialize(golden_header(), frames, content_hash, info={"encoder": "make_golden"})


# --------------------------------------------------------------------------------------------
# Annotated hex dump, from the spec
# --------------------------------------------------------------------------------------------


class _Dump:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.lines: list[str] = []

    def field(self, n: int, label: str) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        for start in range(0, max(n, 1), 16):
            part = chunk[start:start + 16]
            hexes = " ".join(f"{b:02x}" for b in part)
            text = label if start == 0 else "  ..."
            self.lines.append(f"{self.pos + start:06x}  {hexes:<47s}  {text}")
        self.pos += n
        return chunk

    def u(self, n: int, label: str) -> int:
        raw = self.data[self.pos:self.pos + n]
        value = int.from_bytes(raw, "little")
        self.field(n, f"{label} = {value}")
        return value

    def str8(self, label: str) -> str:
        n = self.u(1, f"{label} length")
        text = self.data[self.pos:self.pos + n].decode("ascii")
        self.field(n, f"{label} = {text!r}")
        return text


def annotated_dump(data: bytes) -> str:
    """Annotate every field of a stream (written from docs/bitstream.md, not from the reader)."""
    d = _Dump(data)
    d.field(8, "signature \\x8c 'SCI' CR LF ^Z LF")
    d.u(2, "major version")
    d.u(2, "minor version")
    d.field(4, "preamble CRC-32 of bytes 0..11")
    while d.pos < len(data):
        unit_type = data[d.pos:d.pos + 4]
        length = int.from_bytes(data[d.pos + 4:d.pos + 8], "little")
        kind = "ancillary" if unit_type[0] & 0x20 else "critical"
        d.lines.append(f"{'':8s}{'':47s}  --- {unit_type.decode()} unit ({kind}) ---")
        d.field(4, f"unit type {unit_type.decode()!r}")
        d.u(4, "payload length")
        d.field(4, "header CRC-32 of type + length")
        end = d.pos + length
        if unit_type == b"HEAD":
            for size, name in ((4, "height"), (4, "width"), (8, "spike_frames T"),
                               (4, "spike_rate_hz"), (4, "window"), (4, "stride"),
                               (4, "gop_length"), (8, "phase")):
                d.u(size, name)
            value = struct.unpack("<d", data[d.pos:d.pos + 8])[0]
            d.field(8, f"conversion_rate (f64) = {value}")
            d.u(2, "quality")
            d.u(2, "flags (bit 0: lossless)")
            d.field(32, "model_sha256")
            d.str8("model_id")
            d.str8("entropy_coder")
        elif unit_type == b"FRAM":
            d.u(1, "frame_type (0 = I, 1 = P)")
            count = d.u(1, "latent_count")
            d.u(4, "moment_index")
            d.u(8, "spike_time")
            for _ in range(count):
                d.str8("latent name")
                ndim = d.u(1, "ndim")
                for axis in range(ndim):
                    d.u(4, f"shape[{axis}]")
                strings = d.u(2, "string_count")
                for s in range(strings):
                    n = d.u(4, f"string {s} length")
                    d.field(n, f"string {s} (entropy-coded bytes)")
        elif unit_type == b"seek":
            count = d.u(4, "entry_count")
            for _ in range(count):
                d.u(4, "moment_index")
                d.u(8, "unit offset")
        elif unit_type == b"info":
            d.field(length, f"JSON {data[d.pos:end].decode()}")
        elif unit_type == b"ENDS":
            d.field(32, "content_sha256 of the decoded latents")
            d.u(4, "frame_count")
            d.u(8, "seek_offset")
        else:
            d.field(length, "payload")
        if d.pos != end:
            raise ValueError(f"{unit_type!r} unit: walked to {d.pos}, payload ends at {end}")
        crc = zlib.crc32(data[end - length - 12:end - length - 4] + data[end - length:end])
        stored = int.from_bytes(data[end:end + 4], "little")
        if crc != stored:
            raise ValueError(f"{unit_type!r} unit: CRC {stored:08x}, computed {crc:08x}")
        d.field(4, "unit CRC-32 of type + length + payload")
    return "\n".join(d.lines)


def main(argv: list[str]) -> None:
    data = build_golden()
    if "--dump" in argv:
        print(annotated_dump(data))
        return
    GOLDEN_SCI.write_bytes(data)
    GOLDEN_JSON.write_text(json.dumps(parse(data).to_dict(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN_SCI} ({len(data)} bytes) and {GOLDEN_JSON}")


if __name__ == "__main__":
    main(sys.argv[1:])
