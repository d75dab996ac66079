"""Dataset builders of spikecodec: S-Motion (moving camera over real photographs, ground truth at
every spike frame) and S-MNIST (moving MNIST digits with labels). See data_tools/README.md.

Names are imported lazily so that the command line (which registers these builders) starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PHOTO_SOURCES": "photos",
    "SPLITS": "photos",
    "load_photo": "photos",
    "split_photos": "photos",
    "is_test_index": "smnist",
    "load_mnist": "smnist",
    "load_smnist": "smnist",
    "make_smnist_clips": "smnist",
    "smnist_split_indices": "smnist",
    "write_smnist": "smnist",
    "SPEED_BINS": "smotion",
    "generate_smotion_sequence": "smotion",
    "load_smotion": "smotion",
    "make_smotion_sample": "smotion",
    "num_smotion_sequences": "smotion",
    "smotion_sequence_spec": "smotion",
    "speed_bin_of": "smotion",
    "write_smotion": "smotion",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"data_tools.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'data_tools' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
