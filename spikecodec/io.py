"""Spike streams on disk: raw ``.dat`` files and bit-packed ``.npz`` / ``.h5`` containers.

In memory a spike stream is a ``(T, H, W)`` ``uint8`` array of 0/1, row 0 at the top of the image.

``.dat`` ("vidar") layout, as cameras write it (no header, resolution not stored):

* T frames one after the other; a frame is H stored lines of ``W + head_columns`` pixels,
  row-major, packed 8 pixels per byte least-significant bit first
  (``np.unpackbits(raw, bitorder="little")``);
* lines are stored bottom-up: the first stored line is the bottom row of the image;
* with ``head_columns`` (16 on cameras writing 416-wide lines), the last ``head_columns`` pixels of
  every stored line are a camera header, dropped on reading and written as zeros;
* when ``H * (W + head_columns)`` is not a multiple of 8, each frame is padded with zero bits to a
  whole byte, so every frame starts on a byte boundary and frame t sits at byte
  ``t * ceil(H * (W + head_columns) / 8)``. Common cameras (250x400, 250x416, 1000x1000) need
  no padding, so this choice only matters for unusual resolutions and stays compatible with them.

``.npz`` and ``.h5`` containers store the frames packed the same way (LSB first, each frame padded
to whole bytes) but in image orientation (top row first) and without head columns, as a
``(T, ceil(H*W/8))`` uint8 array ``spikes`` with ``height``, ``width`` and ``num_frames`` beside it
(npz members; h5 dataset attributes), plus ``format`` and ``format_version`` for future changes.

Reading is streamed: :class:`DatReader` memory-maps the file and unpacks only the frames asked for,
asking the OS for the next block ahead and releasing the mapped pages of a block once it is decoded,
so a 10 GB file is processed with memory bounded by the block size; :class:`H5Reader` reads dataset slices. Writers write to a temporary file
beside the target and rename it on success, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import mmap
import os
import secrets
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from spikecodec import DEFAULT_HEIGHT, DEFAULT_WIDTH

PathLike = Union[str, "os.PathLike[str]"]

DAT_SUFFIXES = (".dat",)
NPZ_SUFFIXES = (".npz",)
H5_SUFFIXES = (".h5", ".hdf5")
SUPPORTED_SUFFIXES = DAT_SUFFIXES + NPZ_SUFFIXES + H5_SUFFIXES

CONTAINER_FORMAT = "spikecodec-spikes"
CONTAINER_VERSION = 1
H5_DEFAULT_KEY = "spikes"

#: (height, width, head_columns) of cameras whose files users have; used to suggest a resolution
#: when a ``.dat`` size does not fit the one given.
COMMON_RESOLUTIONS: tuple[tuple[int, int, int], ...] = (
    (250, 400, 0),
    (250, 400, 16),
    (1000, 1000, 0),
)

#: Default block size of :meth:`SpikeReader.iter_blocks`, in unpacked bytes. Blocks of a few MiB
#: unpack as fast as larger ones (measured: 64-335 frames at 250x400 alike, 1000 frames slower).
DEFAULT_BLOCK_BYTES = 8 * 2**20


class SpikeFileError(ValueError):
    """A spike file or spike array that cannot be read or written as asked; the message says why."""


# ---------------------------------------------------------------------------------------------
# helpers


def _check_dimension(name: str, value: object, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise SpikeFileError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise SpikeFileError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def frame_bytes(height: int, width: int, head_columns: int = 0) -> int:
    """Bytes one packed frame takes in a ``.dat`` file (``ceil(H * (W + head) / 8)``)."""
    return -(-height * (width + head_columns) // 8)


def _resolution_name(height: int, width: int, head_columns: int) -> str:
    if head_columns:
        stored = width + head_columns
        return f"{height}x{width} with head_columns={head_columns} ({stored}-wide lines)"
    return f"{height}x{width}"


def default_block_frames(height: int, width: int) -> int:
    """Frames per block when none is given: about 8 MiB of unpacked frames, at least one."""
    return max(1, DEFAULT_BLOCK_BYTES // (height * width))


def _check_block_frames(block_frames: int | None, height: int, width: int) -> int:
    if block_frames is None:
        return default_block_frames(height, width)
    return _check_dimension("block_frames", block_frames, 1)


def check_spikes(spikes: object, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Return ``spikes`` as an array after checking it is a ``(T, H, W)`` stream of 0/1 values.

    Accepts bool, integer or float arrays (floats must be exactly 0.0 or 1.0). ``height`` and
    ``width``, when given, must match. Raises :class:`SpikeFileError` otherwise.
    """
    try:
        array = np.asarray(spikes)
    except Exception as exc:  # ragged lists and other non-arrays
        raise SpikeFileError(f"spikes must be an array of 0/1 values: {exc}") from None
    if array.dtype.kind not in "biuf":
        raise SpikeFileError(f"spikes must hold numbers 0/1, got dtype {array.dtype}")
    if array.ndim != 3:
        hint = " (for a single frame use spikes[None])" if array.ndim == 2 else ""
        raise SpikeFileError(f"spikes must be 3-D (T, H, W), got shape {array.shape}{hint}")
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise SpikeFileError(f"spikes must not be empty, got shape {array.shape}")
    if (height is not None and array.shape[1] != height) or (
        width is not None and array.shape[2] != width
    ):
        raise SpikeFileError(
            f"spikes frames are {array.shape[1]}x{array.shape[2]}, expected {height}x{width}"
        )
    if array.dtype.kind == "b":
        return array
    if array.dtype.kind == "u":
        bad = bool(array.max() > 1)
    elif array.dtype.kind == "i":
        bad = bool(array.min() < 0 or array.max() > 1)
    else:  # float: NaN and fractions are rejected as well
        bad = bool(((array != 0) & (array != 1)).any())
    if bad:
        offending = array[(array != 0) & (array != 1)].flat[0]
        raise SpikeFileError(
            f"spikes must hold only 0 and 1, found {offending} in a {array.dtype} array"
        )
    return array


