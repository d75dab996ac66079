"""spikecodec: Spike Coding for Intelligence (SCI) for spike-camera streams."""

__version__ = "0.1.0"

DEFAULT_HEIGHT = 250
DEFAULT_WIDTH = 400
DEFAULT_CONVERSION_RATE = 0.6  # firing rate per unit intensity of the public simulated datasets
DEFAULT_SPIKE_RATE_HZ = 20_000
DEFAULT_RECONSTRUCTION_MODEL = "sci-small-v3-recon-long"  # registry id of the shipped analysis path (raw spikes)
# ours-raw, the analyze-then-compress anchor of `eval`: the analysis of the shipped codec's own FEM
# on uncompressed features, so the anchor and the codec start from the same features
DEFAULT_EVAL_MODEL = "sci-small-v1-recon"
DEFAULT_STRIDE = 20  # spike frames between moments: a 1,000 fps video at 20 kHz
DEFAULT_GOP = 32  # moments per group of pictures (an I frame, then P frames)
DEFAULT_CODEC_MODEL = "sci-codec-v6"  # registry id of the shipped feature codec (with its FEM)
DEFAULT_QUALITY = 2  # of 0..3; 0 is the lowest rate


def __getattr__(name: str):
    # the codec API imports torch: load it only when asked for
    if name in ("encode_file", "decode_file", "decode_stream"):
        from spikecodec import codec

        return getattr(codec, name)
    raise AttributeError(f"module 'spikecodec' has no attribute {name!r}")
