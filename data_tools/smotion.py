"""S-Motion: simulated high-speed spike sequences from real photographs seen by a moving camera.

A sequence is a photograph (:mod:`data_tools.photos`) seen through a random, possibly turning
camera path (translation, rotation, zoom) in one speed bin, optionally with sprites (patches cut
from other photographs of the same split) moving over it, turned into spikes by
:mod:`spikecodec.simulate`. The ground truth is the intensity at every spike frame, rounded to
uint8 levels before integration so that the stored uint8 frames are exactly what the pixels saw.

Stored sequences are numbered per split; sequence ``index`` of ``split`` is reproducible from
``(split, index, seed)``. See data_tools/README.md for the file layout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from spikecodec import DEFAULT_CONVERSION_RATE, DEFAULT_HEIGHT, DEFAULT_WIDTH
from spikecodec.simulate import (
    fit_motion_to_image,
    iter_simulation,
    iter_still_intensity,
    random_camera_motion,
    random_sprite,
)

from data_tools._h5 import SPIKE_PACKING, atomic_output, check_format, pack_spikes, unpack_spikes
from data_tools.photos import check_split, load_photo, split_photos

FORMAT = "spikecodec-smotion"
FORMAT_VERSION = 1
NUM_FRAMES = 301

#: Speed bins in px per spike frame (mean image-plane speed): [low, high).
SPEED_BINS: dict[str, tuple[float, float]] = {
    "slow": (0.0, 0.05),
    "medium": (0.05, 0.5),
    "fast": (0.5, 2.0),
}
# Target speeds are drawn log-uniformly inside these, with margins so the measured speed stays in
# its bin.
_TARGET_SPEEDS: dict[str, tuple[float, float]] = {
    "slow": (0.005, 0.045),
    "medium": (0.06, 0.45),
    "fast": (0.55, 1.9),
}
#: Stored sequences per (photograph, speed bin) in each split.
SEQUENCES_PER_PHOTO_AND_BIN: dict[str, int] = {"train": 2, "val": 2, "test": 2}
# Seed-sequence tags keep the splits' random streams apart.
_SPLIT_TAGS = {"train": 1, "val": 2, "test": 3}
_SMOTION_TAG = 0x5307


def speed_bin_of(speed: float) -> str:
    """The bin a mean speed (px per spike frame) falls in; faster than 2 is an error."""
    for name, (low, high) in SPEED_BINS.items():
        if low <= speed < high:
            return name
    raise ValueError(f"speed {speed} px per spike frame is outside every S-Motion bin (0 to 2)")


def _check_bin(speed_bin: str) -> str:
    if speed_bin not in SPEED_BINS:
        raise ValueError(f"unknown speed bin {speed_bin!r}; choose one of {', '.join(SPEED_BINS)}")
    return speed_bin


def make_smotion_sample(
    photo_image: np.ndarray,
    rng: np.random.Generator,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    num_frames: int = NUM_FRAMES,
    speed_bin: str = "medium",
    *,
    sprite_sources: Sequence[np.ndarray] = (),
    num_sprites: int | None = None,
    rate: float = DEFAULT_CONVERSION_RATE,
    threshold_sigma: float = 0.0,
    dark_current: float = 0.0,
    order: int = 3,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One random S-Motion clip of ``photo_image`` (intensity map in [0, 1]).

    The camera path turns and moves at a mean speed drawn in ``speed_bin``; with
    ``sprite_sources`` (intensity maps), ``num_sprites`` patches cut from them move over the scene
    at speeds of the same bin (``None``: 1 or 2 at random; 0: none). For training, call it with
    small ``height``/``width``/``num_frames`` to make random crops on the fly.

    Returns ``(spikes, gt, meta)``: spikes (T, H, W) uint8 0/1; gt (T, H, W) float32 in [0, 1],
    the intensity at every spike frame, on the 256 uint8 levels; meta: speed_bin, mean_speed
    (measured, camera), target_speed, sprite_speeds, num_sprites, conversion_rate, height, width,
    num_frames.
    """
    speed_bin = _check_bin(speed_bin)
    low, high = _TARGET_SPEEDS[speed_bin]
    target = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    motion = random_camera_motion(rng, num_frames, target, height, width)
    image, motion = fit_motion_to_image(photo_image, motion, rng, height, width)
    if num_sprites is None:
        num_sprites = int(rng.integers(1, 3)) if len(sprite_sources) else 0
    if num_sprites and not len(sprite_sources):
        raise ValueError("num_sprites > 0 needs at least one sprite source image")
    sprites, sprite_speeds = [], []
    for _ in range(num_sprites):
        source = sprite_sources[int(rng.integers(len(sprite_sources)))]
        sprite_speed = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        sprites.append(random_sprite(rng, source, num_frames, sprite_speed, height, width))
        sprite_speeds.append(sprite_speed)
    frames = iter_still_intensity(image, motion, height, width, sprites=sprites, order=order)
    spikes = np.empty((num_frames, height, width), dtype=np.uint8)
    gt = np.empty((num_frames, height, width), dtype=np.float32)
    simulation = iter_simulation(
        frames,
        rate=rate,
        threshold_sigma=threshold_sigma,
        dark_current=dark_current,
        intensity_levels=256,
        seed=rng.spawn(1)[0],
    )
    for t, (spike_frame, intensity) in enumerate(simulation):
        spikes[t] = spike_frame
        gt[t] = intensity
    meta = {
        "speed_bin": speed_bin,
        "mean_speed": motion.mean_speed(height, width),
        "target_speed": target,
        "num_sprites": num_sprites,
        "sprite_speeds": sprite_speeds,
        "conversion_rate": float(rate),
        "threshold_sigma": float(threshold_sigma),
        "dark_current": float(dark_current),
        "height": height,
        "width": width,
        "num_frames": num_frames,
    }
    return spikes, gt, meta


