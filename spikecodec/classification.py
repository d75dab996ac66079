"""Classification from the bitstream (S-MNIST): ``spikecodec classify``, head training, accuracy.

* :func:`classify_stream` / :func:`classify_spikes`: a clip's label and top-K probabilities, from a
  ``.sci`` file (decoded features, no reconstruction) or from raw spikes (uncompressed features).
  Every moment is classified from its decoded features and its neighbours' (AFR; the decoded motion
  only for heads trained on it, registry `decoded_motion`);
  the clip's log-probabilities are the mean of its moments'.
* :func:`train_classifier`: stage (b)/(c) for the classification head (paper Fig. 7): FEM and codec
  frozen, AFR + head trained with cross-entropy on S-MNIST train, each batch on the decoded
  features of a random quality (the codec's forward pass in eval mode: real rounding) or, for a
  share of the batches, on uncompressed features. Every moment of a clip is trained on, with its
  neighbours at a random one of the training strides, paired as the stream pairs them (a clip's
  first and last moments stand in for their missing neighbour). ``reference=True`` trains the same
  head on TFP41 images from the raw spikes instead (the 1 bpp reference).
* :func:`evaluate_classifier`: accuracy on S-MNIST test, uncompressed and through real encoded
  streams at every quality (bpp of the whole file), per-class precision / recall / F1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spikecodec import DEFAULT_CODEC_MODEL, DEFAULT_GOP, DEFAULT_STRIDE

DEFAULT_CLASSIFIER = "sci-codec-v6-mnist"


class ClassificationError(ValueError):
    """A stream cannot be classified as asked (the message says why)."""


# ------------------------------------------------------------------------------------ inference


def _classifier_for(header: Any, model: str | None) -> tuple[str, Any]:
    from spikecodec.models.registry import classifiers_for, get_spec, load_model

    if model is None:
        candidates = classifiers_for(header.model_id)
        if not candidates:
            raise ClassificationError(
                f"no installed classifier reads streams of model {header.model_id!r} (classifiers exist for "
                f"{', '.join(sorted({get_spec(m).base for m in _all_classifiers()})) or 'no codec'})")
        model = candidates[0]
    spec = get_spec(model)
    if spec.kind != "classifier":
        raise ClassificationError(f"{model!r} is a {spec.kind}, not a classifier")
    if spec.base != header.model_id:
        raise ClassificationError(f"classifier {model!r} reads streams of {spec.base!r}; this stream was made "
                                  f"with {header.model_id!r}")
    return model, load_model(model)


def _all_classifiers() -> list[str]:
    from spikecodec.models.registry import REGISTRY

    return [spec.model_id for spec in REGISTRY.values() if spec.kind == "classifier"]


def _result(log_probabilities: torch.Tensor, top: int, moments: int, **extra: Any) -> dict[str, Any]:
    probabilities = log_probabilities.exp()
    top = max(1, min(int(top), probabilities.numel()))
    values, classes = probabilities.topk(top)
    return {"label": int(classes[0]), "top": [{"class": int(c), "probability": float(v)}
                                                for c, v in zip(classes, values)],
            "moments": moments, **extra}


@torch.no_grad()
def classify_stream(path: str | os.PathLike, *, model: str | None = None, top: int = 1,
                    threads: int | None = None) -> dict[str, Any]:
    """Label and top-``top`` probabilities of the clip in a ``.sci`` file, from its decoded features."""
    from spikecodec.bitstream import LatentHasher, SciReader
    from spikecodec.codec import _decoded_features, _threads, load_stream_codec, neighbourhoods
    from spikecodec.models.classifier import clip_log_probabilities
    from spikecodec.models.registry import get_spec

    _threads(threads)
    started = time.perf_counter()
    with SciReader(path) as reader:
        header = reader.header
        classifier_id, classifier = _classifier_for(header, model)
        decoded_motion = get_spec(classifier_id).decoded_motion  # as the head was trained (registry)
        codec = load_stream_codec(header)
        hasher = LatentHasher()
        logits = []
        count = reader.end.frame_count
        for previous, current, following in neighbourhoods(
                _decoded_features(codec, header, reader.frames(), hasher), count):
            motion = current[2] if decoded_motion and previous is not current else None
            logits.append(classifier.analyze(previous[1], current[1], following[1], motion)[0])
        reader.verify_content_hash(hasher.digest())
    return _result(clip_log_probabilities(torch.stack(logits)), top, len(logits),
                   model_id=header.model_id, classifier=classifier_id, seconds=time.perf_counter() - started)


@torch.no_grad()
def classify_spikes(spikes: np.ndarray, classifier: Any, *, stride: int = DEFAULT_STRIDE, top: int = 1) -> dict[str, Any]:
    """Label of a raw clip (T, H, W) from uncompressed features (AFR estimates motion itself)."""
    from spikecodec.models.classifier import clip_log_probabilities
    from spikecodec.models.fem import extract_features
    from spikecodec.models.sci import neighbour_moments
    from spikecodec.moments import moments_for

    fem = classifier.fem
    moments = moments_for(spikes.shape[0], stride, fem.window_before, fem.window_after)
    if moments.size == 0:
        raise ClassificationError(f"a clip of {spikes.shape[0]} spike frames holds no FEM window")
    features = extract_features(fem, spikes, moments)
    index = {int(t): k for k, t in enumerate(moments)}
    previous, following = neighbour_moments(moments, stride, spikes.shape[0], fem.window_before, fem.window_after)
    logits = classifier.analyze(features[[index[int(t)] for t in previous]], features,
                                features[[index[int(t)] for t in following]])
    return _result(clip_log_probabilities(logits), top, int(moments.size))


# ------------------------------------------------------------------------------------- training


@dataclass
class ClassifierTrainConfig:
    """Everything a classifier training run depends on; saved in its checkpoints."""

    data: str = "data/smnist_train.h5"  # comma-separated: several renderings of the train split
    codec: str = DEFAULT_CODEC_MODEL  # or a FEM id with raw_share 1 (uncompressed features only)
    init: str | None = None  # classifier.safetensors to start from (e.g. a run on uncompressed features)
    # reconstructor whose AFR (trained on the same FEM's features) initialises the classifier's AFR;
    # None: random. Its first layers already handle the features' scale.
    afr_from: str | None = "sci-small-v1-recon"
    reference: bool = False  # train the TFP41 image classifier (1 bpp reference) instead
    model: dict[str, Any] = field(default_factory=dict)  # ClassifierConfig afr / head overrides
    steps: int = 1500
    steps_per_epoch: int = 250
    batch_size: int = 32
    lr: float = 2e-3
    lr_final: float = 2e-5
    warmup_steps: int = 50
    raw_share: float = 0.25
    # relative odds of the codec qualities in the compressed batches; empty: all equally likely
    quality_weights: tuple[float, ...] = ()
    # the AFR reads the codec's refined motion (registry `decoded_motion` of the classifier made);
    # otherwise it estimates motion itself on decoded features too, as classify_stream then does
    decoded_motion: bool = False
    head_only: bool = False  # AFR frozen (run without gradients, ~3x faster steps): only the head learns
    # random rotation (degrees), scale and shift (pixels) of the fused features, the same for a sample's
    # channels; 0 disables. Varies digit shapes beyond the 4,000 training digits.
    augment_degrees: float = 0.0
    augment_scale: float = 0.0
    augment_shift: float = 0.0
    # moments trained on; empty: every moment of a clip at the smallest stride (as evaluated)
    centres: tuple[int, ...] = ()
    # each batch aligns its centre with the neighbours at one of these strides (as classify_stream
    # does: a clip's first and last moments stand in for their missing neighbour)
    strides: tuple[int, ...] = (DEFAULT_STRIDE, 2 * DEFAULT_STRIDE)
    seed: int = 0
    threads: int | None = None
    limit: int | None = None  # at most this many training clips (tests)

    def __post_init__(self) -> None:
        if any(isinstance(c, bool) or int(c) != c or c < 0 for c in self.centres):
            raise ValueError(f"centres must be spike-frame indices, got {self.centres!r}")
        self.centres = tuple(int(c) for c in self.centres)
        if not self.strides or any(isinstance(s, bool) or int(s) != s or s < 1 for s in self.strides):
            raise ValueError(f"strides must be one or more positive integers, got {self.strides!r}")
        self.strides = tuple(int(s) for s in self.strides)
        self.quality_weights = tuple(float(w) for w in self.quality_weights)
        if any(w < 0 for w in self.quality_weights) or (self.quality_weights and not sum(self.quality_weights)):
            raise ValueError("quality_weights must be non-negative and not all zero")
        for name in ("augment_degrees", "augment_scale", "augment_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.augment_scale < 1:
            raise ValueError("augment_scale must lie in [0, 1)")
        for name in ("steps", "steps_per_epoch", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.raw_share <= 1:
            raise ValueError("raw_share must lie in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["centres"] = list(self.centres)
        data["strides"] = list(self.strides)
        data["quality_weights"] = list(self.quality_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassifierTrainConfig":
        from spikecodec.models.classifier import config_from_dict

        return config_from_dict(cls, data, "classifier training")


def training_moments(config: ClassifierTrainConfig, num_frames: int, before: int,
                     after: int) -> tuple[list[int], dict[tuple[int, int], tuple[int, int]]]:
    """The centres of a clip of ``num_frames`` spike frames, and the (previous, next) neighbours of
    each centre at each training stride, as evaluation pairs them (``neighbour_moments``)."""
    from spikecodec.models.sci import neighbour_moments
    from spikecodec.moments import moments_for

    valid = moments_for(num_frames, min(config.strides), before, after)
    centres = list(config.centres) or [int(t) for t in valid]
    if not centres:
        raise ValueError(f"clips of {num_frames} spike frames hold no FEM window")
    outside = [t for t in centres if not before <= t <= num_frames - 1 - after]
    if outside:
        raise ValueError(f"centres {outside} lie outside the FEM windows of a {num_frames}-frame clip")
    neighbours = {}
    for stride in config.strides:
        previous, following = neighbour_moments(np.asarray(centres), stride, num_frames, before, after)
        neighbours.update({(t, stride): (int(p), int(n)) for t, p, n in zip(centres, previous, following)})
    return centres, neighbours


def _clip_frames(config: ClassifierTrainConfig) -> int:
    """Spike frames in a clip of the first training file."""
    from data_tools.smnist import load_smnist

    return int(load_smnist(config.data.split(",")[0], np.arange(1))[0].shape[1])


def _training_inputs(config: ClassifierTrainConfig, fem: Any, num_frames: int, needed: list[int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip: FEM features (fp16) at the moments ``needed`` (the centres and their neighbours), or
    TFP41 images there (reference); and the labels. Clips are read in batches and written into one
    tensor allocated up front (stacking per-clip tensors would briefly hold everything twice)."""
    from data_tools.smnist import load_smnist
    from spikecodec.baselines import tfp
    from spikecodec.models.fem import extract_features

    import h5py

    paths, counts = config.data.split(","), []
    for path in paths:
        with h5py.File(path, "r") as handle:
            total = int(handle["labels"].shape[0])
        counts.append(min(total, config.limit) if config.limit else total)
    stored: torch.Tensor | None = None
    labels, filled = [], 0
    for path, total in zip(paths, counts):
        for first in range(0, total, 200):
            spikes, batch_labels, _ = load_smnist(path, np.arange(first, min(total, first + 200)))
            labels.append(torch.from_numpy(batch_labels))
            for clip in spikes:
                if clip.shape[0] != num_frames:
                    raise ValueError(f"{path}: clips of {clip.shape[0]} spike frames; the first file's have "
                                     f"{num_frames}")
                if config.reference:
                    item = torch.from_numpy(tfp(clip, needed)).half()
                else:
                    item = extract_features(fem, clip, needed).half()
                if stored is None:
                    stored = torch.empty((sum(counts),) + tuple(item.shape), dtype=torch.float16)
                stored[filled] = item
                filled += 1
    return stored, torch.cat(labels)


