"""Whole-stream rate-distortion of candidate codec weights against a registered codec.

    python benchmarks/codec_compare.py data/smotion_val.h5 --candidate runs/inter2/codec-tz.safetensors
        [--base sci-codec-v5] [--candidate ...] [--limit N] [--jobs 2] [-o OUT.json]

Every item of the input (as ``spikecodec eval`` reads it) is coded at every quality by ``encode``'s
path and decoded, exactly as ``spikecodec eval --methods ours`` scores the base codec; each
candidate (a stage output or a .safetensors of the base's architecture) codes and decodes in the
base's place, so training outputs are judged on whole streams before one is registered. Printed:
per quality, the means of bpp / PSNR / SSIM over the items for every model, then BD-rate and
BD-PSNR of each candidate against the base (per item and mean, ``spikecodec bdrate``'s rules).
``-o`` keeps the rows (method = the model's label) for later reading.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _item_rows(item, base: str, candidates: list[str], threads: int) -> list[dict]:
    from spikecodec.evaluation import EvalOptions, evaluate_item

    rows = []  # options.threads sets torch's threads for each encode and decode
    for label, weights in [(base, None)] + [(path, path) for path in candidates]:
        options = EvalOptions(reconstructions=(), codecs=(), lossless=False, ours=True, codec_model=base,
                              codec_weights=weights, threads=threads)
        for row in evaluate_item(item, options).rows:
            if row.get("error"):
                raise RuntimeError(f"{item.name} ({label}): {row['error']}")
            rows.append({**row, "method": label})
    return rows


def main() -> None:
    from spikecodec import DEFAULT_CODEC_MODEL
    from spikecodec.evaluation import InputFailure, bd_report, iter_items

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", help="S-Motion .h5 files or manifests, as spikecodec eval takes")
    parser.add_argument("--base", default=DEFAULT_CODEC_MODEL, help="registered codec id")
    parser.add_argument("--candidate", action="append", required=True,
                        help="codec weights (stage output directory or .safetensors); repeatable")
    parser.add_argument("--limit", type=int, help="at most this many items per input file")
    parser.add_argument("--jobs", type=int, default=1, help="items coded in this many processes")
    parser.add_argument("-o", "--out", help="write the rows to this JSON file")
    args = parser.parse_args()
    for path in args.candidate:
        if not Path(path).exists():
            parser.error(f"no candidate weights at {path}")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)

    items = []
    for item in iter_items(args.data, args.limit):
        if isinstance(item, InputFailure):
            sys.exit(f"{item.name}: {item.error}")
        items.append(item)
    if args.jobs == 1:
        per_item = [_item_rows(item, args.base, args.candidate, threads) for item in items]
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # torch threads and fork do not mix
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            per_item = list(pool.map(_item_rows, items, [args.base] * len(items),
                                     [args.candidate] * len(items), [threads] * len(items)))
    rows = [row for item_rows in per_item for row in item_rows]
    if args.out:
        Path(args.out).write_text(json.dumps({"base": args.base, "candidates": args.candidate,
                                              "data": args.data, "rows": rows}, indent=1) + "\n")

    labels = [args.base] + args.candidate
    print(f"{len(items)} items; means over them")
    print("| quality | " + " | ".join(f"{label}: bpp / PSNR / SSIM" for label in labels) + " |")
    print("| ---: |" + " --- |" * len(labels))
    for setting in sorted({row["setting"] for row in rows}):
        cells = []
        for label in labels:
            chosen = [row for row in rows if row["method"] == label and row["setting"] == setting]
            means = [sum(row[key] for row in chosen) / len(chosen) for key in ("bpp", "psnr", "ssim")]
            cells.append(f"{means[0]:.5f} / {means[1]:.2f} / {means[2]:.3f}")
        print(f"| {setting.split('=')[-1]} | " + " | ".join(cells) + " |")
    print()
    print(bd_report(rows, args.base).markdown())


if __name__ == "__main__":
    main()