# ---------------------------------------------------------------------------------------------
# the fixed, numbered sequences of a split


def num_smotion_sequences(split: str) -> int:
    """How many sequences ``split`` holds: photos x 3 speed bins x repetitions."""
    return len(split_photos(split)) * len(SPEED_BINS) * SEQUENCES_PER_PHOTO_AND_BIN[split]


def smotion_sequence_spec(split: str, index: int) -> dict[str, Any]:
    """Photo, speed bin and whether sprites move over it, for sequence ``index`` of ``split``.

    Sequences cycle through the bins fastest, then the photos, then repetitions, so any prefix
    of ``3 * photos`` sequences covers every (photo, bin) once; sprites are on in every other
    sequence of that cycle (alternating between repetitions).
    """
    photos = split_photos(split)
    total = num_smotion_sequences(split)
    if (
        isinstance(index, bool)
        or not isinstance(index, (int, np.integer))
        or not 0 <= index < total
    ):
        raise ValueError(f"S-Motion {split} has sequences 0..{total - 1}, got index {index!r}")
    bins = list(SPEED_BINS)
    repetition, within = divmod(int(index), len(photos) * len(bins))
    photo_index, bin_index = divmod(within, len(bins))
    return {
        "photo": photos[photo_index],
        "speed_bin": bins[bin_index],
        "sprites": (photo_index + bin_index + repetition) % 2 == 1,
        "repetition": repetition,
    }


def sequence_rng(split: str, index: int, seed: int) -> np.random.Generator:
    """The random generator of sequence ``index`` of ``split`` under ``seed``."""
    return np.random.default_rng(
        np.random.SeedSequence([_SMOTION_TAG, int(seed), _SPLIT_TAGS[split], int(index)])
    )


