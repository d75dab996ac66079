"""Tests of the .sci container (spikecodec/bitstream.py, spec docs/bitstream.md)."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import random
import re
import struct
import sys
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikecodec import bitstream as bs
from spikecodec.bitstream import (
    BadMagic,
    BitstreamError,
    ContentHashMismatch,
    CRCMismatch,
    FrameType,
    FrameUnit,
    ImplausibleSize,
    Latent,
    LatentHasher,
    MalformedUnit,
    ModelMismatch,
    SciReader,
    SciWriter,
    SequenceHeader,
    Truncated,
    UnknownCriticalUnit,
    UnsupportedVersion,
    check_model,
    encode_unit,
    inspect,
    latent_hash,
    parse,
    serialize,
)

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
sys.path.insert(0, str(DATA))
import make_golden  # noqa: E402

SHA_A = hashlib.sha256(b"weights a").digest()
SHA_B = hashlib.sha256(b"weights b").digest()
HASH = hashlib.sha256(b"content").digest()


def make_header(**changes) -> SequenceHeader:
    fields = dict(
        height=8, width=12, spike_frames=200, spike_rate_hz=20000, window=13, stride=10,
        phase=6, gop_length=3, quality=2, conversion_rate=0.6, model_id="sci-test-v1",
        model_sha256=SHA_A, entropy_coder="ans",
    )
    fields.update(changes)
    return SequenceHeader(**fields)


def make_frames(count: int = 7, gop: int = 3, seed: int = 0) -> list[FrameUnit]:
    rng = random.Random(seed)
    frames = []
    for k in range(count):
        kind = "I" if k % gop == 0 else "P"
        latents = {
            "z": ((1, 2), [rng.randbytes(rng.randint(0, 6))]),
            "y": ((4, 2, 3), [rng.randbytes(rng.randint(1, 20)) for _ in range(rng.randint(1, 3))]),
        }
        frames.append(FrameUnit.make(kind, k, 6 + 10 * k, latents))
    return frames


def make_stream(count: int = 7, **kw) -> bytes:
    return serialize(make_header(), make_frames(count), HASH, info={"encoder": "test"}, **kw)


def preamble(major: int = 1, minor: int = 0) -> bytes:
    """Written from the spec (section 2.1), not from the writer."""
    body = b"\x8cSCI\r\n\x1a\n" + struct.pack("<HH", major, minor)
    return body + struct.pack("<I", zlib.crc32(body))


def head_payload(height=8, width=12, spike_frames=200, phase=6, **kw) -> bytes:
    """A HEAD payload written from the spec's table (section 5)."""
    fixed = struct.pack(
        "<IIQIIIIQdHH32s", height, width, spike_frames, kw.get("rate", 20000), 13, 10, 3, phase,
        kw.get("conversion", 0.6), 2, 0, SHA_A,
    )
    return fixed + b"\x0bsci-test-v1" + b"\x03ans"


def frame_payload(kind=0, moment=0, spike_time=6, latent_count=1, body=None) -> bytes:
    """A FRAM payload from the spec (section 6): one latent 'y' of shape (2,) and one string."""
    if body is None:
        body = b"\x01y" + b"\x01" + struct.pack("<I", 2) + struct.pack("<H", 1) + \
            struct.pack("<I", 3) + b"abc"
    return struct.pack("<BBIQ", kind, latent_count, moment, spike_time) + body


def assemble(units: list[tuple[bytes, bytes]], frame_count: int | None = None) -> bytes:
    """preamble + units + ENDS (no seek index), from the spec."""
    out = preamble() + b"".join(encode_unit(t, p) for t, p in units)
    frames = sum(t == b"FRAM" for t, _ in units) if frame_count is None else frame_count
    return out + encode_unit(b"ENDS", HASH + struct.pack("<IQ", frames, 0))


