"""spikecodec: Spike Coding for Intelligence (SCI) for spike-camera streams."""

__version__ = "0.1.0"

DEFAULT_HEIGHT = 250
DEFAULT_WIDTH = 400
DEFAULT_CONVERSION_RATE = 0.6  # firing rate per unit intensity of the public simulated datasets
DEFAULT_SPIKE_RATE_HZ = 20_000
DEFAULT_RECONSTRUCTION_MODEL = "sci-small-v1-recon"  # registry id of the shipped analysis path
