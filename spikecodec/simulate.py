"""Integrate-and-fire spike-camera simulator.

Model (DESIGN.md "Intensity and spikes"): every pixel keeps a potential ``v``. At each spike frame
``v += rate * I`` with the scene intensity ``I`` in [0, 1]; when ``v >= theta`` the pixel fires one
spike and ``theta`` is subtracted (reset by subtraction, so the remainder is kept and the long-run
firing rate is exactly ``rate * I``). ``v`` starts uniformly random in ``[0, theta)``. ``rate``
defaults to 0.6, the conversion rate of the public REDS-based streams, and must be in (0, 1] so a
pixel never owes more than one spike per frame.

Optional sensor noise:

* ``threshold_sigma``: per-pixel threshold mismatch, ``theta_i = theta * N(1, sigma)`` (clipped
  to at least ``0.1 * theta``), fixed for the whole stream;
* ``dark_current``: mean probability per pixel and spike frame of an extra charge of one threshold
  (so one extra spike, sooner or later). Each pixel has its own probability,
  ``dark_current * Gamma(4) / 4`` (coefficient of variation 0.5: some pixels are "hotter").

Inputs are intensity frames from any source; two are built in:

* a still image seen through a moving camera (:class:`CameraMotion`: one affine map per spike
  frame from output pixel coordinates to image coordinates, so translation, rotation and zoom),
  with optional :class:`Sprite` patches moving over it along their own paths;
* a video frame sequence, linearly interpolated to ``N`` spike frames per video frame.

Everything is a generator over frames (:func:`iter_simulation`, :func:`iter_integrate_and_fire`),
so long streams are written in blocks; :func:`simulate_still` and :func:`simulate_frames` collect
whole arrays. Results are reproducible from ``seed``.

Coordinates are ``(row, column)`` with row 0 at the top of the image, as in the in-memory spike
arrays of :mod:`spikecodec.io`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
from scipy import ndimage

from spikecodec import DEFAULT_CONVERSION_RATE, DEFAULT_HEIGHT, DEFAULT_WIDTH

SeedLike = Union[int, Sequence[int], np.random.SeedSequence, np.random.Generator, None]

__all__ = [
    "CameraMotion",
    "SimulationResult",
    "Sprite",
    "camera_motion",
    "fit_motion_to_image",
    "integrate_and_fire",
    "iter_integrate_and_fire",
    "iter_interpolated_frames",
    "iter_simulation",
    "iter_still_intensity",
    "random_camera_motion",
    "random_sprite",
    "simulate_frames",
    "simulate_still",
    "to_intensity",
]

# Luma weights of ITU-R BT.709, as scikit-image's rgb2gray uses.
_LUMA_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])
_MIN_THRESHOLD_FRACTION = 0.1
_DARK_CURRENT_GAMMA_SHAPE = 4.0
# Tolerance on the [0, 1] intensity range, for values produced by float arithmetic.
_RANGE_TOLERANCE = 1e-5


# ---------------------------------------------------------------------------------------------
# helpers


def _generator(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not 0.0 < rate <= 1.0:
        raise ValueError(
            f"conversion rate must be in (0, 1] (spikes per frame at I = 1), got {rate}"
        )
    return rate


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def to_intensity(image: np.ndarray) -> np.ndarray:
    """Convert an image to a float32 grayscale intensity map in [0, 1].

    Accepts ``(H, W)`` grayscale, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (alpha ignored);
    uint8 is divided by 255, uint16 by 65535, bool maps to 0/1, floats must already be in [0, 1].
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        channels = _scale_to_unit(array[..., :3])
        return np.clip(channels @ _LUMA_WEIGHTS, 0.0, 1.0).astype(np.float32)
    if array.ndim != 2:
        raise ValueError(
            f"expected a grayscale (H, W) or colour (H, W, 3|4) image, got shape {array.shape}"
        )
    return _scale_to_unit(array).astype(np.float32)