def unit_spans(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, total size) of each unit, walking the framing only."""
    spans, pos = [], 16
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos + 4)[0]
        spans.append((data[pos:pos + 4], pos, 16 + length))
        pos += 16 + length
    return spans


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------

identifiers = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,20}", fullmatch=True)


@st.composite
def headers(draw) -> SequenceHeader:
    spike_frames = draw(st.integers(1, bs.MAX_SPIKE_FRAMES))
    height = draw(st.integers(1, bs.MAX_DIMENSION))
    width = draw(st.integers(1, min(bs.MAX_DIMENSION, bs.MAX_PIXELS // height)))
    return SequenceHeader(
        height=height, width=width, spike_frames=spike_frames,
        spike_rate_hz=draw(st.integers(1, 2**32 - 1)),
        window=draw(st.integers(1, bs.MAX_WINDOW)), stride=draw(st.integers(1, bs.MAX_STRIDE)),
        phase=draw(st.integers(0, spike_frames - 1)),
        gop_length=draw(st.integers(1, bs.MAX_GOP_LENGTH)),
        quality=draw(st.integers(0, 2**16 - 1)),
        conversion_rate=draw(st.floats(min_value=1e-300, max_value=1e300, allow_nan=False)),
        model_id=draw(identifiers), model_sha256=draw(st.binary(min_size=32, max_size=32)),
        entropy_coder=draw(identifiers), lossless=draw(st.booleans()),
    )


@st.composite
def frame_lists(draw, spike_frames: int) -> list[FrameUnit]:
    count = draw(st.integers(0, min(6, spike_frames)))
    times = sorted(draw(st.sets(st.integers(0, spike_frames - 1), min_size=count,
                                max_size=count)))
    frames = []
    for k, t in enumerate(times):
        names = draw(st.lists(identifiers, min_size=1, max_size=4, unique=True))
        latents = tuple(
            Latent(name, draw(st.lists(st.integers(1, 64), min_size=1, max_size=4)),
                   draw(st.lists(st.binary(max_size=40), min_size=1, max_size=3)))
            for name in names
        )
        kind = FrameType.I if k == 0 else draw(st.sampled_from(FrameType))
        frames.append(FrameUnit(kind, k, t, latents))
    return frames


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_random_headers_and_payloads(data):
    header = data.draw(headers())
    frames = data.draw(frame_lists(header.spike_frames))
    info = data.draw(st.one_of(st.none(), st.dictionaries(identifiers, st.integers(), max_size=3)))
    digest = data.draw(st.binary(min_size=32, max_size=32))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.sci"
        with SciWriter(path, header, info=info) as writer:
            for frame in frames:
                writer.write_frame(frame)
            size = writer.finish(digest)
        raw = path.read_bytes()
        assert size == len(raw)
        assert raw == serialize(header, frames, digest, info=info)
        with SciReader(path) as reader:
            assert reader.version == (1, 0)
            assert reader.header == header
            assert list(reader.frames()) == frames
            assert reader.end_hash == digest
            assert reader.info == ([] if info is None else [info])
            assert reader.warnings == []
            if frames:
                k = data.draw(st.integers(0, len(frames) - 1))
                start = max(i for i in range(k + 1) if frames[i].frame_type == FrameType.I)
                assert list(reader.seek_moment(k)) == frames[start:]
    summary = parse(raw)
    assert summary.valid and summary.exit_status == 0
    assert [f.offset for f in summary.frames] == [
        off for t, off, _ in unit_spans(raw) if t == b"FRAM"
    ]
    assert summary.bpp == pytest.approx(
        len(raw) * 8 / (header.spike_frames * header.height * header.width)
    )


def test_frame_offsets_sizes_and_seek_index():
    data = make_stream(7)
    summary = parse(data)
    spans = [s for s in unit_spans(data) if s[0] == b"FRAM"]
    assert [(f.offset, f.size) for f in summary.frames] == [(o, n) for _, o, n in spans]
    assert [(e.moment_index, e.offset) for e in summary.seek_index] == [
        (f.moment_index, f.offset) for f in summary.frames if f.frame_type == "I"
    ]
    assert [f.frame_type for f in summary.frames] == list("IPPIPPI")


class RecordingBytesIO(io.BytesIO):
    """Records the byte ranges read, to prove what a seek does not touch."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.ranges: list[tuple[int, int]] = []

    def read(self, n=-1):
        start = self.tell()
        out = super().read(n)
        self.ranges.append((start, start + len(out)))
        return out


