"""Rate-distortion evaluation of spike coders: ``spikecodec eval`` and ``spikecodec bdrate``.

:func:`evaluate` measures, for every input item (a stream with ground truth),

- **ATC anchors** (analyze-then-compress): each reconstruction from the raw spikes (``tfp41``,
  ``tfi``, ``ours-raw``: the learned reconstruction on uncompressed features) at the evaluation
  moments, coded with each video anchor (``x265``, ``vvc``; see :mod:`spikecodec.anchors`) at every
  QP: methods ``tfp41+x265``, ``tfi+vvc``, ``ours-raw+x265`` ...; plus one uncompressed row per
  reconstruction (method ``tfp41``..., no rate: the ceiling of its ATC curves);
- **lossless anchors** of the raw spikes: ``raw``, ``zstd-19``, ``xz-9``, ``jbig`` (rate only);
- **ours** (the ``.sci`` codec), through :func:`ours_rate_points`, a hook the codec fills in.

and writes ``results.json`` and ``results.csv``: one row per (input, method, rate point) with
bits, bpp over the input's T x H x W spike pixels, PSNR and SSIM (means over the moments that have
a ground-truth image), encode / decode seconds of the coder and the reconstruction's own seconds
(``analysis_seconds``, end side for ATC). Failures are rows with an ``error`` and never stop the
other inputs; what could not run at all (a missing encoder, model weights not shipped) is listed
under ``skipped``.

Inputs and items:

- S-Motion h5 (data_tools): every sequence is an item, ground truth at every spike frame;
- S-MNIST h5 (data_tools): every clip is an item, ground truth at its middle spike frame only;
- a JSON manifest of spike files (``.dat``, ``.npz``, ``.h5``) with their ground truth::

      {"inputs": [{"path": "drive.dat", "height": 250, "width": 400, "head_columns": 0,
                   "ground_truth": "drive_gt.npz", "spike_index": [100, 200], "name": "drive"}]}

  Relative paths are relative to the manifest. ``ground_truth`` is an ``.npz`` (array ``gt``, or
  its only array: (K, H, W) or (H, W)) or a PNG or a list of PNGs (colour is turned into BT.601
  luma); uint8 means /255, uint16 /65535, floats must lie in [0, 1]. ``spike_index`` gives each
  image's spike-frame index; when left out the ``.npz`` must hold ``moments`` or ``spike_index``.
  A bare list of entries is accepted too.

Moments: every ``stride`` spike frames where every requested reconstruction's window fits (TFP41:
20 each way; ours: its FEM window, read from the registry config so the moments do not depend on
whether the weights load), phased on the first ground-truth index that is a valid moment so that
ground truth lands on the grid. Ground-truth images off the grid are not scored.

BD-rate (:func:`bdrate_report`): per input, each method's Pareto curve against the anchor's on the
same input (:func:`spikecodec.metrics.bd_rate` / ``bd_psnr``); the "mean" is the mean of the
per-input values that exist, with the number of inputs it covers. The RD plot shows each method's
mean curve: at each setting (QP), bpp and PSNR averaged over the inputs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from spikecodec import DEFAULT_CODEC_MODEL, DEFAULT_CONVERSION_RATE, DEFAULT_EVAL_MODEL, __version__
from spikecodec.anchors import (
    DEFAULT_GOP,
    DEFAULT_QPS,
    VIDEO_CODECS,
    AnchorError,
    AnchorUnavailable,
    RatePoint,
    ffmpeg_capabilities,
    find_jbig_tools,
    lossless_anchor,
    score_frames,
    video_anchor,
    video_codec_problem,
)
from spikecodec.baselines import TFP_DEFAULT_WINDOW, get_reconstructor
from spikecodec.metrics import BD_METHODS, InsufficientOverlap, RDCurve, bd_psnr, bd_rate
from spikecodec.moments import DEFAULT_STRIDE, moments_for

RESULTS_FORMAT = "spikecodec-eval-results"
RESULTS_VERSION = 1
#: Reconstructions from the raw spikes that the video anchors code (ATC).
RECONSTRUCTIONS = ("tfp41", "tfi", "ours-raw")
LOSSLESS = "lossless"
OURS = "ours"
DEFAULT_METHODS = RECONSTRUCTIONS + (LOSSLESS, OURS)
DEFAULT_CODECS = tuple(VIDEO_CODECS)
OURS_NOT_AVAILABLE = "ours (codec): not requested or its model is not installed"

#: Columns of results.csv, in order (results.json rows hold the same keys).
ROW_FIELDS = (
    "input", "source", "method", "reconstruction", "codec", "setting", "qp", "bits", "bpp",
    "psnr", "ssim", "frames_scored", "moments", "spike_frames", "height", "width",
    "encode_seconds", "decode_seconds", "analysis_seconds", "speed_bin", "error",
)


class EvaluationError(ValueError):
    """A user mistake in what was asked (inputs, options, results directory)."""


# ---------------------------------------------------------------------------------------------
# options and items


@dataclass(frozen=True)
class EvalOptions:
    """What :func:`evaluate` measures on each item."""

    stride: int = DEFAULT_STRIDE
    qps: tuple[int, ...] = DEFAULT_QPS
    gop: int = DEFAULT_GOP
    reconstructions: tuple[str, ...] = RECONSTRUCTIONS
    codecs: tuple[str, ...] = DEFAULT_CODECS
    lossless: bool = True
    model_id: str = DEFAULT_EVAL_MODEL
    ours: bool = False  # our codec at every quality of codec_model
    codec_model: str = DEFAULT_CODEC_MODEL
    #: Unregistered weights of ``codec_model``'s architecture (a stage output or a .safetensors)
    #: that code and decode in its place: training outputs are compared before one is registered.
    codec_weights: str | None = None
    rate: float = DEFAULT_CONVERSION_RATE
    threads: int | None = None  # per coder / torch; None: their own default
    #: Reconstructions whose windows set the moments (default: ``reconstructions``). Kept when a
    #: reconstruction cannot run here so the frames evaluated do not depend on it.
    window_reconstructions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stride, bool) or int(self.stride) != self.stride or self.stride < 1:
            raise EvaluationError(
                f"stride must be a positive number of spike frames, got {self.stride!r}")
        if isinstance(self.gop, bool) or int(self.gop) != self.gop or self.gop < 1:
            raise EvaluationError(f"GOP must be a positive number of frames, got {self.gop!r}")
        object.__setattr__(self, "qps", tuple(int(q) for q in self.qps))
        if self.codecs and not self.qps:
            raise EvaluationError("no QP given for the video anchors")
        for qp in self.qps:
            if not 0 <= qp <= 51:
                raise EvaluationError(f"QP must be 0..51 (x265's range), got {qp}")
        for name in self.reconstructions + (self.window_reconstructions or ()):
            if name not in RECONSTRUCTIONS:
                raise EvaluationError(
                    f"unknown method {name!r}; choose from {', '.join(DEFAULT_METHODS)}")
        for name in self.codecs:
            if name not in VIDEO_CODECS:
                raise EvaluationError(
                    f"unknown video anchor {name!r}; choose from {', '.join(VIDEO_CODECS)}")
        if not self.rate > 0:
            raise EvaluationError(f"conversion rate must be positive, got {self.rate}")
        if self.threads is not None and (int(self.threads) != self.threads or self.threads < 1):
            raise EvaluationError(f"threads must be a positive integer, got {self.threads!r}")


@dataclass
class EvalItem:
    """One evaluated stream: spikes (T, H, W) 0/1, ground-truth images (K, H, W) (uint8, uint16
    or float in [0, 1]) and the spike-frame index of each."""

    name: str
    source: str
    spikes: np.ndarray
    gt: np.ndarray
    gt_index: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputFailure:
    """An input (file, manifest entry) that could not be read into items."""

    name: str
    source: str
    error: str


def parse_qps(text: str) -> tuple[int, ...]:
    """QPs from ``"22,27,32"`` or an inclusive range ``"22:47:5"`` (start:stop[:step])."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [int(part) for part in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1
            if step < 1 or stop < start:
                raise ValueError
            qps = tuple(range(start, stop + 1, step))
        else:
            qps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise EvaluationError(
            f"cannot read QPs {text!r}: give a list like 22,27,32 or a range start:stop[:step] "
            "like 22:47:5"
        ) from None
    if not qps:
        raise EvaluationError("no QP given")
    return qps


