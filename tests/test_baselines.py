import numpy as np
import pytest

from spikecodec.baselines import get_reconstructor, tfi, tfp


def periodic_spikes(period: int, num_frames: int = 100, shape=(4, 5), offset: int = 0) -> np.ndarray:
    spikes = np.zeros((num_frames,) + shape, dtype=np.uint8)
    spikes[offset::period] = 1
    return spikes


def test_tfp_counts_window_and_divides_by_rate():
    spikes = periodic_spikes(5)  # 1 spike every 5 frames -> rate*I = 0.2
    images = tfp(spikes, [50], window=41, rate=0.6)
    window = spikes[30:71]
    assert window.shape[0] == 41
    np.testing.assert_allclose(images[0], window.sum(0) / (41 * 0.6), rtol=1e-6)


def test_tfp_clips_to_unit_range_and_cuts_window_at_stream_ends():
    spikes = np.ones((10, 3, 3), dtype=np.uint8)  # firing every frame is brighter than 1/0.6
    images = tfp(spikes, [0, 9], window=41)
    assert images.dtype == np.float32
    np.testing.assert_array_equal(images, 1.0)
    spikes = periodic_spikes(2, num_frames=10)
    # window at t=0 covers frames 0..20 cut to 0..9: 5 spikes in 10 frames
    np.testing.assert_allclose(tfp(spikes, [0], window=41, rate=1.0)[0], 0.5)


def test_tfi_inverts_the_interval_holding_the_moment():
    spikes = periodic_spikes(4, offset=2)  # spikes at 2, 6, 10, ...
    images = tfi(spikes, [7, 6, 10], rate=0.5)
    np.testing.assert_allclose(images, 1.0 / (4 * 0.5))


def test_tfi_pixelwise_intervals():
    spikes = np.zeros((30, 1, 2), dtype=np.uint8)
    spikes[[5, 15], 0, 0] = 1  # interval 10 around t=10
    spikes[[8, 11], 0, 1] = 1  # interval 3 around t=10
    image = tfi(spikes, [10], rate=1.0)[0]
    np.testing.assert_allclose(image[0], [0.1, 1.0 / 3.0], rtol=1e-6)


def test_tfi_dark_pixel_is_bounded_by_search_span():
    spikes = np.zeros((50, 2, 2), dtype=np.uint8)
    image = tfi(spikes, [25], rate=1.0, max_interval=10)[0]
    assert np.all(image <= 1.0 / 10 + 1e-7)


def test_shared_interface_and_errors():
    spikes = periodic_spikes(3)
    for name in ("tfp", "TFI"):
        images = get_reconstructor(name)(spikes, [20, 40])
        assert images.shape == (2, 4, 5) and images.dtype == np.float32
        assert images.min() >= 0 and images.max() <= 1
    with pytest.raises(ValueError, match="unknown reconstruction"):
        get_reconstructor("magic")
    with pytest.raises(ValueError, match="outside the stream"):
        tfp(spikes, [100])
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        tfi(spikes[0], [0])
    with pytest.raises(ValueError, match="no moments"):
        tfp(spikes, [])
    with pytest.raises(ValueError, match="window"):
        tfp(spikes, [5], window=0)