def test_seek_moment_reads_only_tail_index_and_its_gop():
    frames = make_frames(30, gop=5)
    data = serialize(make_header(spike_frames=400), frames, HASH)
    source = RecordingBytesIO(data)
    reader = SciReader(source)
    first_frame = parse(data).frames[0].offset
    target_offset = parse(data).frames[20].offset
    source.ranges.clear()
    it = reader.seek_moment(22)
    first = next(it)
    assert (first.moment_index, first.frame_type) == (20, FrameType.I)
    touched = [r for r in source.ranges if r[1] > r[0]]
    assert all(start >= target_offset for start, _ in touched), touched
    assert [f.moment_index for f in it] == list(range(21, 30))
    assert first_frame < target_offset


def test_seek_moment_range_and_fallback_without_index():
    frames = make_frames(10, gop=4)
    data = bytearray(serialize(make_header(), frames, HASH))
    seek = next(s for s in unit_spans(bytes(data)) if s[0] == b"seek")
    data[seek[1] + 14] ^= 0x01  # damage the seek index payload: ancillary
    reader = SciReader(bytes(data))
    with pytest.raises(IndexError):
        reader.seek_moment(10)
    with pytest.raises(IndexError):
        reader.seek_moment(-1)
    assert [f.moment_index for f in reader.seek_moment(6)] == [4, 5, 6, 7, 8, 9]
    assert any("seek" in w and "CRC" in w for w in reader.warnings)


def test_non_seekable_source_reads_one_pass():
    data = make_stream(4)

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            chunk = self.inner.read(min(len(buffer), 7))
            buffer[:len(chunk)] = chunk
            return len(chunk)

    reader = SciReader(io.BufferedReader(Pipe()))
    with pytest.raises(ValueError):
        reader.end  # noqa: B018 - not known before the pass on a pipe
    assert list(reader.frames()) == make_frames(4)
    assert reader.end_hash == HASH and reader.info == [{"encoder": "test"}]
    with pytest.raises(ValueError):
        reader.frames()
    with pytest.raises(ValueError):
        reader.seek_moment(0)


def test_unknown_ancillary_unit_is_skipped_and_listed(tmp_path):
    path = tmp_path / "x.sci"
    with SciWriter(path, make_header()) as writer:
        writer.write_frame(make_frames(1)[0])
        writer.write_ancillary("xtra", b"future metadata")
        writer.finish(HASH)
    summary = parse(path)
    assert summary.warnings == [] and summary.exit_status == 0
    assert [t for t, _ in summary.skipped_units] == ["xtra"]
    with pytest.raises(ValueError):
        SciWriter(tmp_path / "y.sci", make_header()).write_ancillary("XTRA", b"")  # critical


def test_later_minor_version_and_appended_fields_are_accepted():
    units = [(b"HEAD", head_payload() + b"new field"), (b"FRAM", frame_payload() + b"\x00\x01"),
             (b"xnew", b"anything")]
    data = preamble(1, 7) + assemble(units)[16:]
    summary = parse(data)
    assert summary.version == (1, 7)
    assert summary.header.height == 8 and len(summary.frames) == 1


# --------------------------------------------------------------------------------------------
# Golden file: a format change cannot pass unnoticed
# --------------------------------------------------------------------------------------------


def test_golden_bytes_are_what_the_writer_produces():
    assert make_golden.build_golden() == (DATA / "golden.sci").read_bytes()


def test_golden_parse_matches_expected_fields():
    expected = json.loads((DATA / "golden.json").read_text())
    got = parse(DATA / "golden.sci").to_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == expected[key], key
    # A few fields spelt out, so an edit of golden.json alone cannot hide a change.
    h = expected["header"]
    assert (h["height"], h["width"], h["spike_frames"], h["stride"], h["phase"]) == (
        16, 16, 64, 16, 12)
    assert [f["frame_type"] for f in expected["frames"]] == ["I", "P", "I"]
    assert [f["spike_time"] for f in expected["frames"]] == [12, 28, 44]
    assert expected["file_size"] == 530
    assert expected["end"]["content_hash"] == make_golden.golden_frames()[1].hex()


