"""The feature codec on the S-Motion test split: rate-distortion, bits, ablations, speed, memory.

    python benchmarks/bench_codec.py rd --results runs/eval/results.json [--write-docs]
    python benchmarks/bench_codec.py bits [--data data/smotion_test.h5] [--c1 runs/c1,OTHER.safetensors] [--compare sci-codec-v1]
        [--analysis sci-small-v1-recon] [--write-docs]
    python benchmarks/bench_codec.py speed [--frames 2000] [--baseline sci-codec-v1] [--write-docs]
    python benchmarks/bench_codec.py memory [--gib 2.0] [--write-docs]

- ``rd`` reads the results of ``spikecodec eval`` (ours at every quality, ours-raw / TFP41 / TFI
  coded with x265 and VVC, lossless coders) and writes the RD table per quality (bpp, PSNR, SSIM,
  per speed bin), BD-rates against the analyze-then-compress anchors, and the bpp at which ours
  first reaches the PSNR of TFP41 on the raw spikes (section ``codec-rd``);
- ``bits``: on the test sequences, for every quality, the entropy-coded payload of the real
  streams against their entropy estimate (the likelihoods of the coded symbols under the coder's
  own integer-path scales and means, as ``FeatureCodec.compress`` reports them), the container overhead as a share
  of the file, and the ablations: the shipped streams decoded with the other motion input (AFR
  reading the FMVR-refined decoded motion, or estimating motion itself), the shipped streams
  decoded by other reconstructors (``--analysis``: the stage-(b) analysis, i.e. before stage c2),
  earlier registered codecs (``--compare``) and unregistered codec weights (e.g. stage-c1 outputs)
  with the stage-(b) analysis (``--c1``) (section ``codec-bits``);
- ``speed``: encoder and decoder throughput at 250x400 with default settings (file I/O included,
  medians), the encoder of ``--baseline`` timed in the same run (the machine is shared: compare
  ratios, not runs), MACs per moment of each side, and where one more encode spends its time
  (loading, reading, FEM, codec transforms, entropy coding, the rest) (section ``codec-speed``);
- ``memory``: peak resident memory of ``spikecodec encode`` on a generated ``.dat`` of at least
  ``--gib`` GiB, in a child process (section ``codec-memory``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_baselines import SPEED_BINS, ensure_test_split  # noqa: E402
from docs_sections import replace_section  # noqa: E402

from spikecodec import DEFAULT_CODEC_MODEL, DEFAULT_GOP, DEFAULT_STRIDE  # noqa: E402

DOCS = ROOT / "docs" / "BENCHMARKS.md"
OUT = ROOT / "runs" / "bench"
ANCHORS = ("ours-raw+x265", "ours-raw+vvc", "tfp41+x265", "tfi+x265")


def _machine() -> str:
    return (f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"python {platform.python_version()}")


def _save(name: str, report: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"codec-{name}.json").write_text(json.dumps(report, indent=1))


# ------------------------------------------------------------------------------------------ rd


def _first_match(points: list[tuple[float, float]], target: float) -> float | None:
    """bpp at which a rising RD curve first reaches ``target`` dB (linear between points)."""
    points = sorted(points)
    for (r0, p0), (r1, p1) in zip(points, points[1:]):
        if p0 < target <= p1:
            return r0 + (target - p0) / (p1 - p0) * (r1 - r0)
    if points and points[0][1] >= target:
        return points[0][0]
    return None


def _bits_at_equal_psnr(rows: list[dict], method: str, anchor: str) -> dict | None:
    """Our bits over the anchor's at the same PSNR, per point of ``method`` whose PSNR lies within the
    anchor's range on the same input (anchor log-rate interpolated linearly in PSNR along its Pareto
    points): a comparison that still exists where the curves overlap too little for a BD-rate."""
    from spikecodec.metrics import RDCurve

    ratios = []
    for name in {r["input"] for r in rows}:
        ours = [(r["bpp"], r["psnr"]) for r in rows if r["input"] == name and r["method"] == method]
        points = [(r["bpp"], r["psnr"]) for r in rows if r["input"] == name and r["method"] == anchor]
        if len(points) < 2:
            continue
        pareto = RDCurve.of(*zip(*points)).pareto()
        if pareto.rate.size < 2:
            continue
        psnrs, log_rates = pareto.quality, np.log(pareto.rate)
        ratios += [bpp / float(np.exp(np.interp(psnr, psnrs, log_rates))) for bpp, psnr in ours
                   if psnrs[0] <= psnr <= psnrs[-1]]
    if not ratios:
        return None
    low, median, high = np.percentile(ratios, [25, 50, 75])
    return {"points": len(ratios), "median": float(median), "quartiles": [float(low), float(high)]}


def rd(results: Path) -> tuple[dict, str]:
    from spikecodec.evaluation import bdrate_report, load_results

    document = load_results(results)
    rows = [r for r in document["rows"] if not r.get("error")]
    by_method: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    ours = by_method.get("ours", [])
    if not ours:
        raise SystemExit(f"{results} holds no rows of our codec (run eval with --methods including ours)")
    qualities = sorted({r["setting"] for r in ours})

    def summary(selected: list[dict]) -> dict:
        out = {"bpp": float(np.mean([r["bpp"] for r in selected])) if selected[0]["bpp"] is not None else None,
               "psnr": float(np.mean([r["psnr"] for r in selected])),
               "ssim": float(np.mean([r["ssim"] for r in selected]))}
        for name in SPEED_BINS:
            part = [r["psnr"] for r in selected if r.get("speed_bin") == name]
            out[f"psnr_{name}"] = float(np.mean(part)) if part else None
        return out

    table = {q: summary([r for r in ours if r["setting"] == q]) for q in qualities}
    references = {name: summary(by_method[name]) for name in ("ours-raw", "tfp41", "tfi") if by_method.get(name)}
    tfp_psnr = references["tfp41"]["psnr"]
    curve = [(v["bpp"], v["psnr"]) for v in table.values()]
    bd = {}
    for anchor in ANCHORS:
        if anchor not in by_method:
            continue
        report = bdrate_report(results.parent if results.is_file() else results, anchor)
        bd[anchor] = {}
        for method in report.methods:
            rate, quality = report.mean[method]
            covered = sum(1 for i in report.inputs if (method, i) in report.per_input
                          and report.per_input[(method, i)][0].value is not None)
            bd[anchor][method] = {"bd_rate": rate.value, "bd_rate_note": rate.note, "bd_psnr": quality.value,
                                  "inputs": f"{covered}/{len(report.inputs)}"}
    equal_psnr = _bits_at_equal_psnr(rows, "ours", "ours-raw+x265")
    result = {
        "results": str(results), "environment": document.get("environment"), "qualities": table,
        "bits_at_equal_psnr_vs_ours_raw_x265": equal_psnr,
        "references": references, "bd": bd,
        "bpp_matching_tfp41": _first_match(curve, tfp_psnr), "inputs": len({r["input"] for r in ours}),
    }

    history = document.get("history", [])  # which run wrote which methods' rows (eval --update adds runs)
    provenance = "".join(f" Rows of {', '.join(entry['methods'])}: run of {entry['created']}"
                         + (" (`eval --update`)." if k else ".") for k, entry in enumerate(history)) \
        if len(history) > 1 else ""
    lines = ["## Feature codec: rate-distortion on the S-Motion test split", "",
             f"Our codec ({DEFAULT_CODEC_MODEL}, stride {DEFAULT_STRIDE}, GOP {DEFAULT_GOP}) on the S-Motion test "
             f"split ({result['inputs']} sequences), from `spikecodec eval` "
             f"(`{results}`); bpp counts the whole `.sci` file over T x H x W spike pixels; "
             "PSNR/SSIM per frame at every evaluated moment against the ground truth, averaged." + provenance, "",
             "| method | bpp | x smaller than raw | PSNR dB | SSIM | slow | medium | fast |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def line(name: str, v: dict) -> str:
        rate = f"{v['bpp']:.5f}" if v["bpp"] is not None else "1 (raw spikes)"
        ratio = f"{1 / v['bpp']:.0f}" if v["bpp"] else "1"
        bins = " | ".join(f"{v[f'psnr_{b}']:.2f}" if v[f"psnr_{b}"] is not None else "-" for b in SPEED_BINS)
        return f"| {name} | {rate} | {ratio} | {v['psnr']:.2f} | {v['ssim']:.3f} | {bins} |"

    for q, v in table.items():
        lines.append(line(f"ours {q}", v))
    for name, v in references.items():
        lines.append(line(f"{name} (uncompressed, from raw spikes)", v))
    lines += ["", f"Ours first reaches the PSNR of TFP41 on raw spikes ({tfp_psnr:.2f} dB) at "
              + (f"**{result['bpp_matching_tfp41']:.5f} bpp**" if result["bpp_matching_tfp41"] else "no measured rate")
              + " (raw spikes: 1 bpp).", "",
              "BD-rate of ours against the analyze-then-compress anchors (pchip on Pareto points, mean over "
              "the sequences where the curves overlap at least 75%; negative = fewer bits for the same PSNR):", "",
              "| anchor | BD-rate | BD-PSNR | sequences |", "| --- | --- | --- | --- |"]
    for anchor, methods in bd.items():
        v = methods.get("ours")
        if v is None:
            continue
        rate_text = f"{v['bd_rate']:+.1f}%" if v["bd_rate"] is not None else v["bd_rate_note"]
        psnr_text = f"{v['bd_psnr']:+.2f} dB" if v["bd_psnr"] is not None else "-"
        lines.append(f"| {anchor} | {rate_text} | {psnr_text} | {v['inputs']} |")
    if equal_psnr:
        lines += ["", f"At equal PSNR (the {equal_psnr['points']} points of ours within the PSNR range of "
                  "`ours-raw+x265` on the same sequence, the anchor's log-rate interpolated along its Pareto "
                  f"points) ours spends a median **{equal_psnr['median']:.1f}x** the anchor's bits (quartiles "
                  f"{equal_psnr['quartiles'][0]:.1f}x-{equal_psnr['quartiles'][1]:.1f}x; the BD-rate target, "
                  "-30%, is 0.7x)."]
    if "ours-raw+x265" in by_method:
        table_text = bdrate_report(results.parent if results.is_file() else results, "ours-raw+x265").markdown()
        lines += ["", "Every method against `ours-raw+x265` (`spikecodec bdrate runs/eval --anchor ours-raw+x265`; "
                  "per sequence: `docs/eval_smotion/bdrate_ours-raw+x265.md`, rows: `docs/eval_smotion/results.csv`):", ""]
        lines += table_text.split("\n\nNot compared")[0].split("\n")[2:]
    lines += ["", "RD curves (mean over the sequences at each setting; `spikecodec bdrate runs/eval --anchor "
              "ours-raw+x265` draws it):", "", "![RD curves on the S-Motion test split](rd_smotion.png)"]
    return result, "\n".join(lines)


# ---------------------------------------------------------------------------------------- bits


def _subset(items: list, per_bin: int) -> list:
    chosen, count = [], defaultdict(int)
    for item in items:
        name = item.meta.get("speed_bin")
        if count[name] < per_bin:
            chosen.append(item)
            count[name] += 1
    return chosen


@torch.no_grad()
def _estimated_payload_bits(fem, codec, spikes: np.ndarray, moments: np.ndarray, quality: int,
                            gop: int) -> tuple[float, float]:
    """Entropy of the symbols the coder writes for the same features, under the coder's own (exact,
    integer-path) scales and means: what the rANS strings should cost. Second, the same with every
    probability floored at 2^-16, the resolution of compressai's rANS tables: a symbol the model deems
    rarer (up to 30 bits in the first sum) costs the coder at most about 16 bits plus its escape."""
    from spikecodec.models.fem import extract_features

    codec.eval()
    bits, floored, state = 0.0, 0.0, None
    for index, feature in enumerate(extract_features(fem, spikes, moments)):
        out = codec.compress(feature[None], quality, None if index % gop == 0 else state)
        state = out["state"]
        bits += float(sum((-torch.log2(l)).sum() for l in out["likelihoods"].values()))
        floored += float(sum((-torch.log2(l.clamp_min(2.0**-16))).sum() for l in out["likelihoods"].values()))
    return bits, floored


def bits(data: Path, c1: list[Path], compare: list[str], per_bin: int, analyses: list[str]) -> tuple[dict, str]:
    from spikecodec.anchors import score_frames
    from spikecodec.codec import EndSide, decode_stream, encode_reader, load_end_side, reads_decoded_motion
    from spikecodec.evaluation import iter_items
    from spikecodec.io import ArrayReader
    from spikecodec.models.registry import get_spec, load_model
    from spikecodec.models.weights_io import sha256_of_file

    items = _subset([i for i in iter_items([data]) if not hasattr(i, "error")], per_bin)
    shipped = load_end_side(DEFAULT_CODEC_MODEL)
    qualities = get_spec(DEFAULT_CODEC_MODEL).config["qualities"]
    # (label, end side, (codec, reconstructor) or None for the registry's, AFR reads decoded motion)
    variants: list[tuple[str, EndSide, tuple | None, bool | None]] = [("shipped", shipped, None, None)]
    decoded_motion = None
    for codec_id in compare:
        variants.append((codec_id, load_end_side(codec_id), None, None))
    for source in c1:
        from spikecodec.training import load_codec_weights

        path = source / "codec.safetensors" if source.is_dir() else source
        if not path.exists():
            raise SystemExit(f"--c1: no codec weights at {path}")
        codec_c1 = load_codec_weights(str(path)).eval()
        variants.append((f"{path.stem} + stage-b analysis", EndSide("codec-c1", sha256_of_file(path), shipped.fem,
                                                                    codec_c1),
                         (codec_c1, load_model(get_spec(DEFAULT_CODEC_MODEL).analysis)), False))
    rows: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory() as folder:
        for item in items:
            lookup = {int(t): k for k, t in enumerate(item.gt_index)}
            for quality in range(qualities):
                for name, end, models, motion in variants:
                    path = Path(folder) / "s.sci"
                    encoded = encode_reader(ArrayReader(item.spikes), path, quality=quality, model=end, force=True)
                    decodes = {name: decode_stream(path, models=models, refined_motion=motion)}
                    if name == "shipped":
                        decoded_motion = reads_decoded_motion(encoded.header, None)
                        decodes["other motion"] = decode_stream(path, refined_motion=not decoded_motion)
                        for analysis_id in analyses:
                            decodes[f"analysis {analysis_id}"] = decode_stream(path, analysis=analysis_id)
                    for label, decoded in decodes.items():
                        keep = [k for k, t in enumerate(decoded.moments) if int(t) in lookup]
                        truth = item.gt[[lookup[int(decoded.moments[k])] for k in keep]].astype(np.float32) / 255.0
                        value, similarity = score_frames(truth, decoded.frames[keep])
                        row = {"input": item.name, "speed_bin": item.meta.get("speed_bin"), "bytes": encoded.bytes,
                               "bpp": 8 * encoded.bytes / item.spikes.size, "psnr": value, "ssim": similarity}
                        if label == "shipped":
                            row["payload_bits"] = 8 * encoded.payload_bytes
                            row["estimated_bits"], row["floored_estimate_bits"] = _estimated_payload_bits(
                                shipped.fem, shipped.codec, item.spikes, encoded.moments, quality, DEFAULT_GOP)
                        rows[label][quality].append(row)
            print(f"{item.name} done", flush=True)
    report = {"data": str(data), "codec": DEFAULT_CODEC_MODEL, "sequences": [i.name for i in items],
              "rows": {k: dict(v) for k, v in rows.items()}}
    analysis = get_spec(DEFAULT_CODEC_MODEL).analysis
    other = ("AFR estimates motion itself (no FMVR)" if decoded_motion
             else "AFR reads the FMVR-refined decoded motion")
    lines = ["## Feature codec: payload, container overhead, FMVR and stage-c ablations", "",
             f"The shipped codec `{DEFAULT_CODEC_MODEL}` (decoded by `{analysis}`) on {len(items)} S-Motion test "
             f"sequences ({per_bin} per speed bin: {', '.join(i.name.split(':')[-1] for i in items)}), every moment "
             f"of each stream, {_machine()}.", "",
             "Payload (the entropy-coded strings) against its entropy estimate (the likelihoods of the coded "
             "symbols under the scales and means the coder used; compressai's rANS tables have 16-bit precision, "
             "so a symbol the model deems rarer than 2^-16 costs the coder less than its estimate), and the "
             "container (preamble, header, unit framing, CRCs, seek index, end unit) as a share of the file:", "",
             "| quality | bpp | payload / estimate | payload / estimate floored at 2^-16 "
             "| container share of the file |",
             "| --- | --- | --- | --- | --- |"]
    for quality, entries in sorted(rows["shipped"].items()):
        payload = sum(e["payload_bits"] for e in entries)
        estimate = sum(e["estimated_bits"] for e in entries)
        floored = sum(e["floored_estimate_bits"] for e in entries)
        total = sum(8 * e["bytes"] for e in entries)
        lines.append(f"| {quality} | {np.mean([e['bpp'] for e in entries]):.5f} | {payload / estimate:.4f} | "
                     f"{payload / floored:.4f} | "
                     f"{(total - payload) / total:.1%} |")
    labels = ["shipped", "other motion"] + [f"analysis {a}" for a in analyses] + [name for name, *_ in variants[1:]]
    heads = ([f"shipped ({'decoded motion' if decoded_motion else 'AFR motion'})", other]
             + [f"shipped streams decoded by `{a}`" for a in analyses]
             + [f"`{name}`" for name, *_ in variants[1:]])
    lines += ["", "Ablations and earlier codecs, same sequences (PSNR dB / bpp, mean over sequences):", "",
              "| quality | " + " | ".join(heads) + " |", "| --- " * (len(heads) + 1) + "|"]
    for quality in sorted(rows["shipped"]):
        cells = []
        for label in labels:
            entries = rows.get(label, {}).get(quality)
            cells.append(f"{np.mean([e['psnr'] for e in entries]):.2f} / {np.mean([e['bpp'] for e in entries]):.5f}"
                         if entries else "not measured")
        lines.append(f"| {quality} | " + " | ".join(cells) + " |")
    return report, "\n".join(lines)


# --------------------------------------------------------------------------------------- speed


def _write_test_dat(path: Path, frames: int, height: int = 250, width: int = 400) -> None:
    """A texture drifting 1 px every 20 spike frames, integrate-and-fire at rate 0.6
    (:func:`spikecodec.simulate.iter_integrate_and_fire`), written in 1,000-frame blocks (the file
    can be larger than memory)."""
    from spikecodec.io import open_spike_writer
    from spikecodec.simulate import iter_integrate_and_fire

    texture = np.random.default_rng(0).random((height, width + frames // 20 + 1)).astype(np.float32)
    intensity = (texture[:, t // 20:t // 20 + width] for t in range(frames))
    spikes = iter_integrate_and_fire(intensity, rate=0.6, seed=0)
    with open_spike_writer(path, height, width) as writer:
        for start in range(0, frames, 1000):
            writer.write(np.stack([next(spikes) for _ in range(min(1000, frames - start))]))


def encoder_breakdown(dat: Path, end: Any) -> dict[str, float]:
    """Seconds of one default ``encode_file`` of ``dat`` spent in each stage: model loading, spike
    reading, FEM, the codec's transforms, entropy coding (compressai's ``EntropyModel.compress`` for
    the hyper-latents, ``ListedConditional.compress`` for the latents: symbols, lists and rANS) and
    the rest (frame units, hashing, Python); each stage is timed by wrapping the function that
    does it."""
    from unittest import mock

    from compressai.entropy_models import EntropyModel

    import spikecodec.models.fem as fem_module
    from spikecodec.models.codec import ListedConditional
    from spikecodec.codec import encode_file, load_end_side
    from spikecodec.io import DatReader

    seconds: dict[str, float] = defaultdict(float)

    def timed(stage: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[stage] += time.perf_counter() - started
        return wrapper

    timed("model loading", load_end_side)(DEFAULT_CODEC_MODEL)  # timed only: the encode below reuses ``end``
    with tempfile.TemporaryDirectory() as folder, \
            mock.patch.object(DatReader, "read", timed("spike reading", DatReader.read)), \
            mock.patch.object(fem_module, "extract_features", timed("FEM", fem_module.extract_features)), \
            mock.patch.object(end.codec, "compress", timed("codec", end.codec.compress)), \
            mock.patch.object(EntropyModel, "compress", timed("entropy coding", EntropyModel.compress)), \
            mock.patch.object(ListedConditional, "compress", timed("entropy coding", ListedConditional.compress)):
        started = time.perf_counter()
        result = encode_file(dat, Path(folder) / "s.sci", model=end)
        total = time.perf_counter() - started
    missed = [stage for stage in ("spike reading", "FEM", "codec", "entropy coding") if not seconds[stage]]
    if missed:  # encode_reader no longer calls the wrapped function
        raise RuntimeError(f"the encoder breakdown timed nothing for {missed}: update encoder_breakdown")
    seconds["codec transforms"] = seconds.pop("codec") - seconds["entropy coding"]
    seconds["rest (frame units, hashing, Python)"] = total - sum(
        seconds[k] for k in ("spike reading", "FEM", "codec transforms", "entropy coding"))
    seconds["moments"] = float(result.frames)
    return dict(seconds)


def speed(frames: int, repeats: int, threads: int, baseline: str | None) -> tuple[dict, str]:
    from spikecodec.codec import decode_stream, encode_file, load_end_side
    from spikecodec.models.codec import codec_cost
    from spikecodec.models.cost import afr_cost, fem_cost, total_macs
    from spikecodec.models.registry import get_spec, load_model

    torch.set_num_threads(threads)
    spec = get_spec(DEFAULT_CODEC_MODEL)
    end = load_end_side(DEFAULT_CODEC_MODEL)
    analysis = load_model(spec.analysis)
    with tempfile.TemporaryDirectory() as folder:
        dat, sci = Path(folder) / "s.dat", Path(folder) / "s.sci"
        _write_test_dat(dat, frames)
        encode_times, decode_times, baseline_times = [], [], []
        for _ in range(repeats):
            if baseline:  # interleaved with the shipped codec, so that both see the same machine load
                started = time.perf_counter()
                encode_file(dat, sci, force=True, model=baseline)
                baseline_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = encode_file(dat, sci, force=True)
            encode_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            decode_stream(sci)
            decode_times.append(time.perf_counter() - started)
        stages = encoder_breakdown(dat, end)
    cost = codec_cost(end.codec, 250, 400, DEFAULT_GOP)
    fem_macs = total_macs(fem_cost(end.fem, 250, 400))
    analysis_macs = total_macs(afr_cost(analysis.afr, 250, 400, analysis.head))
    encode_s, decode_s = statistics.median(encode_times), statistics.median(decode_times)
    report = {
        "frames": frames, "moments": result.frames, "repeats": repeats, "threads": threads,
        "encode_seconds": encode_times, "decode_seconds": decode_times,
        "encoder_frames_per_s": frames / encode_s, "decoder_frames_per_s": frames / decode_s,
        "encoder_macs_per_moment": fem_macs + cost["gop_average"]["encoder"],
        "fem_macs_per_moment": fem_macs, "codec_encoder_macs_per_moment": cost["gop_average"]["encoder"],
        "decoder_macs_per_moment": cost["gop_average"]["decoder"] + analysis_macs,
        "codec_decoder_macs_per_moment": cost["gop_average"]["decoder"], "analysis_macs_per_moment": analysis_macs,
        "bpp": result.bpp, "baseline": baseline, "baseline_encode_seconds": baseline_times,
        "encoder_stage_seconds": stages,
    }
    baseline_rows = []
    if baseline:
        baseline_s = statistics.median(baseline_times)
        report["baseline_encoder_frames_per_s"] = frames / baseline_s
        baseline_rows = [f"| encoder, `{baseline}` (same run, interleaved) | {frames / baseline_s:.0f} | "
                         f"{1000 * baseline_s / result.frames:.0f} | shipped / baseline time: "
                         f"{encode_s / baseline_s:.2f} |"]
    g = 1e9
    text = "\n".join([
        "## Codec speed at 250x400", "",
        f"`spikecodec encode` / decode at 250x400, default settings (quality {result.header.quality}, stride "
        f"{DEFAULT_STRIDE}, GOP {DEFAULT_GOP}), a generated {frames}-frame `.dat` ({result.frames} moments), "
        f"file I/O and model loading included, median of {repeats}, {threads} torch threads, {_machine()}.", "",
        "| side | spike frames / s | ms per moment | GMAC per moment |", "| --- | --- | --- | --- |",
        f"| encoder (FEM + codec + bitstream) | {report['encoder_frames_per_s']:.0f} | "
        f"{1000 * encode_s / result.frames:.0f} | {report['encoder_macs_per_moment'] / g:.2f} "
        f"(FEM {fem_macs / g:.2f} + codec {cost['gop_average']['encoder'] / g:.2f}) |",
        *baseline_rows,
        f"| decoder (codec + FMVR + AFR + head) | {report['decoder_frames_per_s']:.0f} | "
        f"{1000 * decode_s / result.frames:.0f} | {report['decoder_macs_per_moment'] / g:.2f} "
        f"(codec {cost['gop_average']['decoder'] / g:.2f} + analysis {analysis_macs / g:.2f}) |",
        "", "Where one more encode of the same file spends its time (one pass, same threads; the codec's "
        "entropy coding is the entropy models' `compress`: symbols, lists, rANS):", "",
        "| stage | ms per moment | share |", "| --- | --- | --- |",
        *[f"| {name} | {1000 * value / stages['moments']:.1f} | "
          f"{100 * value / sum(v for k, v in stages.items() if k != 'moments'):.0f}% |"
          for name, value in stages.items() if name != "moments"],
        "", "Target: at least 500 spike frames/s for the encoder: "
        + ("met." if report["encoder_frames_per_s"] >= 500 else
           f"**missed** ({report['encoder_frames_per_s']:.0f}); rate-distortion was given priority (DESIGN.md)."),
    ])
    return report, text


# -------------------------------------------------------------------------------------- memory


def memory(gib: float) -> tuple[dict, str]:
    frames = int(np.ceil(gib * 2**30 / (250 * 400 / 8)))
    with tempfile.TemporaryDirectory(dir=ROOT / "runs") as folder:
        dat, sci = Path(folder) / "big.dat", Path(folder) / "big.sci"
        _write_test_dat(dat, frames)
        size = dat.stat().st_size
        code = ("import resource, sys, time; from spikecodec.codec import encode_file; t = time.perf_counter();"
                "r = encode_file(sys.argv[1], sys.argv[2]);"
                "print(r.frames, r.bytes, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        run = subprocess.run([sys.executable, "-c", code, str(dat), str(sci)], capture_output=True, text=True, check=True)
        moments, coded, seconds, peak_kib = run.stdout.split()
    report = {"dat_bytes": size, "frames": frames, "moments": int(moments), "sci_bytes": int(coded),
              "seconds": float(seconds), "peak_rss_bytes": int(peak_kib) * 1024}
    text = ("## Codec memory on a 2 GiB stream\n\n"
            f"`encode_file` on a generated {size / 2**30:.2f} GiB `.dat` ({frames} spike frames at 250x400, "
            f"{moments} moments) in a child process: peak resident memory **{report['peak_rss_bytes'] / 2**20:.0f} MiB** "
            f"(target: under 2 GiB), {float(seconds) / 60:.1f} min, {report['sci_bytes']} bytes out.")
    return report, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["rd", "bits", "speed", "memory"])
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "eval" / "results.json")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "smotion_test.h5")
    parser.add_argument("--c1", default=str(ROOT / "spikecodec" / "models" / "weights" / "ablation-codec-c1.safetensors"),
                        help="bits: codec weights files (comma-separated; e.g. stage-c1 outputs), each decoded by the "
                             "stage-b analysis ('' for none; default: sci-codec-v1 before c2)")
    parser.add_argument("--compare", default="sci-codec-v1", help="bits: registered codecs beside the shipped one")
    parser.add_argument("--analysis", default="sci-small-v1-recon",
                        help="bits: reconstructors that also decode the shipped streams (comma-separated; default: "
                             "the stage-b analysis, the shipped codec before stage c2)")
    parser.add_argument("--per-bin", type=int, default=1, help="bits: sequences per speed bin")
    parser.add_argument("--frames", type=int, default=2000, help="speed: spike frames of the test stream")
    parser.add_argument("--baseline", default="sci-codec-v1",
                        help="speed: a registered codec whose encoder is timed in the same run ('' for none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if args.part == "rd":
        report, text = rd(args.results)
    elif args.part == "bits":
        ensure_test_split(args.data, seed=0)  # the seed of the committed S-Motion test split
        report, text = bits(args.data, [Path(c) for c in args.c1.split(",") if c],
                            [c for c in args.compare.split(",") if c], args.per_bin,
                            [a for a in args.analysis.split(",") if a])
    elif args.part == "speed":
        report, text = speed(args.frames, args.repeats, args.threads, args.baseline or None)
    else:
        report, text = memory(args.gib)
    _save(args.part, report)
    print(text)
    if args.write_docs:
        replace_section(DOCS, f"codec-{args.part}", text)


if __name__ == "__main__":
    main()
