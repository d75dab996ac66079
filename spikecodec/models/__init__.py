"""SCI models: FEM (end side), AFR and heads (cloud side), the registry of shipped weights.

Import submodules directly (``from spikecodec.models.fem import FEM``); this package keeps its own
import light so that ``spikecodec`` starts fast when torch is not needed.
"""