def test_spec_hex_dump_is_the_golden_file():
    spec = (REPO / "docs" / "bitstream.md").read_text()
    block = re.search(r"<!-- golden-dump:begin -->\n```text\n(.*?)```\n<!-- golden-dump:end -->",
                      spec, re.S)
    assert block, "annotated dump missing from docs/bitstream.md"
    golden = (DATA / "golden.sci").read_bytes()
    assert block.group(1).rstrip("\n") == make_golden.annotated_dump(golden)
    dumped = bytearray()
    for line in block.group(1).splitlines():
        if line[:6].strip():
            assert int(line[:6], 16) == len(dumped), line
            dumped += bytes.fromhex(line[8:55])
    assert bytes(dumped) == golden


# --------------------------------------------------------------------------------------------
# Damage: each cause has its error
# --------------------------------------------------------------------------------------------


def test_bad_magic_and_text_mode_damage():
    data = make_stream(2)
    with pytest.raises(BadMagic, match="no SCI signature"):
        parse(b"P6\n16 16\n255\n" + data)
    with pytest.raises(BadMagic, match="text-mode"):
        parse(data.replace(b"\r\n", b"\n"))
    with pytest.raises(BadMagic, match="text-mode"):
        parse(data.replace(b"\n", b"\r\n"))
    with pytest.raises(BadMagic, match="high bit"):
        parse(bytes([data[0] & 0x7F]) + data[1:])
    with pytest.raises(Truncated, match="empty"):
        parse(b"")
    with pytest.raises(Truncated, match="signature"):
        parse(data[:5])


def test_unsupported_major_version_and_preamble_crc():
    data = make_stream(2)
    with pytest.raises(UnsupportedVersion, match="2.0"):
        parse(preamble(2, 0) + data[16:])
    damaged = bytearray(data)
    damaged[10] ^= 0x01  # minor version bit without fixing the CRC
    with pytest.raises(CRCMismatch, match="preamble"):
        parse(bytes(damaged))


@pytest.mark.parametrize("cut", [1, 15, 16, 20, 40, 100, -61, -60, -59, -1])
def test_truncation_is_reported(cut):
    data = make_stream(3)
    with pytest.raises(Truncated):
        parse(data[:cut])


def test_truncation_at_every_unit_boundary():
    data = make_stream(3)
    for _, offset, _ in unit_spans(data):
        with pytest.raises(Truncated):
            parse(data[:offset])


def test_crc_mismatch_in_header_and_payload_of_critical_units():
    data = make_stream(3)
    frame = next(s for s in unit_spans(data) if s[0] == b"FRAM")
    for position, what in ((frame[1] + 5, "header"), (frame[1] + 20, "FRAM unit CRC")):
        damaged = bytearray(data)
        damaged[position] ^= 0x10
        with pytest.raises(CRCMismatch, match=what):
            parse(bytes(damaged))


def test_damaged_ancillary_unit_is_ignored_with_a_warning():
    data = make_stream(3)
    info = next(s for s in unit_spans(data) if s[0] == b"info")
    damaged = bytearray(data)
    damaged[info[1] + 13] ^= 0x01
    summary = parse(bytes(damaged))
    assert summary.valid and summary.info == []
    assert summary.exit_status == bs.EXIT_ANCILLARY_DAMAGED
    assert any("info" in w and "CRC" in w for w in summary.warnings)
    assert [f.to_dict() for f in summary.frames] == [f.to_dict() for f in parse(data).frames]


def test_unknown_critical_unit_is_refused():
    data = make_stream(2)
    first = parse(data).frames[0].offset
    with pytest.raises(UnknownCriticalUnit, match="ZZZZ"):
        parse(data[:first] + encode_unit(b"ZZZZ", b"\x00") + data[first:])


def test_invalid_unit_type_with_valid_crc():
    data = make_stream(2)
    first = parse(data).frames[0].offset
    with pytest.raises(MalformedUnit, match="4 ASCII letters"):
        bad = b"Z9ZZ" + struct.pack("<I", 0)
        unit = bad + struct.pack("<I", zlib.crc32(bad)) + struct.pack("<I", zlib.crc32(bad))
        parse(data[:first] + unit + data[first:])


def _unit_with_length(unit_type: bytes, length: int) -> bytes:
    head = unit_type + struct.pack("<I", length)
    return head + struct.pack("<I", zlib.crc32(head))


