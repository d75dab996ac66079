"""S-MNIST classification from the bitstream: accuracy against rate, per-class report.

    python benchmarks/bench_classify.py [--data data/smnist_test.h5] [--reference runs/cls_ref/reference.safetensors]
                                        [--limit N] [--jobs 2] [--write-docs]

On the S-MNIST test split (the 1,000 clips with i % 500 >= 400): the shipped classifier on
uncompressed features (1 bpp: the raw spikes are what it reads), then through real ``.sci`` streams
at every quality of its codec (bpp of the whole file per clip, averaged), and the reference head on
TFP41 frames of the raw spikes. Per-class precision, recall and F1 at the lowest quality.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from docs_sections import replace_section  # noqa: E402

from spikecodec.classification import DEFAULT_CLASSIFIER, evaluate_classifier  # noqa: E402


def ensure_test(path: Path) -> None:
    if not path.exists():
        from data_tools.smnist import write_smnist

        path.parent.mkdir(parents=True, exist_ok=True)
        write_smnist(path, "test")


def markdown(report: dict) -> str:
    rows = report["rows"]
    raw = rows["raw"]["accuracy"]
    lines = ["## Classification from the bitstream (S-MNIST test)", "",
             f"Classifier `{report['classifier']}` on the streams of `{report['codec']}`, S-MNIST test "
             f"({report['clips']} clips, 64x64, 200 spike frames each). The label aggregates every coded moment "
             "of the clip; bpp is the whole `.sci` file over the clip's spike pixels.", "",
             "| input | bpp | accuracy | drop vs uncompressed (points) |", "| --- | --- | --- | --- |"]
    for name, row in rows.items():
        label = {"raw": "uncompressed features (raw spikes)", "tfp41": "reference: same head on TFP41 frames"}.get(
            name, f"ours, {name}")
        bpp = f"{row['bpp']:.5f}" if row["bpp"] is not None else "-"
        lines.append(f"| {label} | {bpp} | {100 * row['accuracy']:.2f}% | {100 * (raw - row['accuracy']):+.2f} |")
    qualities = sorted(k for k in rows if k.startswith("quality="))
    if qualities:
        lowest = qualities[0]
        lines += ["", f"Per class at the lowest quality ({lowest}, {rows[lowest]['bpp']:.5f} bpp):", "",
                  "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
        for entry in rows[lowest]["per_class"]:
            lines.append(f"| {entry['class']} | {entry['precision']:.3f} | {entry['recall']:.3f} | {entry['f1']:.3f} "
                         f"| {entry['support']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "smnist_test.h5")
    parser.add_argument("--model", default=DEFAULT_CLASSIFIER)
    parser.add_argument("--reference", default=None, help="reference.safetensors of the TFP41 head")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="processes sharing the clips (one torch thread each)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    ensure_test(args.data)
    report = evaluate_classifier(args.model, args.data, limit=args.limit, reference=args.reference,
                                 jobs=args.jobs)
    out = ROOT / "runs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "classify.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    print(text)
    if args.write_docs:
        replace_section(ROOT / "docs" / "BENCHMARKS.md", "classify", text)


if __name__ == "__main__":
    main()
