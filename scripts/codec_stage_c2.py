"""Stage (c2) on decoded streams: fine-tune the analysis (AFR + reconstruction head) of a codec on
the features its real decoder gives, the codec itself frozen.

    python scripts/codec_stage_c2.py sci-codec-v4 --analysis sci-small-v1-recon \
        --data data/smotion_train78.h5 --val-data data/smotion_val.h5 --cache-dir data/c2_cache --out runs/c2v4

Every sequence of ``--data`` (training) and ``--val-data`` (validation, other photographs) is
encoded at every quality exactly as ``spikecodec encode`` does (stride, GOP, phase of ``eval``)
and decoded back to features; those features (float16) and the ground truth at each moment are
cached once in ``--cache-dir``. The analysis ``--analysis`` names (a reconstructor of the codec's
features; no default, so that a command names its start whatever the registry later makes the
codec's analysis) is then trained on random crops of (previous, current, next) decoded features with the
image loss of stage b (``--loss``), quality drawn per sample, and scored on the validation
sequences at full frame (mean PSNR over moments) before, during and after. ``--quality-aware``
adds the AFR's per-quality modulation (``AFRConfig.qualities``) and trains it with the rest, each
sample's features modulated for the quality they were coded at, as ``decode`` does. Checkpoints every
``--checkpoint-every`` steps; a rerun with the same ``--out`` resumes. Writes
``<out>/analysis.safetensors`` (a reconstructor, registered like any trained analysis) and
``<out>/log.jsonl``. docs/TRAINING.md says why the codec stays frozen.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def build_cache(codec_id: str, data: str, cache: Path, stride: int, gop: int) -> None:
    """Encode and decode every sequence of ``data`` at every quality into ``cache`` (atomic)."""
    import h5py
    import numpy as np
    from tqdm import tqdm

    from spikecodec.codec import decoded_features, encode_reader, load_end_side
    from spikecodec.evaluation import EvalOptions, InputFailure, evaluation_moments, iter_items
    from spikecodec.io import ArrayReader
    from spikecodec.models.registry import get_spec

    end = load_end_side(codec_id)
    codec = end.codec.eval()
    options = EvalOptions(stride=stride, gop=gop, ours=True, codec_model=codec_id, reconstructions=())
    items = list(iter_items([data]))
    failed = [item for item in items if isinstance(item, InputFailure)]
    if failed or not items:
        raise SystemExit(f"codec_stage_c2: {failed[0].name}: {failed[0].error}" if failed
                         else f"codec_stage_c2: {data} holds no sequence")
    partial = cache.with_name(cache.name + ".partial")
    try:
        with h5py.File(partial, "w") as out, tempfile.TemporaryDirectory(prefix="spikecodec-c2-") as folder:
            out.attrs.update(codec=codec_id, codec_sha256=get_spec(codec_id).sha256 or "", data=str(data),
                             stride=stride, gop=gop)
            for number, item in enumerate(tqdm(items, desc="encode + decode", unit="sequence")):
                moments = evaluation_moments(item.spikes.shape[0], item.gt_index, options)
                group = out.create_group(f"seq_{number:04d}")
                group.attrs.update(name=item.name, speed_bin=item.meta.get("speed_bin", ""))
                group["moments"] = moments
                position = {int(t): k for k, t in enumerate(item.gt_index)}
                group["gt"] = np.stack([item.gt[position[int(t)]] for t in moments])
                for quality in range(codec.config.qualities):
                    path = Path(folder) / "stream.sci"
                    encode_reader(ArrayReader(item.spikes, item.name), path, quality=quality, stride=stride,
                                  phase=int(moments[0]), gop=gop, model=end, force=True)
                    group[f"q{quality}"] = np.stack([feature[0].half().numpy()
                                                     for _, feature in decoded_features(path, codec)])
    except BaseException:  # a failure or Ctrl-C leaves no partial cache behind
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, cache)


def cached(codec_id: str, data: str, cache_dir: Path, stride: int, gop: int) -> list[dict]:
    """The decoded sequences of ``data`` (cached on first use): features stay on disk (h5 datasets
    (moments, C, H, W), read a crop at a time), ground truth (moments, H, W) uint8 in memory."""
    import h5py
    import torch

    from spikecodec.models.registry import get_spec

    cache = cache_dir / f"{Path(data).stem}-{codec_id}-stride{stride}-gop{gop}.h5"
    if not cache.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        build_cache(codec_id, data, cache, stride, gop)
    source = h5py.File(cache, "r")  # open for the run: the training reads crops from it
    wanted = {"codec": codec_id, "codec_sha256": get_spec(codec_id).sha256 or "", "stride": stride, "gop": gop,
              "data": str(data)}
    found = {key: source.attrs[key] for key in wanted}
    if any(found[key] != value for key, value in wanted.items()):
        raise SystemExit(f"codec_stage_c2: {cache} was made with {found}, not {wanted}; delete it")
    sequences = []
    for name in sorted(source):
        group = source[name]
        qualities = sorted(int(key[1:]) for key in group if key.startswith("q"))
        sequences.append({"name": group.attrs["name"], "speed_bin": group.attrs["speed_bin"],
                          "gt": torch.from_numpy(group["gt"][()]),
                          "features": [group[f"q{q}"] for q in qualities]})
    return sequences


def neighbour_triple(count: int, index: int) -> tuple[int, int, int]:
    """Moments analysed with ``index``: a stream's ends stand in for their missing neighbour (as decode)."""
    return max(index - 1, 0), index, min(index + 1, count - 1)


