"""Shared pieces of the dataset files: bit packing and writing through a temporary file."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

import numpy as np

#: How spike frames are packed in every data_tools h5 file (stored as a file attribute too).
SPIKE_PACKING = "np.packbits(frames, axis=-1, bitorder='little'); unpack with count=width"


def pack_spikes(spikes: np.ndarray) -> np.ndarray:
    """Pack 0/1 spikes ``(..., W)`` into ``(..., ceil(W / 8))`` uint8, 8 pixels of a row per byte,
    least-significant bit first; a row whose width is not a multiple of 8 ends with zero bits."""
    return np.packbits(np.asarray(spikes, dtype=np.uint8), axis=-1, bitorder="little")


def unpack_spikes(packed: np.ndarray, width: int) -> np.ndarray:
    """Inverse of :func:`pack_spikes`: ``(..., ceil(W / 8))`` uint8 -> ``(..., W)`` uint8 0/1."""
    return np.unpackbits(
        np.asarray(packed, dtype=np.uint8), axis=-1, count=width, bitorder="little"
    )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on any error
    it is deleted, so a failed or interrupted run never leaves a half-written dataset."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target}: is a directory")
    if not target.parent.is_dir():
        raise ValueError(f"{target}: directory {target.parent} does not exist")
    temp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def check_format(attrs, path: Path, expected: str, version: int) -> None:
    """Refuse a file that is not ``expected`` (format attribute) or has a newer version."""
    found = attrs.get("format")
    if isinstance(found, bytes):
        found = found.decode()
    if found != expected:
        raise ValueError(f"{path}: not a {expected} file (format attribute is {found!r})")
    found_version = int(attrs.get("format_version", -1))
    if found_version != version:
        raise ValueError(
            f"{path}: {expected} version {found_version} is not supported (expected {version})"
        )
