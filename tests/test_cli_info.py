"""Tests of `spikecodec info` (the info section of spikecodec/cli.py)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from spikecodec.cli import main

GOLDEN = Path(__file__).parent / "data" / "golden.sci"
GOLDEN_JSON = Path(__file__).parent / "data" / "golden.json"


def run_info(path: Path, *options: str):
    return CliRunner().invoke(main, ["info", str(path), *options])


def damaged_copy(tmp_path: Path, change) -> Path:
    data = bytearray(GOLDEN.read_bytes())
    data = change(data)
    path = tmp_path / "damaged.sci"
    path.write_bytes(bytes(data))
    return path


def flip(position: int):
    def change(data: bytearray) -> bytearray:
        data[position] ^= 0x04
        return data
    return change


def newer_major(data: bytearray) -> bytearray:
    body = bytes(data[:8]) + struct.pack("<HH", 2, 0)
    return bytearray(body + struct.pack("<I", zlib.crc32(body)) + data[16:])


def test_info_on_the_golden_file():
    result = run_info(GOLDEN)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "16 x 16 px, 64 spike frames at 20000 Hz" in out
    assert "window 13, stride 16, phase 12, GOP 2" in out
    assert "sci-test-v1" in out and "entropy coder  ans" in out
    assert "frames         3 (2 I, 1 P)" in out
    assert f"bpp            {530 * 8 / (64 * 16 * 16):.6f}" in out
    assert "unit CRCs OK" in out and "seek index OK (2 I frames)" in out
    assert result.stderr == ""


def test_info_json_is_the_expected_parse():
    result = run_info(GOLDEN, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads(GOLDEN_JSON.read_text())


# Offsets in the golden file (docs/bitstream.md, section 12): HEAD payload 0x1c, first FRAM
# payload 0xb9, info payload 0x90, seek payload 0x1b6.
@pytest.mark.parametrize(
    "change, status, reason",
    [
        (lambda d: d[:300], 3, "Truncated"),
        (lambda d: d[:-1], 3, "Truncated"),
        (lambda d: d[:3], 3, "Truncated"),
        (flip(0xC0), 3, "CRCMismatch: FRAM unit CRC mismatch"),
        (flip(0xB2), 3, "CRCMismatch: unit header CRC mismatch"),
        (flip(0x0A), 3, "CRCMismatch: preamble"),
        (lambda d: d + b"\n", 3, "MalformedUnit: 1 byte(s) after the end unit"),
        (lambda d: bytearray(d.replace(b"\r\n", b"\n")), 4, "BadMagic"),
        (lambda d: bytearray(b"hello, world\n"), 4, "BadMagic"),
        (newer_major, 5, "UnsupportedVersion"),
    ],
)
def test_info_on_damaged_files(tmp_path, change, status, reason):
    result = run_info(damaged_copy(tmp_path, change))
    assert result.exit_code == status
    stderr = result.stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert reason in stderr
    assert "DAMAGED" in result.stdout


def test_info_json_on_a_damaged_file(tmp_path):
    result = run_info(damaged_copy(tmp_path, lambda d: d[:300]), "--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["error"]["type"] == "Truncated"
    assert report["header"]["height"] == 16  # what was read before the damage is kept
    assert "Truncated" in result.stderr


def test_info_on_damaged_ancillary_unit(tmp_path):
    result = run_info(damaged_copy(tmp_path, flip(0x95)))  # inside the info unit's JSON
    assert result.exit_code == 6
    assert result.stderr.startswith("warning: ") and "info unit" in result.stderr
    assert "frames         3 (2 I, 1 P)" in result.stdout


def test_info_usage_errors(tmp_path):
    result = run_info(tmp_path / "missing.sci")
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 2
