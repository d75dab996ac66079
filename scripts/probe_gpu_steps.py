"""Where a training step's time goes on a machine about to train (run it before a timed plan).

    python scripts/probe_gpu_steps.py OUT --workers 15 --steps 60

Prints JSON: seconds to fill the clip pool, seconds per step of clip generation alone (pool
refresh 3), seconds for the frozen FEM's features of a stage-(b) batch (3 moments x 32 clips),
and seconds per step of stages a and b (pool refresh 1, ``--steps`` steps each, timed over the
second half). Batch 32 of 96x96 crops, as ``scripts/plan_gpu_2026-12-04.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from spikecodec.training import TrainConfig, _features_at, build_training_model, train, training_batches
from train_on_budget import seconds_per_step  # scripts/, this script's folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--workers", type=int, default=15)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    common = {"batch_size": 32, "crop": 96, "warmup_steps": 100, "steps_per_epoch": 10 ** 5, "val_samples": 1,
              "val_crop": 32, "pool_size": 96, "pool_refresh": 3, "data_workers": args.workers, "threads": 1,
              "log_every": 1}
    result = {}
    batches = training_batches(TrainConfig.from_dict({"stage": "a", **common}))
    began = time.time()
    next(batches)
    result["pool_fill_s"] = time.time() - began
    began = time.time()
    for _ in range(30):
        next(batches)
    result["data_only_s_per_step"] = (time.time() - began) / 30
    batches.close()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    fem = build_training_model(TrainConfig.from_dict({"stage": "a", **common}), device).fem.eval()
    spikes = torch.randint(0, 2, (32, 106, 96, 96), device=device).float()
    with torch.no_grad():
        _features_at(fem, spikes, 59, (-20, 0, 20))
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.time()
        for _ in range(5):
            _features_at(fem, spikes, 59, (-20, 0, 20))
        if device.type == "cuda":
            torch.cuda.synchronize()
    result["stage_b_fem_features_s"] = (time.time() - began) / 5

    for stage in ("a", "b"):
        extra = {"fem_weights": f"{args.out}/a"} if stage == "b" else {}
        config = TrainConfig.from_dict({"stage": stage, **common, "pool_refresh": 1, "steps": args.steps, **extra})
        train(config, f"{args.out}/{stage}", progress=False)
        result[f"stage_{stage}_s_per_step"] = seconds_per_step(Path(args.out) / stage / "train_log.jsonl")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
