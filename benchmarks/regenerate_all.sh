#!/usr/bin/env bash
# Regenerate every table of docs/BENCHMARKS.md from scratch (data is rebuilt when missing).
# Run from the repository root inside the project's virtual environment with the data extra:
#   pip install -e '.[data]' && bash benchmarks/regenerate_all.sh
# Each script records the machine and versions it ran on in its own section. Tables that come from
# training (smoothness norms, ablations) are read from the logs committed beside the weights.
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/bench_io.py --write-docs
python benchmarks/bench_baselines.py --write-docs
python benchmarks/bench_fem.py --afr --write-docs
python benchmarks/bench_reconstruction.py --write-docs
python benchmarks/bench_ablations.py --write-docs
