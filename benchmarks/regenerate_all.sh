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
python benchmarks/bench_fem_probe.py --write-docs
python benchmarks/bench_ablations.py --write-docs
# the codec: one eval run gives the RD table and BD-rates; the others measure bits, speed, memory
spikecodec eval data/smotion_test.h5 -o runs/eval --jobs 2 --force --no-progress || test $? -eq 3
python benchmarks/bench_codec.py rd --results runs/eval/results.json --write-docs
spikecodec bdrate runs/eval --anchor ours-raw+x265 > runs/eval/bdrate_ours-raw+x265.md
cp runs/eval/rd.png docs/rd_smotion.png
# after a codec change alone, instead of the eval above (keeps the committed anchor rows):
#   mkdir -p runs/eval && cp docs/eval_smotion/results.json runs/eval/ &&
#   spikecodec eval data/smotion_test.h5 -o runs/eval --update --methods ours --codec-model ID --jobs 2
mkdir -p docs/eval_smotion && cp runs/eval/results.json runs/eval/results.csv runs/eval/bdrate_ours-raw+x265.md docs/eval_smotion/
python benchmarks/bench_codec.py bits --write-docs
python benchmarks/bench_codec.py speed --write-docs
python benchmarks/bench_codec.py memory --write-docs
test -f data/smnist_train.h5 || python -m data_tools smnist --split train -o data/smnist_train.h5
test -f data/smnist_train_seed1.h5 || python -m data_tools smnist --split train --seed 1 -o data/smnist_train_seed1.h5
# the TFP41 reference head, as trained for docs/TRAINING.md (moments 79 / 99 / 119, stride 20)
spikecodec train-classifier --reference --codec sci-small-v1 --raw-share 1 --steps 3000 \
    --centres 79,99,119 --strides 20 --decoded-motion \
    --data data/smnist_train.h5,data/smnist_train_seed1.h5 --out runs/cls_ref2 --threads 1
python benchmarks/bench_classify.py --reference runs/cls_ref2/reference.safetensors --jobs 2 --write-docs
