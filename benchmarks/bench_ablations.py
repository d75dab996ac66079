"""Ablations and smoothness norms, read from the training logs committed beside the weights.

    python benchmarks/bench_ablations.py [--write-docs]

Nothing is retrained: each row is the last validation entry (val photographs, fixed clips, the
same for every run) of a committed JSON-lines log under spikecodec/models/weights/. The runs and
their commands are listed in docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from docs_sections import replace_section  # noqa: E402

from spikecodec.models.registry import WEIGHTS_DIR  # noqa: E402

BINS = ("slow", "medium", "fast")

STAGE_A = [  # (log, label): FEM + proxy head, 500-step runs of equal settings
    ("ablation-dual-a.log.jsonl", "dual pathway with PFU, smoothness penalty 0.01"),
    ("ablation-ventral-a.log.jsonl", "ventral pathway only, smoothness penalty 0.01"),
    ("ablation-nosmooth-a.log.jsonl", "dual pathway with PFU, no smoothness penalty"),
    ("sci-small-v1.log.jsonl", "`sci-small-v1`, the codecs' FEM (3,250 steps, penalty 0.01)"),
]
STAGE_B = [  # AFR variants on sci-small-v1, 300-step runs of equal settings
    ("ablation-warp-b.log.jsonl", "warping only"),
    ("ablation-deform-b.log.jsonl", "deformable convolution only"),
    ("ablation-full-b.log.jsonl", "AFR: warping then deformable convolution"),
    ("sci-small-v1-recon.log.jsonl", "`sci-small-v1-recon` (2,500 steps)"),
]


def last_validation(name: str) -> tuple[dict | None, int | None]:
    path = WEIGHTS_DIR / name
    if not path.exists():
        return None, None
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    validation = [e for e in entries if e.get("event") == "val"]
    return (validation[-1], validation[-1]["step"]) if validation else (None, None)


def psnr_cells(entry: dict) -> str:
    by_speed = entry["psnr_by_speed"]
    return " | ".join(f"{by_speed.get(b, float('nan')):.2f}" for b in BINS) + f" | {entry['psnr']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    lines = [
        "Validation PSNR (dB) on fixed clips of the val photographs, last validation of each "
        "committed log (`python benchmarks/bench_ablations.py --write-docs`; commands in "
        "docs/TRAINING.md). Short retrains: equal steps within a table, so rows compare with "
        "each other, not with the full-length rows. All runs use the `sci-small-v1` "
        "architecture (ventral fields 7-13, plain MSE). The analysis path's `sci-small-v3` adds "
        "a skip of the sub-filter counts into F and longer ventral fields and was trained on "
        "log-MSE (docs/TRAINING.md); the choices ablated here (pathways, smoothness penalty, "
        "alignment) are the same in it.", "",
        "Stage (a), FEM + light proxy head:", "",
        "| FEM | steps | slow | medium | fast | all | TFP41 on the same clips | "
        "Laplacian L1 | L2 | L2 / spread of F |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, label in STAGE_A:
        entry, step = last_validation(name)
        if entry is None:
            lines.append(f"| {label} | not run ({name} missing) | | | | | | | | |")
            continue
        norms = entry.get("laplacian", {})
        lines.append(
            f"| {label} | {step} | {psnr_cells(entry)} | {entry['tfp41_psnr']:.2f} | "
            f"{norms.get('l1', float('nan')):.4f} | {norms.get('l2', float('nan')):.5f} | "
            f"{norms.get('l2_relative', float('nan')):.3f} |")
    lines += ["", "Stage (b), FEM frozen, alignment + reconstruction head:", "",
              "| alignment | steps | slow | medium | fast | all | TFP41 on the same clips |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, label in STAGE_B:
        entry, step = last_validation(name)
        if entry is None:
            lines.append(f"| {label} | not run ({name} missing) | | | | | |")
            continue
        lines.append(f"| {label} | {step} | {psnr_cells(entry)} | {entry['tfp41_psnr']:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        replace_section(ROOT / "docs" / "BENCHMARKS.md", "ablations",
                        "## Ablations and feature smoothness (from training logs)\n\n" + table)


if __name__ == "__main__":
    main()