@pytest.mark.parametrize("as_file", [False, True])
def test_huge_declared_lengths_allocate_nothing(tmp_path, as_file):
    start = preamble() + encode_unit(b"HEAD", head_payload())
    cases = [
        (start + _unit_with_length(b"FRAM", 0xFFFFFFFF) + b"\x00" * 100, ImplausibleSize),
        (start + _unit_with_length(b"info", bs.MAX_INFO_PAYLOAD + 1), ImplausibleSize),
        # under the limit, but more than the file holds
        (start + _unit_with_length(b"FRAM", bs.MAX_UNIT_PAYLOAD) + b"\x00" * 100, Truncated),
        (preamble() + _unit_with_length(b"HEAD", 1 << 20), ImplausibleSize),
    ]
    sources = []
    for index, (data, error) in enumerate(cases):
        if as_file:  # a real file: buffered reads would allocate a declared size up front
            path = tmp_path / f"{index}.sci"
            path.write_bytes(data)
            data = path
        sources.append((data, error))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for source, error in sources:
            with pytest.raises(error):
                parse(source)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, peak


@pytest.mark.parametrize(
    "payload, error, message",
    [
        (head_payload(height=16384, width=16384), ImplausibleSize, "pixels"),
        (head_payload(height=0), MalformedUnit, "height"),
        (head_payload(spike_frames=2**41, phase=0), ImplausibleSize, "spike_frames"),
        (head_payload(phase=200), MalformedUnit, "phase"),
        (head_payload(conversion=float("nan")), MalformedUnit, "conversion_rate"),
        (head_payload()[:-4] + b"\x03a n", MalformedUnit, "entropy_coder"),
        (head_payload()[:-4] + b"\x09ans", MalformedUnit, "ends inside"),
        (head_payload()[:50], MalformedUnit, "ends inside"),
    ],
)
def test_header_field_checks(payload, error, message):
    with pytest.raises(error, match=message):
        parse(assemble([(b"HEAD", payload)]))


@pytest.mark.parametrize(
    "payload, error, message",
    [
        (frame_payload(kind=2), MalformedUnit, "frame type"),
        (frame_payload(latent_count=0), ImplausibleSize, "latents"),
        (frame_payload(latent_count=200), ImplausibleSize, "latents"),
        (frame_payload(spike_time=200), MalformedUnit, "spike_time"),
        (frame_payload(moment=1), MalformedUnit, "missing"),
        (frame_payload(kind=1), MalformedUnit, "I frame"),
        (frame_payload(body=b"\x01y\x09"), MalformedUnit, "dimensions"),
        (frame_payload(body=b"\x01y\x01" + struct.pack("<IHI", 0, 1, 0)), MalformedUnit,
         "dimension = 0"),
        (frame_payload(body=b"\x01y\x02" + struct.pack("<II", 1 << 15, 1 << 15)
                       + struct.pack("<H", 1) + struct.pack("<I", 0)),
         ImplausibleSize, "elements"),
        (frame_payload(body=b"\x01y\x01" + struct.pack("<I", 2) + struct.pack("<H", 5000)),
         ImplausibleSize, "strings"),
        (frame_payload(body=b"\x01y\x01" + struct.pack("<I", 2) + struct.pack("<HI", 1, 99)
                       + b"abc"), MalformedUnit, "ends inside"),
        (frame_payload(body=b"\x02\xff\xfe"), MalformedUnit, "ASCII"),
    ],
)
def test_frame_field_checks(payload, error, message):
    with pytest.raises(error, match=message):
        parse(assemble([(b"HEAD", head_payload()), (b"FRAM", payload)]))


