"""Quality and rate metrics, as DESIGN.md defines them.

- PSNR: 10 log10(1 / MSE) on intensities in [0, 1], per frame, averaged over frames, no crop.
- SSIM: Wang et al. with an 11x11 Gaussian window (sigma 1.5), per frame, averaged
  (computed by pytorch_msssim, which compressai already depends on).
- bpp: bits of the whole stream / (T x H x W).
- BD-rate / BD-PSNR: the bjontegaard package on each curve's Pareto points, pchip by default,
  ``require_matching_points=False``; an overlap under 75% raises :class:`InsufficientOverlap`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Below this share of the combined range two RD curves are not compared (DESIGN.md).
MIN_BD_OVERLAP = 0.75
BD_METHODS = ("pchip", "akima")
# PSNR of identical frames is infinite; report a finite ceiling so means stay meaningful.
PSNR_CEILING_DB = 100.0


def _as_frames(images: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(images, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name} must be an image (H, W) or frames (N, H, W), got {array.shape}")
    return array


def _paired(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = _as_frames(reference, "reference")
    test = _as_frames(test, "test")
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs test {test.shape}")
    if reference.size == 0:
        raise ValueError("no pixels to compare")
    return reference, test


def psnr_per_frame(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """PSNR in dB of each frame, intensities in [0, 1] (peak 1)."""
    reference, test = _paired(reference, test)
    mse = ((reference - test) ** 2).reshape(reference.shape[0], -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(1.0 / mse)
    return np.minimum(values, PSNR_CEILING_DB)


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean over frames of the per-frame PSNR (dB)."""
    return float(psnr_per_frame(reference, test).mean())


def ssim_per_frame(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """SSIM of each frame (11x11 Gaussian window, sigma 1.5, data range 1)."""
    import torch
    from pytorch_msssim import ssim as gaussian_ssim

    reference, test = _paired(reference, test)
    if min(reference.shape[1:]) < 11:
        raise ValueError(f"SSIM needs frames of at least 11x11 pixels, got {reference.shape[1:]}")
    ref = torch.from_numpy(reference).float()[:, None]
    out = torch.from_numpy(test).float()[:, None]
    values = gaussian_ssim(ref, out, data_range=1.0, size_average=False)
    return values.numpy().astype(np.float64)


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean over frames of the per-frame SSIM."""
    return float(ssim_per_frame(reference, test).mean())


def bpp(total_bits: float, num_frames: int, height: int, width: int) -> float:
    """Bits per spike pixel: total bits / (T x H x W). Raw .dat is 1 bpp."""
    if num_frames <= 0 or height <= 0 or width <= 0:
        raise ValueError(f"T, H and W must be positive, got {num_frames}, {height}, {width}")
    if total_bits < 0:
        raise ValueError(f"total bits cannot be negative, got {total_bits}")
    return float(total_bits) / (num_frames * height * width)


def file_bpp(path, num_frames: int, height: int, width: int) -> float:
    """bpp of a whole file on disk (headers included)."""
    import os

    return bpp(os.path.getsize(path) * 8, num_frames, height, width)


class InsufficientOverlap(ValueError):
    """Two RD curves share too little of their range for a Bjontegaard delta to mean anything."""

    def __init__(self, message: str, overlap: float):
        super().__init__(message)
        self.overlap = overlap


@dataclass(frozen=True)
class RDCurve:
    """Rate-distortion points of one method: rate (bpp) and quality (PSNR, dB)."""

    rate: np.ndarray
    quality: np.ndarray

    @classmethod
    def of(cls, rate: Sequence[float], quality: Sequence[float]) -> "RDCurve":
        rate = np.asarray(rate, dtype=np.float64).reshape(-1)
        quality = np.asarray(quality, dtype=np.float64).reshape(-1)
        if rate.size != quality.size:
            raise ValueError(f"{rate.size} rates but {quality.size} quality values")
        if not np.all(np.isfinite(rate)) or not np.all(np.isfinite(quality)):
            raise ValueError("RD points must be finite")
        if np.any(rate <= 0):
            raise ValueError("rates must be positive (BD-rate works on log rate)")
        return cls(rate, quality)

    def pareto(self) -> "RDCurve":
        """Points no other point beats (lower or equal rate with higher quality), by rising rate."""
        order = np.lexsort((-self.quality, self.rate))
        kept_rate, kept_quality = [], []
        best = -np.inf
        for index in order:
            if self.quality[index] > best:
                kept_rate.append(self.rate[index])
                kept_quality.append(self.quality[index])
                best = self.quality[index]
        return RDCurve(np.array(kept_rate), np.array(kept_quality))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    total = max(a.max(), b.max()) - min(a.min(), b.min())
    if total <= 0:
        return 0.0
    return max(0.0, min(a.max(), b.max()) - max(a.min(), b.min())) / total


def _prepared(anchor: RDCurve, test: RDCurve, method: str) -> tuple[RDCurve, RDCurve]:
    if method not in BD_METHODS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {', '.join(BD_METHODS)}")
    anchor, test = anchor.pareto(), test.pareto()
    needed = 4 if method == "akima" else 2
    for name, curve in (("anchor", anchor), ("test", test)):
        if curve.rate.size < needed:
            raise ValueError(
                f"the {name} curve has {curve.rate.size} Pareto point(s); "
                f"{method} interpolation needs at least {needed}"
            )
    return anchor, test


def bd_rate(
    anchor: RDCurve, test: RDCurve, method: str = "pchip", min_overlap: float = MIN_BD_OVERLAP
) -> float:
    """Average rate change (%) of ``test`` against ``anchor`` at equal PSNR; negative saves bits."""
    import bjontegaard

    anchor, test = _prepared(anchor, test, method)
    overlap = _overlap(anchor.quality, test.quality)
    if overlap < min_overlap:
        raise InsufficientOverlap(
            f"PSNR ranges overlap by {overlap:.0%} (anchor {anchor.quality.min():.2f}-"
            f"{anchor.quality.max():.2f} dB, test {test.quality.min():.2f}-"
            f"{test.quality.max():.2f} dB); BD-rate needs at least {min_overlap:.0%}",
            overlap,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            bjontegaard.bd_rate(
                anchor.rate, anchor.quality, test.rate, test.quality,
                method=method, require_matching_points=False, min_overlap=min_overlap,
            )
        )


def bd_psnr(
    anchor: RDCurve, test: RDCurve, method: str = "pchip", min_overlap: float = MIN_BD_OVERLAP
) -> float:
    """Average PSNR change (dB) of ``test`` against ``anchor`` at equal rate; positive is better."""
    import bjontegaard

    anchor, test = _prepared(anchor, test, method)
    overlap = _overlap(np.log10(anchor.rate), np.log10(test.rate))
    if overlap < min_overlap:
        raise InsufficientOverlap(
            f"rate ranges overlap by {overlap:.0%} (anchor {anchor.rate.min():.4g}-"
            f"{anchor.rate.max():.4g} bpp, test {test.rate.min():.4g}-{test.rate.max():.4g} bpp, "
            f"log scale); BD-PSNR needs at least {min_overlap:.0%}",
            overlap,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            bjontegaard.bd_psnr(
                anchor.rate, anchor.quality, test.rate, test.quality,
                method=method, require_matching_points=False, min_overlap=min_overlap,
            )
        )