def parse_methods(text: str) -> tuple[str, ...]:
    """``"tfp41,tfi,lossless,ours"`` -> the method names, checked, in canonical order."""
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    unknown = [name for name in names if name not in DEFAULT_METHODS]
    if unknown or not names:
        raise EvaluationError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(DEFAULT_METHODS)}")
    return tuple(name for name in DEFAULT_METHODS if name in names)


def parse_codecs(text: str) -> tuple[str, ...]:
    """``"x265,vvc"`` (or ``"none"``) -> video anchor names."""
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in VIDEO_CODECS]
    if unknown or not names:
        raise EvaluationError(
            f"unknown video anchor(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(VIDEO_CODECS)} or none")
    return tuple(names)


def reconstruction_window(name: str, options: EvalOptions) -> tuple[int, int]:
    """Spike frames (before, after) a reconstruction needs around a moment for it to be valid."""
    if name == "tfp41":
        return TFP_DEFAULT_WINDOW // 2, (TFP_DEFAULT_WINDOW - 1) // 2
    if name == "tfi":
        return 0, 0  # TFI searches as far as the stream goes; it is valid everywhere
    if name == "ours-raw":
        from spikecodec.models.fem import FEMConfig
        from spikecodec.models.registry import ModelNotFoundError, get_spec

        try:
            spec = get_spec(options.model_id)
        except ModelNotFoundError as error:
            raise EvaluationError(str(error)) from None
        if spec.kind != "reconstructor":
            raise EvaluationError(
                f"model {options.model_id!r} is a {spec.kind!r}, not a reconstruction model")
        fem = FEMConfig.from_dict(spec.config["fem"])
        return fem.window_before, fem.window_after
    raise EvaluationError(f"unknown reconstruction {name!r}")


def codec_window(model_id: str) -> tuple[int, int]:
    """Spike frames (before, after) the FEM of codec ``model_id`` reads around a moment."""
    from spikecodec.models.fem import FEMConfig
    from spikecodec.models.registry import ModelNotFoundError, get_spec

    try:
        spec = get_spec(model_id)
        base = get_spec(spec.base) if spec.kind == "codec" and spec.base else None
    except ModelNotFoundError as error:
        raise EvaluationError(str(error)) from None
    if base is None:
        raise EvaluationError(f"model {model_id!r} is a {spec.kind!r}, not a codec")
    fem = FEMConfig.from_dict(base.config)
    return fem.window_before, fem.window_after