def test_stream_structure_checks():
    head = (b"HEAD", head_payload())
    f0, f1 = (b"FRAM", frame_payload()), (b"FRAM", frame_payload(1, 1, 16))
    assert len(parse(assemble([head, f0, f1])).frames) == 2
    with pytest.raises(MalformedUnit, match="missing"):
        parse(assemble([head, f0, (b"FRAM", frame_payload(1, 2, 26))]))
    with pytest.raises(MalformedUnit, match="spike_time"):
        parse(assemble([head, f0, (b"FRAM", frame_payload(1, 1, 6))]))
    with pytest.raises(MalformedUnit, match="counts 5 frames"):
        parse(assemble([head, f0, f1], frame_count=5))
    with pytest.raises(MalformedUnit, match="second HEAD"):
        parse(assemble([head, f0, head]))
    with pytest.raises(MalformedUnit, match="expected a HEAD"):
        parse(assemble([f0, head]))
    with pytest.raises(MalformedUnit, match="after the seek index"):
        parse(assemble([head, (b"seek", struct.pack("<I", 0)), f0]))
    with pytest.raises(MalformedUnit, match="after the end unit"):
        parse(assemble([head, f0]) + b"\x00")
    with pytest.raises(MalformedUnit, match="end unit payload"):
        parse(preamble() + encode_unit(b"HEAD", head_payload()) + encode_unit(b"ENDS", HASH))


# --------------------------------------------------------------------------------------------
# Fuzz: truncations, bit flips, insertions
# --------------------------------------------------------------------------------------------


def _fuzz_streams() -> list[bytes]:
    with_unknown = io.BytesIO()
    encoder = bs._StreamEncoder(with_unknown, make_header())
    for frame in make_frames(4):
        encoder.write_frame(frame)
        encoder.write_ancillary("xmpl", b"metadata of a later version")
    encoder.finish(HASH)
    return [(DATA / "golden.sci").read_bytes(), make_stream(5), with_unknown.getvalue()]


