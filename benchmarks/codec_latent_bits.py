"""Bits per feature pixel of each latent of a codec, I frame and mean P frame, per quality.

    python benchmarks/codec_latent_bits.py [CODEC] [--data data/smotion_test.h5] [--sequences 0,2]

CODEC: a registry id or a codec.safetensors / stage-c output directory (default: sci-codec-v2).
The first 12 moments (20 spike frames apart) of each sequence, one GOP, coded with the codec's
forward pass in eval mode (real rounding): ``-log2`` of each likelihood summed over the feature
pixels. Used to find where a codec's bits go (docs/TRAINING.md, the densities stage).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch


def main() -> None:
    from data_tools.smotion import load_smotion
    from spikecodec.codec import load_end_side
    from spikecodec.models.fem import extract_features
    from spikecodec.training import load_codec_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codec", nargs="?", default="sci-codec-v2")
    parser.add_argument("--data", default="data/smotion_test.h5")
    parser.add_argument("--sequences", default="0,2", help="indexes of the sequences in --data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fem = load_end_side("sci-codec-v2").fem
    codec = load_codec_weights(args.codec).eval()
    wanted = {int(k) for k in args.sequences.split(",")}
    moments = np.arange(40, 40 + 20 * 12, 20)
    for index, (spikes, _, meta) in enumerate(load_smotion(args.data, gt_dtype="uint8")):
        if index not in wanted:
            continue
        for quality in range(codec.config.qualities):
            bits, state = defaultdict(float), None
            with torch.no_grad():
                for k, feature in enumerate(extract_features(fem, spikes, moments)):
                    out = codec(feature[None], quality, None if k == 0 else state)
                    state = out["state"]
                    kind, frames = ("I", 1) if k == 0 else ("P", len(moments) - 1)
                    for name, likelihoods in out["likelihoods"].items():
                        bits[f"{kind}:{name}"] += float((-torch.log2(likelihoods)).sum()) / (feature.shape[-2] * feature.shape[-1]) / frames
            print(meta["name"], f"quality={quality}", " ".join(f"{k}={v:.3f}" for k, v in sorted(bits.items())),
                  flush=True)


if __name__ == "__main__":
    main()