def evaluation_moments(num_frames: int, gt_index: np.ndarray, options: EvalOptions) -> np.ndarray:
    """Moments every ``stride`` where every requested reconstruction is valid, phased on the first
    ground-truth index that is a valid moment (see the module docstring)."""
    names = options.window_reconstructions
    names = options.reconstructions if names is None else names
    windows = [reconstruction_window(name, options) for name in names]
    if options.ours:
        windows.append(codec_window(options.codec_model))
    before = max([w[0] for w in windows] + [TFP_DEFAULT_WINDOW // 2])
    after = max([w[1] for w in windows] + [(TFP_DEFAULT_WINDOW - 1) // 2])
    gt_index = np.asarray(gt_index, dtype=np.int64)
    valid = gt_index[(gt_index >= before) & (gt_index <= num_frames - 1 - after)]
    if valid.size == 0:
        raise EvaluationError(
            f"no ground-truth image lies at a valid moment: the stream has {num_frames} spike "
            f"frames, moments need {before} before and {after} after (valid {before}.."
            f"{num_frames - 1 - after}), ground truth is at {_index_summary(gt_index)}")
    return moments_for(num_frames, options.stride, before, after, phase=int(valid.min()))


def _index_summary(index: np.ndarray) -> str:
    if index.size <= 4:
        return ", ".join(str(int(i)) for i in index) or "no index"
    return f"{int(index[0])}, {int(index[1])}, ... {int(index[-1])} ({index.size} images)"


# ---------------------------------------------------------------------------------------------
# reading inputs


def _h5_format(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as file:
            found = file.attrs.get("format")
    except OSError as error:
        raise EvaluationError(f"{path}: not a readable h5 file ({error})") from None
    return found.decode() if isinstance(found, bytes) else found


def _smotion_items(path: Path, limit: int | None) -> Iterator[EvalItem]:
    from data_tools.smotion import load_smotion

    for count, (spikes, gt, meta) in enumerate(load_smotion(path, gt_dtype="uint8")):
        if limit is not None and count >= limit:
            return
        yield EvalItem(
            name=f"{path.name}:{meta['name']}", source=str(path), spikes=spikes, gt=gt,
            gt_index=np.arange(gt.shape[0], dtype=np.int64),
            meta={"speed_bin": meta.get("speed_bin", ""), "photo": meta.get("photo", "")},
        )


def _smnist_items(path: Path, limit: int | None) -> Iterator[EvalItem]:
    import h5py

    from data_tools.smnist import load_smnist

    with h5py.File(path, "r") as file:
        count = int(file.attrs.get("num_clips", len(file["labels"])))
    if limit is not None:
        count = min(count, limit)
    for index in range(count):
        spikes, labels, meta = load_smnist(path, indices=np.array([index]))
        yield EvalItem(
            name=f"{path.name}:clip_{index:04d}", source=str(path), spikes=spikes[0],
            gt=meta["gt_mid"][:1], gt_index=np.array([int(meta["gt_moment"])], dtype=np.int64),
            meta={"label": int(labels[0])},
        )


def _intensity(images: np.ndarray, what: str) -> np.ndarray:
    """Ground-truth images as float32 intensities in [0, 1]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if images.dtype == np.uint16:
        return images.astype(np.float32) / np.float32(65535.0)
    if np.issubdtype(images.dtype, np.floating):
        if not np.all(np.isfinite(images)) or images.min() < 0.0 or images.max() > 1.0:
            raise EvaluationError(f"{what}: float ground truth must lie in [0, 1]")
        return images.astype(np.float32)
    raise EvaluationError(
        f"{what}: ground truth must be uint8, uint16 or float, got {images.dtype}")


def _read_png(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        image = iio.imread(path)
    except (OSError, ValueError) as error:
        raise EvaluationError(f"{path}: cannot read the image ({error})") from None
    if image.ndim == 3:
        if image.shape[2] == 4:  # alpha carries no intensity
            image = image[..., :3]
        if image.shape[2] == 3:
            weights = np.array([0.299, 0.587, 0.114])  # BT.601 luma
            scale = 255.0 if image.dtype == np.uint8 else 65535.0
            image = (image.astype(np.float64) @ weights / scale).astype(np.float32)
        elif image.shape[2] == 1:
            image = image[..., 0]
    if image.ndim != 2:
        raise EvaluationError(f"{path}: expected a gray or colour image, got shape {image.shape}")
    return image


def _manifest_gt(entry: dict, base: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    source = entry.get("ground_truth")
    if source is None:
        raise EvaluationError(f"{what}: no 'ground_truth' given")
    stored_index = None
    if isinstance(source, str) and source.lower().endswith(".npz"):
        path = base / source
        try:
            with np.load(path, allow_pickle=False) as data:
                names = list(data.files)
                key = "gt" if "gt" in names else None
                arrays = [n for n in names if n not in ("moments", "spike_index", "timestamps")]
                if key is None and len(arrays) == 1:
                    key = arrays[0]
                if key is None:
                    raise EvaluationError(
                        f"{path}: cannot tell which array is the ground truth (name it 'gt'); "
                        f"found {', '.join(names)}")
                images = data[key]
                for name in ("spike_index", "moments", "timestamps"):
                    if name in names:
                        stored_index = data[name]
                        break
        except (OSError, ValueError) as error:
            if isinstance(error, EvaluationError):
                raise
            raise EvaluationError(f"{path}: cannot read the ground truth ({error})") from None
        if images.ndim == 2:
            images = images[None]
    else:
        paths = [source] if isinstance(source, str) else source
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise EvaluationError(
                f"{what}: 'ground_truth' must be an .npz, a PNG or a list of PNGs")
        frames = [_read_png(base / p) for p in paths]
        if len({f.shape for f in frames}) > 1 or len({f.dtype for f in frames}) > 1:
            raise EvaluationError(f"{what}: ground-truth images differ in size or type")
        images = np.stack(frames)
    index = entry.get("spike_index", stored_index)
    if index is None:
        raise EvaluationError(f"{what}: give 'spike_index' (the spike frame of each image)")
    index = np.atleast_1d(np.asarray(index))
    if index.dtype.kind not in "iu" or index.ndim != 1:
        raise EvaluationError(f"{what}: spike_index must be integers")
    if index.size != images.shape[0]:
        raise EvaluationError(
            f"{what}: {index.size} spike indices for {images.shape[0]} ground-truth images")
    return images, index.astype(np.int64)


def _manifest_items(path: Path, limit: int | None) -> Iterator[EvalItem | InputFailure]:
    from spikecodec.io import load_spikes

    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationError(f"{path}: not a readable JSON manifest ({error})") from None
    entries = document.get("inputs") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise EvaluationError(f"{path}: a manifest is a list of entries or {{\"inputs\": [...]}}")
    base = path.parent
    for number, entry in enumerate(entries):
        if limit is not None and number >= limit:
            return
        what = f"{path.name} entry {number}"
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise EvaluationError(f"{what}: each entry needs a 'path'")
            name = str(entry.get("name") or Path(entry["path"]).name)
            what = f"{path.name}:{name}"
            spikes = load_spikes(base / entry["path"], height=entry.get("height"),
                                 width=entry.get("width"),
                                 head_columns=int(entry.get("head_columns", 0)))
            images, index = _manifest_gt(entry, base, what)
            if images.shape[1:] != spikes.shape[1:]:
                raise EvaluationError(
                    f"{what}: ground truth is {images.shape[1]}x{images.shape[2]}, the spikes "
                    f"{spikes.shape[1]}x{spikes.shape[2]}")
            bad = index[(index < 0) | (index >= spikes.shape[0])]
            if bad.size:
                raise EvaluationError(
                    f"{what}: spike index {int(bad[0])} is outside the stream of "
                    f"{spikes.shape[0]} spike frames")
            _intensity(images, what)  # check the range here, where the error names the entry
            yield EvalItem(name=what, source=str(base / entry["path"]), spikes=spikes, gt=images,
                           gt_index=index)
        except (ValueError, OSError) as error:
            yield InputFailure(what, str(path), str(error))


def iter_items(inputs: Sequence[str | os.PathLike], limit: int | None = None
               ) -> Iterator[EvalItem | InputFailure]:
    """Every item of ``inputs`` (at most ``limit`` per file), or an InputFailure for what cannot
    be read (the other inputs still follow)."""
    for raw_path in inputs:
        path = Path(raw_path)
        try:
            if not path.is_file():
                raise EvaluationError(f"{path}: no such file")
            suffix = path.suffix.lower()
            if suffix == ".json":
                yield from _manifest_items(path, limit)
            elif suffix in (".h5", ".hdf5"):
                found = _h5_format(path)
                if found == "spikecodec-smotion":
                    yield from _smotion_items(path, limit)
                elif found == "spikecodec-smnist":
                    yield from _smnist_items(path, limit)
                else:
                    raise EvaluationError(
                        f"{path}: not an S-Motion or S-MNIST file (format {found!r}); describe "
                        "other spike files and their ground truth in a JSON manifest")
            else:
                raise EvaluationError(
                    f"{path}: give S-Motion / S-MNIST .h5 files or a JSON manifest (a {suffix} "
                    "spike file needs a manifest naming its ground truth)")
        except (ValueError, OSError, KeyError) as error:
            # KeyError's str() quotes its message
            keyed = isinstance(error, KeyError) and error.args
            message = str(error.args[0]) if keyed else str(error)
            yield InputFailure(path.name, str(path), message)


def count_items(inputs: Sequence[str | os.PathLike], limit: int | None = None) -> int | None:
    """How many items :func:`iter_items` will give (for progress bars), or None if unknown."""
    import h5py

    total = 0
    for raw_path in inputs:
        path = Path(raw_path)
        try:
            if path.suffix.lower() == ".json":
                document = json.loads(path.read_text())
                entries = document.get("inputs") if isinstance(document, dict) else document
                count = len(entries)
            elif path.suffix.lower() in (".h5", ".hdf5"):
                with h5py.File(path, "r") as file:
                    count = len([k for k in file.keys() if k.startswith("seq_")]) \
                        if "labels" not in file else len(file["labels"])
            else:
                count = 1
        except Exception:  # counting is cosmetic: a broken input is reported when it is read
            count = 1
        total += min(count, limit) if limit is not None else count
    return total


# ---------------------------------------------------------------------------------------------
# evaluating one item

_MODELS: dict[str, Any] = {}


def _load_reconstruction_model(model_id: str):
    """The learned reconstruction model, loaded once per process."""
    if model_id not in _MODELS:
        from spikecodec.models.registry import load_model

        _MODELS[model_id] = load_model(model_id)
    return _MODELS[model_id]


def _reconstructor(name: str, options: EvalOptions):
    if name == "tfp41":
        return get_reconstructor("tfp", window=TFP_DEFAULT_WINDOW, rate=options.rate)
    if name == "tfi":
        return get_reconstructor("tfi", rate=options.rate)
    if name == "ours-raw":
        if options.rate != DEFAULT_CONVERSION_RATE:
            raise EvaluationError(
                f"the learned model is trained for conversion rate {DEFAULT_CONVERSION_RATE}")
        model = _load_reconstruction_model(options.model_id)
        return lambda spikes, moments: model.reconstruct(spikes, moments, stride=options.stride)
    raise EvaluationError(f"unknown reconstruction {name!r}")


def ours_rate_points(
    item: EvalItem, moments: np.ndarray, truth: np.ndarray, truth_positions: np.ndarray,
    options: EvalOptions,
) -> list[RatePoint]:
    """Rate points of our codec on one item: for every quality of ``options.codec_model``, the
    spikes are encoded into a ``.sci`` file (stride ``options.stride``, phase ``moments[0]``, GOP
    ``options.gop``), bits = the whole file, headers included; the file is decoded and the frames
    at ``moments[truth_positions]`` are scored against ``truth``. Encoding and decoding are timed
    separately; the models load once per item, outside both timings."""
    if not options.ours:
        return []
    import tempfile

    from spikecodec.codec import decode_stream, encode_reader, load_cloud_side, load_end_side, reads_decoded_motion
    from spikecodec.io import ArrayReader

    end_side = load_end_side(options.codec_model)
    if options.codec_weights is not None:
        from spikecodec.training import load_codec_weights

        end_side = replace(end_side, codec=load_codec_weights(options.codec_weights).eval())
    qualities = end_side.codec.config.qualities
    num_frames, height, width = item.spikes.shape
    wanted = moments[truth_positions]
    points = []
    cloud_side = None
    with tempfile.TemporaryDirectory(prefix="spikecodec-eval-") as folder:
        for quality in range(qualities):
            path = Path(folder) / f"q{quality}.sci"
            encoded = encode_reader(ArrayReader(item.spikes, item.name), path, quality=quality,
                                    stride=options.stride, phase=int(moments[0]), gop=options.gop,
                                    model=end_side, threads=options.threads)
            if cloud_side is None:
                cloud_side = load_cloud_side(encoded.header, None)
                if options.codec_weights is not None:  # the candidate decodes what it coded
                    cloud_side = (end_side.codec, cloud_side[1])
            decoded = decode_stream(path, threads=options.threads, models=cloud_side,
                                    refined_motion=reads_decoded_motion(encoded.header, None))
            position = {int(t): k for k, t in enumerate(decoded.moments)}
            missing = [int(t) for t in wanted if int(t) not in position]
            if missing:
                raise EvaluationError(f"{item.name}: the codec has no frame at moments {missing[:5]}")
            frames = decoded.frames[[position[int(t)] for t in wanted]]
            quality_db, similarity = score_frames(truth, frames)
            bits = 8 * encoded.bytes
            points.append(RatePoint(
                codec="ours", setting=f"quality={quality}", bits=bits, bpp=bits / (num_frames * height * width),
                psnr=quality_db, ssim=similarity, encode_seconds=encoded.seconds,
                decode_seconds=decoded.seconds, frames_scored=int(wanted.size)))
    return points


@dataclass
class ItemResult:
    """Rows of one item and the reasons some methods did not run on it."""

    rows: list[dict[str, Any]]
    skipped: list[str]


def _clean(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, np.integer):
        return int(value)
    return value


def _base_row(item: EvalItem, moments: np.ndarray, scored: int) -> dict[str, Any]:
    num_frames, height, width = item.spikes.shape
    row = {name: None for name in ROW_FIELDS}
    row.update(input=item.name, source=item.source, moments=int(moments.size),
               frames_scored=int(scored), spike_frames=num_frames, height=height, width=width,
               speed_bin=item.meta.get("speed_bin") or None)
    return row


def _point_row(base: dict, method: str, reconstruction: str | None, point: RatePoint,
               analysis_seconds: float | None = None) -> dict[str, Any]:
    row = dict(base)
    row.update(method=method, reconstruction=reconstruction, codec=point.codec,
               setting=point.setting, qp=point.qp, bits=point.bits, bpp=point.bpp,
               psnr=point.psnr, ssim=point.ssim, encode_seconds=point.encode_seconds,
               decode_seconds=point.decode_seconds, analysis_seconds=analysis_seconds)
    if point.psnr is None:
        row["frames_scored"] = 0
    return {key: _clean(value) for key, value in row.items()}


def _error_row(base: dict, method: str, error: BaseException | str) -> dict[str, Any]:
    row = dict(base)
    row.update(method=method, error=str(error) or type(error).__name__)
    return {key: _clean(value) for key, value in row.items()}


_METHOD_ERRORS = (AnchorError, AnchorUnavailable, ValueError, RuntimeError, OSError)


def evaluate_item(item: EvalItem, options: EvalOptions) -> ItemResult:
    """Every requested method on one item (see the module docstring). A method that fails gives
    an error row and the others go on; an unusable item raises."""
    spikes = np.asarray(item.spikes)
    if spikes.ndim != 3 or 0 in spikes.shape:
        raise EvaluationError(f"{item.name}: spikes must be a non-empty (T, H, W) array")
    num_frames = spikes.shape[0]
    moments = evaluation_moments(num_frames, item.gt_index, options)
    lookup = {int(t): k for k, t in reversed(list(enumerate(item.gt_index)))}
    truth_positions = np.array([p for p, t in enumerate(moments) if int(t) in lookup],
                               dtype=np.int64)
    truth = _intensity(item.gt[[lookup[int(moments[p])] for p in truth_positions]], item.name)
    base = _base_row(item, moments, truth_positions.size)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []

    for name in options.reconstructions:
        try:
            reconstruct = _reconstructor(name, options)
            started = time.perf_counter()
            frames = np.asarray(reconstruct(spikes, moments), dtype=np.float32)
            analysis_seconds = time.perf_counter() - started
            quality, similarity = score_frames(truth, frames[truth_positions])
        except _METHOD_ERRORS as error:
            rows.append(_error_row(base, name, error))
            continue
        row = dict(base)
        row.update(method=name, reconstruction=name, codec="none", setting="uncompressed",
                   psnr=quality, ssim=similarity, analysis_seconds=analysis_seconds)
        rows.append({key: _clean(value) for key, value in row.items()})
        for codec in options.codecs:
            method = f"{name}+{codec}"
            try:
                points = video_anchor(frames, codec, options.qps, num_frames, truth,
                                      truth_positions, gop=options.gop, threads=options.threads)
            except AnchorUnavailable as error:
                skipped.append(f"{method}: {error}")
                continue
            except _METHOD_ERRORS as error:
                rows.append(_error_row(base, method, error))
                continue
            rows.extend(_point_row(base, method, name, p, analysis_seconds) for p in points)

    if options.lossless:
        try:
            points = lossless_anchor(spikes)
        except _METHOD_ERRORS as error:
            rows.append(_error_row(base, LOSSLESS, error))
        else:
            rows.extend(_point_row(base, p.codec, None, p) for p in points)

    if options.ours:
        try:
            rows.extend(_point_row(base, OURS, None, p)
                        for p in ours_rate_points(item, moments, truth, truth_positions, options))
        except _METHOD_ERRORS as error:
            rows.append(_error_row(base, OURS, error))
    else:
        skipped.append(OURS_NOT_AVAILABLE)
    return ItemResult(rows, skipped)


# ---------------------------------------------------------------------------------------------
# evaluating everything


@dataclass
class EvalSummary:
    """What :func:`evaluate` did: rows written, failures, skipped methods, output files."""

    rows: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    skipped: list[str]
    items: int
    failed_items: int
    results_json: Path
    results_csv: Path


def _init_worker(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _preflight(options: EvalOptions) -> tuple[EvalOptions, list[str]]:
    """Drop what cannot run here (missing encoders, model weights), with the reasons. The
    moments keep the windows of every requested reconstruction."""
    skipped = []
    codecs = []
    for codec in options.codecs:
        problem = video_codec_problem(codec)
        if problem:
            skipped.append(problem)
        else:
            codecs.append(codec)
    reconstructions = list(options.reconstructions)
    if "ours-raw" in reconstructions:
        reconstruction_window("ours-raw", options)  # an unknown / wrong model id is a user error
        try:
            _load_reconstruction_model(options.model_id)
        except Exception as error:  # any load failure: skip the anchor and say why
            skipped.append(f"ours-raw ({options.model_id}): not evaluated: {error}")
            reconstructions.remove("ours-raw")
    ours = options.ours
    if ours:
        try:
            from spikecodec.codec import load_end_side

            load_end_side(options.codec_model)
        except Exception as error:  # any load failure: skip our codec and say why
            skipped.append(f"ours ({options.codec_model}): not evaluated: {error}")
            ours = False
    if options.lossless and find_jbig_tools() is None:
        skipped.append("jbig: not measured: pbmtojbg (Debian jbigkit-bin) is not installed")
    return replace(options, codecs=tuple(codecs), reconstructions=tuple(reconstructions), ours=ours,
                   window_reconstructions=options.reconstructions), skipped


def _environment() -> dict[str, Any]:
    environment = {"spikecodec": __version__, "python": platform.python_version(),
                   "machine": platform.machine(), "platform": platform.platform(),
                   "cpus": os.cpu_count()}
    try:
        environment["ffmpeg"] = ffmpeg_capabilities().version
    except AnchorUnavailable as error:
        environment["ffmpeg"] = f"unavailable: {error}"
    return environment


def _write_atomic(path: Path, text: str) -> None:
    from spikecodec.outputs import atomic_write

    atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def _csv_text(rows: Iterable[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if value is None else value) for key, value in row.items()})
    return buffer.getvalue()


def evaluate(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    stride: int = DEFAULT_STRIDE,
    qps: Sequence[int] = DEFAULT_QPS,
    gop: int = DEFAULT_GOP,
    methods: Sequence[str] = DEFAULT_METHODS,
    codecs: Sequence[str] = DEFAULT_CODECS,
    model_id: str = DEFAULT_EVAL_MODEL,
    codec_model: str = DEFAULT_CODEC_MODEL,
    limit: int | None = None,
    jobs: int = 1,
    threads: int | None = None,
    progress: bool = True,
    force: bool = False,
    update: bool = False,
) -> EvalSummary:
    """Evaluate every item of ``inputs`` and write ``out_dir/results.json`` and ``results.csv``.

    ``methods``: among ``tfp41``, ``tfi``, ``ours-raw`` (ATC reconstructions), ``lossless`` and
    ``ours`` (our codec ``codec_model`` at every quality);
    ``codecs``: video anchors (``x265``, ``vvc``) coding each reconstruction at every QP of
    ``qps`` with intra period ``gop``; ``model_id``: the learned reconstruction for ``ours-raw``;
    ``limit``: at most that many items per input file; ``jobs``: items evaluated in that many
    processes (each coder / torch then gets ``threads``, default cpus / jobs); existing results
    are kept unless ``force``, or with ``update`` the rows of the methods run now replace theirs and
    the other methods' rows stay (the other settings must be those of the existing results): one
    method, e.g. a new codec, is re-evaluated without re-running the anchors. Failed items are error
    rows; the others go on.
    """
    from tqdm import tqdm

    methods = run_methods = tuple(methods)
    unknown = [m for m in methods if m not in DEFAULT_METHODS]
    if unknown:
        raise EvaluationError(f"unknown method(s) {', '.join(unknown)}; choose from "
                              f"{', '.join(DEFAULT_METHODS)}")
    if isinstance(jobs, bool) or int(jobs) != jobs or jobs < 1:
        raise EvaluationError(f"jobs must be a positive integer, got {jobs!r}")
    if limit is not None and (int(limit) != limit or limit < 1):
        raise EvaluationError(f"limit must be a positive integer, got {limit!r}")
    if not inputs:
        raise EvaluationError("no input given")
    if threads is None and jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    requested = EvalOptions(
        stride=stride, qps=tuple(qps), gop=gop, model_id=model_id, threads=threads,
        reconstructions=tuple(m for m in RECONSTRUCTIONS if m in methods),
        codecs=tuple(codecs), lossless=LOSSLESS in methods, ours=OURS in methods, codec_model=codec_model,
    )
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / "results.json", out_dir / "results.csv"
    if out_dir.exists() and not out_dir.is_dir():
        raise EvaluationError(f"{out_dir}: exists and is not a directory")
    if force and update:
        raise EvaluationError("choose --force (replace the results) or --update (replace some methods' rows)")
    if not force and not update and (json_path.exists() or csv_path.exists()):
        raise EvaluationError(f"{out_dir} already holds results; use --force to replace them, or --update to "
                              "replace only the rows of the methods run now")
    kept_rows, kept_errors, kept_methods = [], [], []
    history: list[dict[str, Any]] = []  # one entry per run that wrote rows into the file (--update adds one)
    if update and json_path.exists():
        previous = load_results(out_dir)
        before = previous.get("settings", {})
        now = {"inputs": [str(p) for p in inputs], "stride": stride, "qps": list(qps), "gop": gop,
               "codecs": list(codecs), "model_id": model_id, "limit": limit, "codec_model": codec_model}
        # the codec model sets only ours' rows, the reconstruction model only ours-raw's: re-running
        # that method with another model replaces every row the setting touched
        scope = {"codec_model": OURS, "model_id": "ours-raw"}
        differ = [k for k, v in now.items() if k in before and before[k] != v and scope.get(k) not in methods]
        if differ:
            raise EvaluationError(f"{out_dir} holds results of other settings ({', '.join(differ)}: "
                                  f"{', '.join(repr(before[k]) for k in differ)}); use the same ones, or --force")
        kept_rows = [row for row in previous["rows"] if _requested_method(row) not in methods]
        kept_errors = [e for e in previous.get("errors", []) if e.get("method") != "*"
                       and _requested_method({"method": e.get("method"), "reconstruction": None}) not in methods]
        kept_methods = [m for m in before.get("methods", []) if m not in methods]
        history = previous.get("history") or [{"created": previous.get("created"), "methods": before.get("methods", [])}]
    out_dir.mkdir(parents=True, exist_ok=True)

    run_options, skipped = _preflight(requested)

    rows_by_item: dict[int, list[dict[str, Any]]] = {}
    errors: list[dict[str, Any]] = []
    skipped_all = list(skipped)
    items = failed = 0
    total = count_items(inputs, limit)

    def failure_row(name: str, source: str, message: str) -> dict[str, Any]:
        row = {key: None for key in ROW_FIELDS}
        row.update(input=name, source=source, method="*", error=message)
        return row

    def record(number: int, name: str, source: str, outcome: ItemResult | BaseException) -> None:
        nonlocal failed
        if isinstance(outcome, BaseException):
            failed += 1
            message = str(outcome) or type(outcome).__name__
            rows_by_item[number] = [failure_row(name, source, message)]
            errors.append({"input": name, "method": "*", "error": message})
            return
        rows_by_item[number] = outcome.rows
        for row in outcome.rows:
            if row.get("error"):
                errors.append({"input": name, "method": row["method"], "error": row["error"]})
        for reason in outcome.skipped:
            if reason not in skipped_all:
                skipped_all.append(reason)

    bar = tqdm(total=total, desc="eval", unit="input", disable=not progress)
    try:
        source_items = enumerate(iter_items(inputs, limit))
        if jobs == 1:
            _init_worker(threads)
            for number, item in source_items:
                items += 1
                if isinstance(item, InputFailure):
                    record(number, item.name, item.source, EvaluationError(item.error))
                else:
                    bar.set_postfix_str(item.name[-40:])
                    try:
                        outcome = evaluate_item(item, run_options)
                    except Exception as error:  # one bad input never stops the others
                        outcome = error
                    record(number, item.name, item.source, outcome)
                bar.update(1)
        else:
            import multiprocessing

            # spawn: forking a process that already runs torch / ffmpeg threads can deadlock
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                     initializer=_init_worker, initargs=(threads,)) as pool:
                pending: dict[Any, tuple[int, str, str]] = {}

                def collect(done) -> None:
                    for future in done:
                        number, name, source = pending.pop(future)
                        try:
                            outcome = future.result()
                        except Exception as error:
                            outcome = error
                        record(number, name, source, outcome)
                        bar.update(1)

                for number, item in source_items:
                    items += 1
                    if isinstance(item, InputFailure):
                        record(number, item.name, item.source, EvaluationError(item.error))
                        bar.update(1)
                        continue
                    future = pool.submit(evaluate_item, item, run_options)
                    pending[future] = (number, item.name, item.source)
                    # bounded in-flight items keep memory at a few streams per worker
                    if len(pending) >= 2 * jobs:
                        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                        collect(done)
                if pending:
                    done, _ = wait(list(pending))
                    collect(done)
    finally:
        bar.close()

    rows = [row for number in sorted(rows_by_item) for row in rows_by_item[number]]
    if kept_rows:
        order = {name: k for k, name in enumerate(dict.fromkeys(r["input"] for r in kept_rows + rows))}
        rows = sorted(kept_rows + rows, key=lambda row: order[row["input"]])  # stable: methods stay grouped
        errors = kept_errors + errors
        methods = tuple(m for m in DEFAULT_METHODS if m in methods or m in kept_methods)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # each earlier run keeps the methods whose rows are still its own
    history = [{**entry, "methods": [m for m in entry.get("methods", []) if m not in run_methods]} for entry in history]
    history = [entry for entry in history if entry["methods"]] + [{"created": created, "methods": list(run_methods)}]
    document = {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "created": created, "history": history,
        "settings": {
            "inputs": [str(p) for p in inputs], "stride": run_options.stride,
            "qps": list(run_options.qps), "gop": run_options.gop,
            "methods": list(methods), "codecs": list(requested.codecs),
            "codecs_run": list(run_options.codecs), "model_id": model_id, "limit": limit,
            "jobs": jobs, "threads": threads, "conversion_rate": run_options.rate, "codec_model": codec_model,
        },
        "environment": _environment(),
        "items": items, "failed_items": failed,
        "rows": [row for row in rows if not row.get("error")],
        "errors": errors,
        "skipped": skipped_all,
    }
    _write_atomic(json_path, json.dumps(document, indent=1, allow_nan=False) + "\n")
    _write_atomic(csv_path, _csv_text(rows))
    return EvalSummary(document["rows"], errors, skipped_all, items, failed, json_path, csv_path)


# ---------------------------------------------------------------------------------------------
# BD-rate reports


def _requested_method(row: dict[str, Any]) -> str:
    """The ``methods`` entry a result row comes from (ours, tfp41, tfi, ours-raw or lossless)."""
    if row.get("method") == OURS:
        return OURS
    family = row.get("reconstruction") or str(row.get("method", "")).split("+")[0]
    return family if family in RECONSTRUCTIONS else LOSSLESS


def load_results(results_dir: str | os.PathLike) -> dict[str, Any]:
    """``results_dir/results.json`` (or that file itself), checked: rows need input, method, bpp
    and psnr (null where a row has no rate or no quality)."""
    path = Path(results_dir)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise EvaluationError(f"{path}: no such file (run `spikecodec eval ... -o DIR` first)")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != RESULTS_FORMAT:
        raise EvaluationError(f"{path}: not a spikecodec eval results file")
    if int(document.get("version", -1)) != RESULTS_VERSION:
        raise EvaluationError(
            f"{path}: results version {document.get('version')} is not supported "
            f"(expected {RESULTS_VERSION})")
    rows = document.get("rows")
    if not isinstance(rows, list):
        raise EvaluationError(f"{path}: no rows")
    for number, row in enumerate(rows):
        if not isinstance(row, dict) or not {"input", "method", "bpp", "psnr"} <= set(row):
            raise EvaluationError(f"{path}: row {number} lacks input, method, bpp or psnr")
    return document


RDPoints = list[tuple[float, float, str]]  # (bpp, PSNR, setting) of one method on one input


def rd_curves(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, RDPoints]]:
    """``{method: {input: [(bpp, psnr, setting), ...]}}`` of the rows with a rate and a quality."""
    curves: dict[str, dict[str, RDPoints]] = {}
    for row in rows:
        if row.get("error") or row.get("bpp") is None or row.get("psnr") is None:
            continue
        rate, quality = float(row["bpp"]), float(row["psnr"])
        if not (rate > 0 and math.isfinite(rate) and math.isfinite(quality)):
            continue
        points = curves.setdefault(str(row["method"]), {}).setdefault(str(row["input"]), [])
        # the setting pairs points across inputs for the mean curve; without one, the order does
        setting = row.get("setting") or row.get("qp")
        points.append((rate, quality, str(setting) if setting is not None else f"#{len(points)}"))
    return curves


@dataclass(frozen=True)
class BDValue:
    """One Bjontegaard delta, or why there is none (``note``)."""

    value: float | None
    note: str = ""
    overlap: float | None = None

    def text(self, digits: int = 2) -> str:
        return f"{self.value:+.{digits}f}" if self.value is not None else self.note


@dataclass
class BDReport:
    """BD-rate (%) and BD-PSNR (dB) of every method against ``anchor``, per input and mean."""

    anchor: str
    interpolation: str
    inputs: list[str]
    methods: list[str]
    per_input: dict[tuple[str, str], tuple[BDValue, BDValue]]  # (method, input) -> (rate, psnr)
    mean: dict[str, tuple[BDValue, BDValue]]
    curves: dict[str, dict[str, RDPoints]]
    not_curves: dict[str, str]  # methods left out, with the reason

    def markdown(self) -> str:
        """Markdown tables: means, then per input."""
        lines = [
            f"BD-rate and BD-PSNR against `{self.anchor}` ({self.interpolation} on Pareto points; "
            "negative BD-rate and positive BD-PSNR favour the method; mean over the inputs "
            "where a value exists).", "",
            "| method | BD-rate (%) | BD-PSNR (dB) | inputs |", "| --- | ---: | ---: | ---: |",
        ]
        for method in self.methods:
            rate, quality = self.mean[method]
            covered = sum(1 for i in self.inputs
                          if (method, i) in self.per_input and self.per_input[(method, i)][0].value
                          is not None)
            compared = sum(1 for i in self.inputs if (method, i) in self.per_input)
            lines.append(f"| {method} | {rate.text()} | {quality.text(3)} | {covered}/{compared} |")
        if self.not_curves:
            lines += ["", "Not compared (no RD curve):", ""]
            lines += [f"- {method}: {reason}" for method, reason in sorted(self.not_curves.items())]
        lines += ["", "Per input:", "", "| input | method | BD-rate (%) | BD-PSNR (dB) |",
                  "| --- | --- | ---: | ---: |"]
        for name in self.inputs:
            for method in self.methods:
                if (method, name) in self.per_input:
                    rate, quality = self.per_input[(method, name)]
                    lines.append(f"| {name} | {method} | {rate.text()} | {quality.text(3)} |")
        return "\n".join(lines)

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["input", "method", "anchor", "interpolation", "bd_rate_percent",
                         "bd_rate_note", "bd_psnr_db", "bd_psnr_note"])

        def cells(rate: BDValue, quality: BDValue) -> list[Any]:
            return ["" if rate.value is None else rate.value, rate.note,
                    "" if quality.value is None else quality.value, quality.note]

        for method in self.methods:
            writer.writerow(["mean", method, self.anchor, self.interpolation,
                             *cells(*self.mean[method])])
        for name in self.inputs:
            for method in self.methods:
                if (method, name) in self.per_input:
                    writer.writerow([name, method, self.anchor, self.interpolation,
                                     *cells(*self.per_input[(method, name)])])
        return buffer.getvalue()


def _bd(function, anchor: RDCurve, test: RDCurve, interpolation: str) -> BDValue:
    try:
        return BDValue(function(anchor, test, method=interpolation))
    except InsufficientOverlap as error:
        return BDValue(None, f"insufficient overlap ({_percent_down(error.overlap)}%)",
                       error.overlap)
    except ValueError as error:
        return BDValue(None, str(error))


def _percent_down(share: float) -> int:
    # rounded down so that an overlap just under the 75% threshold never reads "75%"
    return int(math.floor(share * 100.0 + 1e-9))


def _mean(values: list[BDValue]) -> BDValue:
    numbers = [v.value for v in values if v.value is not None]
    if numbers:
        return BDValue(float(np.mean(numbers)))
    if not values:
        return BDValue(None, "no input with both curves")
    if len(values) == 1:
        return values[0]
    overlaps = [v.overlap for v in values if v.overlap is not None]
    if len(overlaps) == len(values):
        return BDValue(None, f"insufficient overlap on all {len(values)} inputs "
                             f"(mean {_percent_down(float(np.mean(overlaps)))}%)",
                       float(np.mean(overlaps)))
    notes = {v.note for v in values}
    if len(notes) == 1:
        return BDValue(None, f"{notes.pop()} (all {len(values)} inputs)")
    return BDValue(None, f"no value on any of {len(values)} inputs (see per input)")


def bdrate_report(results_dir: str | os.PathLike, anchor: str, interpolation: str = "pchip"
                  ) -> BDReport:
    """BD-rate / BD-PSNR of every method of ``results_dir/results.json`` against ``anchor``."""
    if interpolation not in BD_METHODS:
        raise EvaluationError(
            f"unknown interpolation {interpolation!r}; choose one of {', '.join(BD_METHODS)}")
    return bd_report(load_results(results_dir)["rows"], anchor, interpolation)


def bd_report(rows: Sequence[dict[str, Any]], anchor: str, interpolation: str = "pchip") -> BDReport:
    """BD-rate / BD-PSNR of every method of result ``rows`` against ``anchor``."""
    curves = rd_curves(rows)
    all_methods = sorted({str(row["method"]) for row in rows} | set(curves))
    not_curves = {}
    for method in all_methods:
        if method not in curves:
            not_curves[method] = "no rate or no quality (lossless coders, uncompressed frames)"
        elif all(len(points) < 2 for points in curves[method].values()):
            not_curves[method] = "a single rate point per input"
    if anchor not in curves or anchor in not_curves:
        usable = [m for m in curves if m not in not_curves]
        raise EvaluationError(
            f"anchor {anchor!r} has no RD curve in the results; methods with one: "
            f"{', '.join(usable) or 'none'}")
    methods = [m for m in curves if m != anchor and m not in not_curves]
    methods.sort()
    inputs = sorted({name for by_input in curves.values() for name in by_input})
    per_input: dict[tuple[str, str], tuple[BDValue, BDValue]] = {}
    for name in inputs:
        if name not in curves[anchor]:
            continue
        reference = RDCurve.of(*zip(*[(r, q) for r, q, _ in curves[anchor][name]]))
        for method in methods:
            if name not in curves[method]:
                continue
            test = RDCurve.of(*zip(*[(r, q) for r, q, _ in curves[method][name]]))
            per_input[(method, name)] = (_bd(bd_rate, reference, test, interpolation),
                                         _bd(bd_psnr, reference, test, interpolation))
    mean = {}
    for method in methods:
        pairs = [per_input[(method, name)] for name in inputs if (method, name) in per_input]
        mean[method] = (_mean([p[0] for p in pairs]), _mean([p[1] for p in pairs]))
    return BDReport(anchor, interpolation, inputs, methods, per_input, mean, curves, not_curves)


def mean_curve(by_input: dict[str, RDPoints]) -> tuple[np.ndarray, np.ndarray]:
    """A method's mean RD curve: at each setting found on every input, mean bpp and mean PSNR
    (sorted by rate)."""
    settings = None
    for points in by_input.values():
        names = {setting for _, _, setting in points}
        settings = names if settings is None else settings & names
    rates, qualities = [], []
    for setting in sorted(settings or ()):
        chosen = [(r, q) for points in by_input.values() for r, q, s in points if s == setting]
        rates.append(np.mean([r for r, _ in chosen]))
        qualities.append(np.mean([q for _, q in chosen]))
    order = np.argsort(rates)
    return np.asarray(rates)[order], np.asarray(qualities)[order]


def plot_rd(report: BDReport, path: str | os.PathLike, title: str | None = None) -> Path:
    """An RD plot (PNG) of every method's mean curve, the anchor drawn thicker."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(path)
    figure, axes = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    try:
        for method in [report.anchor] + report.methods:
            rates, qualities = mean_curve(report.curves[method])
            if rates.size == 0:
                continue
            is_anchor = method == report.anchor
            axes.plot(rates, qualities, marker="o", markersize=3.5,
                      linewidth=2.6 if is_anchor else 1.4,
                      label=f"{method} (anchor)" if is_anchor else method)
        axes.set_xscale("log")
        axes.set_xlabel("rate (bits per spike pixel)")
        axes.set_ylabel("PSNR (dB)")
        axes.set_title(title or f"RD, mean over {len(report.inputs)} input(s)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        from spikecodec.outputs import atomic_write

        atomic_write(path, lambda temporary: figure.savefig(temporary, format="png"))
    finally:
        plt.close(figure)
    return path


def write_bdrate(results_dir: str | os.PathLike, anchor: str, interpolation: str = "pchip",
                 plot_path: str | os.PathLike | None = None) -> tuple[BDReport, Path, Path]:
    """Write ``bdrate.csv`` and the RD plot (default ``rd.png``) into ``results_dir``."""
    report = bdrate_report(results_dir, anchor, interpolation)
    folder = Path(results_dir)
    folder = folder if folder.is_dir() else folder.parent
    csv_path = folder / "bdrate.csv"
    _write_atomic(csv_path, report.csv_text())
    png_path = plot_rd(report, plot_path if plot_path is not None else folder / "rd.png")
    return report, csv_path, png_path