def _mutations(data: bytes, rng: random.Random, count: int):
    for i in range(count):
        damaged = bytearray(data)
        kind = i % 3
        if kind == 0:
            del damaged[rng.randrange(len(data)):]
        elif kind == 1:
            for _ in range(rng.choice((1, 1, 1, 2, 8))):
                bit = rng.randrange(len(data) * 8)
                damaged[bit // 8] ^= 1 << (bit % 8)
        else:
            at = rng.randrange(len(data) + 1)
            damaged[at:at] = rng.randbytes(rng.randint(1, 8))
        if bytes(damaged) != data:
            yield bytes(damaged)


def _check_damaged(damaged: bytes, original: bytes) -> str:
    """Each damaged stream fails in the family, or parses to the same content with a warning."""
    summary = inspect(damaged)
    if summary.error is not None:
        assert isinstance(summary.error, BitstreamError)
        outcome = type(summary.error).__name__
    else:
        reference = parse(original)
        assert summary.warnings, "damage went unnoticed"
        assert summary.header == reference.header
        assert [f.to_dict() for f in summary.frames] == [f.to_dict() for f in reference.frames]
        assert summary.end == reference.end
        outcome = "ancillary-damage"
    try:  # the seeking path reads the tail and the index: damage there must stay in the family
        with SciReader(damaged) as reader:
            for k in (0, reader.end.frame_count - 1):
                if k >= 0:
                    for _ in reader.seek_moment(k):
                        pass
    except BitstreamError:
        pass
    return outcome


def _run_fuzz(cases_per_stream: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    slowest = 0.0
    bound = 0
    tracemalloc.start()
    try:
        for original in _fuzz_streams():
            # Stated bound: the reader holds at most ~2 copies of one unit + constants; the
            # streams here are < 1 KiB, so 4 x stream size + 256 KiB covers it with margin.
            bound = max(bound, 4 * len(original) + 256 * 1024)
            for damaged in _mutations(original, rng, cases_per_stream):
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                started = time.perf_counter()
                outcome = _check_damaged(damaged, original)
                slowest = max(slowest, time.perf_counter() - started)
                peak = tracemalloc.get_traced_memory()[1] - base
                assert peak <= bound, (peak, bound)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        tracemalloc.stop()
    assert slowest < 1.0, f"a damaged stream took {slowest:.2f} s"
    return outcomes


def test_fuzz_damaged_streams():
    outcomes = _run_fuzz(cases_per_stream=1000, seed=1)
    assert sum(outcomes.values()) >= 2900
    for expected in ("Truncated", "CRCMismatch", "ancillary-damage"):
        assert outcomes.get(expected, 0) > 0, outcomes


@pytest.mark.slow
def test_fuzz_damaged_streams_long():
    outcomes = _run_fuzz(cases_per_stream=30000, seed=2)
    assert sum(outcomes.values()) >= 89000


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writer_publishes_only_at_finish(tmp_path):
    path = tmp_path / "out.sci"
    with SciWriter(path, make_header()) as writer:
        for frame in make_frames(3):
            writer.write_frame(frame)
            assert not path.exists()
        assert writer.frame_count == 3
        writer.finish(HASH)
    assert _leftovers(tmp_path) == ["out.sci"]
    assert parse(path).end.content_hash == HASH


def test_writer_leaves_nothing_when_encoding_fails(tmp_path):
    path = tmp_path / "out.sci"
    class EncoderCrash(Exception):
        pass

    with pytest.raises(EncoderCrash):
        with SciWriter(path, make_header()) as writer:
            writer.write_frame(make_frames(1)[0])
            raise EncoderCrash("the model failed on frame 1")
    assert _leftovers(tmp_path) == []


def test_writer_leaves_nothing_without_finish(tmp_path):
    path = tmp_path / "out.sci"
    with pytest.raises(RuntimeError, match="finish"):
        with SciWriter(path, make_header()) as writer:
            writer.write_frame(make_frames(1)[0])
    assert _leftovers(tmp_path) == []
    writer = SciWriter(path, make_header())
    writer.write_frame(make_frames(1)[0])
    assert len(_leftovers(tmp_path)) == 1  # the hidden temporary file
    del writer
    gc.collect()
    assert _leftovers(tmp_path) == []


def test_writer_refuses_overwrite_unless_forced(tmp_path):
    path = tmp_path / "out.sci"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="force"):
        SciWriter(path, make_header())
    assert path.read_bytes() == b"precious" and _leftovers(tmp_path) == ["out.sci"]
    with SciWriter(path, make_header(), force=True) as writer:
        writer.finish(HASH)
    assert parse(path).valid


def test_writer_refuses_bad_frame_sequences(tmp_path):
    frames = make_frames(3)
    with SciWriter(tmp_path / "a.sci", make_header()) as writer:
        with pytest.raises(MalformedUnit, match="first frame"):
            writer.write_frame(frames[1].__class__(FrameType.P, 0, 6, frames[0].latents))
        with pytest.raises(MalformedUnit, match="moment_index"):
            writer.write_frame(frames[1])
        writer.write_frame(frames[0])
        with pytest.raises(MalformedUnit, match="spike_time"):
            writer.write_frame(FrameUnit(FrameType.P, 1, 6, frames[0].latents))
        with pytest.raises(MalformedUnit, match="spike frames"):
            writer.write_frame(FrameUnit(FrameType.P, 1, 200, frames[0].latents))
        with pytest.raises(ValueError, match="32 bytes"):
            writer.finish(b"short")
        writer.abort()
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_frame(frames[0])
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"height": 0}, MalformedUnit),
        ({"width": 20000}, ImplausibleSize),
        ({"height": 5000, "width": 5000}, ImplausibleSize),
        ({"height": 8.0}, MalformedUnit),
        ({"phase": 200}, MalformedUnit),
        ({"stride": 0}, MalformedUnit),
        ({"conversion_rate": 0.0}, MalformedUnit),
        ({"conversion_rate": float("inf")}, MalformedUnit),
        ({"model_id": ""}, MalformedUnit),
        ({"model_id": "has space"}, MalformedUnit),
        ({"model_id": "x" * 65}, MalformedUnit),
        ({"model_sha256": b"\x00" * 31}, MalformedUnit),
        ({"quality": -1}, MalformedUnit),
    ],
)
def test_header_validation(changes, error):
    with pytest.raises(error):
        make_header(**changes)
    with pytest.raises(ValueError):  # both are ValueErrors for callers building headers
        make_header(**changes)


def test_header_accepts_numpy_ints_and_hex_sha():
    header = make_header(height=np.int64(8), model_sha256=SHA_A.hex())
    assert header == make_header() and type(header.height) is int


