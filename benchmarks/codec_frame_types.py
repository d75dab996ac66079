"""Image PSNR and bytes of a stream's I frame against its P frames, for codecs side by side.

    python benchmarks/codec_frame_types.py CODEC [CODEC ...] [--data data/smotion_test.h5]
        [--sequences 2,0,6,10] [--qualities 0,1,2,3]

CODEC: a registry id or a codec.safetensors / stage-c output directory. Every moment of each
sequence (stride 20) is coded with ``FeatureCodec.compress`` as one GOP (an I frame, then P
frames); the images come from the registry's reconstructor for sci-codec-v2
(``sci-small-v1-recon``), each from the decoded features of the moment and its neighbours.
Bytes are the entropy-coded strings; bpp counts them over the sequence's spike pixels (no
container). Used for the stage-intra rows of docs/TRAINING.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from data_tools.smotion import load_smotion
    from spikecodec.codec import load_end_side
    from spikecodec.metrics import psnr
    from spikecodec.models.fem import extract_features
    from spikecodec.models.registry import get_spec, load_model
    from spikecodec.moments import moments_for
    from spikecodec.training import load_codec_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codecs", nargs="+")
    parser.add_argument("--data", default="data/smotion_test.h5")
    parser.add_argument("--sequences", default="2,0,6,10", help="indexes of the sequences in --data")
    parser.add_argument("--qualities", default="0,1,2,3")
    args = parser.parse_args()
    end = load_end_side("sci-codec-v2")
    analysis = load_model(get_spec("sci-codec-v2").analysis)
    codecs = {name: load_codec_weights(name).eval() for name in args.codecs}
    wanted = [int(k) for k in args.sequences.split(",")]
    qualities = [int(q) for q in args.qualities.split(",")]
    sequences = {index: item for index, item in enumerate(load_smotion(args.data, gt_dtype="float32"))
                 if index in wanted}
    for index in wanted:
        spikes, gt, meta = sequences[index]
        fem = end.fem
        moments = moments_for(spikes.shape[0], 20, before=fem.window_before, after=fem.window_after)
        first = int(moments[0]) - fem.window_before
        with torch.no_grad():
            features = extract_features(fem, spikes[first:int(moments[-1]) + fem.window_after + 1], moments - first)
            for quality in qualities:
                line = f"{meta['name']} ({meta.get('speed_bin')}) quality {quality}"
                for name, codec in codecs.items():
                    state, decoded, sizes = None, [], []
                    for feature in features:
                        coded = codec.compress(feature[None], quality, state)
                        state = coded["state"]
                        decoded.append(coded["x_hat"])
                        sizes.append(sum(len(s) for strings in coded["strings"].values() for s in strings))
                    scores = []
                    for k, moment in enumerate(moments):
                        image = analysis.analyze(decoded[max(k - 1, 0)], decoded[k],
                                                 decoded[min(k + 1, len(decoded) - 1)], quality=quality)["image"]
                        scores.append(psnr(gt[int(moment)][None], image[0].clamp(0, 1).numpy()))
                    line += (f" | {name}: I {scores[0]:.2f} dB {sizes[0]} B, P {np.mean(scores[1:]):.2f} dB "
                             f"{np.mean(sizes[1:]):.0f} B, all {np.mean(scores):.2f} dB "
                             f"{8 * sum(sizes) / spikes.size:.5f} bpp")
                print(line, flush=True)


if __name__ == "__main__":
    main()