def build_classifier(config: ClassifierTrainConfig) -> tuple[torch.nn.Module, Any, Any]:
    """(trained module, frozen FEM, frozen codec or None for the reference)."""
    from spikecodec.models.classifier import (
        ClassificationHeadConfig, ClassifierConfig, ImageClassifier, SCIClassifier,
    )
    from spikecodec.models.registry import get_spec, load_model

    spec = get_spec(config.codec)
    uncompressed_only = config.raw_share == 1.0 and spec.kind == "fem"
    if spec.kind != "codec" and not uncompressed_only:
        raise ValueError(f"{config.codec!r} is not a codec (a FEM id is accepted with raw_share 1 only)")
    fem = load_model(config.codec if uncompressed_only else spec.base)
    if config.reference:
        head = ClassificationHeadConfig.from_dict({**config.model.get("head", {}), "in_channels": 1})
        return ImageClassifier(head), fem, None
    data = {"fem": fem.config.to_dict(), **config.model}
    model = SCIClassifier(ClassifierConfig.from_dict(data))
    model.fem.load_state_dict(fem.state_dict())
    if config.afr_from and not config.init:
        source = load_model(config.afr_from)
        if source.fem.config != fem.config or source.afr.config != model.afr.config:
            raise ValueError(f"{config.afr_from!r} has another FEM or AFR config than the classifier")
        model.afr.load_state_dict(source.afr.state_dict())
    if config.init:
        from spikecodec.models.weights_io import load_state, load_weights, subset

        tensors, _ = load_weights(config.init)
        load_state(model.afr, subset(tensors, "afr."), f"{config.init} (AFR)")
        load_state(model.head, subset(tensors, "head."), f"{config.init} (head)")
    for parameter in model.fem.parameters():
        parameter.requires_grad_(False)
    return model, fem, None if uncompressed_only else load_model(config.codec)