def pack_frames(spikes: np.ndarray) -> np.ndarray:
    """Pack a checked ``(T, H, W)`` 0/1 array into ``(T, ceil(H*W/8))`` bytes, LSB first, top row
    first, each frame padded to whole bytes (the ``.npz`` / ``.h5`` layout)."""
    t = spikes.shape[0]
    flat = spikes.reshape(t, -1)
    if flat.dtype != np.bool_ and flat.dtype != np.uint8:
        flat = flat.astype(np.uint8)
    return np.packbits(flat, axis=1, bitorder="little")


def unpack_frames(packed: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_frames`: ``(T, ceil(H*W/8))`` bytes to a ``(T, H, W)`` uint8 array."""
    t = packed.shape[0]
    bits = np.unpackbits(packed, axis=1, count=height * width, bitorder="little")
    return bits.reshape(t, height, width)


def _dat_pack(spikes: np.ndarray, head_columns: int) -> np.ndarray:
    """Pack checked ``(n, H, W)`` frames into ``.dat`` bytes: rows bottom-up, zero head columns."""
    n, height, width = spikes.shape
    stored_width = width + head_columns
    flipped = spikes[:, ::-1, :]
    if flipped.dtype != np.bool_ and flipped.dtype != np.uint8:
        flipped = flipped.astype(np.uint8)
    if width % 8 == 0 and head_columns % 8 == 0:
        # Lines are whole bytes: pack each line in place, no (n, H*W) temporary.
        lines = np.packbits(flipped, axis=2, bitorder="little")
        if head_columns:
            head = np.zeros((n, height, head_columns // 8), dtype=np.uint8)
            lines = np.concatenate([lines, head], axis=2)
        return lines.reshape(n, -1)
    stored = np.zeros((n, height, stored_width), dtype=np.uint8)
    stored[:, :, :width] = flipped
    return np.packbits(stored.reshape(n, -1), axis=1, bitorder="little")


def _dat_unpack(raw: np.ndarray, height: int, width: int, head_columns: int) -> np.ndarray:
    """Unpack ``(n, frame_bytes)`` ``.dat`` bytes to a C-contiguous ``(n, H, W)`` uint8 array."""
    n = raw.shape[0]
    stored_width = width + head_columns
    if stored_width % 8 == 0:
        # Lines are whole bytes: flip the line order (and drop whole head bytes) on a view of the
        # packed bytes, so unpackbits writes the final orientation directly; no second pass.
        lines = raw.reshape(n, height, stored_width // 8)[:, ::-1, :]
        if width % 8 == 0:
            return np.unpackbits(lines[:, :, : width // 8], axis=2, bitorder="little")
        return np.ascontiguousarray(
            np.unpackbits(lines, axis=2, bitorder="little")[:, :, :width]
        )
    bits = np.unpackbits(raw, axis=1, count=height * stored_width, bitorder="little")
    return np.ascontiguousarray(bits.reshape(n, height, stored_width)[:, ::-1, :width])


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _check_suffix(path: Path) -> str:
    suffix = _suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise SpikeFileError(
            f"{path}: unknown spike file extension {suffix or '(none)'!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return suffix


def _check_readable(path: Path) -> int:
    """Size in bytes of an existing, readable, non-empty regular file."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise SpikeFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise SpikeFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.is_dir():
        raise SpikeFileError(f"{path}: is a directory, not a spike file")
    if not os.access(path, os.R_OK):
        raise SpikeFileError(f"{path}: cannot read (permission denied)")
    if stat.st_size == 0:
        raise SpikeFileError(f"{path}: empty file (0 bytes), no spike frames")
    return stat.st_size


def _dat_size_error(path: Path, size: int, height: int, width: int, head_columns: int) -> str:
    frame = frame_bytes(height, width, head_columns)
    resolution = _resolution_name(height, width, head_columns)
    message = (
        f"{path}: {size} bytes is not a whole number of {resolution}"
        f" frames ({frame} bytes per frame: {size // frame} whole frames and {size % frame} bytes"
        " left over)."
    )
    candidates = list(COMMON_RESOLUTIONS)
    if (height, width, 16) not in candidates and head_columns == 0:
        candidates.append((height, width, 16))
    fits = [
        f"{_resolution_name(h, w, c)} ({size // frame_bytes(h, w, c)} frames)"
        for h, w, c in candidates
        if (h, w, c) != (height, width, head_columns) and size % frame_bytes(h, w, c) == 0
    ]
    if fits:
        message += " Resolutions that fit this size: " + "; ".join(fits) + "."
    else:
        names = ", ".join(_resolution_name(h, w, c) for h, w, c in candidates)
        message += (
            f" None of the common resolutions ({names}) fits either: the file may be truncated,"
            " or give its height/width."
        )
    return message


# ---------------------------------------------------------------------------------------------
# readers


class SpikeReader(ABC):
    """A spike stream on disk, read in frame ranges without loading the whole file.

    ``reader.read(start, stop)`` and ``reader[start:stop]`` return ``(n, H, W)`` uint8 arrays of
    0/1; ``reader[t]`` one ``(H, W)`` frame; ``reader.iter_blocks(block_frames)`` streams the file.
    Use it as a context manager (or call :meth:`close`).
    """

    path: Path
    height: int
    width: int
    num_frames: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(num_frames, height, width)`` of the decoded stream."""
        return (self.num_frames, self.height, self.width)

    def __len__(self) -> int:
        return self.num_frames

    @abstractmethod
    def _read_range(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start <= t < stop`` (already bounds-checked, start < stop)."""

    def close(self) -> None:
        """Release the file; further reads fail."""

    def __enter__(self) -> "SpikeReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start <= t < stop`` as a ``(stop - start, H, W)`` uint8 array of 0/1.

        ``stop=None`` reads to the end. Indices must lie inside the stream (no clipping, unlike
        slicing), so a wrong range is an error rather than a silently shorter result.
        """
        start = _check_dimension("start", start, 0)
        stop = self.num_frames if stop is None else _check_dimension("stop", stop, 0)
        if not start < stop <= self.num_frames:
            raise IndexError(
                f"{self.path}: frame range [{start}, {stop}) is not inside the stream's "
                f"{self.num_frames} frames"
            )
        return self._read_range(start, stop)

    def __getitem__(self, index: int | slice) -> np.ndarray:
        if isinstance(index, slice):
            frames = range(*index.indices(self.num_frames))
            if len(frames) == 0:
                return np.zeros((0, self.height, self.width), dtype=np.uint8)
            # Read in increasing frame order (what h5py slicing needs), reverse afterwards.
            low, high = min(frames[0], frames[-1]), max(frames[0], frames[-1])
            step = abs(frames.step)
            if step == 1:
                block = self._read_range(low, high + 1)
            else:
                block = self._read_strided(low, high + 1, step)
            return np.ascontiguousarray(block[::-1]) if frames.step < 0 else block
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            t = int(index)
            if t < 0:
                t += self.num_frames
            if not 0 <= t < self.num_frames:
                raise IndexError(
                    f"{self.path}: frame {index} out of range for {self.num_frames} frames"
                )
            return self._read_range(t, t + 1)[0]
        raise TypeError(
            f"spike readers are indexed by an int or a slice, not {type(index).__name__}"
        )

    @abstractmethod
    def _read_strided(self, start: int, stop: int, step: int) -> np.ndarray:
        """Frames ``start, start + step, ...`` below ``stop`` (bounds-checked, step > 1)."""

    def iter_blocks(
        self, block_frames: int | None = None, start: int = 0, stop: int | None = None
    ) -> Iterator[np.ndarray]:
        """Yield consecutive ``(n, H, W)`` uint8 blocks covering frames ``[start, stop)``.

        Every block has ``block_frames`` frames except possibly the last. The default block size
        keeps a block near 8 MiB unpacked (83 frames at 250x400). Memory stays bounded by one
        block whatever the file size.
        """
        block = _check_block_frames(block_frames, self.height, self.width)
        start = _check_dimension("start", start, 0)
        stop = self.num_frames if stop is None else _check_dimension("stop", stop, 0)
        if not start <= stop <= self.num_frames:
            raise IndexError(
                f"{self.path}: frame range [{start}, {stop}) is not inside the stream's "
                f"{self.num_frames} frames"
            )
        # Arguments are checked above, when iter_blocks is called; the generator only reads.
        return self._blocks(block, start, stop)

    def _blocks(self, block: int, start: int, stop: int) -> Iterator[np.ndarray]:
        for first in range(start, stop, block):
            yield self._read_range(first, min(first + block, stop))

    def __iter__(self) -> Iterator[np.ndarray]:
        """Frames one by one, ``(H, W)`` each (decoded block by block)."""
        for block in self.iter_blocks():
            yield from block

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, num_frames={self.num_frames}, "
            f"height={self.height}, width={self.width})"
        )


class DatReader(SpikeReader):
    """A raw ``.dat`` spike file, memory-mapped (see the module docstring for the layout).

    Pages of the mapping are released after each read, so streaming the whole file keeps the
    process's resident memory to about one block (the data stays in the OS page cache).
    """

    def __init__(
        self,
        path: PathLike,
        height: int = DEFAULT_HEIGHT,
        width: int = DEFAULT_WIDTH,
        head_columns: int = 0,
    ) -> None:
        self.path = Path(path)
        self.height = _check_dimension("height", height, 1)
        self.width = _check_dimension("width", width, 1)
        self.head_columns = _check_dimension("head_columns", head_columns, 0)
        self.frame_bytes = frame_bytes(self.height, self.width, self.head_columns)
        size = _check_readable(self.path)
        if size % self.frame_bytes:
            raise SpikeFileError(
                _dat_size_error(self.path, size, self.height, self.width, self.head_columns)
            )
        self.num_frames = size // self.frame_bytes
        try:
            with open(self.path, "rb") as handle:
                # np.memmap would hide the mmap object; owning it lets us madvise() pages away.
                self._mmap: mmap.mmap | None = mmap.mmap(
                    handle.fileno(), 0, access=mmap.ACCESS_READ
                )
        except OSError as exc:
            raise SpikeFileError(f"{self.path}: cannot map file ({exc.strerror or exc})") from None
        self._frames: np.ndarray | None = np.frombuffer(self._mmap, dtype=np.uint8).reshape(
            self.num_frames, self.frame_bytes
        )

    def _release(self, byte_start: int, byte_stop: int) -> None:
        """Drop the process's mapping of a byte range already decoded (the page cache keeps it)."""
        if self._mmap is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        first = byte_start - byte_start % mmap.PAGESIZE
        try:
            self._mmap.madvise(mmap.MADV_DONTNEED, first, byte_stop - first)
        except (OSError, ValueError):
            pass  # only a memory-use optimisation

    def _prefetch(self, start: int, stop: int) -> None:
        """Ask the OS to start reading frames ``[start, stop)`` in the background."""
        if self._mmap is None or start >= stop or not hasattr(mmap, "MADV_WILLNEED"):
            return
        first = start * self.frame_bytes
        first -= first % mmap.PAGESIZE
        try:
            self._mmap.madvise(mmap.MADV_WILLNEED, first, stop * self.frame_bytes - first)
        except (OSError, ValueError):
            pass  # only a speed optimisation

    def _blocks(self, block: int, start: int, stop: int) -> Iterator[np.ndarray]:
        for first in range(start, stop, block):
            last = min(first + block, stop)
            # Reading the next block from disk overlaps with unpacking this one: on a cold page
            # cache this doubled streaming throughput (measured, benchmarks/bench_io.py).
            self._prefetch(last, min(last + block, stop))
            yield self._read_range(first, last)

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        if self._frames is None:
            raise SpikeFileError(f"{self.path}: reader is closed")
        block = _dat_unpack(self._frames[start:stop], self.height, self.width, self.head_columns)
        self._release(start * self.frame_bytes, stop * self.frame_bytes)
        return block

    def _read_strided(self, start: int, stop: int, step: int) -> np.ndarray:
        if self._frames is None:
            raise SpikeFileError(f"{self.path}: reader is closed")
        block = _dat_unpack(
            self._frames[start:stop:step], self.height, self.width, self.head_columns
        )
        self._release(start * self.frame_bytes, stop * self.frame_bytes)
        return block

    def close(self) -> None:
        self._frames = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a view is still alive somewhere; the mapping goes when it does
            self._mmap = None


class ArrayReader(SpikeReader):
    """A (T, H, W) array of 0/1 already in memory, behind the reader interface (evaluation)."""

    def __init__(self, spikes: np.ndarray, name: str = "<array>") -> None:
        self._spikes = check_spikes(spikes)
        self.path = Path(name)
        self.num_frames, self.height, self.width = self._spikes.shape

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        return self._spikes[start:stop]

    def _read_strided(self, start: int, stop: int, step: int) -> np.ndarray:
        return self._spikes[start:stop:step]


class _PackedReader(SpikeReader):
    """Common part of the containers: frames stored packed in image orientation."""

    _packed: object  # numpy array or h5py dataset, indexable by frame slices

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        if self._packed is None:
            raise SpikeFileError(f"{self.path}: reader is closed")
        return unpack_frames(np.asarray(self._packed[start:stop]), self.height, self.width)

    def _read_strided(self, start: int, stop: int, step: int) -> np.ndarray:
        if self._packed is None:
            raise SpikeFileError(f"{self.path}: reader is closed")
        return unpack_frames(np.asarray(self._packed[start:stop:step]), self.height, self.width)

    def _check_layout(
        self, height: object, width: object, num_frames: object, shape: tuple, dtype: object
    ) -> None:
        try:
            self.height = _check_dimension("stored height", int(height), 1)
            self.width = _check_dimension("stored width", int(width), 1)
            self.num_frames = _check_dimension("stored num_frames", int(num_frames), 1)
        except (TypeError, ValueError) as exc:
            raise SpikeFileError(f"{self.path}: not a valid spike container ({exc})") from None
        expected = (self.num_frames, frame_bytes(self.height, self.width))
        if tuple(shape) != expected or np.dtype(dtype) != np.uint8:
            raise SpikeFileError(
                f"{self.path}: packed spikes are {dtype} {tuple(shape)}, expected uint8 {expected}"
                f" for {self.num_frames} frames of {self.height}x{self.width}"
            )

    def _check_requested(self, height: int | None, width: int | None) -> None:
        if (height is not None and height != self.height) or (
            width is not None and width != self.width
        ):
            raise SpikeFileError(
                f"{self.path}: stores {self.height}x{self.width} frames, but "
                f"{height}x{width} was asked for"
            )


class NpzReader(_PackedReader):
    """A ``.npz`` spike container. The packed frames (1/8 of the unpacked size) are loaded into
    memory on opening; prefer ``.h5`` or ``.dat`` for streams too large for that."""

    def __init__(self, path: PathLike, height: int | None = None, width: int | None = None) -> None:
        self.path = Path(path)
        _check_readable(self.path)
        try:
            archive = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise SpikeFileError(f"{self.path}: not a readable .npz file ({exc})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise SpikeFileError(f"{self.path}: holds a single array, not a .npz spike container")
        with archive:
            missing = {"spikes", "height", "width", "num_frames"} - set(archive.files)
            if missing:
                raise SpikeFileError(
                    f"{self.path}: not a spikecodec spike container (missing "
                    f"{', '.join(sorted(missing))})"
                )
            try:
                fmt = str(archive["format"]) if "format" in archive.files else CONTAINER_FORMAT
                version = (
                    int(archive["format_version"]) if "format_version" in archive.files else 1
                )
                packed = archive["spikes"]
                height_stored, width_stored = archive["height"], archive["width"]
                frames_stored = archive["num_frames"]
            except (OSError, ValueError, TypeError, zipfile.BadZipFile, EOFError) as exc:
                raise SpikeFileError(f"{self.path}: corrupt .npz spike container ({exc})") from None
        _check_container_version(self.path, fmt, version)
        self._check_layout(height_stored, width_stored, frames_stored, packed.shape, packed.dtype)
        self._check_requested(height, width)
        self._packed = packed

    def close(self) -> None:
        self._packed = None


class H5Reader(_PackedReader):
    """A ``.h5`` spike container; frames are read as dataset slices, never all at once.

    ``key`` names the packed dataset, so a file holding several streams (``"seq3/spikes"``) can be
    opened one stream at a time.
    """

    def __init__(
        self,
        path: PathLike,
        height: int | None = None,
        width: int | None = None,
        key: str = H5_DEFAULT_KEY,
    ) -> None:
        import h5py

        self.path = Path(path)
        _check_readable(self.path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise SpikeFileError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        try:
            if key not in self._file or not isinstance(self._file[key], h5py.Dataset):
                raise SpikeFileError(f"{self.path}: no spike dataset {key!r} in this HDF5 file")
            dataset = self._file[key]
            attrs = dataset.attrs
            missing = {"height", "width", "num_frames"} - set(attrs.keys())
            if missing:
                raise SpikeFileError(
                    f"{self.path}: dataset {key!r} is not a spikecodec spike stream (missing "
                    f"attributes {', '.join(sorted(missing))})"
                )
            fmt = attrs.get("format", CONTAINER_FORMAT)
            fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
            _check_container_version(self.path, fmt, int(attrs.get("format_version", 1)))
            self._check_layout(
                attrs["height"], attrs["width"], attrs["num_frames"], dataset.shape, dataset.dtype
            )
            self._check_requested(height, width)
        except BaseException:
            self._file.close()
            raise
        self._packed = dataset

    def close(self) -> None:
        self._packed = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _check_container_version(path: Path, fmt: str, version: int) -> None:
    if fmt != CONTAINER_FORMAT:
        raise SpikeFileError(f"{path}: format {fmt!r} is not {CONTAINER_FORMAT!r}")
    if version > CONTAINER_VERSION:
        raise SpikeFileError(
            f"{path}: spike container version {version} is newer than this spikecodec reads "
            f"({CONTAINER_VERSION}); upgrade spikecodec"
        )


def open_spikes(
    path: PathLike,
    height: int | None = None,
    width: int | None = None,
    head_columns: int = 0,
    *,
    key: str = H5_DEFAULT_KEY,
) -> SpikeReader:
    """Open a spike stream for reading, choosing the format from the extension.

    ``.dat``: ``height``/``width`` default to 250x400 (the file does not store them) and
    ``head_columns`` is the number of header pixels ending every stored line (16 for 416-wide
    lines). ``.npz``/``.h5``/``.hdf5``: the stored resolution is used; a ``height``/``width`` given
    must match it, and ``head_columns`` must be 0. ``key`` names the dataset inside an ``.h5``.
    """
    path = Path(path)
    suffix = _check_suffix(path)
    head_columns = _check_dimension("head_columns", head_columns, 0)
    if suffix in DAT_SUFFIXES:
        return DatReader(
            path,
            DEFAULT_HEIGHT if height is None else height,
            DEFAULT_WIDTH if width is None else width,
            head_columns,
        )
    if head_columns:
        raise SpikeFileError(
            f"{path}: head_columns applies to raw .dat files only; containers store frames "
            "without camera headers"
        )
    for name, value in (("height", height), ("width", width)):
        if value is not None:
            _check_dimension(name, value, 1)
    if suffix in NPZ_SUFFIXES:
        return NpzReader(path, height, width)
    return H5Reader(path, height, width, key=key)


def load_spikes(
    path: PathLike,
    height: int | None = None,
    width: int | None = None,
    head_columns: int = 0,
    start: int = 0,
    stop: int | None = None,
    *,
    key: str = H5_DEFAULT_KEY,
) -> np.ndarray:
    """Read frames ``[start, stop)`` (default all) of a spike file as a ``(T, H, W)`` uint8 array.

    Arguments as in :func:`open_spikes`.
    """
    with open_spikes(path, height, width, head_columns, key=key) as reader:
        return reader.read(start, stop)


# ---------------------------------------------------------------------------------------------
# writers


class SpikeWriter(ABC):
    """Writes a spike stream block by block to a temporary file, renamed to ``path`` on
    :meth:`close`. Used as a context manager, an exception discards the temporary file."""

    def __init__(self, path: PathLike, height: int, width: int) -> None:
        self.path = Path(path)
        self.height = _check_dimension("height", height, 1)
        self.width = _check_dimension("width", width, 1)
        self.num_frames = 0
        self._closed = False
        directory = self.path.parent
        if not directory.is_dir():
            raise SpikeFileError(f"{self.path}: cannot write, directory {directory} does not exist")
        if self.path.is_dir():
            raise SpikeFileError(f"{self.path}: is a directory")
        # Same directory as the target so the final os.replace is an atomic rename.
        self._temp_path = directory / f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"

    def write(self, spikes: np.ndarray) -> None:
        """Append ``(n, H, W)`` frames of 0/1 (any numeric dtype) to the stream."""
        if self._closed:
            raise SpikeFileError(f"{self.path}: writer is closed")
        array = check_spikes(spikes, self.height, self.width)
        # Pack in bounded chunks so a huge in-memory array does not get a full-size temporary.
        chunk = default_block_frames(self.height, self.width)
        for first in range(0, array.shape[0], chunk):
            try:
                self._write_checked(array[first : first + chunk])
            except OSError as exc:  # disk full, quota, ...: the partial file is of no use
                self.abort()
                raise SpikeFileError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
            self.num_frames += min(chunk, array.shape[0] - first)

    @abstractmethod
    def _write_checked(self, spikes: np.ndarray) -> None: ...

    @abstractmethod
    def _finish(self) -> None:
        """Complete and close the temporary file."""

    @abstractmethod
    def _discard(self) -> None:
        """Close the temporary file without completing it."""

    def close(self) -> None:
        """Finish the file and move it into place. At least one frame must have been written."""
        if self._closed:
            return
        if self.num_frames == 0:
            self.abort()
            raise SpikeFileError(f"{self.path}: no frames written; nothing saved")
        try:
            self._finish()
            os.replace(self._temp_path, self.path)
        except OSError as exc:
            self.abort()
            raise SpikeFileError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Discard everything written; ``path`` is left as it was."""
        self._closed = True
        try:
            self._discard()
        finally:
            self._temp_path.unlink(missing_ok=True)

    def __enter__(self) -> "SpikeWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _open_temp(path: Path, temp_path: Path):
    try:
        return open(temp_path, "xb")
    except OSError as exc:
        raise SpikeFileError(f"{path}: cannot write ({exc.strerror or exc})") from None


class DatWriter(SpikeWriter):
    """Writes a raw ``.dat`` file (layout in the module docstring); head columns are zeros."""

    def __init__(
        self,
        path: PathLike,
        height: int = DEFAULT_HEIGHT,
        width: int = DEFAULT_WIDTH,
        head_columns: int = 0,
    ) -> None:
        super().__init__(path, height, width)
        self.head_columns = _check_dimension("head_columns", head_columns, 0)
        self._handle = _open_temp(self.path, self._temp_path)

    def _write_checked(self, spikes: np.ndarray) -> None:
        self._handle.write(_dat_pack(spikes, self.head_columns))

    def _finish(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def _discard(self) -> None:
        self._handle.close()


class NpzWriter(SpikeWriter):
    """Writes a ``.npz`` container; packed frames are kept in memory until :meth:`close`."""

    def __init__(self, path: PathLike, height: int, width: int) -> None:
        super().__init__(path, height, width)
        self._blocks: list[np.ndarray] = []

    def _write_checked(self, spikes: np.ndarray) -> None:
        self._blocks.append(pack_frames(spikes))

    def _finish(self) -> None:
        with _open_temp(self.path, self._temp_path) as handle:
            np.savez(
                handle,
                spikes=np.concatenate(self._blocks, axis=0),
                height=np.int64(self.height),
                width=np.int64(self.width),
                num_frames=np.int64(self.num_frames),
                format=np.str_(CONTAINER_FORMAT),
                format_version=np.int64(CONTAINER_VERSION),
            )
            handle.flush()
            os.fsync(handle.fileno())
        self._blocks = []

    def _discard(self) -> None:
        self._blocks = []


class H5Writer(SpikeWriter):
    """Writes a ``.h5`` container as a resizable, chunked dataset, block by block."""

    def __init__(self, path: PathLike, height: int, width: int, key: str = H5_DEFAULT_KEY) -> None:
        import h5py

        super().__init__(path, height, width)
        self._frame_bytes = frame_bytes(self.height, self.width)
        _open_temp(self.path, self._temp_path).close()  # reserves the name, reports OS errors
        try:
            self._file = h5py.File(self._temp_path, "w")
            # ~256 KB chunks: efficient slices, little waste in a short stream's last chunk.
            chunk_frames = max(1, min(1024, 2**18 // self._frame_bytes))
            self._dataset = self._file.create_dataset(
                key,
                shape=(0, self._frame_bytes),
                maxshape=(None, self._frame_bytes),
                dtype=np.uint8,
                chunks=(chunk_frames, self._frame_bytes),
            )
        except BaseException:
            self.abort()
            raise
        attrs = self._dataset.attrs
        attrs["format"] = CONTAINER_FORMAT
        attrs["format_version"] = CONTAINER_VERSION
        attrs["height"] = self.height
        attrs["width"] = self.width
        attrs["num_frames"] = 0

    def _write_checked(self, spikes: np.ndarray) -> None:
        packed = pack_frames(spikes)
        old = self._dataset.shape[0]
        self._dataset.resize(old + packed.shape[0], axis=0)
        self._dataset[old:] = packed

    def _finish(self) -> None:
        self._dataset.attrs["num_frames"] = self.num_frames
        self._file.close()

    def _discard(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None and file.id.valid:
            file.close()


def open_spike_writer(
    path: PathLike,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    head_columns: int = 0,
    *,
    key: str = H5_DEFAULT_KEY,
) -> SpikeWriter:
    """A writer for ``path``, choosing the format from the extension (as :func:`open_spikes`)."""
    path = Path(path)
    suffix = _check_suffix(path)
    head_columns = _check_dimension("head_columns", head_columns, 0)
    if suffix in DAT_SUFFIXES:
        return DatWriter(path, height, width, head_columns)
    if head_columns:
        raise SpikeFileError(f"{path}: head_columns applies to raw .dat files only")
    if suffix in NPZ_SUFFIXES:
        return NpzWriter(path, height, width)
    return H5Writer(path, height, width, key=key)


def save_spikes(
    path: PathLike,
    spikes: np.ndarray | SpikeReader,
    head_columns: int = 0,
    *,
    key: str = H5_DEFAULT_KEY,
    block_frames: int | None = None,
) -> Path:
    """Write a ``(T, H, W)`` 0/1 array, or everything a :class:`SpikeReader` holds (streamed, so
    this converts between formats in bounded memory), to ``path``; format from the extension.

    Returns the path written. Nothing is left at ``path`` if writing fails.
    """
    if isinstance(spikes, SpikeReader):
        with open_spike_writer(path, spikes.height, spikes.width, head_columns, key=key) as writer:
            for block in spikes.iter_blocks(block_frames):
                writer.write(block)
        return Path(path)
    array = check_spikes(spikes)
    _, height, width = array.shape
    with open_spike_writer(path, height, width, head_columns, key=key) as writer:
        writer.write(array)
    return Path(path)
