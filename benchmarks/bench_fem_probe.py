"""What the FEM's features still hold: linear read-outs of intensity on the S-Motion test split.

    python benchmarks/bench_fem_probe.py [--data data/smotion_test.h5] [--fem sci-small-v1 ...] [--write-docs]

For every speed bin, one linear map (with a bias) from what a pixel sees to its ground-truth
intensity is fitted by least squares on the even moments of the bin's sequences and scored (PSNR)
on the odd ones, at the moments of the reconstruction benchmark (every 20 spike frames). The
inputs compared, each read out with the same linear map at every pixel:

* the FEM's features at the pixel (C values), and with its 3x3 neighbourhood (9C values);
* the spike counts of its binary temporal sub-filters, before attention and the PFUs fuse them;
* the raw spike frames of the FEM's own window (t-39..t+6 for the default fields, one weight per frame): the
  intensity information the FEM had to work with;
* the TFP41 mean (one weight and a bias).

A read-out of the features far below that of the raw frames means the FEM discarded what the
reconstruction needs; the trained reconstruction (nonlinear, with alignment) is in the
reconstruction section. ``--pixels`` random pixels of each moment are used (the read-outs have at
most 9C + 1 parameters, so the fit does not overfit them).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from docs_sections import replace_section  # noqa: E402

from data_tools.smotion import load_smotion  # noqa: E402
from spikecodec.metrics import psnr  # noqa: E402
from spikecodec.models.fem import FEM, FEMConfig, extract_features  # noqa: E402
from spikecodec.training import _load_fem  # noqa: E402

BINS = ("slow", "medium", "fast")
STRIDE = 20
TFP_HALF = 20


def _neighbourhood(features: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (9C, H, W): each channel at the 3x3 offsets (edges wrap; 1 pixel of 400)."""
    return np.concatenate([np.roll(features, (dy, dx), axis=(1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def collect(data: Path, fem, pixels: int) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per speed bin, one dict per moment: the read-out inputs (pixels, features) and the truth."""
    before, after = fem.window_before, fem.window_after
    out: dict[str, list[dict[str, np.ndarray]]] = {b: [] for b in BINS}
    for spikes, gt, meta in load_smotion(data):
        first = max(before, TFP_HALF) + STRIDE  # the reconstruction benchmark's first moment
        moments = np.arange(first, spikes.shape[0] - max(after, TFP_HALF) - STRIDE, STRIDE)
        with torch.no_grad():
            features = extract_features(fem, spikes, moments).numpy()
        for k, t in enumerate(moments):
            window = spikes[t - before:t + after + 1].astype(np.float32)
            with torch.no_grad():  # the binary sub-filters' spike counts, before attention and the PFUs
                counts = torch.cat([bank.counts(torch.from_numpy(window)[None], batched=True)
                                    for bank in fem.filter_banks()], dim=1)[0].numpy()
            chosen = np.random.default_rng([int(meta["index"]), int(t)]).choice(gt[t].size, pixels, replace=False)
            flat = lambda array: array.reshape(array.shape[0], -1)[:, chosen].T  # noqa: E731
            out[meta["speed_bin"]].append({
                "half": np.array(k % 2),
                "features": flat(features[k]),
                "features 3x3": flat(_neighbourhood(features[k])),
                "filter counts": flat(counts),
                "raw frames": flat(window),
                "TFP41": flat(spikes[t - TFP_HALF:t + TFP_HALF + 1].mean(axis=0, dtype=np.float32)[None]),
                "truth": gt[t].reshape(-1)[chosen],
            })
    return out


def readout_psnr(moments: list[dict[str, np.ndarray]], key: str) -> float:
    fit = [m for m in moments if m["half"] == 0]
    score = [m for m in moments if m["half"] == 1]
    design = lambda m: np.hstack([m[key], np.ones((len(m[key]), 1), np.float32)]).astype(np.float64)  # noqa: E731
    x = np.vstack([design(m) for m in fit])
    y = np.concatenate([m["truth"] for m in fit]).astype(np.float64)
    weights = np.linalg.solve(x.T @ x + 1e-3 * np.eye(x.shape[1]), x.T @ y)
    predicted = np.stack([np.clip(design(m) @ weights, 0.0, 1.0) for m in score])
    return psnr(np.stack([m["truth"] for m in score]), predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "smotion_test.h5")
    parser.add_argument("--fem", action="append", help="registry id, stage-(a) output, or 'untrained' (the "
                        "default config's initial weights, seed 0); repeatable; default: sci-small-v1, sci-small-v2, sci-small-v3 and untrained")
    parser.add_argument("--pixels", type=int, default=20000)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    began = time.time()
    lines = ["| FEM | speed bin | moments scored | features | features 3x3 | sub-filter counts | "
             "raw frames of its window | TFP41 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for source in args.fem or ["sci-small-v1", "sci-small-v2", "sci-small-v3", "untrained"]:
        if source == "untrained":
            torch.manual_seed(0)
            fem = FEM(FEMConfig()).eval()
        else:
            fem = _load_fem(source, torch.device("cpu")).eval()
        moments = collect(args.data, fem, args.pixels)
        for speed_bin in BINS:
            cells = [f"{readout_psnr(moments[speed_bin], key):.2f}"
                     for key in ("features", "features 3x3", "filter counts", "raw frames", "TFP41")]
            scored = sum(int(m["half"]) for m in moments[speed_bin])
            lines.append(f"| {source} ({fem.config.channels} channels) | {speed_bin} | {scored} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    if args.write_docs:
        header = (
            "## What the FEM's features hold (linear read-outs, S-Motion test)\n\n"
            "PSNR (dB) of one linear map per speed bin from what a pixel sees to its intensity, fitted on "
            "the even moments (every 20 spike frames) of the bin's sequences and scored on the odd ones, "
            f"{args.pixels:,} random pixels a moment (`python benchmarks/bench_fem_probe.py --write-docs`, "
            f"{time.time() - began:.0f} s, {platform.machine()}, torch {torch.__version__}). "
            "The raw frames are each FEM's own window (t-39..t+6; sci-small-v3, whose ventral fields reach "
            "41 frames: t-39..t+20), one weight per frame: what the FEM had to work with.\n\n")
        replace_section(ROOT / "docs" / "BENCHMARKS.md", "fem-probe", header + table)


if __name__ == "__main__":
    main()
