"""Baseline quality (TFP, TFI) and lossless sizes of the S-Motion test split.

    python benchmarks/bench_baselines.py [--data data/smotion_test.h5] [--write-docs]

Builds the test split with data_tools if the file is missing (seed 0), then reports:
- TFP (41-frame window) and TFI PSNR / SSIM at every moment of stride 20 whose 41-frame window
  fits the stream, against the ground truth at that spike index: mean, per sequence, per speed bin;
- lossless sizes of the raw test spikes in bpp: raw .dat, zstd -19, xz -9 and JBIG (jbigkit's
  pbmtojbg on each sequence's frames stacked into one tall bi-level image; installed with
  `apt-get install jbigkit-bin` when missing and root).
With --write-docs the tables replace the `baselines` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from docs_sections import replace_section  # noqa: E402

from spikecodec.anchors import find_jbig_tools, lossless_bits  # noqa: E402
from spikecodec.baselines import tfi, tfp  # noqa: E402
from spikecodec.metrics import psnr_per_frame, ssim_per_frame  # noqa: E402
from spikecodec.moments import moments_for  # noqa: E402

STRIDE = 20
TFP_WINDOW = 41
SPEED_BINS = ("slow", "medium", "fast")


def ensure_test_split(path: Path, seed: int) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"building the S-Motion test split into {path} (seed {seed}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "data_tools", "smotion", "--split", "test", "-o",
                    str(path), "--seed", str(seed)], check=True, cwd=ROOT)


def jbig_tool() -> str | None:
    """pbmtojbg, installing Debian's jbigkit-bin first when missing and allowed (root)."""
    if find_jbig_tools() is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "jbigkit-bin"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tools = find_jbig_tools()
    return None if tools is None else tools[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "smotion_test.h5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    from data_tools.smotion import load_smotion

    ensure_test_split(args.data, args.seed)
    tool = jbig_tool()
    rows, per_bin = [], defaultdict(lambda: defaultdict(list))
    lossless_total, pixels_total = defaultdict(int), 0
    started = time.perf_counter()
    for spikes, gt, meta in load_smotion(args.data):
        moments = moments_for(spikes.shape[0], STRIDE, before=TFP_WINDOW // 2,
                              after=(TFP_WINDOW - 1) // 2)
        truth = gt[moments]
        row = {"sequence": meta.get("name", str(len(rows))), "photo": meta["photo"],
               "speed_bin": meta["speed_bin"], "speed": float(meta["mean_speed"]),
               "frames": int(moments.size)}
        for method, images in (("TFP41", tfp(spikes, moments, window=TFP_WINDOW)),
                               ("TFI", tfi(spikes, moments))):
            p, s = psnr_per_frame(truth, images), ssim_per_frame(truth, images)
            row[f"{method} PSNR"], row[f"{method} SSIM"] = float(p.mean()), float(s.mean())
            per_bin[meta["speed_bin"]][f"{method} PSNR"].extend(p)
            per_bin[meta["speed_bin"]][f"{method} SSIM"].extend(s)
            per_bin["all"][f"{method} PSNR"].extend(p)
            per_bin["all"][f"{method} SSIM"].extend(s)
        for name, bits in lossless_bits(spikes, tool).items():
            lossless_total[name] += bits
        pixels_total += spikes.size
        rows.append(row)
        print(f"{row['sequence']}: TFP41 {row['TFP41 PSNR']:.2f} dB, TFI {row['TFI PSNR']:.2f} dB",
              flush=True)

    lines = [
        f"S-Motion test split (`{args.data.name}`, seed {args.seed}, {len(rows)} sequences of "
        f"301 spike frames at 250x400), moments every {STRIDE} spike frames whose 41-frame window "
        "fits, ground truth at each moment's spike index. PSNR/SSIM per frame, averaged over "
        f"frames. Regenerate: `python benchmarks/bench_baselines.py --write-docs` "
        f"({time.perf_counter() - started:.0f} s on {platform.machine()}, "
        f"{platform.python_version()}).",
        "",
        "| speed bin | frames | TFP41 PSNR | TFP41 SSIM | TFI PSNR | TFI SSIM |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in SPEED_BINS + ("all",):
        values = per_bin.get(name)
        if not values:
            continue
        lines.append(
            f"| {name} | {len(values['TFP41 PSNR'])} | {np.mean(values['TFP41 PSNR']):.2f} | "
            f"{np.mean(values['TFP41 SSIM']):.3f} | {np.mean(values['TFI PSNR']):.2f} | "
            f"{np.mean(values['TFI SSIM']):.3f} |"
        )
    lines += ["", "Per sequence:", "",
              "| sequence | photo | speed bin | px/frame | TFP41 PSNR | TFP41 SSIM | TFI PSNR | TFI SSIM |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(
            f"| {row['sequence']} | {row['photo']} | {row['speed_bin']} | {row['speed']:.3f} | "
            f"{row['TFP41 PSNR']:.2f} | {row['TFP41 SSIM']:.3f} | {row['TFI PSNR']:.2f} | "
            f"{row['TFI SSIM']:.3f} |"
        )
    lines += ["", "Lossless coding of the same test spikes (all sequences together):", "",
              "| coder | bpp | ratio to raw |", "| --- | ---: | ---: |"]
    raw = lossless_total["raw .dat"]
    for name, bits in lossless_total.items():
        lines.append(f"| {name} | {bits / pixels_total:.4f} | {raw / bits:.2f}x |")
    if tool is None:
        lines.append("| JBIG | not measured: pbmtojbg (Debian jbigkit-bin) is not installed | |")
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        replace_section(ROOT / "docs" / "BENCHMARKS.md", "baselines",
                        "## Baselines and lossless coding (S-Motion test)\n\n" + table)


if __name__ == "__main__":
    main()
