"""End-side cost of the FEM: parameters, MACs per moment by operation, median ms per moment.

    python benchmarks/bench_fem.py                      # the shipped reconstructor, 250x400
    python benchmarks/bench_fem.py --json out.json --afr   # also the cloud side (AFR + head)
    python benchmarks/bench_fem.py --model sci-small-v1-recon   # the codec's FEM

The model is a registered reconstructor with its trained weights (the binary filters' runs, hence
part of the cost, depend on them), fed random spikes (the cost does not depend on those). "window"
times one moment alone (its own prefix sum over the FEM window); "stream" times extract_features
over a stream at the given stride, where consecutive moments share the prefix sum (uint8 -> float
conversion included).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_sections import replace_section  # noqa: E402

from spikecodec import DEFAULT_RECONSTRUCTION_MODEL
from spikecodec.models.cost import afr_cost, fem_cost_summary, total_macs
from spikecodec.models.fem import FEM, extract_features, fem_parameter_count
from spikecodec.models.registry import ModelNotFoundError, get_spec, load_model
from spikecodec.models.sci import SCIReconstructor


def _median_ms(function, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        samples.append((time.perf_counter() - began) * 1000.0)
    return statistics.median(samples)


def benchmark(model_id: str, height: int, width: int, stride: int, repeats: int, threads: list[int],
              with_afr: bool) -> dict:
    try:
        spec = get_spec(model_id)
    except ModelNotFoundError as error:
        raise SystemExit(str(error)) from None
    if spec.kind != "reconstructor":
        raise SystemExit(f"{model_id} is a {spec.kind}, not an SCI reconstructor")
    model: SCIReconstructor = load_model(model_id)
    fem: FEM = model.fem
    rng = np.random.default_rng(0)
    window = torch.from_numpy((rng.random((1, fem.window_length, height, width)) < 0.3).astype(np.float32))
    moments_per_stream = 32
    stream_frames = fem.window_before + fem.window_after + 1 + stride * (moments_per_stream - 1)
    stream = (rng.random((stream_frames, height, width)) < 0.3).astype(np.uint8)
    moments = fem.window_before + stride * np.arange(moments_per_stream)
    report = {
        "model": model_id, "fem": spec.base,
        "window": [fem.window_before, fem.window_after],
        "config": fem.config.to_dict(), "height": height, "width": width,
        "parameters": fem_parameter_count(fem),
        "cost": fem_cost_summary(fem, height, width, stride=stride),
        "timing_ms_per_moment": {}, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
    }
    previous_threads = torch.get_num_threads()
    try:
        for count in threads:
            torch.set_num_threads(count)
            with torch.no_grad():
                single = _median_ms(lambda: fem(window), repeats)
                streamed = _median_ms(lambda: extract_features(fem, stream, moments, chunk=8), max(3, repeats // 4))
            entry = {"window": single, "stream": streamed / moments_per_stream}
            if with_afr:
                features = torch.randn(1, fem.config.channels, height, width)
                with torch.no_grad():
                    entry["afr_head"] = _median_ms(lambda: model.analyze(features, features, features), max(3, repeats // 4))
            report["timing_ms_per_moment"][f"{count}_threads"] = entry
    finally:
        torch.set_num_threads(previous_threads)
    if with_afr:
        costs = afr_cost(model.afr, height, width, model.head)
        report["cloud_cost"] = {
            "parameters": sum(p.numel() for p in model.afr.parameters()) + sum(p.numel() for p in model.head.parameters()),
            "macs_per_moment": total_macs(costs),
            "operations": [op.to_dict() for op in costs],
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_RECONSTRUCTION_MODEL,
                        help="registered reconstructor whose FEM (and AFR + head) is measured")
    parser.add_argument("--height", type=int, default=250)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--stride", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--afr", action="store_true", help="also time and count AFR + reconstruction head")
    parser.add_argument("--json", default=None, help="write the full report here")
    parser.add_argument("--write-docs", action="store_true",
                        help="put the table into the fem-cost section of docs/BENCHMARKS.md")
    args = parser.parse_args()
    report = benchmark(args.model, args.height, args.width, args.stride, args.repeats, args.threads, args.afr)
    cost = report["cost"]
    print(f"FEM at {args.height}x{args.width}: parameters {report['parameters']}")
    for op in cost["operations"]:
        print(f"  {op['name']:<48} {op['macs'] / 1e6:10.2f} M  ({op['kind']})")
    print(f"  total MACs per moment: {cost['macs_per_moment'] / 1e6:.1f} M "
          f"({cost['macs_per_moment_shared_prefix_sum'] / 1e6:.1f} M with the prefix sum shared at stride "
          f"{args.stride}); element-wise ops {cost['elementwise_per_moment'] / 1e6:.1f} M")
    for threads, entry in report["timing_ms_per_moment"].items():
        line = ", ".join(f"{name} {value:.1f} ms" for name, value in entry.items())
        print(f"  {threads.replace('_', ' ')}: {line}")
    if "cloud_cost" in report:
        print(f"AFR + head: parameters {report['cloud_cost']['parameters']}, "
              f"{report['cloud_cost']['macs_per_moment'] / 1e9:.2f} GMAC per moment")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    if args.write_docs:
        replace_section(Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md", "fem-cost",
                        markdown(report, args))


def markdown(report: dict, args: argparse.Namespace) -> str:
    cost = report["cost"]
    fem_before, fem_after = report["window"]
    lines = [
        f"## End-side cost of the FEM at {args.height}x{args.width}", "",
        f"`python benchmarks/bench_fem.py{' --afr' if args.afr else ''} --write-docs`: "
        f"`{report['model']}` (FEM `{report['fem']}`, window t-{fem_before}..t+{fem_after}) with its "
        f"trained weights, random spikes, {platform.machine()}, torch {torch.__version__}, median of "
        f"{args.repeats} runs. Parameters: {report['parameters']}. MACs per moment counted per "
        "operation (cumulative sums, frame totals, deform_conv2d and grid_sample by hand; "
        "convolutions checked against torch.utils.flop_counter in the tests). The codecs code "
        "`sci-small-v1` features: `--model sci-small-v1-recon` measures that FEM.", "",
        "| operation | kind | MMAC per moment |", "| --- | --- | ---: |",
    ]
    for op in cost["operations"]:
        lines.append(f"| {op['name']} | {op['kind']} | {op['macs'] / 1e6:.2f} |")
    lines += [
        f"| **total** | | **{cost['macs_per_moment'] / 1e6:.1f}** "
        f"({cost['macs_per_moment_shared_prefix_sum'] / 1e6:.1f} with the prefix sum shared at "
        f"stride {args.stride}) |", "",
        f"Element-wise operations besides: {cost['elementwise_per_moment'] / 1e6:.1f} M per moment.",
        "", "| torch threads | " + " | ".join(next(iter(report["timing_ms_per_moment"].values())))
        + " |", "| --- |" + " ---: |" * len(next(iter(report["timing_ms_per_moment"].values()))),
    ]
    for threads, entry in report["timing_ms_per_moment"].items():
        lines.append(f"| {threads.replace('_', ' ')} | "
                     + " | ".join(f"{value:.1f} ms" for value in entry.values()) + " |")
    if "cloud_cost" in report:
        lines += ["", f"Cloud side (AFR + reconstruction head): "
                  f"{report['cloud_cost']['parameters']} parameters, "
                  f"{report['cloud_cost']['macs_per_moment'] / 1e9:.2f} GMAC per moment."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