@torch.no_grad()
def _decoded(codec: Any, features: torch.Tensor, quality: int) -> tuple[list[torch.Tensor], list[Any]]:
    """Decoded features of the moments ``features`` (B, n, C, H, W) holds, coded in order as an I
    frame then P frames, and the refined motion of each (None for the I frame)."""
    state, decoded, motions = None, [], []
    for k in range(features.shape[1]):
        out = codec(features[:, k], quality, state)
        state = out["state"]
        decoded.append(out["x_hat"])
        motions.append(out["motion_refined"] if k else None)
    return decoded, motions


def _augmented(fused: torch.Tensor, config: ClassifierTrainConfig, rng: np.random.Generator) -> torch.Tensor:
    """``fused`` (B, C, H, W) with each sample rotated, scaled and shifted at random about its centre."""
    from spikecodec.models.classifier import affine_warp

    batch = fused.shape[0]
    if not (config.augment_degrees or config.augment_scale or config.augment_shift):
        return fused
    degrees = rng.uniform(-config.augment_degrees, config.augment_degrees, batch)
    scale = 1.0 + rng.uniform(-config.augment_scale, config.augment_scale, batch)
    shift = rng.uniform(-config.augment_shift, config.augment_shift, (batch, 2))
    return affine_warp(fused, degrees, scale, shift)


