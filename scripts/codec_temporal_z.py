"""Write a copy of a registered codec whose P frames code z against the previous P frame's z.

    python scripts/codec_temporal_z.py sci-codec-v3 --hysteresis 0.35 --data data/smotion_train.h5 \
        -o runs/tz/codec.safetensors
    python scripts/codec_temporal_z.py sci-codec-v4 --weights runs/p/codec.safetensors \
        --data data/smotion_train.h5 -o runs/p/codec-tz.safetensors

The copy (:func:`spikecodec.models.codec.with_temporal_z`) codes every sequence of ``--data``
(spike moments ``--stride`` apart, one I frame then P frames, as ``spikecodec encode`` does with
the default GOP) at every quality; the differences of the z symbols of consecutive P frames set
one table scale per quality and channel (:func:`spikecodec.models.codec.fit_temporal_z`; the
symbols do not depend on those scales). It prints the z bytes per moment of the original codec
and of the copy (estimated) on those sequences, and writes them beside the output as
``<output>.log.jsonl``. docs/TRAINING.md says why. With ``--weights`` (a codec trained further
from the registered one, e.g. by ``spikecodec train --stage inter``) those weights are used in
the registered codec's place; if they already code z in time, their scales are refitted (their
symbols, and so their hysteresis, stay). The output is registered like any trained
codec file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codec", help="registry id of a codec (its FEM; its weights unless --weights)")
    parser.add_argument("--weights", default=None,
                        help="codec weights to use instead (a stage output directory or codec.safetensors)")
    parser.add_argument("--data", required=True, help="S-Motion .h5 to fit on (a training split)")
    parser.add_argument("--stride", type=int, default=None, help="spike frames between moments (default: encode's)")
    parser.add_argument("--hysteresis", type=float, default=0.0,
                        help="z_hysteresis of the copy: keep the previous z symbol within 0.5 + this")
    parser.add_argument("-o", "--output", type=Path, required=True, help="codec .safetensors to write")
    args = parser.parse_args()

    import torch
    from tqdm import tqdm

    from spikecodec import DEFAULT_STRIDE
    from spikecodec.codec import CodecError, load_end_side
    from spikecodec.evaluation import InputFailure, iter_items
    from spikecodec.models.codec import fit_temporal_z, with_temporal_z
    from spikecodec.models.fem import extract_features
    from spikecodec.models.registry import ModelNotFoundError, get_spec
    from spikecodec.models.weights_io import save_weights
    from spikecodec.moments import moments_for
    from spikecodec.training import load_codec_weights

    stride = DEFAULT_STRIDE if args.stride is None else args.stride
    if stride < 1:
        raise SystemExit(f"codec_temporal_z: --stride must be a positive number of spike frames, got {stride}")
    try:
        end = load_end_side(args.codec)
        if args.weights is not None:
            end.codec = load_codec_weights(args.weights)
        items = list(iter_items([args.data]))
    except (ModelNotFoundError, CodecError, ValueError, OSError) as error:
        raise SystemExit(f"codec_temporal_z: {error}") from None
    failed = [item for item in items if isinstance(item, InputFailure)]
    if failed or not items:
        raise SystemExit(f"codec_temporal_z: {failed[0].name}: {failed[0].error}" if failed
                         else f"codec_temporal_z: {args.data} holds no sequence")
    original = end.codec.eval()
    if original.config.temporal_z:
        if args.hysteresis not in (0.0, original.config.z_hysteresis):
            raise SystemExit(f"codec_temporal_z: the codec already codes z in time with hysteresis "
                             f"{original.config.z_hysteresis}; its scales are refitted with it")
        codec = original  # the symbols do not depend on the scales refitted below
    else:
        try:
            codec = with_temporal_z(original, args.hysteresis).eval()
        except ValueError as error:
            raise SystemExit(f"codec_temporal_z: {error}") from None
    qualities = codec.config.qualities
    differences: list[list[torch.Tensor]] = [[] for _ in range(qualities)]
    factorized_bits = [0] * qualities
    for item in tqdm(items, desc="coding", unit="sequence"):
        moments = moments_for(item.spikes.shape[0], stride, end.fem.window_before, end.fem.window_after)
        features = list(extract_features(end.fem, item.spikes, moments))
        for quality in range(qualities):
            state = original_state = previous = None
            with torch.no_grad():
                for feature in features:
                    out = codec.compress(feature[None], quality, state)
                    before = out if codec is original else original.compress(feature[None], quality, original_state)
                    state, original_state = out["state"], before["state"]
                    if out["frame_type"] != "P":
                        continue
                    if previous is not None:
                        differences[quality].append(out["latents"]["z"] - previous)
                        factorized_bits[quality] += 8 * len(before["strings"]["z"][0])
                    previous = out["latents"]["z"]
    if not differences[0]:
        raise SystemExit("codec_temporal_z: no two consecutive P frames in the data (sequences too short)")
    stacked = [torch.cat(values) for values in differences]
    estimates = fit_temporal_z(codec, stacked)
    records = [{"command": "scripts/codec_temporal_z.py", "codec": args.codec, "weights": args.weights,
                "data": args.data, "sequences": len(items), "stride": stride,
                "hysteresis": codec.config.z_hysteresis}]
    for quality, (values, estimate) in enumerate(zip(stacked, estimates)):
        frames = values.shape[0]
        print(f"quality {quality}: {frames} P frames after a P frame; z {factorized_bits[quality] / frames / 8:.0f} "
              f"B/moment coded by {args.weights or args.codec}, {estimate / frames / 8:.0f} B/moment estimated in time; "
              f"{float((values == 0).double().mean()):.1%} of the differences are zero")
        records.append({"quality": quality, "frames": frames,
                        "z_bytes_per_moment_before": factorized_bits[quality] / frames / 8,
                        "z_bytes_per_moment_estimated": estimate / frames / 8,
                        "zero_differences": float((values == 0).double().mean()),
                        "scale_indexes": codec.inter.temporal_z_index[quality].tolist()})
    fem_config = json.dumps(get_spec(get_spec(args.codec).base).config, sort_keys=True)
    digest = save_weights(codec.state_dict(), args.output, "codec", codec.config.to_dict(),
                          extra={"fem_config": fem_config})
    log = args.output.with_suffix(".log.jsonl")
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    print(f"{args.output}: sha256 {digest}; log {log}")


if __name__ == "__main__":
    main()
