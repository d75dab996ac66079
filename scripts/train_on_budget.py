"""Run chains of training stages side by side, each stage stopping at a wall-clock deadline.

Made for a borrowed GPU machine with a fixed lease: every chain (e.g. stage a then stage b of one
FEM variant, or the plain CNN) runs in its own process, and each stage is sized to end by its
deadline. A stage first runs ``probe_steps`` steps (inside its warm-up, so the learning-rate
schedule does not depend on the total yet), measures its time per step and per validation, then
resumes with ``steps`` set to what fits before the deadline (``--resume`` allows ``steps`` to
change). The run is then the same as one started with that ``steps``.

    python scripts/train_on_budget.py plan.json --out runs/gpu

``plan.json``: ``{"probe_steps": 40, "chains": {"NAME": [{"deadline_s": 180, "config": {...}},
...]}}``; deadlines count from the start of this script; a config is a ``TrainConfig`` dict in
which ``"{out}"`` stands for the chain's output folder (so stage b can name stage a's result).
Each stage writes to ``OUT/NAME/<stage>``; each chain's output goes to ``OUT/NAME.log``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# what exporting the weights and the last validation take, beside the measured steps
END_MARGIN_S = 8.0
SAFETY = 0.92
# a chain failing this early is a setup error: the others are stopped too
EARLY_FAILURE_S = 150.0


def seconds_per_step(log_path: Path) -> float:
    """Seconds per training step in a run's log (``log_every`` 1), timed over its second half:
    the first steps also fill the clip pool and tune kernels."""
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [e for e in entries if e["event"] == "train"]
    last = train[-1]
    first = next(e for e in train if e["step"] >= last["step"] // 2)
    return (last["elapsed_s"] - first["elapsed_s"]) / max(1, last["step"] - first["step"])


def run_stage(config_data: dict, out_dir: Path, deadline: float, probe_steps: int) -> dict:
    from spikecodec.training import TrainConfig, train

    probe = TrainConfig.from_dict({**config_data, "steps": 10 ** 6, "log_every": 1})
    if probe.warmup_steps < probe_steps:
        raise ValueError("warmup_steps must cover the probe, or the schedule would depend on the total")
    began = time.time()
    train(probe, out_dir, until=probe_steps, progress=False)
    state = json.loads((out_dir / "checkpoint.json").read_text())
    per_step = seconds_per_step(out_dir / "train_log.jsonl")
    # the probe's checkpoint is written after its one validation
    last_logged = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()
                   if '"train"' in line][-1]
    per_validation = max(0.0, float(state["elapsed_s"]) - last_logged["elapsed_s"])
    left = deadline - time.time() - END_MARGIN_S - per_validation
    per_step_all = per_step + per_validation / probe.steps_per_epoch
    steps = probe_steps + max(0, int(SAFETY * left / per_step_all))
    summary = {"probe_s": round(time.time() - began, 1), "s_per_step": round(per_step, 4),
               "s_per_validation": round(per_validation, 2), "steps": steps}
    print(json.dumps({"stage": config_data.get("stage"), "out": str(out_dir), **summary}), flush=True)
    result = train(TrainConfig.from_dict({**config_data, "steps": steps}), out_dir, resume=True, progress=False)
    summary["last_validation_psnr"] = (result.last_validation or {}).get("psnr")
    summary["wall_s"] = round(time.time() - began, 1)
    return summary


def run_chain(plan: dict, name: str, out: Path, start: float) -> None:
    import torch

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    summaries = []
    for stage in plan["chains"][name]:
        config = json.loads(json.dumps(stage["config"]).replace("{out}", str(out / name)))
        deadline = start + float(stage["deadline_s"])
        if deadline - time.time() < 30:
            print(json.dumps({"skipped": config["stage"], "reason": "past its deadline"}), flush=True)
            break
        summaries.append(run_stage(config, out / name / config["stage"], deadline, int(plan.get("probe_steps", 40))))
        print(json.dumps({"chain": name, "done": config["stage"], **summaries[-1]}), flush=True)
    (out / name / "summary.json").write_text(json.dumps(summaries, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--chain", help=argparse.SUPPRESS)  # internal: run one chain in this process
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    plan = json.loads(args.plan.read_text())
    if args.chain:
        run_chain(plan, args.chain, args.out, args.start)
        return 0
    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    children = {}
    for name in plan["chains"]:
        (args.out / name).mkdir(exist_ok=True)
        log = open(args.out / f"{name}.log", "w")
        children[name] = subprocess.Popen(
            [sys.executable, __file__, str(args.plan), "--out", str(args.out), "--chain", name, "--start", str(start)],
            stdout=log, stderr=subprocess.STDOUT)
    failed = []
    running = dict(children)
    while running:
        time.sleep(1.0)
        for name, child in list(running.items()):
            if child.poll() is None:
                continue
            del running[name]
            print(f"{name}: exit {child.returncode} after {time.time() - start:.0f} s", flush=True)
            if child.returncode != 0:
                failed.append(name)
                if time.time() - start < EARLY_FAILURE_S:  # a setup error: stop everything, fix, rerun
                    for other in running.values():
                        other.kill()
    for name in failed:
        print(f"--- {name}.log (end) ---\n" + (args.out / f"{name}.log").read_text()[-3000:], flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