def train_classifier(config: ClassifierTrainConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                     progress: bool = True, until: int | None = None) -> dict[str, Any]:
    """Train (or resume) a classifier; writes ``classifier.safetensors`` at the end (see module doc)."""
    from tqdm import tqdm

    from spikecodec.models.weights_io import load_state, load_weights, save_weights
    from spikecodec.training import lr_schedule

    if config.threads:
        torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    model, fem, codec = build_classifier(config)
    qualities = codec.config.qualities if codec is not None else 0
    # checked before the minutes of feature extraction
    if codec is None and not config.reference and config.raw_share < 1:
        raise ValueError("decoded features need a codec")
    if config.quality_weights and len(config.quality_weights) != qualities:
        raise ValueError(f"quality_weights names {len(config.quality_weights)} qualities; the codec has {qualities}")
    quality_odds = (np.asarray(config.quality_weights) / sum(config.quality_weights)
                    if config.quality_weights else None)
    num_frames = _clip_frames(config)
    centres, neighbours = training_moments(config, num_frames, fem.window_before, fem.window_after)
    needed = centres if config.reference else sorted(set(centres).union(*neighbours.values()))
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the run can start
    if config.head_only and not config.reference:
        for parameter in model.afr.parameters():
            parameter.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(config))
    start = 0
    log_path = out_dir / "train_log.jsonl"
    if resume and (out_dir / "checkpoint.json").exists():
        state = json.loads((out_dir / "checkpoint.json").read_text())
        if state["config"] != config.to_dict():
            raise ValueError(f"cannot resume {out_dir}: the training config differs")
        tensors, _ = load_weights(out_dir / "checkpoint.safetensors")
        load_state(model, tensors, f"checkpoint {out_dir}")
        saved = torch.load(out_dir / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        start = int(state["step"])
    elif log_path.exists():
        log_path.unlink()
    inputs, labels = _training_inputs(config, fem, num_frames, needed)
    position = {t: k for k, t in enumerate(needed)}
    stop = config.steps if until is None else min(until, config.steps)
    bar = tqdm(total=config.steps, initial=start, desc="classifier", unit="step", disable=not progress)
    model.train()
    if not config.reference:
        # the AFR stays in training mode even when frozen (--head-only): on CPU it then runs its
        # deformable convolution through grid sampling, several times faster than torchvision's kernel
        model.fem.eval()
    if codec is not None:
        codec.eval()
    began = time.monotonic()
    with open(log_path, "a") as log:
        for step in range(start, stop):
            rng = np.random.default_rng([config.seed, step, 0xC1A5])
            torch.manual_seed(int(rng.integers(2**62)))
            chosen = rng.choice(labels.numel(), size=min(config.batch_size, labels.numel()), replace=False)
            t = centres[int(rng.integers(len(centres)))]
            stride = config.strides[int(rng.integers(len(config.strides)))]
            target = labels[chosen]
            if config.reference:
                logits = model(inputs[chosen, position[t]][:, None].float())
                quality = "tfp41"
            else:
                previous, following = neighbours[t, stride]
                # a clip's first / last moment stands in for its missing neighbour (coded once)
                coded = sorted({previous, t, following})
                features = inputs[chosen][:, [position[m] for m in coded]].float()
                if rng.random() < config.raw_share:
                    quality, decoded, motions = "raw", [features[:, k] for k in range(len(coded))], None
                else:
                    quality = int(rng.integers(qualities) if quality_odds is None
                                  else rng.choice(qualities, p=quality_odds))
                    decoded, motions = _decoded(codec, features, quality)
                at = {m: k for k, m in enumerate(coded)}
                motion = motions[at[t]] if motions and config.decoded_motion else None
                with torch.set_grad_enabled(not config.head_only):
                    fused = model.afr(decoded[at[previous]], decoded[at[t]], decoded[at[following]], motion,
                                      None)["fused"]
                logits = model.head(_augmented(fused, config, rng))
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            accuracy = float((logits.argmax(1) == target).float().mean())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}")
            done = step + 1
            log.write(json.dumps({"step": done, "loss": loss.item(), "batch_accuracy": accuracy, "quality": quality,
                                  "moment": t, "stride": stride,
                                  "lr": scheduler.get_last_lr()[0], "elapsed_s": time.monotonic() - began}) + "\n")
            if done % config.steps_per_epoch == 0 or done == stop:
                log.flush()
                save_weights(model.state_dict(), out_dir / "checkpoint.safetensors", "classifier-checkpoint",
                             config.to_dict())
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                           out_dir / "optimizer.pt")
                (out_dir / "checkpoint.json").write_text(json.dumps({"step": done, "config": config.to_dict()}))
    bar.close()
    exported = {}
    if stop >= config.steps:
        model.eval()
        if config.reference:
            exported["reference.safetensors"] = save_weights(
                model.state_dict(), out_dir / "reference.safetensors", "image-classifier", model.config.to_dict())
        else:
            tensors = {f"afr.{k}": v for k, v in model.afr.state_dict().items()}
            tensors.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
            exported["classifier.safetensors"] = save_weights(
                tensors, out_dir / "classifier.safetensors", "classifier", model.config.to_dict(),
                extra={"codec": config.codec})
    return {"step": stop, "exported": exported, "model": model}


