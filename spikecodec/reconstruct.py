"""Reconstruct a whole spike file (TFP, TFI or the learned SCI path), reading it in bounded blocks."""

from __future__ import annotations

import os

import numpy as np

from spikecodec import DEFAULT_CONVERSION_RATE, DEFAULT_RECONSTRUCTION_MODEL
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
    model_id: str = DEFAULT_RECONSTRUCTION_MODEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, H, W) and their moments for every valid moment of a spike file.

    A moment is valid when the window its frame is made from lies inside the stream: the TFP
    window (``window`` frames centred on it; TFI uses the same moments so the two compare frame for
    frame) or, for ``method="sci"``, the FEM window of the registered model ``model_id`` (AFR uses
    the neighbours at +-``stride`` that exist). Frames are read a block of moments at a time, with
    the margin each method reads, so the result equals reconstructing the whole stream at once
    while memory stays bounded.
    """
    from tqdm import tqdm

    from spikecodec.io import open_spikes

    # margins: what each method reads around a block of moments
    if method == "tfp":
        reconstructor = get_reconstructor(method, window=window, rate=rate)
        valid_before, valid_after = window // 2, (window - 1) // 2
        margin_before, margin_after = valid_before, valid_after
    elif method == "tfi":
        reconstructor = get_reconstructor(method, rate=rate)
        valid_before, valid_after = window // 2, (window - 1) // 2
        margin_before = margin_after = TFI_DEFAULT_MAX_INTERVAL
    elif method == "sci":
        from spikecodec.models.registry import load_model

        if rate != DEFAULT_CONVERSION_RATE:
            raise ValueError(f"the learned model is trained for conversion rate "
                             f"{DEFAULT_CONVERSION_RATE}; --rate {rate} applies to tfp and tfi only")
        model = load_model(model_id)
        valid_before, valid_after = model.fem.window_before, model.fem.window_after
        margin_before, margin_after = stride + valid_before, stride + valid_after

        def reconstructor(spikes, moments):
            return model.reconstruct(spikes, moments, stride=stride)
    else:
        raise ValueError(f"unknown reconstruction method {method!r}; choose tfp, tfi or sci")

    with open_spikes(path, height=height, width=width, head_columns=head_columns) as reader:
        moments = moments_for(reader.num_frames, stride, before=valid_before,
                              after=valid_after, phase=phase)
        if moments.size == 0:
            raise ValueError(
                f"{path} holds {reader.num_frames} spike frames, fewer than one "
                f"{valid_before + valid_after + 1}-frame window; use a longer stream"
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