def _scale_to_unit(array: np.ndarray) -> np.ndarray:
    """Scale an image of any supported dtype to float64 in [0, 1], channel by channel."""
    if array.size == 0:
        raise ValueError("image is empty")
    if array.dtype == np.bool_:
        return array.astype(np.float64)
    if array.dtype == np.uint8:
        return array / 255.0
    if array.dtype == np.uint16:
        return array / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ValueError("image holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
            raise ValueError(f"float image values must be in [0, 1], got [{low:.4g}, {high:.4g}]")
        return np.clip(array.astype(np.float64), 0.0, 1.0)
    raise ValueError(f"unsupported image dtype {array.dtype} (use uint8, uint16, bool or float)")


# ---------------------------------------------------------------------------------------------
# integrate and fire


def iter_simulation(
    intensity_frames: Iterable[np.ndarray],
    *,
    rate: float = DEFAULT_CONVERSION_RATE,
    theta: float = 1.0,
    threshold_sigma: float = 0.0,
    dark_current: float = 0.0,
    intensity_levels: int | None = None,
    seed: SeedLike = None,
    initial_potential: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Integrate-and-fire over a stream of intensity frames.

    Yields ``(spikes, intensity)`` per spike frame: ``(H, W)`` uint8 0/1 and the float32
    intensity that frame integrated (the ground truth at that spike index). With
    ``intensity_levels`` (e.g. 256) the intensity is first rounded to that many levels, so a
    ground truth stored as uint8 is exactly what the pixels integrated.

    The random draws (initial potentials, threshold mismatch, dark current) come from independent
    streams spawned from ``seed``, so switching a noise option on leaves the others unchanged.
    ``initial_potential`` (H, W), as fractions of the threshold in [0, 1), replaces the random
    start (for callers that seed many small clips independently and simulate them stacked).
    """
    rate = _check_rate(rate)
    theta = float(theta)
    if not theta > 0.0:
        raise ValueError(f"threshold theta must be positive, got {theta}")
    threshold_sigma = float(threshold_sigma)
    if not 0.0 <= threshold_sigma <= 1.0:
        raise ValueError(f"threshold_sigma must be in [0, 1], got {threshold_sigma}")
    dark_current = float(dark_current)
    if not 0.0 <= dark_current < 1.0:
        raise ValueError(
            f"dark_current must be a probability per frame in [0, 1), got {dark_current}"
        )
    if intensity_levels is not None:
        intensity_levels = _check_positive_int("intensity_levels", intensity_levels, 2)

    init_rng, mismatch_rng, dark_rng = _generator(seed).spawn(3)
    potential = thresholds = dark_probability = None
    shape = None
    for index, frame in enumerate(intensity_frames):
        frame = np.asarray(frame)
        if shape is None:
            if frame.ndim != 2 or frame.size == 0:
                raise ValueError(
                    f"intensity frames must be non-empty (H, W) arrays, got {frame.shape}"
                )
            shape = frame.shape
            thresholds = np.float32(theta)
            if threshold_sigma > 0.0:
                gains = mismatch_rng.normal(1.0, threshold_sigma, size=shape)
                thresholds = (theta * np.maximum(gains, _MIN_THRESHOLD_FRACTION)).astype(np.float32)
            if initial_potential is None:
                start = init_rng.random(shape, dtype=np.float32)
            else:
                start = np.asarray(initial_potential, dtype=np.float32)
                if start.shape != shape or not (start.min() >= 0.0 and start.max() < 1.0):
                    raise ValueError(
                        f"initial_potential must be a {shape} array of fractions in [0, 1)"
                    )
            potential = (start * thresholds).astype(np.float32)
            if dark_current > 0.0:
                k = _DARK_CURRENT_GAMMA_SHAPE
                dark_probability = np.minimum(dark_rng.gamma(k, dark_current / k, size=shape), 1.0)
        elif frame.shape != shape:
            raise ValueError(f"intensity frame {index} has shape {frame.shape}, expected {shape}")
        intensity = frame.astype(np.float32, copy=True)
        low, high = float(intensity.min()), float(intensity.max())
        if not (low >= -_RANGE_TOLERANCE and high <= 1.0 + _RANGE_TOLERANCE):
            raise ValueError(
                f"intensity frame {index} is outside [0, 1] (range [{low:.4g}, {high:.4g}])"
            )
        np.clip(intensity, 0.0, 1.0, out=intensity)
        if intensity_levels is not None:
            scale = np.float32(intensity_levels - 1)
            intensity = np.round(intensity * scale) / scale
        potential += np.float32(rate) * intensity
        if dark_probability is not None:
            potential += thresholds * (dark_rng.random(shape) < dark_probability)
        fired = potential >= thresholds
        potential -= thresholds * fired
        yield fired.view(np.uint8), intensity


def iter_integrate_and_fire(
    intensity_frames: Iterable[np.ndarray], **options
) -> Iterator[np.ndarray]:
    """Spike frames ``(H, W)`` uint8 0/1 for a stream of intensity frames; options as
    :func:`iter_simulation`."""
    for spikes, _ in iter_simulation(intensity_frames, **options):
        yield spikes


def integrate_and_fire(intensity: np.ndarray, **options) -> np.ndarray:
    """Spikes ``(T, H, W)`` uint8 0/1 for intensities ``(T, H, W)`` in [0, 1]; options as
    :func:`iter_simulation`."""
    intensity = np.asarray(intensity)
    if intensity.ndim != 3 or intensity.shape[0] == 0:
        raise ValueError(
            f"intensity must be a non-empty (T, H, W) array, got shape {intensity.shape}"
        )
    spikes = np.empty(intensity.shape, dtype=np.uint8)
    for t, frame in enumerate(iter_integrate_and_fire(intensity, **options)):
        spikes[t] = frame
    return spikes


@dataclass
class SimulationResult:
    """A simulated stream: ``spikes`` (T, H, W) uint8 0/1 and ``intensity`` (T, H, W) float32,
    the ground-truth intensity at every spike frame."""

    spikes: np.ndarray
    intensity: np.ndarray

    @property
    def moments(self) -> np.ndarray:
        """Spike-frame index of every ground-truth frame (all of them)."""
        return np.arange(self.spikes.shape[0])


def _collect(
    pairs: Iterator[tuple[np.ndarray, np.ndarray]], num_frames: int, shape
) -> SimulationResult:
    spikes = np.empty((num_frames,) + tuple(shape), dtype=np.uint8)
    intensity = np.empty((num_frames,) + tuple(shape), dtype=np.float32)
    count = 0
    for count, (spike_frame, intensity_frame) in enumerate(pairs, start=1):
        spikes[count - 1] = spike_frame
        intensity[count - 1] = intensity_frame
    if count != num_frames:  # internal consistency: generators yield exactly num_frames
        raise RuntimeError(f"simulation produced {count} frames, expected {num_frames}")
    return SimulationResult(spikes, intensity)


# ---------------------------------------------------------------------------------------------
# camera motion


def _rotation(angles: np.ndarray) -> np.ndarray:
    cos, sin = np.cos(angles), np.sin(angles)
    return np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)


@dataclass(frozen=True)
class CameraMotion:
    """One affine map per spike frame from output pixel ``(row, col)`` to image ``(row, col)``:
    ``image_point = matrices[t, :, :2] @ output_point + matrices[t, :, 2]``."""

    matrices: np.ndarray  # (T, 2, 3) float64

    def __post_init__(self) -> None:
        matrices = np.asarray(self.matrices, dtype=np.float64)
        if matrices.ndim != 3 or matrices.shape[1:] != (2, 3) or matrices.shape[0] == 0:
            raise ValueError(f"motion matrices must have shape (T, 2, 3), got {matrices.shape}")
        if not np.all(np.isfinite(matrices)):
            raise ValueError("motion matrices hold NaN or infinite values")
        if np.any(np.abs(np.linalg.det(matrices[:, :, :2])) < 1e-9):
            raise ValueError("motion matrices must be invertible (zero scale)")
        object.__setattr__(self, "matrices", matrices)

    def __len__(self) -> int:
        return self.matrices.shape[0]

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Image coordinates ``(T, N, 2)`` of output points ``(N, 2)`` at every spike frame."""
        return (
            np.einsum("tij,nj->tni", self.matrices[:, :, :2], points) + self.matrices[:, None, :, 2]
        )

    def flow_speeds(self, height: int, width: int, step: int = 8) -> np.ndarray:
        """Per spike-frame step, the mean image-plane speed (output px per spike frame) over a grid
        of output pixels: where the scene point under a pixel at frame t is seen at frame t+1."""
        if len(self) < 2:
            return np.zeros(0)
        rows = np.unique(np.r_[np.arange(0, height, step), height - 1])
        cols = np.unique(np.r_[np.arange(0, width, step), width - 1])
        points = (
            np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2).astype(np.float64)
        )
        scene = self.map_points(points)[:-1]  # (T-1, N, 2)
        linear_next = self.matrices[1:, :, :2]
        shift_next = self.matrices[1:, None, :, 2]
        seen_next = np.einsum("tij,tnj->tni", np.linalg.inv(linear_next), scene - shift_next)
        return np.linalg.norm(seen_next - points, axis=-1).mean(axis=1)

    def mean_speed(self, height: int, width: int, step: int = 8) -> float:
        """Mean image-plane speed of the scene in output px per spike frame (0 for one frame)."""
        speeds = self.flow_speeds(height, width, step)
        return float(speeds.mean()) if speeds.size else 0.0

    def output_bounds(self, points: np.ndarray) -> np.ndarray:
        """Bounding box ``[[row_min, col_min], [row_max, col_max]]`` in output coordinates, over all
        frames, of image points ``(N, 2)``."""
        inverse_linear = np.linalg.inv(self.matrices[:, :, :2])
        seen = np.einsum(
            "tij,tnj->tni", inverse_linear, points[None] - self.matrices[:, None, :, 2]
        )
        return np.stack([seen.min(axis=(0, 1)), seen.max(axis=(0, 1))])


def camera_motion(
    centers: np.ndarray,
    angles: np.ndarray | float = 0.0,
    scales: np.ndarray | float = 1.0,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
) -> CameraMotion:
    """A camera path from per-frame parameters.

    ``centers`` (T, 2): image ``(row, col)`` seen at the centre of the output frame; ``angles``
    (T,) or scalar: rotation in radians; ``scales`` (T,) or scalar: image pixels per output pixel
    (below 1 magnifies the image).
    """
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim != 2 or centers.shape[1] != 2 or centers.shape[0] == 0:
        raise ValueError(f"centers must have shape (T, 2), got {centers.shape}")
    num_frames = centers.shape[0]
    angles = np.broadcast_to(np.asarray(angles, dtype=np.float64), (num_frames,))
    scales = np.broadcast_to(np.asarray(scales, dtype=np.float64), (num_frames,))
    if np.any(scales <= 0):
        raise ValueError("scales must be positive")
    linear = scales[:, None, None] * _rotation(angles)
    output_center = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    shift = centers - linear @ output_center
    return CameraMotion(np.concatenate([linear, shift[:, :, None]], axis=2))


def _interpolate_knots(num_steps: int, num_knots: int, values: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation of knot values over ``num_steps`` steps."""
    knot_positions = np.linspace(0, max(num_steps - 1, 1), num_knots)
    return np.interp(np.arange(num_steps), knot_positions, values)


def random_camera_motion(
    rng: np.random.Generator,
    num_frames: int,
    mean_speed: float,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    *,
    rotation: bool = True,
    zoom: bool = True,
    max_zoom: float = 1.6,
    max_turns: int = 4,
    tolerance: float = 0.01,
) -> CameraMotion:
    """A random, possibly turning camera path whose measured mean speed is ``mean_speed``.

    Translation follows a heading and magnitude interpolated between 2 to ``max_turns + 1``
    random knots (so the path curves and turns); rotation adds a slowly varying angular velocity
    and zoom an oscillating log-scale rate, each taking a random share of the motion, zoom kept
    within ``1/max_zoom .. max_zoom``. The path is then scaled until its measured mean
    image-plane speed (:meth:`CameraMotion.mean_speed`) is within ``tolerance`` (relative) of
    ``mean_speed``. Coordinates are in units of output pixels, centred on (0, 0) at frame 0:
    :func:`fit_motion_to_image` places the path on an image.
    """
    num_frames = _check_positive_int("num_frames", num_frames, 1)
    mean_speed = float(mean_speed)
    if not 0.0 <= mean_speed <= 50.0:
        raise ValueError(f"mean_speed must be in [0, 50] px per spike frame, got {mean_speed}")
    if max_zoom < 1.0:
        raise ValueError(f"max_zoom must be >= 1, got {max_zoom}")
    steps = max(num_frames - 1, 1)
    rows, cols = np.meshgrid(
        np.arange(height) - (height - 1) / 2, np.arange(width) - (width - 1) / 2, indexing="ij"
    )
    mean_radius = float(np.hypot(rows, cols).mean())

    rotation_share = rng.uniform(0.0, 0.35) if rotation else 0.0
    zoom_share = rng.uniform(0.0, 0.25) if zoom else 0.0
    translation_share = 1.0 - rotation_share - zoom_share

    num_knots = int(rng.integers(2, max_turns + 2))
    headings = rng.uniform(-np.pi, np.pi) + np.cumsum(
        rng.uniform(-0.75 * np.pi, 0.75 * np.pi, num_knots)
    )
    magnitudes = rng.uniform(0.5, 1.5, num_knots)
    heading = _interpolate_knots(steps, num_knots, headings)
    magnitude = _interpolate_knots(steps, num_knots, magnitudes)
    magnitude *= translation_share / magnitude.mean()
    velocity_shape = magnitude[:, None] * np.stack([np.sin(heading), np.cos(heading)], -1)

    spin = rng.choice([-1.0, 1.0]) * (1.0 + rng.uniform(-0.5, 0.5) * np.linspace(-1, 1, steps))
    spin_shape = spin * rotation_share / mean_radius

    frequency = rng.uniform(0.3, 1.2)
    zoom_wave = np.cos(2 * np.pi * frequency * np.arange(steps) / steps + rng.uniform(0, 2 * np.pi))
    zoom_shape = zoom_wave * zoom_share / (mean_radius * max(np.abs(zoom_wave).mean(), 1e-6))

    def build(gain: float) -> CameraMotion:
        log_scale_rate = gain * zoom_shape
        log_scale = np.concatenate([[0.0], np.cumsum(log_scale_rate)])
        span = np.abs(log_scale).max()
        if span > np.log(max_zoom):  # keep the zoom bounded: long fast paths would zoom too far
            log_scale *= np.log(max_zoom) / span
        angles = np.concatenate([[0.0], np.cumsum(gain * spin_shape)])
        scales = np.exp(log_scale)
        # velocity is in the camera's own frame: rotate and scale it into image coordinates
        image_velocity = scales[:-1, None] * np.einsum(
            "tij,tj->ti", _rotation(angles[:-1]), gain * velocity_shape
        )
        centers = np.concatenate([[[0.0, 0.0]], np.cumsum(image_velocity, axis=0)])
        return camera_motion(
            centers[:num_frames], angles[:num_frames], scales[:num_frames], height, width
        )

    if num_frames < 2 or mean_speed == 0.0:
        return build(0.0)
    gain = mean_speed
    for _ in range(30):
        motion = build(gain)
        measured = motion.mean_speed(height, width)
        if abs(measured - mean_speed) <= tolerance * mean_speed:
            return motion
        gain *= mean_speed / max(measured, 1e-12)
    raise RuntimeError(f"camera path did not reach mean speed {mean_speed} (got {measured})")


def fit_motion_to_image(
    image: np.ndarray,
    motion: CameraMotion,
    rng: np.random.Generator,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    *,
    min_coverage: float = 0.35,
) -> tuple[np.ndarray, CameraMotion]:
    """Place a path made by :func:`random_camera_motion` on ``image`` so that every output pixel
    at every frame samples inside the image.

    The path is magnified or shrunk to fit: a photo smaller than the path needs is upscaled
    (interpolated), a larger one is seen at a random scale between covering ``min_coverage`` of
    the largest fit and the largest fit, never upscaled when that is not needed, and placed at a
    random position. When the view shrinks the image, the returned image is low-pass filtered
    first so that sampling does not alias. Returns ``(working_image, fitted_motion)``.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(
            f"image must be a 2-D intensity map of at least 2x2, got shape {image.shape}"
        )
    if not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    corners = np.array(
        [[0, 0], [0, width - 1], [height - 1, 0], [height - 1, width - 1]], dtype=np.float64
    )
    mapped = motion.map_points(corners)
    low, high = mapped.min(axis=(0, 1)), mapped.max(axis=(0, 1))
    extent = np.maximum(high - low, 1e-9)
    largest = float(np.min((np.array(image.shape) - 1) / extent))  # image px per path unit
    if largest <= 1.0:
        factor = largest
    else:
        factor = float(
            np.exp(rng.uniform(np.log(max(1.0, min_coverage * largest)), np.log(largest)))
        )
    room = (np.array(image.shape) - 1) - extent * factor
    offset = rng.uniform(0.0, 1.0, 2) * np.maximum(room, 0.0) - low * factor
    matrices = motion.matrices * factor
    matrices[:, :, 2] += offset
    fitted = CameraMotion(matrices)
    # Shrinking by s image px per output px: blur as scikit-image's rescale does, sigma (s - 1) / 2.
    # One blur for the whole path (zoom changes s by at most max_zoom): the median step.
    typical_step = float(np.median(np.sqrt(np.abs(np.linalg.det(matrices[:, :, :2])))))
    if typical_step > 1.0:
        image = ndimage.gaussian_filter(image, sigma=(typical_step - 1.0) / 2.0, mode="mirror")
    return image, fitted


# ---------------------------------------------------------------------------------------------
# sprites


@dataclass(frozen=True)
class Sprite:
    """A textured patch moving over the scene: ``texture`` and ``alpha`` (h, w) in [0, 1], and a
    :class:`CameraMotion` mapping output pixels to texture coordinates at every spike frame."""

    texture: np.ndarray
    alpha: np.ndarray
    motion: CameraMotion

    def __post_init__(self) -> None:
        texture = np.asarray(self.texture, dtype=np.float32)
        alpha = np.asarray(self.alpha, dtype=np.float32)
        if texture.ndim != 2 or texture.shape != alpha.shape or min(texture.shape) < 2:
            raise ValueError(
                f"sprite texture and alpha must be equal 2-D shapes of at least 2x2, "
                f"got {texture.shape} and {alpha.shape}"
            )
        for name, values in (("texture", texture), ("alpha", alpha)):
            if not (np.all(np.isfinite(values)) and values.min() >= 0.0 and values.max() <= 1.0):
                raise ValueError(f"sprite {name} values must be in [0, 1]")
        object.__setattr__(self, "texture", texture)
        object.__setattr__(self, "alpha", alpha)


def random_sprite(
    rng: np.random.Generator,
    source: np.ndarray,
    num_frames: int,
    mean_speed: float,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    *,
    size_range: tuple[float, float] = (0.2, 0.45),
    feather: float = 2.0,
) -> Sprite:
    """A soft-edged elliptical patch cut from ``source`` (intensity map), moving at ``mean_speed``
    output px per spike frame along a gently turning path and slowly rotating, at mid-stream
    somewhere in the central part of the frame. Patch height is ``size_range`` times the frame
    height; width 0.7 to 1.4 times that."""
    source = np.asarray(source, dtype=np.float32)
    if source.ndim != 2 or min(source.shape) < 2:
        raise ValueError(f"sprite source must be a 2-D intensity map, got shape {source.shape}")
    num_frames = _check_positive_int("num_frames", num_frames, 1)
    patch_height = max(8, int(round(rng.uniform(*size_range) * height)))
    patch_width = max(8, int(round(patch_height * rng.uniform(0.7, 1.4))))
    # Upscale a source smaller than the patch (rare: a tiny photo).
    scale_up = max(patch_height / source.shape[0], patch_width / source.shape[1], 1.0)
    if scale_up > 1.0:
        source = np.clip(ndimage.zoom(source, scale_up * 1.01, order=3), 0.0, 1.0)
    top = int(rng.integers(0, source.shape[0] - patch_height + 1))
    left = int(rng.integers(0, source.shape[1] - patch_width + 1))
    texture = source[top : top + patch_height, left : left + patch_width]

    rows = (np.arange(patch_height) - (patch_height - 1) / 2) / (patch_height / 2)
    cols = (np.arange(patch_width) - (patch_width - 1) / 2) / (patch_width / 2)
    radius = np.hypot(rows[:, None], cols[None, :])
    feather_fraction = feather / (min(patch_height, patch_width) / 2)
    alpha = np.clip((1.0 - radius) / feather_fraction, 0.0, 1.0).astype(np.float32)

    times = np.arange(num_frames) - (num_frames - 1) / 2
    heading = (
        rng.uniform(-np.pi, np.pi) + rng.uniform(-1.0, 1.0) * np.pi / max(num_frames, 1) * times
    )
    # translation speed, leaving room for the rotation's share of the mean speed
    translation_speed = mean_speed * rng.uniform(0.8, 1.0)
    velocity = translation_speed * np.stack([np.sin(heading), np.cos(heading)], -1)
    path = np.cumsum(velocity, axis=0)
    middle = np.array([rng.uniform(0.2, 0.8) * (height - 1), rng.uniform(0.2, 0.8) * (width - 1)])
    centers = path - path[(num_frames - 1) // 2] + middle
    patch_radius = 0.5 * np.hypot(patch_height, patch_width) / 2
    spin = rng.choice([-1.0, 1.0]) * (mean_speed - translation_speed) / max(patch_radius, 1.0)
    angles = rng.uniform(-np.pi, np.pi) + spin * times
    # texture point = R(-angle) (output point - centre) + texture centre
    linear = _rotation(-angles)
    texture_center = np.array([(patch_height - 1) / 2, (patch_width - 1) / 2])
    shift = texture_center - np.einsum("tij,tj->ti", linear, centers)
    motion = CameraMotion(np.concatenate([linear, shift[:, :, None]], axis=2))
    return Sprite(texture, alpha, motion)


# ---------------------------------------------------------------------------------------------
# intensity sources


def _check_order(order: int) -> int:
    if order not in (0, 1, 3):
        raise ValueError(f"interpolation order must be 0, 1 or 3, got {order!r}")
    return order


def _spline_coefficients(image: np.ndarray, order: int) -> np.ndarray:
    # Prefiltering once instead of per frame: the cubic spline coefficients are the same each time.
    if order > 1:
        return ndimage.spline_filter(image, order=order, output=np.float32, mode="mirror")
    return image


def _paste_sprite(
    frame: np.ndarray,
    sprite: Sprite,
    texture_coefficients: np.ndarray,
    matrix: np.ndarray,
    order: int,
) -> None:
    height, width = frame.shape
    linear, shift = matrix[:, :2], matrix[:, 2]
    patch_height, patch_width = sprite.alpha.shape
    corners = np.array(
        [[0, 0], [0, patch_width - 1], [patch_height - 1, 0], [patch_height - 1, patch_width - 1]],
        float,
    )
    seen = (np.linalg.inv(linear) @ (corners - shift).T).T
    top, left = np.floor(seen.min(axis=0)).astype(int) - 1
    bottom, right = np.ceil(seen.max(axis=0)).astype(int) + 2
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, height), min(right, width)
    if top >= bottom or left >= right:
        return  # the sprite is outside the frame
    # Render only the window the sprite covers: output (r, c) = window (r - top, c - left).
    window_shift = linear @ np.array([top, left], float) + shift
    window_shape = (bottom - top, right - left)
    alpha = ndimage.affine_transform(
        sprite.alpha,
        linear,
        offset=window_shift,
        output_shape=window_shape,
        order=1,
        mode="constant",
        cval=0.0,
        output=np.float32,
    )
    texture = ndimage.affine_transform(
        texture_coefficients,
        linear,
        offset=window_shift,
        output_shape=window_shape,
        order=order,
        mode="mirror",
        prefilter=False,
        output=np.float32,
    )
    region = frame[top:bottom, left:right]
    region += alpha * (np.clip(texture, 0.0, 1.0) - region)


def iter_still_intensity(
    image: np.ndarray,
    motion: CameraMotion,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    *,
    sprites: Sequence[Sprite] = (),
    order: int = 3,
) -> Iterator[np.ndarray]:
    """Intensity frames ``(height, width)`` float32 of ``image`` (intensity map in [0, 1]) seen
    through ``motion``, one per spike frame, with ``sprites`` composited on top in order.

    Sampling is sub-pixel (cubic spline for ``order=3``, bilinear for 1) and mirrors the image at
    its borders; use :func:`fit_motion_to_image` to keep the view inside the image."""
    image = to_intensity(image)
    order = _check_order(order)
    height = _check_positive_int("height", height)
    width = _check_positive_int("width", width)
    for sprite in sprites:
        if len(sprite.motion) != len(motion):
            raise ValueError(
                f"sprite path has {len(sprite.motion)} frames, camera path {len(motion)}"
            )
    coefficients = _spline_coefficients(image, order)
    sprite_coefficients = [_spline_coefficients(sprite.texture, order) for sprite in sprites]
    for t in range(len(motion)):
        matrix = motion.matrices[t]
        frame = ndimage.affine_transform(
            coefficients,
            matrix[:, :2],
            offset=matrix[:, 2],
            output_shape=(height, width),
            order=order,
            mode="mirror",
            prefilter=False,
            output=np.float32,
        )
        np.clip(frame, 0.0, 1.0, out=frame)  # cubic splines overshoot at sharp edges
        for sprite, sprite_coefficient in zip(sprites, sprite_coefficients, strict=True):
            _paste_sprite(frame, sprite, sprite_coefficient, sprite.motion.matrices[t], order)
        yield frame


def iter_interpolated_frames(
    frames: Iterable[np.ndarray], spike_frames_per_frame: int
) -> Iterator[np.ndarray]:
    """Linear interpolation of video frames to ``N = spike_frames_per_frame`` spike frames per
    video frame: spike frame ``k * N + j`` is ``(1 - j/N) * frame[k] + (j/N) * frame[k + 1]``.
    ``F`` video frames give ``(F - 1) * N + 1`` spike frames, the last one equal to the last video
    frame, so spike frame ``k * N`` is video frame ``k`` exactly. Frames go through
    :func:`to_intensity` (uint8, uint16 or float in [0, 1]; colour is converted to gray)."""
    steps = _check_positive_int("spike_frames_per_frame", spike_frames_per_frame)
    weights = np.arange(steps, dtype=np.float32) / np.float32(steps)
    previous = None
    for index, frame in enumerate(frames):
        current = to_intensity(frame)
        if previous is not None:
            if current.shape != previous.shape:
                raise ValueError(
                    f"video frame {index} has shape {current.shape}, expected {previous.shape}"
                )
            for weight in weights:
                yield (1.0 - weight) * previous + weight * current
        previous = current
    if previous is None:
        raise ValueError("no video frames given")
    yield previous


# ---------------------------------------------------------------------------------------------
# whole-array convenience


def simulate_still(
    image: np.ndarray,
    motion: CameraMotion,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    *,
    sprites: Sequence[Sprite] = (),
    order: int = 3,
    **options,
) -> SimulationResult:
    """Simulate a still image seen through a moving camera (optionally with sprites).

    ``options`` go to :func:`iter_simulation` (``rate``, ``theta``, ``threshold_sigma``,
    ``dark_current``, ``intensity_levels``, ``seed``). Returns spikes and the ground-truth
    intensity at every spike frame, ``len(motion)`` frames of ``height x width``.
    """
    frames = iter_still_intensity(image, motion, height, width, sprites=sprites, order=order)
    return _collect(iter_simulation(frames, **options), len(motion), (height, width))


def simulate_frames(
    frames: np.ndarray | Sequence[np.ndarray],
    spike_frames_per_frame: int,
    **options,
) -> SimulationResult:
    """Simulate a video: ``F`` frames (``(F, H, W)`` array or a sequence of images) are linearly
    interpolated to ``(F - 1) * N + 1`` spike frames (see :func:`iter_interpolated_frames`).

    ``options`` go to :func:`iter_simulation`."""
    frames = list(frames) if not isinstance(frames, np.ndarray) else frames
    if len(frames) == 0:
        raise ValueError("no video frames given")
    steps = _check_positive_int("spike_frames_per_frame", spike_frames_per_frame)
    shape = np.asarray(frames[0]).shape[:2]
    num_frames = (len(frames) - 1) * steps + 1
    pairs = iter_simulation(iter_interpolated_frames(frames, steps), **options)
    return _collect(pairs, num_frames, shape)