def test_frame_and_latent_validation():
    with pytest.raises(MalformedUnit):
        FrameUnit("B", 0, 0, (Latent("y", (1,), [b""]),))
    with pytest.raises(MalformedUnit, match="twice"):
        FrameUnit("I", 0, 0, (Latent("y", (1,), [b""]), Latent("y", (2,), [b""])))
    with pytest.raises(ImplausibleSize):
        FrameUnit("I", 0, 0, ())
    with pytest.raises(ImplausibleSize):
        Latent("y", (1 << 15, 1 << 15), [b""])
    with pytest.raises(MalformedUnit):
        Latent("y", (), [b""])
    with pytest.raises(MalformedUnit):
        Latent("y", (2,), ["text"])
    assert Latent("y", [2, 3], b"one").strings == (b"one",)
    frame = FrameUnit.make("P", 1, 5, {"y": ((2,), [b"a"])})
    assert frame.frame_type is FrameType.P and frame.latent("y").shape == (2,)
    with pytest.raises(KeyError):
        frame.latent("z")


# --------------------------------------------------------------------------------------------
# Content hash and model identity
# --------------------------------------------------------------------------------------------


def test_latent_hash_canonical_form():
    array = np.array([[1, -2, 3], [2**31 - 1, -(2**31), 0]], dtype=np.int64)
    manual = hashlib.sha256(
        struct.pack("<I", 2) + struct.pack("<2Q", 2, 3) + struct.pack("<6i", *array.ravel())
    ).digest()
    assert latent_hash([array]) == manual
    assert latent_hash([array.astype(np.float64)]) == manual  # integer-valued floats
    assert latent_hash([array.T.copy().T]) == manual  # memory order does not matter
    assert latent_hash([array.reshape(3, 2)]) != manual  # the shape does
    assert latent_hash([array[:1], array[1:]]) != latent_hash([array])
    hasher = LatentHasher()
    hasher.update(array)
    assert hasher.copy().digest() == manual and hasher.arrays == 1


def test_latent_hash_refuses_non_integers():
    with pytest.raises(ValueError, match="integer values"):
        latent_hash([np.array([0.5])])
    with pytest.raises(ValueError, match="int32"):
        latent_hash([np.array([2**31])])
    with pytest.raises(ValueError, match="dtype"):
        latent_hash([np.array(["a"])])


def test_latent_hash_of_a_torch_tensor():
    torch = pytest.importorskip("torch")
    values = torch.round(torch.linspace(-5, 5, 12)).reshape(3, 4)
    assert latent_hash([values]) == latent_hash([values.numpy().astype(np.int32)])


def test_content_hash_verification(tmp_path):
    path = tmp_path / "h.sci"
    hasher = LatentHasher()
    with SciWriter(path, make_header()) as writer:
        for frame in make_frames(2):
            writer.write_frame(frame)
            hasher.update(np.arange(6).reshape(2, 3) * frame.moment_index)
        writer.finish(hasher)
    with SciReader(path) as reader:
        reader.verify_content_hash(hasher)
        reader.verify_content_hash(hasher.digest())
        with pytest.raises(ContentHashMismatch, match="differs"):
            reader.verify_content_hash(latent_hash([np.zeros(3)]))


def test_model_mismatch_names_both_models():
    header = make_header()
    check_model(header, "sci-test-v1", SHA_A)
    check_model(header, "sci-test-v1", SHA_A.hex())
    with pytest.raises(ModelMismatch) as info:
        SciReader(serialize(header, [], HASH)).check_model("sci-small-v2", SHA_B)
    message = str(info.value)
    assert "sci-test-v1" in message and "sci-small-v2" in message
    assert SHA_A.hex()[:12] in message and SHA_B.hex()[:12] in message
    with pytest.raises(ModelMismatch, match="different weights"):
        check_model(header, "sci-test-v1", SHA_B)


def test_errors_form_one_family():
    causes = [bs.BadMagic, bs.UnsupportedVersion, bs.Truncated, bs.CRCMismatch,
              bs.UnknownCriticalUnit, bs.MalformedUnit, bs.ImplausibleSize, bs.ModelMismatch,
              bs.ContentHashMismatch]
    assert all(issubclass(c, BitstreamError) for c in causes)
    assert len({c.__name__ for c in causes}) == len(causes)
    error = Truncated("stream ends", offset=12)
    assert str(error) == "stream ends (at byte 12)"
    assert os.fspath(DATA / "golden.sci")  # the golden file exists
