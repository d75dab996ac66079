"""How much a P frame's hyper-latent z repeats the previous P frame's, and what coding it against
that would cost: the measurement behind `sci-codec-v4` (docs/TRAINING.md), which codes z so.

    python benchmarks/codec_z_in_time.py [CODEC] [--data data/smotion_test.h5] [--sequences 0,1,2]

CODEC: a registry id (default: the shipped codec). Every moment (20 spike frames apart) of each
sequence, one GOP, coded with ``compress`` at qualities 0 and 2. For the P frames after the first,
it prints what their z strings cost (coded in time if the codec's config says ``temporal_z``),
the share of z symbols equal to the previous P frame's, and the code length of the differences
under one discrete Laplace per channel fitted to those same differences (in-sample, so a bound a
temporal model of z could approach, not reach).
"""

from __future__ import annotations

import argparse
import math

import torch


def laplace_code_bits(differences: torch.Tensor) -> float:
    """-log2 likelihood of integer ``differences`` (N, C, H, W) under one maximum-likelihood
    two-sided geometric distribution per channel: P(d) = (1 - t) / (1 + t) * t^|d|."""
    bits = 0.0
    for channel in range(differences.shape[1]):
        magnitude = differences[:, channel].reshape(-1).abs().double()
        mean = magnitude.mean().item()
        theta = mean / (1 + math.sqrt(1 + mean * mean)) if mean > 0 else 1e-12  # E|d| = 2t / (1 - t^2)
        bits += float(-(math.log2((1 - theta) / (1 + theta)) + magnitude * math.log2(theta)).sum())
    return bits


def main() -> None:
    from spikecodec import DEFAULT_CODEC_MODEL, DEFAULT_STRIDE
    from spikecodec.codec import load_end_side
    from spikecodec.evaluation import iter_items
    from spikecodec.models.fem import extract_features
    from spikecodec.moments import moments_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codec", nargs="?", default=DEFAULT_CODEC_MODEL)
    parser.add_argument("--data", default="data/smotion_test.h5")
    parser.add_argument("--sequences", default="0,1,2", help="indexes of the sequences in --data")
    args = parser.parse_args()
    torch.set_num_threads(2)
    end = load_end_side(args.codec)
    codec = end.codec.eval()
    wanted = {int(k) for k in args.sequences.split(",")}
    items = [item for index, item in enumerate(iter_items([args.data])) if index in wanted]
    for item in items:
        moments = moments_for(item.spikes.shape[0], DEFAULT_STRIDE, end.fem.window_before, end.fem.window_after)
        features = list(extract_features(end.fem, item.spikes, moments))
        for quality in (0, 2):
            state, symbols, string_bits = None, [], 0
            with torch.no_grad():
                for k, feature in enumerate(features):
                    out = codec.compress(feature[None], quality, None if k == 0 else state)
                    state = out["state"]
                    if k >= 1:
                        symbols.append(out["latents"]["z"].to(torch.int64))
                    if k >= 2:
                        string_bits += 8 * len(out["strings"]["z"][0])
            differences = torch.cat([b - a for a, b in zip(symbols, symbols[1:])])
            frames = differences.shape[0]
            print(f"{item.name} ({item.meta.get('speed_bin')}) quality={quality}: P-frame z "
                  f"{string_bits / frames / 8:.0f} B/moment; equal to the previous P frame's at "
                  f"{float((differences == 0).double().mean()):.0%} of positions; differences under a "
                  f"per-channel Laplace (in-sample) {laplace_code_bits(differences) / frames / 8:.0f} B/moment",
                  flush=True)


if __name__ == "__main__":
    main()