def sample_batch(sequences: list[dict], batch_size: int, crop: int, rng) -> tuple:
    import torch

    prev, cur, nxt, gt, qualities = [], [], [], [], []
    for _ in range(batch_size):
        sequence = sequences[rng.integers(len(sequences))]
        qualities.append(int(rng.integers(len(sequence["features"]))))
        features = sequence["features"][qualities[-1]]
        count, _, height, width = features.shape
        a, b, c = neighbour_triple(count, int(rng.integers(count)))
        y, x = int(rng.integers(height - crop + 1)), int(rng.integers(width - crop + 1))
        window = (slice(y, y + crop), slice(x, x + crop))
        for index, out in ((a, prev), (b, cur), (c, nxt)):
            out.append(torch.from_numpy(features[index, :, window[0], window[1]]))
        gt.append(sequence["gt"][b][window])
    stack = lambda parts: torch.stack(parts).float()  # noqa: E731
    return stack(prev), stack(cur), stack(nxt), (stack(gt) / 255.0)[:, None], torch.tensor(qualities)


def validate(analysis, sequences: list[dict]) -> dict:
    """Mean PSNR over moments of full-frame reconstructions, per quality and per speed bin."""
    import numpy as np
    import torch

    from spikecodec.metrics import psnr_per_frame

    per_quality: dict[int, list[float]] = {}
    per_bin: dict[str, list[float]] = {}
    analysis.eval()
    with torch.no_grad():
        for sequence in sequences:
            truth = sequence["gt"].numpy().astype(np.float32) / 255.0
            for quality, features in enumerate(sequence["features"]):
                images = []
                decoded = torch.from_numpy(features[()]).float()
                for index in range(decoded.shape[0]):
                    a, b, c = neighbour_triple(decoded.shape[0], index)
                    image = analysis.analyze(decoded[a][None], decoded[b][None], decoded[c][None],
                                             quality=quality)["image"]
                    images.append(image[0, 0].clamp(0.0, 1.0).numpy())
                values = psnr_per_frame(truth, np.stack(images)).tolist()
                per_quality.setdefault(quality, []).extend(values)
                per_bin.setdefault(sequence["speed_bin"], []).extend(values)
    return {"psnr": float(np.mean([v for values in per_quality.values() for v in values])),
            "psnr_per_quality": [float(np.mean(per_quality[q])) for q in sorted(per_quality)],
            "psnr_per_speed_bin": {name: float(np.mean(values)) for name, values in sorted(per_bin.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codec", help="registry id of the (frozen) codec")
    parser.add_argument("--data", required=True, help="S-Motion .h5 to train on (a training split)")
    parser.add_argument("--val-data", required=True, help="S-Motion .h5 to validate on (other photographs)")
    parser.add_argument("--val-limit", type=int, default=None,
                        help="validate on the first N sequences of --val-data only (full-frame scoring is slow)")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/c2_cache"),
                        help="where the decoded features are cached (made if missing)")
    parser.add_argument("--out", type=Path, required=True, help="run directory (resumed if it holds a checkpoint)")
    parser.add_argument("--analysis", required=True,
                        help="reconstructor to start from, e.g. the stage-b analysis sci-small-v1-recon")
    parser.add_argument("--quality-aware", action="store_true",
                        help="add per-quality modulation to the AFR (identity at the start) and train it too")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128, help="side of the square training crops, in pixels")
    parser.add_argument("--loss", choices=("mse", "log_mse"), default="mse",
                        help="image loss (stage b's sci-small-v1-recon was trained on mse)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lr-final", type=float, default=1e-5)
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--validate-every", type=int, default=300)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stride", type=int, default=None, help="spike frames between moments (default: encode's)")
    parser.add_argument("--gop", type=int, default=None, help="moments per GOP (default: encode's)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from spikecodec import DEFAULT_GOP, DEFAULT_STRIDE
    from spikecodec.codec import CodecError, analysis_spec
    from spikecodec.models.registry import ModelNotFoundError, get_spec, load_model
    from spikecodec.models.sci import SCIConfig, SCIReconstructor
    from spikecodec.models.weights_io import load_state, load_weights, save_weights
    from spikecodec.training import atomic_write_text, image_loss, lr_schedule, save_analysis, truncate_log

    stride = DEFAULT_STRIDE if args.stride is None else args.stride
    gop = DEFAULT_GOP if args.gop is None else args.gop
    if min(stride, gop, args.steps, args.batch_size, 1 if args.val_limit is None else args.val_limit) < 1:
        raise SystemExit("codec_stage_c2: --stride, --gop, --steps, --batch-size and --val-limit must be positive")
    try:
        if get_spec(args.codec).kind != "codec":
            raise CodecError(f"{args.codec!r} is not a codec")
        start = analysis_spec(args.codec, args.analysis)
        analysis = load_model(start.model_id)
    except (ModelNotFoundError, CodecError, ValueError) as error:
        raise SystemExit(f"codec_stage_c2: {error}") from None
    if start.decoded_motion:  # this stage trains AFR on its own motion estimate
        raise SystemExit(f"codec_stage_c2: {start.model_id!r} reads the decoded motion; start from a stage-b analysis")
    analysis_id = start.model_id
    if args.quality_aware and not analysis.config.afr.qualities:
        config = analysis.config.to_dict()
        config["afr"]["qualities"] = get_spec(args.codec).config["qualities"]
        aware = SCIReconstructor(SCIConfig.from_dict(config))
        missing, unexpected = aware.load_state_dict(analysis.state_dict(), strict=False)
        if unexpected or any(not name.endswith(("_log_scale", "_shift")) for name in missing):
            raise SystemExit(f"codec_stage_c2: cannot start a quality-aware AFR from {analysis_id!r}")
        analysis = aware

    training = cached(args.codec, args.data, args.cache_dir, stride, gop)
    held_out = cached(args.codec, args.val_data, args.cache_dir, stride, gop)[:args.val_limit]
    height, width = training[0]["gt"].shape[-2:]
    if not 1 <= args.crop <= min(height, width):
        raise SystemExit(f"codec_stage_c2: --crop must be 1..{min(height, width)}")

    parameters = list(analysis.afr.parameters()) + list(analysis.head.parameters())
    optimizer = torch.optim.Adam(parameters, lr=args.lr)
    schedule = SimpleNamespace(lr=args.lr, lr_final=args.lr_final, warmup_steps=args.warmup_steps, steps=args.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(schedule))
    args.out.mkdir(parents=True, exist_ok=True)
    log_path, state_path = args.out / "log.jsonl", args.out / "checkpoint.json"
    step = 0
    if state_path.exists():
        state = json.loads(state_path.read_text())
        try:
            load_state(analysis, load_weights(args.out / "checkpoint.safetensors")[0], f"checkpoint {args.out}")
        except ValueError as error:  # e.g. a quality-aware run resumed without --quality-aware
            raise SystemExit(f"codec_stage_c2: {args.out} holds another analysis's checkpoint "
                             f"(--analysis or --quality-aware differ?): {error}") from None
        saved = torch.load(args.out / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step = state["step"]
        truncate_log(log_path, step)
        print(f"resumed at step {step}")
    else:
        record = {"command": "scripts/codec_stage_c2.py", **{k: str(v) if isinstance(v, Path) else v
                                                              for k, v in vars(args).items()},
                  "analysis_start": analysis_id, "training_sequences": len(training),
                  "validation_sequences": len(held_out), "step": 0, "validation": validate(analysis, held_out)}
        log_path.write_text(json.dumps(record) + "\n")
        print(f"before: {record['validation']}")

    def log(record: dict) -> None:
        with log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def checkpoint() -> None:
        save_weights(analysis.state_dict(), args.out / "checkpoint.safetensors", "c2-checkpoint", {},
                     extra={"step": str(step)})
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, args.out / "optimizer.pt.tmp")
        os.replace(args.out / "optimizer.pt.tmp", args.out / "optimizer.pt")
        atomic_write_text(state_path, json.dumps({"step": step}))

    started = time.perf_counter()
    while step < args.steps:
        rng = np.random.default_rng([args.seed, step])  # a resumed run draws the same batches
        analysis.train()
        prev, cur, nxt, gt, qualities = sample_batch(training, args.batch_size, args.crop, rng)
        image = analysis.analyze(prev, cur, nxt, quality=qualities)["image"]
        loss, mse = image_loss(image, gt, args.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        if step % 10 == 0:
            log({"step": step, "loss": loss.item(), "mse": float(mse), "lr": scheduler.get_last_lr()[0],
                 "seconds": time.perf_counter() - started})
        if step % args.validate_every == 0 or step == args.steps:
            result = validate(analysis, held_out)
            log({"step": step, "validation": result})
            print(f"step {step}: {result}", flush=True)
        if step % args.checkpoint_every == 0 or step == args.steps:
            checkpoint()
    digest = save_analysis(analysis, args.out / "analysis.safetensors")
    print(f"{args.out / 'analysis.safetensors'}: sha256 {digest}")


if __name__ == "__main__":
    main()
