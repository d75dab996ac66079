import numpy as np
import pytest

from spikecodec.metrics import (
    InsufficientOverlap,
    RDCurve,
    bd_psnr,
    bd_rate,
    bpp,
    psnr,
    psnr_per_frame,
    ssim,
)


def test_psnr_known_value_and_per_frame_mean():
    reference = np.zeros((2, 8, 8))
    test = reference.copy()
    test[0] += 0.1  # MSE 0.01 -> 20 dB
    test[1] += 0.01  # MSE 1e-4 -> 40 dB
    np.testing.assert_allclose(psnr_per_frame(reference, test), [20.0, 40.0])
    assert psnr(reference, test) == pytest.approx(30.0)
    assert psnr(reference, reference) == 100.0  # identical frames: the finite ceiling


def test_ssim_identity_and_degradation():
    rng = np.random.default_rng(0)
    image = rng.random((2, 32, 32))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(image + rng.normal(0, 0.2, image.shape), 0, 1)
    assert ssim(image, noisy) < 0.9


def test_metric_errors():
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="11x11"):
        ssim(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError):
        bpp(10, 0, 4, 4)


def test_bpp_of_raw_dat_is_one():
    assert bpp(301 * 250 * 400, 301, 250, 400) == 1.0


def anchor_curve():
    rate = np.array([0.01, 0.02, 0.04, 0.08])
    return RDCurve.of(rate, 30 + 3 * np.log2(rate / 0.01))


def test_bd_rate_of_curve_at_ninety_percent_rate():
    anchor = anchor_curve()
    test = RDCurve.of(anchor.rate * 0.9, anchor.quality)
    assert bd_rate(anchor, test) == pytest.approx(-10.0, abs=1e-6)
    assert bd_rate(anchor, test, method="akima") == pytest.approx(-10.0, abs=1e-6)


def test_bd_psnr_of_shifted_curve():
    anchor = anchor_curve()
    test = RDCurve.of(anchor.rate, anchor.quality + 0.5)
    assert bd_psnr(anchor, test) == pytest.approx(0.5, abs=1e-6)


def test_bd_uses_pareto_points_only():
    anchor = anchor_curve()
    # a dominated extra point (more rate, less quality) must not change the result
    test = RDCurve.of(np.append(anchor.rate * 0.9, 0.05), np.append(anchor.quality, 30.5))
    assert bd_rate(anchor, test) == pytest.approx(-10.0, abs=1e-6)


def test_insufficient_overlap_is_reported_not_computed():
    anchor = anchor_curve()
    far = RDCurve.of(anchor.rate, anchor.quality + 7)  # PSNR ranges overlap by 1/8
    with pytest.raises(InsufficientOverlap, match="overlap by") as info:
        bd_rate(anchor, far)
    assert info.value.overlap < 0.75
    with pytest.raises(ValueError, match="interpolation"):
        bd_rate(anchor, anchor, method="cubic-magic")
    with pytest.raises(ValueError, match="positive"):
        RDCurve.of([0, 1], [1, 2])
