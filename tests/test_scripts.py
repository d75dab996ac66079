"""The training scripts under scripts/, run as a user runs them, on tiny models and data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = "sci-tiny-test-codec"
RECON = "sci-tiny-test-recon"  # the tiny codec's analysis: the stage-c2 start


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def tiny_smotion(tmp_path_factory):
    """(training, validation) S-Motion files of tiny sequences."""
    from data_tools.smotion import write_smotion

    folder = tmp_path_factory.mktemp("c2")
    write_smotion(folder / "train.h5", "train", seed=0, num_sequences=2, height=32, width=48, num_frames=100)
    write_smotion(folder / "val.h5", "val", seed=0, num_sequences=1, height=32, width=48, num_frames=100)
    return folder / "train.h5", folder / "val.h5"


def test_stage_c2_on_decoded_streams_trains_resumes_and_exports(tiny_smotion, tmp_path):
    from spikecodec.models.registry import load_model
    from spikecodec.models.weights_io import load_weights

    script = str(ROOT / "scripts" / "codec_stage_c2.py")
    train, val = tiny_smotion
    common = [script, TINY, "--analysis", RECON, "--data", str(train), "--val-data", str(val),
              "--cache-dir", str(tmp_path / "cache"),
              "--out", str(tmp_path / "run"), "--batch-size", "2", "--crop", "16",
              "--validate-every", "2", "--checkpoint-every", "2", "--warmup-steps", "1", "--lr", "0.01"]
    first = _run(*common, "--steps", "3")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        f"train-{TINY}-stride20-gop32.h5", f"val-{TINY}-stride20-gop32.h5"]  # nothing partial left
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["analysis_start"] == "sci-tiny-test-recon"
    assert start["training_sequences"] == 2 and start["validation_sequences"] == 1
    assert len(start["validation"]["psnr_per_quality"]) == load_model(TINY).config.qualities
    assert [r["step"] for r in records if "validation" in r] == [0, 2, 3]
    exported_before = load_weights(tmp_path / "run" / "analysis.safetensors")[0]

    resumed = _run(*common, "--steps", "4")  # continues from the step-3 checkpoint
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at step 3" in resumed.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "validation" in r] == [0, 2, 3, 4]

    tensors, metadata = load_weights(tmp_path / "run" / "analysis.safetensors")
    assert metadata["kind"] == "reconstructor"
    start_model = load_model("sci-tiny-test-recon")
    expected = {f"afr.{k}" for k in start_model.afr.state_dict()} | {f"head.{k}" for k in start_model.head.state_dict()}
    assert set(tensors) == expected
    changed = [k for k in tensors if not torch.equal(tensors[k], exported_before[k])]
    assert changed  # step 4 trained the analysis further
    initial = {f"head.{k}": v for k, v in start_model.head.state_dict().items()}
    assert any(not torch.equal(tensors[k], v) for k, v in initial.items())


def test_stage_c2_quality_aware_trains_the_modulation_and_decodes(tiny_smotion, tmp_path):
    from spikecodec.models.sci import SCIConfig, SCIReconstructor
    from spikecodec.models.weights_io import load_state, load_weights, subset

    train, val = tiny_smotion
    made = _run(str(ROOT / "scripts" / "codec_stage_c2.py"), TINY, "--analysis", RECON, "--data", str(train),
                "--val-data", str(val), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
                "--batch-size", "4", "--crop", "16", "--steps", "2", "--warmup-steps", "1", "--lr", "0.01",
                "--quality-aware")
    assert made.returncode == 0, made.stderr
    tensors, metadata = load_weights(tmp_path / "run" / "analysis.safetensors")
    config = SCIConfig.from_dict(json.loads(metadata["config"]))
    assert config.afr.qualities == 4
    blind = _run(str(ROOT / "scripts" / "codec_stage_c2.py"), TINY, "--analysis", RECON, "--data", str(train),
                 "--val-data", str(val), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
                 "--steps", "3", "--crop", "16")
    assert blind.returncode != 0 and "--quality-aware differ" in blind.stderr and "Traceback" not in blind.stderr
    assert tensors["afr.fuse2_shift"].abs().sum() > 0  # the modulation trained from its zero start
    analysis = SCIReconstructor(config)
    load_state(analysis.afr, subset(tensors, "afr."), "run (AFR)")
    load_state(analysis.head, subset(tensors, "head."), "run (head)")
    features = [torch.rand(1, config.fem.channels, 16, 16) for _ in range(3)]
    images = [analysis.analyze(*features, quality=q)["image"] for q in range(4)]
    assert not torch.allclose(images[0], images[3])


def test_stage_c2_refuses_bad_options_and_a_cache_of_other_data(tiny_smotion, tmp_path):
    script = str(ROOT / "scripts" / "codec_stage_c2.py")
    train, val = tiny_smotion
    common = [script, TINY, "--analysis", RECON, "--data", str(train), "--val-data", str(val),
              "--cache-dir", str(tmp_path / "cache"),
              "--out", str(tmp_path / "run"), "--steps", "1"]
    made = _run(*common, "--crop", "999")
    assert made.returncode != 0 and "--crop must be" in made.stderr
    # no default start: the codec's named analysis changes as analyses are registered
    unnamed = _run(script, TINY, "--data", str(train), "--val-data", str(val), "--out", str(tmp_path / "r0"))
    assert unnamed.returncode != 0 and "--analysis" in unnamed.stderr
    elsewhere = tmp_path / "moved" / "train.h5"  # same name, other file: its cache is refused
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(train.read_bytes())
    other = _run(script, TINY, "--analysis", RECON, "--data", str(elsewhere), "--val-data", str(val),
                 "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "run2"), "--steps", "1", "--crop", "16")
    assert other.returncode != 0 and "delete it" in other.stderr
    unknown = _run(script, "no-such-codec", "--analysis", RECON, "--data", str(train), "--val-data", str(val),
                   "--cache-dir", str(tmp_path / "x"), "--out", str(tmp_path / "r"))
    assert unknown.returncode != 0 and "codec_stage_c2:" in unknown.stderr and "Traceback" not in unknown.stderr
    # sci-codec-v1's analysis (stage c2 of v1) reads the decoded motion, which this stage does not train
    motion = _run(script, "sci-codec-v1", "--analysis", "sci-codec-v1-recon", "--data", str(train),
                  "--val-data", str(val),
                  "--cache-dir", str(tmp_path / "y"), "--out", str(tmp_path / "r"))
    assert motion.returncode != 0 and "reads the decoded motion" in motion.stderr
    assert not (tmp_path / "y").exists()


def test_stage_c2_cache_is_not_left_half_written(tiny_smotion, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("codec_stage_c2", ROOT / "scripts" / "codec_stage_c2.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("spikecodec.codec.encode_reader", interrupted)
    with pytest.raises(KeyboardInterrupt):
        script.build_cache(TINY, str(tiny_smotion[0]), tmp_path / "cache.h5", 20, 32)
    assert list(tmp_path.iterdir()) == []


def test_temporal_z_fit_converts_a_codec_then_refits_trained_weights(tiny_smotion, tmp_path):
    from spikecodec.models.weights_io import load_weights

    script = str(ROOT / "scripts" / "codec_temporal_z.py")
    train, _ = tiny_smotion
    converted = tmp_path / "tz.safetensors"
    first = _run(script, TINY, "--hysteresis", "0.25", "--data", str(train), "-o", str(converted))
    assert first.returncode == 0, first.stderr
    config = json.loads(load_weights(converted)[1]["config"])
    assert config["temporal_z"] and config["z_hysteresis"] == 0.25

    # weights that already code z in time (as a stage-inter run of such a codec exports them): refitted
    refitted = tmp_path / "refit.safetensors"
    again = _run(script, TINY, "--weights", str(converted), "--data", str(train), "-o", str(refitted))
    assert again.returncode == 0, again.stderr
    tensors, metadata = load_weights(refitted)
    assert json.loads(metadata["config"])["z_hysteresis"] == 0.25
    assert tensors["inter.temporal_z_index"].shape == load_weights(converted)[0]["inter.temporal_z_index"].shape
    log = [json.loads(line) for line in refitted.with_suffix(".log.jsonl").read_text().splitlines()]
    assert log[0]["weights"] == str(converted) and log[0]["hysteresis"] == 0.25

    other = _run(script, TINY, "--weights", str(converted), "--hysteresis", "0.5", "--data", str(train),
                 "-o", str(tmp_path / "x.safetensors"))
    assert other.returncode != 0 and "already codes z in time" in other.stderr
    assert "Traceback" not in other.stderr and not (tmp_path / "x.safetensors").exists()


def test_codec_compare_codes_with_each_candidate_in_the_base_place(tiny_smotion, tmp_path):
    from spikecodec.models.registry import load_model
    from spikecodec.models.weights_io import save_weights

    codec = load_model(TINY)
    same = tmp_path / "same.safetensors"
    save_weights(codec.state_dict(), same, "codec", codec.config.to_dict())
    with torch.no_grad():
        for name, parameter in codec.named_parameters():
            if name.startswith("intra.") and name.endswith(".weight"):
                parameter.mul_(0.8)
    codec.update(force=True)
    changed = tmp_path / "changed.safetensors"
    save_weights(codec.state_dict(), changed, "codec", codec.config.to_dict())

    out = tmp_path / "rows.json"
    result = _run(str(ROOT / "benchmarks" / "codec_compare.py"), str(tiny_smotion[1]), "--base", TINY,
                  "--candidate", str(same), "--candidate", str(changed), "-o", str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]

    def points(label):
        return [(row["setting"], row["bits"], row["psnr"]) for row in rows if row["method"] == label]

    qualities = codec.config.qualities
    assert len(points(TINY)) == qualities and points(str(same)) == points(TINY)
    assert len(points(str(changed))) == qualities and points(str(changed)) != points(TINY)
    assert f"| {same} | +0.00 |" in result.stdout

    missing = _run(str(ROOT / "benchmarks" / "codec_compare.py"), str(tiny_smotion[1]), "--base", TINY,
                   "--candidate", str(tmp_path / "none.safetensors"))
    assert missing.returncode != 0 and "no candidate weights" in missing.stderr
