import numpy as np
import pytest

from spikecodec.moments import moments_for


def test_default_phase_is_first_valid_moment():
    np.testing.assert_array_equal(moments_for(301, 20, before=20, after=20), np.arange(20, 281, 20))


def test_phase_extends_both_ways():
    # phase 105 with stride 20 -> ..., 25, 45, ..., 265 inside [20, 280]
    moments = moments_for(301, 20, before=20, after=20, phase=105)
    assert moments[0] == 25 and moments[-1] == 265
    assert 105 in moments and np.all(np.diff(moments) == 20)


def test_short_stream_and_errors():
    assert moments_for(30, 20, before=20, after=20).size == 0
    with pytest.raises(ValueError, match="stride"):
        moments_for(100, 0)
    with pytest.raises(ValueError, match="phase"):
        moments_for(100, 5, phase=-1)