def generate_smotion_sequence(
    split: str,
    index: int,
    seed: int = 0,
    *,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    num_frames: int = NUM_FRAMES,
    **options,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Sequence ``index`` of ``split``, reproducible from ``(split, index, seed)``.

    Sprites are cut from the split's other photographs (never from another split). ``options``
    go to :func:`make_smotion_sample` (rate, threshold_sigma, dark_current, order). Returns
    ``(spikes, gt_uint8, meta)`` with meta also holding photo, split, index and seed.
    """
    check_split(split)
    spec = smotion_sequence_spec(split, index)
    photos = split_photos(split)
    others = [name for name in photos if name != spec["photo"]] or [spec["photo"]]
    sprite_sources = [load_photo(name) for name in others] if spec["sprites"] else []
    spikes, gt, meta = make_smotion_sample(
        load_photo(spec["photo"]),
        sequence_rng(split, index, seed),
        height,
        width,
        num_frames,
        spec["speed_bin"],
        sprite_sources=sprite_sources,
        num_sprites=None if spec["sprites"] else 0,
        **options,
    )
    gt_uint8 = np.round(gt * 255.0).astype(np.uint8)
    meta.update(photo=spec["photo"], split=split, index=int(index), seed=int(seed))
    return spikes, gt_uint8, meta


def write_smotion(
    path: str | Path,
    split: str,
    seed: int = 0,
    num_sequences: int | None = None,
    *,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    num_frames: int = NUM_FRAMES,
    progress: bool = False,
    **options,
) -> list[dict[str, Any]]:
    """Generate the first ``num_sequences`` (default: all) sequences of ``split`` into an h5 file
    at ``path`` (written to a temporary file, renamed on success). Returns each sequence's meta.
    """
    import h5py
    from tqdm import tqdm

    check_split(split)
    total = num_smotion_sequences(split)
    if num_sequences is None:
        num_sequences = total
    if (
        isinstance(num_sequences, bool)
        or not isinstance(num_sequences, (int, np.integer))
        or not 1 <= num_sequences <= total
    ):
        raise ValueError(
            f"num_sequences must be 1..{total} for S-Motion {split}, got {num_sequences!r}"
        )
    metas = []
    started = time.perf_counter()
    with atomic_output(path) as temp:
        with h5py.File(temp, "w") as file:
            file.attrs.update(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                split=split,
                seed=int(seed),
                num_sequences=int(num_sequences),
                height=height,
                width=width,
                num_frames=num_frames,
                spike_packing=SPIKE_PACKING,
                photos=list(split_photos(split)),
            )
            for index in tqdm(
                range(num_sequences), desc=f"S-Motion {split}", unit="seq", disable=not progress
            ):
                spikes, gt, meta = generate_smotion_sequence(
                    split, index, seed, height=height, width=width, num_frames=num_frames, **options
                )
                group = file.create_group(f"seq_{index:04d}")
                packed = pack_spikes(spikes)
                group.create_dataset(
                    "spikes", data=packed, chunks=(min(64, num_frames),) + packed.shape[1:]
                )
                group.create_dataset(
                    "gt", data=gt, chunks=(1, height, width), compression="gzip", compression_opts=4
                )
                for key, value in meta.items():
                    group.attrs[key] = value
                metas.append(meta)
            file.attrs["generation_seconds"] = time.perf_counter() - started
    return metas


def _decode_attrs(attrs) -> dict[str, Any]:
    result = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        result[key] = value
    return result


def load_smotion(
    path: str | Path, gt_dtype: str | None = "float32"
) -> Iterator[tuple[np.ndarray, np.ndarray | None, dict[str, Any]]]:
    """Yield ``(spikes, gt, meta)`` for every sequence of an S-Motion h5 file, in index order.

    spikes: (T, H, W) uint8 0/1; gt: (T, H, W) float32 in [0, 1] (``gt_dtype="float32"``), the
    stored uint8 (``"uint8"``) or None (``None``, not read); meta: the sequence's attributes plus
    ``name`` (the h5 group).
    """
    import h5py

    if gt_dtype not in ("float32", "uint8", None):
        raise ValueError(f"gt_dtype must be 'float32', 'uint8' or None, got {gt_dtype!r}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable h5 file ({exc})") from None
    with file:
        check_format(file.attrs, path, FORMAT, FORMAT_VERSION)
        for name in sorted(file.keys()):
            group = file[name]
            meta = _decode_attrs(group.attrs)
            meta["name"] = name
            spikes = unpack_spikes(group["spikes"][()], int(meta["width"]))
            gt = None
            if gt_dtype is not None:
                gt = group["gt"][()]
                if gt_dtype == "float32":
                    gt = gt.astype(np.float32) / np.float32(255.0)
            yield spikes, gt, meta