# ----------------------------------------------------------------------------------- evaluation


def per_class_report(truth: np.ndarray, predicted: np.ndarray, classes: int) -> list[dict[str, float]]:
    """Precision, recall, F1 and support of every class."""
    rows = []
    for c in range(classes):
        tp = int(((predicted == c) & (truth == c)).sum())
        fp = int(((predicted == c) & (truth != c)).sum())
        fn = int(((predicted != c) & (truth == c)).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": c, "precision": precision, "recall": recall, "f1": f1, "support": tp + fn})
    return rows


@torch.no_grad()
def _evaluate_clips(classifier_id: str, data: str, first: int, stop: int, qualities: list[int], stride: int,
                    gop: int, reference: str | None) -> dict[str, Any]:
    """Truth, predicted labels and bpp of test clips ``first``..``stop - 1`` (one worker's share)."""
    from data_tools.smnist import load_smnist
    from spikecodec.baselines import tfp
    from spikecodec.codec import encode_reader, load_end_side
    from spikecodec.io import ArrayReader
    from spikecodec.models.classifier import ClassificationHeadConfig, ImageClassifier, clip_log_probabilities
    from spikecodec.models.registry import get_spec, load_model
    from spikecodec.models.weights_io import config_of, load_state, load_weights
    from spikecodec.moments import moments_for

    classifier = load_model(classifier_id)
    image_model = None
    if reference:
        tensors, metadata = load_weights(reference)
        image_model = ImageClassifier(ClassificationHeadConfig.from_dict(config_of(metadata, reference)))
        load_state(image_model, tensors, str(reference))
        image_model.eval()
    truth: list[int] = []
    moment_counts: list[int] = []
    predicted: dict[str, list[int]] = {"raw": [], **{f"quality={q}": [] for q in qualities}}
    if image_model is not None:
        predicted["tfp41"] = []
    bits: dict[str, list[float]] = {f"quality={q}": [] for q in qualities}
    end_side = load_end_side(get_spec(classifier_id).base)  # once for every clip and quality
    spikes, labels, _ = load_smnist(data, np.arange(first, stop))
    with tempfile.TemporaryDirectory(prefix="spikecodec-cls-") as folder:
        path = Path(folder) / "c.sci"
        for clip, label in zip(spikes, labels):
            truth.append(int(label))
            uncompressed = classify_spikes(clip, classifier, stride=stride)
            predicted["raw"].append(uncompressed["label"])
            moment_counts.append(uncompressed["moments"])
            for q in qualities:
                encoded = encode_reader(ArrayReader(clip), path, quality=q, stride=stride, gop=gop, model=end_side,
                                        force=True)
                predicted[f"quality={q}"].append(classify_stream(path, model=classifier_id)["label"])
                bits[f"quality={q}"].append(8.0 * encoded.bytes / clip.size)
            if image_model is not None:
                moments = moments_for(clip.shape[0], stride, 20, 20)
                images = torch.from_numpy(tfp(clip, moments))[:, None]
                predicted["tfp41"].append(int(clip_log_probabilities(image_model(images)).argmax()))
    return {"truth": truth, "predicted": predicted, "bits": bits, "classes": classifier.classes,
            "moments": moment_counts}


def evaluate_classifier(classifier_id: str, data: str | os.PathLike, *, limit: int | None = None,
                        qualities: list[int] | None = None, stride: int = DEFAULT_STRIDE, gop: int = DEFAULT_GOP,
                        reference: str | None = None, jobs: int = 1, progress: bool = True) -> dict[str, Any]:
    """Accuracy on S-MNIST test: uncompressed features, every quality through real streams, and the
    TFP41 reference head (weights file ``reference``) if given, all at the moments ``stride`` spike
    frames apart. ``jobs`` processes share the clips (one torch thread each when more than one)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from tqdm import tqdm

    from spikecodec.evaluation import _init_worker
    from spikecodec.models.registry import get_spec

    import h5py

    spec = get_spec(classifier_id)
    codec_id = spec.base
    qualities = list(range(get_spec(codec_id).config["qualities"])) if qualities is None else qualities
    if isinstance(jobs, bool) or int(jobs) != jobs or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    with h5py.File(data, "r") as handle:
        total = int(handle["labels"].shape[0])
    total = min(total, limit) if limit else total
    # shares of at most 25 clips, at least 4 per worker: every worker stays busy to the end
    chunk = 100 if jobs == 1 else max(1, min(25, -(-total // (4 * jobs))))
    shares = [(first, min(total, first + chunk)) for first in range(0, total, chunk)]
    arguments = [(classifier_id, str(data), first, stop, qualities, stride, gop, reference)
                 for first, stop in shares]
    bar = tqdm(total=total, desc="classify", unit="clip", disable=not progress)
    if jobs == 1:
        parts = []
        for args in arguments:
            parts.append(_evaluate_clips(*args))
            bar.update(args[3] - args[2])
    else:
        # spawn: forking a process that already runs torch threads can deadlock
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(1,)) as pool:
            futures = [pool.submit(_evaluate_clips, *args) for args in arguments]
            parts = []
            for future, args in zip(futures, arguments):  # in order: labels stay aligned with clips
                parts.append(future.result())
                bar.update(args[3] - args[2])
    bar.close()
    truth_array = np.asarray([label for part in parts for label in part["truth"]])
    report = {"classifier": classifier_id, "codec": codec_id, "clips": total, "stride": stride, "gop": gop,
              "moments_median": float(np.median([m for part in parts for m in part["moments"]])), "rows": {}}
    for name in parts[0]["predicted"]:
        values_array = np.asarray([label for part in parts for label in part["predicted"][name]])
        bits = [value for part in parts for value in part["bits"].get(name, [])]
        report["rows"][name] = {
            "accuracy": float((values_array == truth_array).mean()),
            "bpp": float(np.mean(bits)) if bits else (1.0 if name in ("raw", "tfp41") else None),
            "per_class": per_class_report(truth_array, values_array, parts[0]["classes"]),
        }
    return report


__all__ = [
    "ClassificationError", "ClassifierTrainConfig", "DEFAULT_CLASSIFIER", "build_classifier", "classify_spikes",
    "classify_stream", "evaluate_classifier", "per_class_report", "train_classifier",
]
