"""Moments: the spike-frame indices decoded frames belong to (DESIGN.md, "Time").

Moments are ``phase + k * stride`` for every integer k (negative too) that keeps the window
``[t - before, t + after]`` inside a stream of ``num_frames`` spike frames. ``phase`` is an absolute
spike-frame index that is itself a moment; by default the first valid one, ``before``.
"""

from __future__ import annotations

import numpy as np

from spikecodec import DEFAULT_STRIDE


def moments_for(
    num_frames: int, stride: int = DEFAULT_STRIDE, before: int = 0, after: int = 0,
    phase: int | None = None,
) -> np.ndarray:
    """Every valid moment of a stream, ascending (int64). Empty when the stream is too short."""
    if stride < 1:
        raise ValueError(f"stride must be at least 1 spike frame, got {stride}")
    if before < 0 or after < 0:
        raise ValueError("window extents before/after cannot be negative")
    if num_frames < 0:
        raise ValueError(f"frame count cannot be negative, got {num_frames}")
    first, last = before, num_frames - 1 - after
    if phase is None:
        phase = first
    if phase < 0:
        raise ValueError(f"phase is a spike-frame index and cannot be negative, got {phase}")
    if last < first:
        return np.zeros(0, dtype=np.int64)
    start = phase + -(-(first - phase) // stride) * stride  # smallest phase + k*stride >= first
    return np.arange(start, last + 1, stride, dtype=np.int64)
