"""The real photographs S-Motion is made from, and their fixed train/val/test split.

All of them ship inside installed packages (scikit-image's bundled sample data, which loads
without a download, and matplotlib's sample data), so building a dataset needs no network.
Synthetic patterns (checkerboard, colour wheel, logos, phantoms, silhouettes, generated blobs)
are excluded, and of the stereo pair only the left view is used. See data_tools/README.md for
origins and licences.
"""

from __future__ import annotations

import functools

import numpy as np

from spikecodec.simulate import to_intensity

# name -> (package, loader or file name); every entry is a real photograph.
PHOTO_SOURCES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "astronaut"),
    "brick": ("skimage", "brick"),
    "camera": ("skimage", "camera"),
    "chelsea": ("skimage", "chelsea"),
    "clock": ("skimage", "clock"),
    "coffee": ("skimage", "coffee"),
    "coins": ("skimage", "coins"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"),
    "grass": ("skimage", "grass"),
    "gravel": ("skimage", "gravel"),
    "hubble_deep_field": ("skimage", "hubble_deep_field"),
    "immunohistochemistry": ("skimage", "immunohistochemistry"),
    "moon": ("skimage", "moon"),
    "motorcycle_left": ("skimage", "stereo_motorcycle"),
    "page": ("skimage", "page"),
    "retina": ("skimage", "retina"),
    "rocket": ("skimage", "rocket"),
    "text": ("skimage", "text"),
}

# Fixed split by source photograph: a photo (and any sprite cut from it) is in one split only.
SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut",
        "brick",
        "camera",
        "clock",
        "grace_hopper",
        "grass",
        "gravel",
        "hubble_deep_field",
        "immunohistochemistry",
        "moon",
        "page",
        "retina",
        "text",
    ),
    "val": ("coins", "rocket"),
    "test": ("chelsea", "coffee", "motorcycle_left"),
}


def check_split(split: str) -> str:
    """Return ``split`` if it is one of train / val / test, else raise ValueError."""
    if split not in SPLITS:
        raise ValueError(f"unknown S-Motion split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def split_photos(split: str) -> tuple[str, ...]:
    """Names of the photographs of ``split``, in their fixed order."""
    return SPLITS[check_split(split)]


def _load_raw(name: str) -> np.ndarray:
    package, item = PHOTO_SOURCES[name]
    if package == "skimage":
        try:
            import skimage.data
        except ImportError:
            raise RuntimeError(
                "S-Motion photographs need scikit-image: pip install 'spikecodec[data]'"
            ) from None
        image = getattr(skimage.data, item)()
        if item == "stereo_motorcycle":
            image = image[0]  # left view only: the right one is nearly the same photograph
        return image
    import imageio.v3 as iio
    import matplotlib.cbook

    return iio.imread(matplotlib.cbook.get_sample_data(item, asfileobj=False))


@functools.lru_cache(maxsize=32)
def _load_cached(name: str) -> np.ndarray:
    image = to_intensity(_load_raw(name))
    image.setflags(write=False)
    return image


def load_photo(name: str) -> np.ndarray:
    """Photograph ``name`` as a float32 grayscale intensity map in [0, 1] (read-only, cached)."""
    if name not in PHOTO_SOURCES:
        raise ValueError(f"unknown photograph {name!r}; known: {', '.join(sorted(PHOTO_SOURCES))}")
    return _load_cached(name)
