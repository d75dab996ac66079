"""Reconstruction quality on the S-Motion test split: the shipped SCI analysis path vs baselines.

    python benchmarks/bench_reconstruction.py [--data data/smotion_test.h5] [--write-docs]

Methods, all in this one run and at the same moments:
- SCI: the registered reconstructor (FEM features uncompressed, AFR, reconstruction head);
- the plain-CNN baselines on the raw 41 spike frames (same parameter budget): `cnn-baseline-v2`
  (trained on a GPU, 8 times SCI's stage-(b) samples) and `cnn-baseline-v1` (on this machine, 76 min);
- TFP41 (41 frames centred on the moment), TFI, and TFP over SCI's reach
  (t - stride - FEM before .. t + stride + FEM after, the span SCI's output depends on).
Moments: every 20 spike frames, at spike indices whose whole SCI reach lies inside the stream,
so every method sees the spikes it needs. PSNR/SSIM per frame against the ground truth at the
moment's spike index, averaged; per sequence and per speed bin.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_baselines import SPEED_BINS, ensure_test_split  # noqa: E402
from docs_sections import replace_section  # noqa: E402

from spikecodec import DEFAULT_RECONSTRUCTION_MODEL  # noqa: E402
from spikecodec.baselines import tfi, tfp  # noqa: E402
from spikecodec.metrics import psnr_per_frame, ssim_per_frame  # noqa: E402
from spikecodec.models.registry import get_spec, load_model  # noqa: E402
from spikecodec.models.sci import parameter_count  # noqa: E402
from spikecodec.moments import moments_for  # noqa: E402

STRIDE = 20


def tfp_span(spikes: np.ndarray, moments: np.ndarray, before: int, after: int) -> np.ndarray:
    """TFP over frames t - before .. t + after (SCI's reach): the centred TFP of that length,
    taken at the moment that centres it."""
    window = before + after + 1
    return tfp(spikes, np.asarray(moments) - (before - window // 2), window=window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "smotion_test.h5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=DEFAULT_RECONSTRUCTION_MODEL)
    parser.add_argument("--cnn", default="cnn-baseline-v2,cnn-baseline-v1",
                        help="registry ids of plain CNNs, comma-separated, or 'none'")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N sequences")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from data_tools.smotion import load_smotion

    ensure_test_split(args.data, args.seed)
    sci = load_model(args.model)
    cnn_ids = [] if args.cnn == "none" else [name for name in args.cnn.split(",") if name]
    cnns = {name: load_model(name) for name in cnn_ids}
    fem = sci.fem
    reach_before = STRIDE + fem.window_before
    reach_after = STRIDE + fem.window_after
    methods = {
        "SCI": lambda s, m: sci.reconstruct(s, m, stride=STRIDE),
        **{name: (lambda s, m, cnn=cnn: cnn.reconstruct(s, m)) for name, cnn in cnns.items()},
        "TFP41": lambda s, m: tfp(s, m, window=41),
        "TFI": lambda s, m: tfi(s, m),
        f"TFP reach ({reach_before + reach_after + 1})":
            lambda s, m: tfp_span(s, m, reach_before, reach_after),
    }
    seconds = defaultdict(float)
    scores = defaultdict(lambda: defaultdict(list))  # bin -> method -> per-frame (psnr, ssim)
    rows = []
    started = time.perf_counter()
    for number, (spikes, gt, meta) in enumerate(load_smotion(args.data)):
        if args.limit is not None and number >= args.limit:
            break
        moments = moments_for(spikes.shape[0], STRIDE, before=max(reach_before, 20),
                              after=max(reach_after, 20))
        truth = gt[moments]
        row = {"sequence": meta.get("name", str(number)), "photo": meta["photo"],
               "bin": meta["speed_bin"], "speed": float(meta["mean_speed"])}
        for name, method in methods.items():
            tick = time.perf_counter()
            images = method(spikes, moments)
            seconds[name] += time.perf_counter() - tick
            p, s = psnr_per_frame(truth, images), ssim_per_frame(truth, images)
            row[name] = (float(p.mean()), float(s.mean()))
            for key in (meta["speed_bin"], "all"):
                scores[key][name].extend(zip(p, s))
        rows.append(row)
        print(row["sequence"], {k: f"{v[0]:.2f}" for k, v in row.items() if isinstance(v, tuple)},
              flush=True)

    names = list(methods)
    sci_spec = get_spec(args.model)
    header = "| speed bin | frames | " + " | ".join(f"{n} PSNR / SSIM" for n in names) + \
        " | SCI - TFP41 |"
    lines = [
        f"S-Motion test split ({len(rows)} sequences), moments every {STRIDE} spike frames "
        f"with SCI's whole reach t-{reach_before}..t+{reach_after} inside the stream; uncompressed "
        f"features. Model `{args.model}` ({parameter_count(sci):,} parameters), plain CNNs "
        + (", ".join(f"`{name}` ({parameter_count(cnn):,} parameters)" for name, cnn in cnns.items())
           or "skipped") + ". Regenerate: "
        f"`python benchmarks/bench_reconstruction.py --write-docs` "
        f"({time.perf_counter() - started:.0f} s, {args.threads} thread{'s' if args.threads != 1 else ''}, {platform.machine()}, "
        f"torch {torch.__version__}).",
        "",
        header,
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: |",
    ]
    for key in SPEED_BINS + ("all",):
        if key not in scores:
            continue
        cells, frames = [], len(scores[key][names[0]])
        for name in names:
            values = np.array(scores[key][name])
            cells.append(f"{values[:, 0].mean():.2f} / {values[:, 1].mean():.3f}")
        gain = np.array(scores[key]["SCI"])[:, 0].mean() - np.array(scores[key]["TFP41"])[:, 0].mean()
        lines.append(f"| {key} | {frames} | " + " | ".join(cells) + f" | {gain:+.2f} dB |")
    lines += ["", "Per sequence (PSNR dB / SSIM):", "",
              "| sequence | photo | bin | px/frame | " + " | ".join(names) + " |",
              "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for row in rows:
        lines.append(f"| {row['sequence']} | {row['photo']} | {row['bin']} | {row['speed']:.3f} | "
                     + " | ".join(f"{row[n][0]:.2f} / {row[n][1]:.3f}" for n in names) + " |")
    total_frames = len(scores["all"][names[0]])
    lines += ["", "Seconds per frame in this run (CPU): " + ", ".join(
        f"{n} {seconds[n] / max(total_frames, 1):.3f}" for n in names) + ".",
        "", f"FEM: `{sci_spec.base}`. Ablations and the Laplacian norms of F (paper Table II) are "
        "in the next section, read from the training logs."]
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        replace_section(ROOT / "docs" / "BENCHMARKS.md", "reconstruction",
                        "## Reconstruction from uncompressed features (S-Motion test)\n\n" + table)


if __name__ == "__main__":
    main()
