"""Write a copy of a trained codec whose y and motion y are coded with a Laplace distribution.

    python scripts/codec_to_laplace.py sci-codec-v2 -o runs/laplace/codec.safetensors

Nothing decoded changes (same transforms, same symbols' values); only the probabilities and the
CDF tables do (:func:`spikecodec.models.codec.with_laplace_likelihood`). The output is a stage
output the densities stage can start from (``codec_weights``); docs/TRAINING.md says why.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codec", help="registry id or codec .safetensors")
    parser.add_argument("-o", "--output", type=Path, required=True, help="codec .safetensors to write")
    args = parser.parse_args()

    from spikecodec.models.codec import with_laplace_likelihood
    from spikecodec.models.registry import ModelNotFoundError, get_spec
    from spikecodec.models.weights_io import read_metadata, save_weights
    from spikecodec.training import load_codec_weights

    try:
        codec = load_codec_weights(args.codec)
        if Path(args.codec).is_file():
            fem_config = read_metadata(args.codec)["fem_config"]
        else:
            fem_config = json.dumps(get_spec(get_spec(args.codec).base).config, sort_keys=True)
    except (ModelNotFoundError, ValueError, FileNotFoundError, KeyError) as error:
        raise SystemExit(f"codec_to_laplace: {args.codec}: {error}") from None
    converted = with_laplace_likelihood(codec)
    digest = save_weights(converted.state_dict(), args.output, "codec", converted.config.to_dict(),
                          extra={"fem_config": fem_config})
    print(f"{args.output}: scale table {converted.config.scale_levels} levels from "
          f"{converted.config.scale_min:.4f}, sha256 {digest}")


if __name__ == "__main__":
    main()
