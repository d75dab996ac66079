"""Reconstruct a whole spike file with a baseline, reading it in bounded blocks."""

from __future__ import annotations

import os

import numpy as np

from spikecodec.baselines import TFI_DEFAULT_MAX_INTERVAL, get_reconstructor
from spikecodec.moments import moments_for

MOMENTS_PER_BLOCK = 16


def reconstruct_stream(
    path: str | os.PathLike,
    method: str = "tfp",
    window: int = 41,
    stride: int = 20,
    phase: int | None = None,
    rate: float = 0.6,
    height: int | None = None,
    width: int | None = None,
    head_columns: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, H, W) and their moments for every valid moment of a spike file.

    A moment is valid when the TFP window (``window`` frames centred on it) lies inside the stream;
    TFI uses the same moments so the two can be compared frame for frame. Frames are read a block
    of moments at a time, with the margin each method reads, so the result equals reconstructing
    the whole stream at once while memory stays bounded.
    """
    from tqdm import tqdm

    from spikecodec.io import open_spikes

    options = {"rate": rate}
    if method == "tfp":
        options["window"] = window
        margin_before, margin_after = window // 2, (window - 1) // 2
    else:
        margin_before = margin_after = TFI_DEFAULT_MAX_INTERVAL
    reconstructor = get_reconstructor(method, **options)

    with open_spikes(path, height=height, width=width, head_columns=head_columns) as reader:
        moments = moments_for(reader.num_frames, stride, before=window // 2,
                              after=(window - 1) // 2, phase=phase)
        if moments.size == 0:
            raise ValueError(
                f"{path} holds {reader.num_frames} spike frames, fewer than one {window}-frame "
                "window; use a longer stream or a smaller --window"
            )
        frames = np.empty((moments.size, reader.height, reader.width), dtype=np.float32)
        blocks = range(0, moments.size, MOMENTS_PER_BLOCK)
        for first in tqdm(blocks, desc=f"{method.upper()}", unit="block", disable=not progress):
            chunk = moments[first:first + MOMENTS_PER_BLOCK]
            start = max(0, int(chunk[0]) - margin_before)
            stop = min(reader.num_frames, int(chunk[-1]) + margin_after + 1)
            spikes = reader.read(start, stop)
            frames[first:first + chunk.size] = reconstructor(spikes, chunk - start)
    return frames, moments
