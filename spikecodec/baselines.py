"""Classical reconstructions of intensity from raw spikes: TFP and TFI.

Every reconstruction in spikecodec shares one interface (as SpikeCV does):

    reconstruct(spikes, moments) -> images

``spikes`` is a (T, H, W) array of 0/1 spike frames, ``moments`` a sequence of spike-frame
indices, and the result a float32 array (len(moments), H, W) of intensities in [0, 1]. The
learned decoder plugs into the same evaluation through the same signature.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

from spikecodec import DEFAULT_CONVERSION_RATE

TFP_DEFAULT_WINDOW = 41
# TFI looks this far each way for the spikes bracketing a moment, which bounds its cost per moment.
TFI_DEFAULT_MAX_INTERVAL = 256


class Reconstructor(Protocol):
    def __call__(self, spikes: np.ndarray, moments: Sequence[int]) -> np.ndarray: ...


def _check_inputs(spikes: np.ndarray, moments: Sequence[int], rate: float) -> np.ndarray:
    if not isinstance(spikes, np.ndarray) or spikes.ndim != 3:
        raise ValueError(
            f"spikes must be a (T, H, W) array, got shape {getattr(spikes, 'shape', None)}"
        )
    if spikes.shape[0] == 0:
        raise ValueError("spikes hold no frames")
    if not rate > 0:
        raise ValueError(f"conversion rate must be positive, got {rate}")
    moments = np.asarray(moments, dtype=np.int64).reshape(-1)
    if moments.size == 0:
        raise ValueError("no moments given")
    bad = moments[(moments < 0) | (moments >= spikes.shape[0])]
    if bad.size:
        raise ValueError(
            f"moment {int(bad[0])} is outside the stream of {spikes.shape[0]} spike frames"
        )
    return moments


def tfp(
    spikes: np.ndarray,
    moments: Sequence[int],
    window: int = TFP_DEFAULT_WINDOW,
    rate: float = DEFAULT_CONVERSION_RATE,
) -> np.ndarray:
    """Texture From Playback: the spike count over a window centred on each moment / (window * rate).

    The window spans ``moment - window // 2`` to ``moment + (window - 1) // 2``; near the ends of
    the stream it is cut to the frames that exist and the mean is taken over those.
    """
    moments = _check_inputs(spikes, moments, rate)
    if window < 1:
        raise ValueError(f"TFP window must be at least 1 frame, got {window}")
    num_frames = spikes.shape[0]
    images = np.empty((moments.size,) + spikes.shape[1:], dtype=np.float32)
    for i, t in enumerate(moments):
        start = max(0, int(t) - window // 2)
        stop = min(num_frames, int(t) + (window - 1) // 2 + 1)
        counts = spikes[start:stop].sum(axis=0, dtype=np.int32)
        images[i] = counts / ((stop - start) * rate)
    return np.clip(images, 0.0, 1.0, out=images)


def tfi(
    spikes: np.ndarray,
    moments: Sequence[int],
    rate: float = DEFAULT_CONVERSION_RATE,
    max_interval: int = TFI_DEFAULT_MAX_INTERVAL,
) -> np.ndarray:
    """Texture From Interval: 1 / (inter-spike interval * rate) of the interval holding each moment.

    For pixel p at moment t the interval runs from the last spike at or before t to the first spike
    after t. Where one side has no spike within ``max_interval`` frames (or the stream ends), that
    side counts as the span searched: a lower bound of the true interval, so such a pixel shows at
    most 1 / (span * rate).
    """
    moments = _check_inputs(spikes, moments, rate)
    if max_interval < 1:
        raise ValueError(f"max_interval must be at least 1, got {max_interval}")
    num_frames = spikes.shape[0]
    images = np.empty((moments.size,) + spikes.shape[1:], dtype=np.float32)
    for i, t in enumerate(moments):
        t = int(t)
        past = spikes[max(0, t - max_interval + 1): t + 1]
        future = spikes[t + 1: min(num_frames, t + 1 + max_interval)]
        # frames back to the last spike at or before t (0 when t itself fired)
        since_last = _frames_to_first_spike(past[::-1], missing=past.shape[0])
        # frames forward to the next spike after t (1 when t + 1 fires)
        until_next = _frames_to_first_spike(future, missing=future.shape[0]) + 1
        interval = np.maximum(since_last + until_next, 1)
        images[i] = 1.0 / (interval * rate)
    return np.clip(images, 0.0, 1.0, out=images)


def _frames_to_first_spike(frames: np.ndarray, missing: int) -> np.ndarray:
    """Index of the first non-zero frame per pixel, or ``missing`` where none fired."""
    if frames.shape[0] == 0:
        return np.full(frames.shape[1:], missing, dtype=np.int64)
    fired = frames.astype(bool, copy=False)
    first = fired.argmax(axis=0).astype(np.int64)
    first[~fired.any(axis=0)] = missing
    return first


RECONSTRUCTORS: dict[str, Callable[..., np.ndarray]] = {"tfp": tfp, "tfi": tfi}


def get_reconstructor(name: str, **options) -> Reconstructor:
    """A baseline by name, with its options bound, as a ``(spikes, moments) -> images`` callable."""
    try:
        function = RECONSTRUCTORS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown reconstruction {name!r}; choose one of {', '.join(sorted(RECONSTRUCTORS))}"
        ) from None

    def reconstruct(spikes: np.ndarray, moments: Sequence[int]) -> np.ndarray:
        return function(spikes, moments, **options)

    reconstruct.__name__ = f"{name.lower()}"
    return reconstruct
