import numpy as np
from click.testing import CliRunner

from spikecodec.baselines import tfp
from spikecodec.cli import main
from spikecodec.io import save_spikes
from spikecodec.outputs import read_frames


def test_reconstruct_matches_library_tfp_across_blocks(tmp_path):
    rng = np.random.default_rng(0)
    intensity = np.linspace(0.1, 0.9, 16)[None, None, :]
    spikes = (rng.random((700, 10, 16)) < 0.6 * intensity).astype(np.uint8)
    save_spikes(tmp_path / "s.dat", spikes)
    result = CliRunner().invoke(
        main, ["reconstruct", str(tmp_path / "s.dat"), "-o", str(tmp_path / "r.npz"),
               "-H", "10", "-W", "16", "--stride", "20"])
    assert result.exit_code == 0, result.output
    frames, timestamps = read_frames(tmp_path / "r.npz")
    # 700 frames, window 41: moments 20, 40, ..., 660 (more than one block of 16 moments)
    np.testing.assert_array_equal(timestamps, np.arange(20, 680, 20))
    np.testing.assert_allclose(frames, tfp(spikes, timestamps), atol=1e-6)


def test_reconstruct_reports_bad_input_without_traceback(tmp_path):
    (tmp_path / "bad.dat").write_bytes(b"\x00" * 1001)
    result = CliRunner().invoke(main, ["reconstruct", str(tmp_path / "bad.dat"), "-o",
                                       str(tmp_path / "r.npz")])
    assert result.exit_code != 0
    assert "Error:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r.npz").exists()
    result = CliRunner().invoke(main, ["reconstruct", str(tmp_path / "missing.dat"), "-o",
                                       str(tmp_path / "r.npz")])
    assert result.exit_code != 0 and "missing.dat" in result.output


def test_reconstruct_with_learned_model_matches_whole_stream_across_blocks(tmp_path):
    from spikecodec.models.registry import load_model

    rng = np.random.default_rng(1)
    spikes = (rng.random((460, 12, 16)) < 0.3).astype(np.uint8)
    save_spikes(tmp_path / "s.npz", spikes)
    result = CliRunner().invoke(
        main, ["reconstruct", str(tmp_path / "s.npz"), "-o", str(tmp_path / "r.npz"),
               "--method", "sci", "--model", "sci-tiny-test-recon", "--stride", "20"])
    assert result.exit_code == 0, result.output
    frames, timestamps = read_frames(tmp_path / "r.npz")
    model = load_model("sci-tiny-test-recon")
    # FEM window t-39..t+6: moments 39, 59, ..., 439 (21 moments: two blocks of 16)
    np.testing.assert_array_equal(timestamps, np.arange(39, 454, 20))
    np.testing.assert_allclose(frames, model.reconstruct(spikes, timestamps, stride=20), atol=1e-5)


def test_reconstruct_refuses_unknown_model(tmp_path):
    save_spikes(tmp_path / "s.npz", np.zeros((100, 12, 16), dtype=np.uint8))
    result = CliRunner().invoke(main, ["reconstruct", str(tmp_path / "s.npz"), "-o",
                                       str(tmp_path / "r.npz"), "--method", "sci", "--model", "nope"])
    assert result.exit_code != 0 and "unknown model id" in result.output
