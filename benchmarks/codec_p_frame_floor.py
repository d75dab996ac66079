"""What a P frame costs when nothing changed: the floor of the P coder's rate.

    python benchmarks/codec_p_frame_floor.py [CODEC] [--data data/smotion_test.h5]
        [--sequences 0,1,2] [--qualities 0,1,2,3]

CODEC: a registry id or a codec.safetensors / stage-c output directory (default: the shipped
codec). Every moment of each sequence (encode's default stride) is coded with ``FeatureCodec.compress`` as one
GOP, as ``encode`` codes it. Each P frame is also coded a second time, its input replaced by its
own reference (the previous decoded feature), with the same reference state: a coder that can say
"unchanged" should spend almost nothing on that frame and decode it to the reference. Printed per
sequence and quality, means over the P frames: bytes of the entropy-coded strings and non-zero y
symbols of the real frame and of the unchanged one, and the RMS distance (normalised feature units)
from the input to its reference, from the real frame's decoding to its input, and from the
unchanged frame's decoding to the reference. Used for "What a P frame costs when nothing changed"
in docs/TRAINING.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from data_tools.smotion import load_smotion
    from spikecodec import DEFAULT_STRIDE
    from spikecodec.codec import DEFAULT_CODEC_MODEL, load_end_side
    from spikecodec.models.codec import string_bits
    from spikecodec.models.fem import extract_features
    from spikecodec.moments import moments_for
    from spikecodec.training import load_codec_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codec", nargs="?", default=DEFAULT_CODEC_MODEL)
    parser.add_argument("--data", default="data/smotion_test.h5")
    parser.add_argument("--sequences", default="0,1,2", help="indexes of the sequences in --data")
    parser.add_argument("--qualities", default="0,1,2,3")
    args = parser.parse_args()
    fem = load_end_side(DEFAULT_CODEC_MODEL).fem
    codec = load_codec_weights(args.codec).eval()
    wanted = [int(k) for k in args.sequences.split(",")]
    qualities = [int(q) for q in args.qualities.split(",")]

    def rms(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).square().mean().sqrt())

    print("sequence | quality | P bytes | unchanged P bytes | ratio | non-zero y | unchanged non-zero y | "
          "rms input-reference | rms decoded-input | rms unchanged decoded-reference")
    for index, (spikes, _, meta) in enumerate(load_smotion(args.data, gt_dtype=None)):
        if index not in wanted:
            continue
        moments = moments_for(spikes.shape[0], DEFAULT_STRIDE, before=fem.window_before, after=fem.window_after)
        with torch.no_grad():
            features = extract_features(fem, spikes, moments)
            for quality in qualities:
                state, rows = None, []
                for feature in features:
                    coded = codec.compress(feature[None], quality, state)
                    if state is not None:
                        reference = state.cropped
                        unchanged = codec.compress(codec._denormalise(reference), quality, state)
                        target = codec._normalise(feature[None])
                        rows.append([
                            string_bits(coded["strings"]) // 8, string_bits(unchanged["strings"]) // 8,
                            int((coded["latents"]["y"] != 0).sum()), int((unchanged["latents"]["y"] != 0).sum()),
                            rms(target, reference), rms(codec._normalise(coded["x_hat"]), target),
                            rms(codec._normalise(unchanged["x_hat"]), reference),
                        ])
                    state = coded["state"]
                m = np.mean(rows, axis=0)
                print(f"{meta['name']} ({meta.get('speed_bin')}) | {quality} | {m[0]:.0f} | {m[1]:.0f} | "
                      f"{m[1] / m[0]:.2f} | {m[2]:.0f} | {m[3]:.0f} | {m[4]:.3f} | {m[5]:.3f} | {m[6]:.3f}",
                      flush=True)


if __name__ == "__main__":
    main()
