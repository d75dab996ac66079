"""S-MNIST classification from the bitstream: accuracy against rate, per-class report.

    python benchmarks/bench_classify.py [--data data/smnist_test.h5] [--reference runs/cls_ref/reference.safetensors]
                                        [--strides 20,40] [--limit N] [--jobs 2] [--write-docs]

On the S-MNIST test split (the 1,000 clips with i % 500 >= 400): the shipped classifier on
uncompressed features (1 bpp: the raw spikes are what it reads), then through real ``.sci`` streams
at every quality of its codec (bpp of the whole file per clip, averaged), and the reference head on
TFP41 frames of the raw spikes. All of it once per encoder stride: the default 20 (8 moments a clip,
a 1,000 fps video) and 40 (4 moments: a stream made for classification, half the frames to pay
for). Per-class precision, recall and F1 at the lowest quality of each stride.
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
from spikecodec.models.classifier import TEST_VIEWS  # noqa: E402
from spikecodec.models.registry import get_spec  # noqa: E402


def ensure_test(path: Path) -> None:
    if not path.exists():
        from data_tools.smnist import write_smnist

        path.parent.mkdir(parents=True, exist_ok=True)
        write_smnist(path, "test")


def markdown(reports: list[dict], command: str) -> str:
    first = reports[0]
    views = (f" The head averages its log-probabilities over {len(TEST_VIEWS)} warped views of each moment "
             "(small rotations, scalings and shifts; the registry's `test_views`)."
             if get_spec(first["classifier"]).test_views else "")
    lines = ["## Classification from the bitstream (S-MNIST test)", "",
             f"`{command}`. Classifier `{first['classifier']}` on the streams of `{first['codec']}` "
             f"(GOP {first['gop']}), S-MNIST test ({first['clips']} clips, 64x64, 200 spike frames each). "
             "The label aggregates every coded moment of the clip; bpp is the whole `.sci` file over the clip's spike pixels. The drop is against the "
             f"uncompressed features at the same moments.{views}", "",
             "| stride (median moments a clip) | input | bpp | accuracy | drop vs uncompressed (points) |",
             "| --- | --- | --- | --- | --- |"]
    for report in reports:
        rows = report["rows"]
        raw = rows["raw"]["accuracy"]
        moments = f"{report['moments_median']:g}"
        for name, row in rows.items():
            label = {"raw": "uncompressed features (raw spikes)",
                     "tfp41": "reference: same head on TFP41 frames"}.get(name, f"ours, {name}")
            bpp = f"{row['bpp']:.5f}" if row["bpp"] is not None else "-"
            lines.append(f"| {report['stride']} ({moments}) | {label} | {bpp} | {100 * row['accuracy']:.2f}% "
                         f"| {100 * (raw - row['accuracy']):+.2f} |")
    for report in reports:
        rows = report["rows"]
        qualities = sorted(k for k in rows if k.startswith("quality="))
        if not qualities:
            continue
        lowest = qualities[0]
        lines += ["", f"Per class at the lowest quality, stride {report['stride']} ({lowest}, "
                      f"{rows[lowest]['bpp']:.5f} bpp):", "",
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
    parser.add_argument("--strides", default="20,40", help="encoder strides to evaluate, comma-separated")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="processes sharing the clips (one torch thread each)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    ensure_test(args.data)
    reports = [evaluate_classifier(args.model, args.data, limit=args.limit, reference=args.reference,
                                   stride=int(stride), jobs=args.jobs) for stride in args.strides.split(",")]
    out = ROOT / "runs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "classify.json").write_text(json.dumps(reports, indent=1))
    text = markdown(reports, " ".join(["python benchmarks/bench_classify.py", *sys.argv[1:]]))
    print(text)
    if args.write_docs:
        replace_section(ROOT / "docs" / "BENCHMARKS.md", "classify", text)


if __name__ == "__main__":
    main()
