"""Writing reconstructed frames for people and programs, always with their timestamps.

A decoded or reconstructed frame belongs to a *moment* (a spike-frame index). Every output keeps
those moments so a user can match a frame to a ground-truth image taken at a known spike index:

- ``.npz`` / ``.h5``: float32 ``frames`` (N, H, W) in [0, 1] and int64 ``timestamps`` (N,);
- ``.mp4``: H.264 video (through imageio-ffmpeg) plus a sidecar ``<name>.timestamps.json``;
- a directory (any path without one of those suffixes): ``frame_000000.png`` ... plus
  ``timestamps.json``.

The playback rate of ``.mp4`` is an option (default 30 fps), not the capture rate. Writes go to a
temporary path beside the target and are renamed into place only when complete, so a failure
leaves nothing half-written; an existing target is kept unless ``force`` is given.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_PLAYBACK_FPS = 30.0
VIDEO_SUFFIXES = (".mp4",)
ARRAY_SUFFIXES = (".npz", ".h5", ".hdf5")


class OutputError(ValueError):
    """The frames cannot be written where or as asked."""


def output_kind(path: str | os.PathLike) -> str:
    """'mp4', 'npz', 'h5' or 'png' (a directory), decided by the path's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "mp4"
    if suffix == ".npz":
        return "npz"
    if suffix in (".h5", ".hdf5"):
        return "h5"
    if suffix == "":
        return "png"
    raise OutputError(
        f"cannot tell the output format of {str(path)!r}: use .mp4, .npz, .h5, or a directory "
        "name without a suffix for PNG frames"
    )


def sidecar_path(video_path: str | os.PathLike) -> Path:
    """Where the timestamps of an .mp4 are written."""
    path = Path(video_path)
    return path.with_name(path.stem + ".timestamps.json")


def _check_frames(frames: np.ndarray, timestamps: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    frames = np.asarray(frames)
    if frames.ndim != 3 or 0 in frames.shape:
        raise OutputError(f"frames must be a non-empty (N, H, W) array, got shape {frames.shape}")
    timestamps = np.asarray(timestamps, dtype=np.int64).reshape(-1)
    if timestamps.size != frames.shape[0]:
        raise OutputError(f"{frames.shape[0]} frames but {timestamps.size} timestamps")
    return np.clip(frames.astype(np.float32, copy=False), 0.0, 1.0), timestamps


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.round(frames * 255.0).astype(np.uint8)


def _timestamp_record(timestamps: np.ndarray, spike_rate_hz: float, metadata: Mapping[str, Any]):
    return {
        "timestamps": [int(t) for t in timestamps],
        "timestamp_unit": "spike frame index",
        "spike_rate_hz": float(spike_rate_hz),
        "seconds": [float(t) / spike_rate_hz for t in timestamps],
        **dict(metadata),
    }


def write_frames(
    path: str | os.PathLike,
    frames: np.ndarray,
    timestamps: Sequence[int],
    *,
    spike_rate_hz: float = 20_000.0,
    fps: float = DEFAULT_PLAYBACK_FPS,
    force: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write frames (N, H, W) in [0, 1] with their moments; returns the paths written."""
    target = Path(path)
    kind = output_kind(target)
    frames, timestamps = _check_frames(frames, timestamps)
    metadata = dict(metadata or {})
    if not fps > 0:
        raise OutputError(f"playback rate must be positive, got {fps} fps")
    targets = [target] + ([sidecar_path(target)] if kind == "mp4" else [])
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise OutputError(f"{existing[0]} exists; pass --force (force=True) to overwrite it")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"the folder {parent} does not exist")

    record = _timestamp_record(timestamps, spike_rate_hz, metadata)
    if kind == "png":
        _write_png_directory(target, frames, record)
    elif kind == "mp4":
        atomic_write(target, lambda tmp: _write_mp4(tmp, frames, fps))
        atomic_write(sidecar_path(target), lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    elif kind == "npz":
        atomic_write(target, lambda tmp: _write_npz(tmp, frames, timestamps, spike_rate_hz, metadata))
    else:
        atomic_write(target, lambda tmp: _write_h5(tmp, frames, timestamps, spike_rate_hz, metadata))
    return targets


def apply_default_mode(path: Path, mode: int) -> None:
    """mkstemp / mkdtemp create private files; give outputs the usual umask-derived mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def atomic_write(target: Path, write) -> None:
    """Call ``write(temporary_path)`` beside ``target``, then rename it into place; on failure
    remove the temporary file so nothing half-written is left."""
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part" + target.suffix,
                                    dir=target.parent if str(target.parent) else ".")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        apply_default_mode(temporary, 0o666)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_npz(path: Path, frames, timestamps, spike_rate_hz, metadata) -> None:
    with open(path, "wb") as handle:
        np.savez_compressed(
            handle, frames=frames, timestamps=timestamps, spike_rate_hz=np.float64(spike_rate_hz),
            metadata=np.array(json.dumps(metadata)),
        )


def _write_h5(path: Path, frames, timestamps, spike_rate_hz, metadata) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        handle.create_dataset("frames", data=frames, compression="gzip", chunks=(1,) + frames.shape[1:])
        handle.create_dataset("timestamps", data=timestamps)
        handle.attrs["spike_rate_hz"] = spike_rate_hz
        handle.attrs["metadata"] = json.dumps(metadata)


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    import imageio_ffmpeg

    # yuv420p needs even sides: pad odd ones by repeating the last row / column
    height, width = frames.shape[1:]
    pad = ((0, 0), (0, height % 2), (0, width % 2))
    pixels = np.pad(_to_uint8(frames), pad, mode="edge")
    writer = imageio_ffmpeg.write_frames(
        str(path), (pixels.shape[2], pixels.shape[1]), pix_fmt_in="gray", pix_fmt_out="yuv420p",
        fps=fps, codec="libx264", quality=8, macro_block_size=1, output_params=["-f", "mp4"],
    )
    writer.send(None)
    try:
        for frame in pixels:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def _write_png_directory(target: Path, frames: np.ndarray, record: dict) -> None:
    import imageio.v3 as iio

    if target.exists() and not target.is_dir():
        raise OutputError(f"{target} exists and is not a directory")
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part",
                                      dir=target.parent if str(target.parent) else "."))
    try:
        digits = max(6, len(str(frames.shape[0] - 1)))
        for index, frame in enumerate(_to_uint8(frames)):
            iio.imwrite(temporary / f"frame_{index:0{digits}d}.png", frame)
        (temporary / "timestamps.json").write_text(json.dumps(record, indent=1))
        apply_default_mode(temporary, 0o777)
        if target.exists():
            shutil.rmtree(target)
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def read_frames(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Frames and timestamps back from an .npz or .h5 written by :func:`write_frames`."""
    kind = output_kind(path)
    if kind == "npz":
        with np.load(path, allow_pickle=False) as data:
            return data["frames"], data["timestamps"]
    if kind == "h5":
        import h5py

        with h5py.File(path, "r") as handle:
            return handle["frames"][...], handle["timestamps"][...]
    raise OutputError(f"read_frames reads .npz and .h5 files, not {path}")
