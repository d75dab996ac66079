"""Staged training of the SCI models (paper section V-B) and of the plain-CNN baseline.

Stages:

* ``"a"``: FEM + light proxy head, loss ``MSE(proxy(F_t), I_t) + smooth_weight * S(F_t)`` where
  ``S`` is the Laplacian smoothness penalty of :func:`smoothness_penalty`;
* ``"b"``: FEM frozen (loaded from a stage-a result), AFR + reconstruction head trained with MSE
  on uncompressed features of ``t - stride``, ``t``, ``t + stride``;
* ``"c1"``, ``"c2"``, ``"densities"``, ``"intra"``, ``"inter"``: the feature codec (:class:`CodecStage`);
* ``"cnn"``: the plain CNN on 41 raw spike frames, MSE (the benchmark baseline).

Data are made on the fly by the S-Motion generator (``data_tools.smotion.make_smotion_sample``
on the fixed training photographs, sprites cut from the same split) behind one function,
:func:`training_batches`. Generated clips go into a pool, a few are replaced every step, and each
batch takes random moments, crops' flips and transpositions from the pool: what a step sees
depends only on ``(seed, rank, step)``, so a resumed run sees exactly the batches the
uninterrupted run would have seen.

Output directory (rank 0 writes, the others only read):

* ``checkpoint.safetensors`` (model weights), ``optimizer.pt`` (optimizer and schedule state,
  read back with ``torch.load(weights_only=True)``), ``checkpoint.json`` (step, epoch, config;
  written last, so a checkpoint is complete when its JSON names its step);
* ``train_log.jsonl``: one JSON object per line, ``"event"`` ``"train"`` (loss every
  ``log_every`` steps) or ``"val"`` (validation PSNR each epoch, by speed bin, TFP41 beside it,
  and for stage (a) the Laplacian norms of F);
* at the end, the weights to ship: ``fem.safetensors`` (stage a), ``analysis.safetensors`` (stage
  b: AFR + head), ``plain-cnn.safetensors`` (cnn), each with its kind and config in the metadata,
  and ``weights.safetensors`` (the whole trained model).

Runs under ``torchrun`` (DDP): the process group is set up from the environment (gloo on CPU,
nccl on CUDA), each rank draws its own clips, gradients are averaged by DDP.

Ablations are configs of the same stages: ``"model": {"fem": {"dual_pathway": false}}`` (stage a,
ventral pathway only) and ``"model": {"afr": {"mode": "warp"}}`` or ``"deform"`` (stage b).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from spikecodec import DEFAULT_CONVERSION_RATE
from spikecodec.models.fem import FEM, FEMConfig, SpikePrefix
from spikecodec.models.sci import (
    FEMWithProxy, PlainCNN, PlainCNNConfig, ProxyConfig, SCIConfig, SCIReconstructor,
)
from spikecodec.models.weights_io import config_of, load_state, load_weights, save_weights, subset

STAGES = ("a", "b", "c1", "c2", "densities", "intra", "inter", "cnn")
CODEC_STAGES = ("c1", "c2", "densities", "intra", "inter")
# the hyper-latents, whose bits the training logs report apart
HYPER_LATENTS = ("z", "motion_z")
SMOOTH_NORMS = ("l1", "l2")
# "log_mse": the mean over samples of log(MSE), i.e. the mean PSNR the benchmarks report; plain MSE
# lets the samples with the largest errors (fast motion) dominate the gradient
IMAGE_LOSSES = ("mse", "log_mse")
# stages whose model can start from trained weights (init_weights)
INIT_STAGES = ("b", "cnn")
SPEED_BIN_NAMES = ("slow", "medium", "fast")
CHECKPOINT_VERSION = 1
# Config fields that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = {"steps", "log_every", "threads", "data_workers"}


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint."""

    stage: str = "a"
    model: dict[str, Any] = field(default_factory=dict)  # config of the trained model ({}: defaults)
    fem_weights: str | None = None  # stage b: stage-a output (fem.safetensors / dir) or registry id
    analysis_weights: str | None = None  # stages c1/c2: registry id of the stage-b reconstructor
    codec_weights: str | None = None  # stages c2/densities/intra/inter: a trained codec (directory, codec.safetensors, registry id)
    codec_frames: int = 4  # codec stages: moments coded per sample (one I frame, then P frames)
    feature_weight: float = 0.002  # stages c1/c2: weight of the feature MSE beside the image MSE
    steps: int = 3000
    steps_per_epoch: int = 250
    batch_size: int = 8
    crop: int = 64
    lr: float = 1e-3
    lr_final: float = 2e-5
    warmup_steps: int = 50
    grad_clip: float = 1.0
    smooth_weight: float = 0.01
    smooth_norm: str = "l2"
    stride: int = 20  # stage b: spike frames between the moment and its AFR neighbours
    replicate_prob: float = 0.1  # stage b: a neighbour replaced by the current feature (stream ends)
    pool_size: int = 32
    pool_refresh: int = 2  # clips replaced per step
    moment_range: int = 21  # centre moments a clip offers
    val_samples: int = 12
    val_crop: int = 96
    seed: int = 0
    rate: float = DEFAULT_CONVERSION_RATE
    threshold_sigma: float = 0.0
    dark_current: float = 0.0
    sprites: bool = True
    interpolation_order: int = 3
    log_every: int = 10
    threads: int | None = None
    data_workers: int = 0  # processes generating clips ahead of the steps (0: in the training process)
    image_loss: str = "mse"  # stages a, b, cnn: one of IMAGE_LOSSES
    init_weights: str | None = None  # stages b, cnn: start from these weights (.safetensors or registry id)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.image_loss not in IMAGE_LOSSES:
            raise ValueError(f"image_loss must be one of {IMAGE_LOSSES}, got {self.image_loss!r}")
        if self.init_weights and self.stage not in INIT_STAGES:
            raise ValueError(f"init_weights applies to stages {INIT_STAGES}, not {self.stage!r}")
        if self.smooth_norm not in SMOOTH_NORMS:
            raise ValueError(f"smooth_norm must be one of {SMOOTH_NORMS}, got {self.smooth_norm!r}")
        positive = ("steps", "steps_per_epoch", "batch_size", "crop", "stride", "pool_size",
                    "pool_refresh", "moment_range", "val_samples", "val_crop", "log_every")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.data_workers, bool) or int(self.data_workers) != self.data_workers or self.data_workers < 0:
            raise ValueError(f"data_workers must be an integer >= 0, got {self.data_workers!r}")
        if self.pool_refresh > self.pool_size:
            raise ValueError("pool_refresh cannot exceed pool_size")
        if not (self.lr > 0 and self.lr_final > 0):
            raise ValueError("learning rates must be positive")
        if self.smooth_weight < 0 or not 0 <= self.replicate_prob <= 1:
            raise ValueError("smooth_weight must be >= 0 and replicate_prob in [0, 1]")
        if self.stage == "b" and not self.fem_weights:
            raise ValueError("stage b needs fem_weights: the output of stage a (or a registry id)")
        if self.stage in CODEC_STAGES and not self.analysis_weights:
            raise ValueError(f"stage {self.stage} needs analysis_weights: the registry id of a stage-b reconstructor")
        if self.stage in ("c2", "densities", "intra", "inter") and not self.codec_weights:
            raise ValueError(f"stage {self.stage} needs codec_weights: a trained codec (stage c1 or c2 output, or a registry id)")
        # stage intra reconstructs the I frame (neighbours: itself and the next); the others a P frame
        fewest = 2 if self.stage == "intra" else 3
        if isinstance(self.codec_frames, bool) or int(self.codec_frames) != self.codec_frames or \
                self.codec_frames < fewest:
            raise ValueError(f"codec_frames must be an integer >= {fewest} (the reconstructed moment and its "
                             f"neighbours), got {self.codec_frames!r}")
        if self.feature_weight < 0:
            raise ValueError("feature_weight must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# smoothness of features (paper Table II)


def laplacian(features: torch.Tensor) -> torch.Tensor:
    """4-neighbour Laplacian of every channel, on interior pixels only (no padding)."""
    kernel = features.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    channels = features.shape[1]
    return F.conv2d(features, kernel.expand(channels, 1, 3, 3), groups=channels)


def laplacian_norms(features: torch.Tensor) -> dict[str, float]:
    """Smoothness of F (Table II): mean |lap F| ("l1"), mean (lap F)^2 ("l2"), and the same
    relative to the spread of F (mean |F - mean_c F|, variance), which do not depend on F's scale."""
    with torch.no_grad():
        lap = laplacian(features.float())
        centred = features.float() - features.float().mean(dim=(0, 2, 3), keepdim=True)
        l1, l2 = lap.abs().mean().item(), lap.pow(2).mean().item()
        spread1, spread2 = centred.abs().mean().item(), centred.pow(2).mean().item()
    return {
        "l1": l1, "l2": l2,
        "l1_relative": l1 / max(spread1, 1e-12), "l2_relative": l2 / max(spread2, 1e-12),
    }


def smoothness_penalty(features: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Laplacian penalty relative to the spread of F (per channel over the batch).

    Relative, because an absolute penalty is defeated by shrinking F (the next layer scales back).
    ``"l2"``: mean (lap F)^2 / mean (F - mean_c F)^2; ``"l1"``: the same with absolute values.
    """
    lap = laplacian(features)
    centred = features - features.mean(dim=(0, 2, 3), keepdim=True)
    if norm == "l2":
        return lap.pow(2).mean() / (centred.pow(2).mean() + 1e-8)
    if norm == "l1":
        return lap.abs().mean() / (centred.abs().mean() + 1e-8)
    raise ValueError(f"norm must be one of {SMOOTH_NORMS}, got {norm!r}")


@torch.no_grad()
def feature_smoothness(fem: FEM, clips: list["Clip"], moment_range: int) -> dict[str, float]:
    """:func:`laplacian_norms` of the FEM's features at the centre moment of each clip (Table II).

    Use the same clips (e.g. :func:`validation_clips`) for FEMs trained with and without the
    penalty; stage (a) logs these norms at every validation.
    """
    was_training = fem.training
    fem.eval()
    try:
        features = []
        for clip in clips:
            t = clip.first_moment + moment_range // 2
            window = torch.from_numpy(clip.spikes[t - fem.window_before:t + fem.window_after + 1]).float()[None]
            features.append(fem(window.to(next(fem.parameters()).device)))
    finally:
        fem.train(was_training)
    return laplacian_norms(torch.cat(features))


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class Clip:
    """A generated clip: spikes (L, h, w) uint8; gt (moment_range, h, w) float32 of the centre
    moments ``first_moment .. first_moment + moment_range - 1``; speed bin."""

    spikes: np.ndarray
    gt: np.ndarray
    first_moment: int
    speed_bin: str


def clip_geometry(config: TrainConfig, need: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """(frames per clip, frames before, frames after the centre moment).

    Every stage trains on the same clips: wide enough for stage b with the default FEM
    (``t - stride - 39 .. t + stride + 6``) and for the plain CNN's 41 frames, widened where the
    trained model ``need``s more (frames before, after the moment).
    """
    fem, cnn = FEMConfig(), PlainCNNConfig()
    before = max(config.stride + fem.window_before, cnn.window_before)
    after = max(config.stride + fem.window_after, cnn.window_after)
    if need is not None:
        before, after = max(before, need[0]), max(after, need[1])
    return before + config.moment_range + after, before, after


def image_index(config: TrainConfig) -> int:
    """Codec stages: position in the coded chain of the moment whose image the loss reads: the I
    frame for stage intra, else the second-to-last (a P frame with a coded next neighbour)."""
    return 0 if config.stage == "intra" else config.codec_frames - 2


def model_reach(config: TrainConfig, model: nn.Module) -> tuple[int, int]:
    """Frames before and after the moment that the stage's model reads."""
    if config.stage == "a":
        return model.fem.window_before, model.fem.window_after
    if config.stage == "b":
        return config.stride + model.fem.window_before, config.stride + model.fem.window_after
    if config.stage in CODEC_STAGES:
        index = image_index(config)
        return (index * config.stride + model.fem.window_before,
                (config.codec_frames - 1 - index) * config.stride + model.fem.window_after)
    return model.window_before, model.window_after


def training_photos(split: str) -> list[np.ndarray]:
    """Intensity maps of the fixed S-Motion photographs of ``split`` (data_tools/README.md)."""
    from data_tools.photos import load_photo, split_photos

    return [load_photo(name) for name in split_photos(split)]


def make_clip(
    config: TrainConfig, photos: list[np.ndarray], rng: np.random.Generator, size: int,
    geometry: tuple[int, int, int], speed_bin: str | None = None,
) -> Clip:
    """One random S-Motion clip at ``size`` x ``size`` with ``geometry`` from :func:`clip_geometry`.

    This is the data plug: replace it (``make`` arguments below) to train on other data.
    """
    from data_tools.smotion import make_smotion_sample

    length, before, _ = geometry
    if speed_bin is None:
        speed_bin = SPEED_BIN_NAMES[int(rng.integers(len(SPEED_BIN_NAMES)))]
    photo = photos[int(rng.integers(len(photos)))]
    spikes, gt, _ = make_smotion_sample(
        photo, rng, size, size, length, speed_bin,
        sprite_sources=photos if config.sprites else (), rate=config.rate,
        threshold_sigma=config.threshold_sigma, dark_current=config.dark_current,
        order=config.interpolation_order,
    )
    gt = np.ascontiguousarray(gt[before:before + config.moment_range])
    return Clip(spikes=spikes, gt=gt, first_moment=before, speed_bin=speed_bin)


# what a clip-generating worker process needs, set once when it starts
_WORKER_SOURCE: dict[str, Any] = {}


def _set_worker_source(source: dict[str, Any]) -> None:
    _WORKER_SOURCE.update(source)


def _clip_rng(config: TrainConfig, rank: int, version: int, slot: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, rank, version + 1, slot, 0x5C1])


def _make_clip_for(key: tuple[int, int], source: dict[str, Any] | None = None) -> Clip:
    """The clip of pool slot ``key[0]`` refreshed at step ``key[1]`` (in a worker: its source)."""
    source = _WORKER_SOURCE if source is None else source
    slot, version = key
    config = source["config"]
    return source["make"](config, source["photos"], _clip_rng(config, source["rank"], version, slot),
                          config.crop, source["geometry"])


class ClipPool:
    """Clips generated on the fly; ``pool_refresh`` of them replaced each step.

    The content of slot j at step s is the clip drawn with seed ``(seed, rank, s', j)``, s' the
    last step <= s that refreshed j (-1: initial fill), so the pool of any step can be rebuilt.
    With ``config.data_workers`` > 0, worker processes (forked, so ``make`` need not pickle)
    generate the clips of the coming steps while the model trains; the clips are the same.
    """

    def __init__(self, config: TrainConfig, photos: list[np.ndarray], rank: int,
                 geometry: tuple[int, int, int], make: Callable[..., Clip] = make_clip):
        self.config = config
        self.source = {"config": config, "photos": photos, "rank": rank, "geometry": geometry, "make": make}
        self.clips: list[Clip | None] = [None] * config.pool_size
        self.versions = [None] * config.pool_size
        self.executor = None
        self.pending: dict[tuple[int, int], Any] = {}
        if config.data_workers:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.executor = ProcessPoolExecutor(
                config.data_workers, mp_context=multiprocessing.get_context("fork"),
                initializer=_set_worker_source, initargs=(self.source,),
            )
            # enough steps ahead to keep every worker busy
            self.lookahead = -(-2 * config.data_workers // config.pool_refresh)

    def _is_refreshed(self, slot: int, step: int) -> bool:
        size, count = self.config.pool_size, self.config.pool_refresh
        return (slot - step * count) % size < count

    def _version(self, slot: int, step: int) -> int:
        for past in range(step, max(-1, step - self.config.pool_size - 1), -1):
            if self._is_refreshed(slot, past):
                return past
        return -1

    def _submit(self, key: tuple[int, int]) -> None:
        if key not in self.pending:
            self.pending[key] = self.executor.submit(_make_clip_for, key)  # type: ignore[union-attr]

    def at_step(self, step: int) -> list[Clip]:
        needed = [(slot, self._version(slot, step)) for slot in range(self.config.pool_size)]
        needed = [(slot, version) for slot, version in needed if self.versions[slot] != version]
        if self.executor is not None:
            for key in needed:
                self._submit(key)
            for ahead in range(step + 1, step + 1 + self.lookahead):
                for slot in range(self.config.pool_size):
                    if self._is_refreshed(slot, ahead):
                        self._submit((slot, ahead))
        for slot, version in needed:
            key = (slot, version)
            if self.executor is not None:
                self.clips[slot] = self.pending.pop(key).result()
            else:
                self.clips[slot] = _make_clip_for(key, self.source)
            self.versions[slot] = version
        return self.clips  # type: ignore[return-value]

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
            self.pending.clear()


def _augment(array: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Flip rows / columns and transpose the last two axes (square crops) per the 3 booleans."""
    if flips[0]:
        array = array[..., ::-1, :]
    if flips[1]:
        array = array[..., :, ::-1]
    if flips[2]:
        array = np.swapaxes(array, -1, -2)
    return np.ascontiguousarray(array)


def training_batches(
    config: TrainConfig, rank: int = 0, start_step: int = 0, photos: list[np.ndarray] | None = None,
    make: Callable[..., Clip] = make_clip, need: tuple[int, int] | None = None,
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Batches for steps ``start_step, start_step + 1, ...``, each a function of (seed, rank, step).

    A batch holds ``spikes`` (B, before + 1 + after, crop, crop) uint8 around the centre moment
    (index ``before``, see :func:`clip_geometry`), ``gt`` (B, 1, crop, crop) at that moment, and
    ``replicate_prev``/``replicate_next`` (B,) booleans for stage b.
    """
    photos = training_photos("train") if photos is None else photos
    geometry = clip_geometry(config, need)
    pool = ClipPool(config, photos, rank, geometry, make)
    _, before, after = geometry
    step = start_step
    try:
        while True:
            clips = pool.at_step(step)
            rng = np.random.default_rng([config.seed, rank, step + 1, 0xBA7C])
            spikes, gts = [], []
            for _ in range(config.batch_size):
                clip = clips[int(rng.integers(len(clips)))]
                offset = int(rng.integers(config.moment_range))
                t = clip.first_moment + offset
                flips = rng.random(3) < 0.5
                spikes.append(_augment(clip.spikes[t - before:t + after + 1], flips))
                gts.append(_augment(clip.gt[offset], flips))
            replicate = rng.random((2, config.batch_size)) < config.replicate_prob
            draw = rng.random(config.batch_size)  # stages c1/c2: each sample's quality
            yield step, {
                "spikes": torch.from_numpy(np.stack(spikes)),  # uint8: a quarter of float32's bytes to move
                "gt": torch.from_numpy(np.stack(gts))[:, None].float(),
                "replicate_prev": torch.from_numpy(replicate[0]),
                "replicate_next": torch.from_numpy(replicate[1]),
                "draw": torch.from_numpy(draw).float(),
            }
            step += 1
    finally:
        pool.close()  # stops the clip workers


def validation_clips(config: TrainConfig, photos: list[np.ndarray] | None = None,
                     make: Callable[..., Clip] = make_clip, need: tuple[int, int] | None = None) -> list[Clip]:
    """A fixed validation set (val photographs, speed bins in turn), the same on every run of one seed."""
    photos = training_photos("val") if photos is None else photos
    rng = np.random.default_rng([config.seed, 0x7A1])
    geometry = clip_geometry(config, need)
    return [
        make(config, photos, rng, config.val_crop, geometry, SPEED_BIN_NAMES[i % len(SPEED_BIN_NAMES)])
        for i in range(config.val_samples)
    ]


# ---------------------------------------------------------------------------------------------
# the task of each stage


def _features_at(fem: FEM, spikes: torch.Tensor, centre: int, offsets: tuple[int, ...]) -> list[torch.Tensor]:
    """FEM features (inference path, one prefix sum per clip) at ``centre + offset`` of (B, L, h, w)."""
    if spikes.device.type != "cpu":  # the FEM's batched inference (see FEM.forward)
        return [fem(spikes[:, centre + offset - fem.window_before:centre + offset + fem.window_after + 1])
                for offset in offsets]
    prefixes = [SpikePrefix.of(clip) for clip in spikes]
    runs = [bank.runs() for bank in fem.filter_banks()]
    return [
        torch.cat([fem.features_from_prefix(prefix, centre + offset - fem.window_before, runs=runs)
                   for prefix in prefixes])
        for offset in offsets
    ]


def image_loss(image: torch.Tensor, gt: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, detached batch MSE) of predicted images (B, 1, h, w); ``kind`` one of IMAGE_LOSSES."""
    per_sample = ((image - gt) ** 2).mean(dim=(1, 2, 3))
    # the floor keeps log finite on a perfect prediction (1e-8: 80 dB)
    loss = per_sample.clamp_min(1e-8).log().mean() if kind == "log_mse" else per_sample.mean()
    return loss, per_sample.mean().detach()


class StageTask(nn.Module):
    """Wraps the trained model so DDP sees one forward: batch -> (loss, terms, prediction)."""

    def __init__(self, config: TrainConfig, model: nn.Module, before: int):
        super().__init__()
        self.config, self.model, self.before = config, model, before

    def forward(self, spikes: torch.Tensor, gt: torch.Tensor, replicate_prev: torch.Tensor,
                replicate_next: torch.Tensor, draw: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        config, t = self.config, self.before
        if config.stage in CODEC_STAGES:
            if draw is None:
                raise ValueError(f"stage {config.stage} needs each sample's quality draw")
            return self.model.rd_loss(spikes, gt, t, draw)
        if config.stage == "a":
            fem = self.model.fem
            window = spikes[:, t - fem.window_before:t + fem.window_after + 1]
            out = self.model(window)
            loss, mse = image_loss(out["image"], gt, config.image_loss)
            smooth = smoothness_penalty(out["features"], config.smooth_norm)
            loss = loss + config.smooth_weight * smooth
            return loss, {"mse": mse, "smooth": smooth.detach()}, out["image"]
        if config.stage == "b":
            fem = self.model.fem
            with torch.no_grad():
                f_prev, f_cur, f_next = _features_at(fem, spikes, t, (-config.stride, 0, config.stride))
                keep_prev = (~replicate_prev).to(f_cur.dtype).view(-1, 1, 1, 1)
                keep_next = (~replicate_next).to(f_cur.dtype).view(-1, 1, 1, 1)
                f_prev = keep_prev * f_prev + (1 - keep_prev) * f_cur
                f_next = keep_next * f_next + (1 - keep_next) * f_cur
            image = self.model.analyze(f_prev, f_cur, f_next)["image"]
        else:
            half = self.model.config.window // 2
            image = self.model(spikes[:, t - half:t + half + 1])["image"]
        loss, mse = image_loss(image, gt, config.image_loss)
        return loss, {"mse": mse}, image


def _weights_file(source: str, in_directory: str | None = None) -> Path | None:
    """The local weights file that ``source`` names (a directory: its ``in_directory`` file), or
    None when ``source`` is not a path but a registry id."""
    path = Path(source)
    if in_directory and path.is_dir():
        path = path / in_directory
    return path if path.suffix == ".safetensors" or path.exists() else None


def _load_fem(source: str, device: torch.device) -> FEM:
    """A trained FEM from a stage-a output (directory or .safetensors) or a registry id."""
    path = _weights_file(source, "fem.safetensors")
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"no FEM weights at {path} (run stage a first)")
        tensors, metadata = load_weights(path)
        if metadata.get("kind") != "fem":
            raise ValueError(f"{path} holds a {metadata.get('kind')!r} model, not a FEM")
        fem = FEM(FEMConfig.from_dict(config_of(metadata, path)))
        load_state(fem, tensors, str(path))
        return fem.to(device)
    from spikecodec.models.registry import load_model

    model = load_model(source, device=device)
    if not isinstance(model, FEM):
        raise ValueError(f"registry id {source!r} is not a FEM")
    return model


class CodecStage(nn.Module):
    """Stages c1/c2 (paper Fig. 7c): frozen FEM -> feature codec -> AFR + reconstruction head.

    Each sample codes ``codec_frames`` moments ``stride`` apart (one I frame, then P frames); the
    image of the second-to-last moment is reconstructed from the decoded features of it and its two
    neighbours. Loss per sample: bits per pixel per moment (likelihood estimate) + lambda[q] * (image
    MSE + feature_weight * feature MSE), q drawn per sample. Stage c1 trains the whole codec with the
    stage-b analysis frozen (AFR on its own motion estimate); stage c2 freezes the FEM and
    everything the encoder computes alone or that sets the CDFs, and fine-tunes the decoder side
    (synthesis, motion decoder, context, entropy means, FMVR) with AFR and head, AFR reading the
    FMVR-refined decoded motion. Stage "intra" takes a trained codec and fine-tunes its I-frame
    coder alone on the image of the I frame (chains start at the image's moment; the analysis
    sees the I frame's feature as its own previous neighbour, as at a stream's start): stage c1
    reconstructs a P frame, so it trains the I coder only as a reference. Stage "inter" takes a
    trained codec and fine-tunes its P-frame coder alone (``codec.inter``: motion, context,
    contextual transforms, hyper-prior, priors) with stage c1's loss, the I coder and the analysis
    frozen, so a stage intra's gains stay. Stage "densities" takes a trained codec and refits only what sets
    probabilities but no decoded value (``FeatureCodec.probability_parameters``: the factorized
    priors of z and motion z, the scale heads, the per-quality scale offsets) to the bits of the rounded latents, over chains of
    ``codec_frames`` moments as long as the coder's GOPs: the priors' parameters move ~lr per step,
    far too slowly within a c1 run (measured on sci-codec-v2 after 600 steps: z cost 3.4 bits per
    element, 0.21 bits per pixel, whatever the quality or the scene), and the scales learnt on
    I,P,P,P chains were too narrow for the drift of long P chains (P-frame y at quality 0 ~18%
    dearer than with per-channel refitted scales). Nothing decoded changes. The priors become one
    per quality first (copies of the shared one), each fitted to its quality.
    """

    def __init__(self, config: TrainConfig, analysis: SCIReconstructor, codec: nn.Module):
        super().__init__()
        self.train_config, self.analysis, self.codec = config, analysis, codec
        self.refined_motion = config.stage == "c2"

    @property
    def fem(self) -> FEM:
        return self.analysis.fem

    @property
    def config(self) -> Any:
        return self.codec.config

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> Any:
        # compressai resizes the CDF buffers only when the codec itself loads them
        codec_part = {k[len("codec."):]: v for k, v in state_dict.items() if k.startswith("codec.")}
        rest = {k: v for k, v in state_dict.items() if not k.startswith("codec.")}
        first = self.codec.load_state_dict(codec_part, strict=False)
        second = self.analysis.load_state_dict(
            {k[len("analysis."):]: v for k, v in rest.items() if k.startswith("analysis.")}, strict=False)
        missing = [f"codec.{k}" for k in first.missing_keys] + [f"analysis.{k}" for k in second.missing_keys]
        unexpected = ([f"codec.{k}" for k in first.unexpected_keys] + [f"analysis.{k}" for k in second.unexpected_keys]
                      + [k for k in rest if not k.startswith("analysis.")])
        if strict and (missing or unexpected):
            raise RuntimeError(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return nn.modules.module._IncompatibleKeys(missing, unexpected)

    def set_trainable(self) -> None:
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        if self.train_config.stage == "c1":
            trainable = [self.codec]
        elif self.train_config.stage == "intra":
            trainable = [self.codec.intra]
        elif self.train_config.stage == "inter":
            trainable = [self.codec.inter]
        elif self.train_config.stage == "densities":
            trainable = []
            for parameter in self.codec.probability_parameters():
                parameter.requires_grad_(True)
        else:
            trainable = [self.analysis.afr, self.analysis.head] + self.codec.decoder_side_modules()
        for module in trainable:
            for parameter in module.parameters():
                parameter.requires_grad_(True)
        # the quantiles of the entropy bottlenecks are set at export (tails only), never trained here
        for name, parameter in self.codec.named_parameters():
            if name.endswith("quantiles"):
                parameter.requires_grad_(False)

    def set_mode(self, training: bool) -> None:
        if self.train_config.stage == "densities":
            # the densities are fitted to the rounded z the coder sees, not to noisy z
            self.eval()
            return
        self.train(training)
        self.fem.eval()
        if self.train_config.stage in ("c1", "intra", "inter"):
            self.analysis.eval()

    def rd_loss(self, spikes: torch.Tensor, gt: torch.Tensor, t: int, draw: torch.Tensor,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        config = self.train_config
        qualities = self.codec.config.qualities
        quality = torch.clamp((draw * qualities).long(), 0, qualities - 1)
        index = image_index(config)  # the image's moment is t
        offsets = tuple((k - index) * config.stride for k in range(config.codec_frames))
        with torch.no_grad():
            features = _features_at(self.fem, spikes, t, offsets)
        state, decoded, motions = None, [], []
        bits = spikes.new_zeros(spikes.shape[0])
        hyper_bits = spikes.new_zeros(spikes.shape[0])
        feature_mse = spikes.new_zeros(spikes.shape[0])
        for feature in features:
            out = self.codec(feature, quality, state)
            state = out["state"]
            decoded.append(out["x_hat"])
            motions.append(out["motion_refined"] if self.refined_motion else None)
            for name, likelihoods in out["likelihoods"].items():
                term = (-torch.log2(likelihoods)).sum(dim=(1, 2, 3))
                bits = bits + term
                if name in HYPER_LATENTS:
                    hyper_bits = hyper_bits + term
            feature_mse = feature_mse + ((out["x_hat"] - feature) ** 2).mean(dim=(1, 2, 3)) / len(features)
        pixels = len(features) * gt.shape[-2] * gt.shape[-1]
        rate = bits / pixels
        if config.stage == "densities":
            # nothing decoded depends on what this stage fits, so the bits are the whole loss; the
            # image is made for validation only
            terms = {"rate": rate.mean().detach(), "hyper_rate": (hyper_bits / pixels).mean().detach()}
            image = None
            if not torch.is_grad_enabled():
                image = self.analysis.analyze(decoded[index - 1], decoded[index], decoded[index + 1],
                                              quality=quality)["image"]
            return rate.mean(), terms, image
        # the I frame (stage intra) has no previous moment: its own feature stands in, as at a stream's start
        image = self.analysis.analyze(decoded[max(index - 1, 0)], decoded[index], decoded[index + 1],
                                      motion_prev=motions[index], quality=quality)["image"]
        image_mse = ((image - gt) ** 2).mean(dim=(1, 2, 3))
        lambdas = torch.tensor(self.codec.config.lambdas, dtype=rate.dtype, device=rate.device)[quality]
        loss = (rate + lambdas * (image_mse + config.feature_weight * feature_mse)).mean()
        terms = {"rate": rate.mean().detach(), "mse": image_mse.mean().detach(),
                 "feature_mse": feature_mse.mean().detach()}
        return loss, terms, image


@torch.no_grad()
def _set_feature_statistics(config: TrainConfig, model: "CodecStage", need: tuple[int, int],
                            make: Callable[..., Clip], photos: list[np.ndarray] | None, batches: int = 4) -> None:
    """Per-channel mean and standard deviation of F on the first training batches (seeded, so a
    resumed run computes the same), fixed into the codec config before training; a block-transform
    codec also takes its projections (principal components) from them."""
    _, before, _ = clip_geometry(config, need)
    features, following = [], []
    for step, batch in training_batches(config, 0, 0, photos, make, need):
        if step >= batches:
            break
        spikes = batch["spikes"].to(next(model.fem.parameters()).device)
        now, later = _features_at(model.fem, spikes, before, (0, config.stride))
        features.append(now)
        following.append(later)
    stacked = torch.cat(features)
    mean = stacked.mean(dim=(0, 2, 3))
    scale = stacked.std(dim=(0, 2, 3)).clamp_min(1e-3)
    if model.codec.config.transform == "block":
        # centring only: the projection then weighs the channels as the analysis sees them
        scale = torch.ones_like(scale)
    model.codec.set_feature_statistics([round(float(v), 6) for v in mean], [round(float(v), 6) for v in scale])
    if model.codec.config.transform == "block":
        model.codec.initialise_block_transforms(stacked, torch.cat(following))


def _load_reconstructor(model_id: str, device: torch.device) -> SCIReconstructor:
    from spikecodec.models.registry import load_model

    model = load_model(model_id, device=device)
    if not isinstance(model, SCIReconstructor):
        raise ValueError(f"registry id {model_id!r} is not a reconstructor (stage b result)")
    return model


def load_codec_weights(source: str, device: torch.device | str = "cpu") -> nn.Module:
    """A feature codec from a stage-c output (directory or codec.safetensors) or a registry id."""
    from spikecodec.models.codec import FeatureCodec, FeatureCodecConfig

    path = Path(source)
    if path.is_dir():
        path = path / "codec.safetensors"
    if path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"no codec weights at {path} (run stage c1 first)")
        tensors, metadata = load_weights(path)
        if metadata.get("kind") != "codec":
            raise ValueError(f"{path} holds a {metadata.get('kind')!r} model, not a codec")
        codec = FeatureCodec(FeatureCodecConfig.from_dict(config_of(metadata, path)))
        codec.load_state_dict(tensors)
        return codec.to(device)
    from spikecodec.models.registry import load_model

    model = load_model(source, device=device)
    if not isinstance(model, FeatureCodec):
        raise ValueError(f"registry id {source!r} is not a codec")
    return model


def _build_codec_stage(config: TrainConfig, device: torch.device) -> CodecStage:
    from spikecodec.models.codec import FeatureCodec, FeatureCodecConfig

    analysis = _load_reconstructor(config.analysis_weights, device)  # type: ignore[arg-type]
    if config.stage == "c1":
        codec_config = FeatureCodecConfig.from_dict(config.model) if config.model else FeatureCodecConfig()
        if codec_config.feature_channels != analysis.fem.config.channels:
            raise ValueError(f"codec feature_channels {codec_config.feature_channels} differ from the FEM's "
                             f"{analysis.fem.config.channels}")
        codec = FeatureCodec(codec_config)
    else:
        if config.model:
            raise ValueError(f"stage {config.stage} takes the codec config from codec_weights; leave model empty")
        # with its CDF tables: c2 leaves the entropy models frozen, so they stay valid (the
        # densities stage rebuilds them at export)
        codec = load_codec_weights(config.codec_weights, device)  # type: ignore[arg-type]
        if config.stage == "densities":
            from spikecodec.models.codec import with_hyperprior_per_quality

            codec = with_hyperprior_per_quality(codec)
    model = CodecStage(config, analysis, codec.to(device)).to(device)
    model.set_trainable()
    return model


def build_training_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """The model a stage trains (stage b: with its frozen FEM loaded and set to eval)."""
    if config.stage in CODEC_STAGES:
        return _build_codec_stage(config, device)
    if config.stage == "a":
        return FEMWithProxy(ProxyConfig.from_dict(config.model) if config.model else ProxyConfig()).to(device)
    if config.stage == "cnn":
        cnn = PlainCNN(PlainCNNConfig.from_dict(config.model) if config.model else PlainCNNConfig())
        if config.init_weights:
            load_state(cnn, _initial_weights(config.init_weights), f"init_weights {config.init_weights}")
        return cnn.to(device)
    fem = _load_fem(config.fem_weights, device)  # type: ignore[arg-type]
    data = dict(config.model)
    if "fem" in data and FEMConfig.from_dict(data["fem"]) != fem.config:
        raise ValueError("the model config's FEM differs from the FEM loaded from fem_weights")
    data["fem"] = fem.config.to_dict()
    data.setdefault("stride", config.stride)
    sci_config = SCIConfig.from_dict(data)
    if sci_config.stride != config.stride:
        raise ValueError(f"model stride {sci_config.stride} differs from training stride {config.stride}")
    model = SCIReconstructor(sci_config).to(device)
    model.fem.load_state_dict(fem.state_dict())
    if config.init_weights:
        tensors = _initial_weights(config.init_weights)
        # a stage-b export holds AFR and head only; a registry reconstructor also its FEM, which must be this one
        held_fem, fem_state = subset(tensors, "fem."), fem.state_dict()
        if held_fem and (held_fem.keys() != fem_state.keys() or
                         any(not torch.equal(held_fem[name].to(device), value) for name, value in fem_state.items())):
            raise ValueError(f"init_weights {config.init_weights!r} holds another FEM than fem_weights {config.fem_weights!r}")
        load_state(model, {**{f"fem.{k}": v for k, v in fem.state_dict().items()}, **tensors}, f"init_weights {config.init_weights}")
    model.fem.eval()
    for parameter in model.fem.parameters():
        parameter.requires_grad_(False)
    return model


def _initial_weights(source: str) -> dict[str, torch.Tensor]:
    """Trained weights a stage starts from (init_weights): a .safetensors file or a registry id."""
    path = _weights_file(source)
    if path is not None:
        return load_weights(path)[0]
    from spikecodec.models.registry import load_model

    return load_model(source).state_dict()


# ---------------------------------------------------------------------------------------------
# validation


def _set_mode(config: TrainConfig, model: nn.Module, training: bool) -> None:
    """train()/eval(), keeping the frozen FEM of stage b in eval mode."""
    if config.stage in CODEC_STAGES:
        model.set_mode(training)
        return
    model.train(training)
    if config.stage == "b":
        model.fem.eval()


def _psnr(reference: np.ndarray, test: np.ndarray) -> float:
    from spikecodec.metrics import psnr

    return psnr(reference, test)


@torch.no_grad()
def validate(config: TrainConfig, model: nn.Module, clips: list[Clip], device: torch.device) -> dict[str, Any]:
    """Mean PSNR of the stage's output on the validation clips, by speed bin, TFP41 beside it."""
    from spikecodec.baselines import tfp

    _, before, after = clip_geometry(config, model_reach(config, model))
    task = StageTask(config, model, before)
    was_training = model.training
    model.eval()
    results: dict[str, list[tuple[float, float]]] = {}
    features = []
    # codec stages: every quality in turn (the reported PSNR is the mean over qualities)
    qualities = list(range(model.codec.config.qualities)) if config.stage in CODEC_STAGES else [None]
    by_quality: dict[int, dict[str, list[float]]] = {}
    try:
        for quality in qualities:
            draw = None if quality is None else torch.tensor([(quality + 0.5) / len(qualities)], device=device)
            for clip in clips:
                t = clip.first_moment + config.moment_range // 2
                spikes = torch.from_numpy(clip.spikes[t - before:t + after + 1]).float()[None].to(device)
                gt = clip.gt[config.moment_range // 2]
                no = torch.zeros(1, dtype=torch.bool, device=device)
                _, terms, image = task(spikes, torch.from_numpy(gt)[None, None].to(device), no, no, draw)
                ours = _psnr(gt, image[0, 0].clamp(0, 1).cpu().numpy())
                baseline = _psnr(gt, tfp(clip.spikes, [t], rate=config.rate)[0])
                results.setdefault(clip.speed_bin, []).append((ours, baseline))
                if quality is not None:
                    entry = by_quality.setdefault(quality, {"psnr": [], "rate": []})
                    entry["psnr"].append(ours)
                    entry["rate"].append(float(terms["rate"]))
                if config.stage == "a":
                    fem = model.fem
                    features.append(fem(spikes[:, before - fem.window_before:before + fem.window_after + 1]))
    finally:
        _set_mode(config, model, was_training)
    every = [pair for pairs in results.values() for pair in pairs]
    report: dict[str, Any] = {
        "psnr": float(np.mean([p for p, _ in every])),
        "tfp41_psnr": float(np.mean([b for _, b in every])),
        "psnr_by_speed": {name: float(np.mean([p for p, _ in pairs])) for name, pairs in results.items()},
        "tfp41_psnr_by_speed": {name: float(np.mean([b for _, b in pairs])) for name, pairs in results.items()},
    }
    if features:
        report["laplacian"] = laplacian_norms(torch.cat(features))
    if by_quality:
        report["psnr_by_quality"] = {str(q): float(np.mean(v["psnr"])) for q, v in by_quality.items()}
        report["bits_per_pixel_moment_by_quality"] = {str(q): float(np.mean(v["rate"])) for q, v in by_quality.items()}
        report["spike_bpp_by_quality"] = {str(q): float(np.mean(v["rate"])) / config.stride
                                          for q, v in by_quality.items()}
    return report


# ---------------------------------------------------------------------------------------------
# distributed set-up


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistributedContext:
    """Process group from torchrun's environment (gloo on CPU, nccl on CUDA); a no-op alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    initialized_here = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        initialized_here = True
    if dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), device, initialized_here)
    return DistributedContext(0, 1, device, False)


# ---------------------------------------------------------------------------------------------
# checkpoints


def atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def lr_schedule(config: Any) -> Callable[[int], float]:
    """Linear warm-up then cosine decay from lr to lr_final over ``steps`` (a factor of lr)."""
    floor = config.lr_final / config.lr

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def save_checkpoint(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, config: TrainConfig, step: int, extra: dict[str, Any]) -> None:
    """Weights (safetensors), optimizer state (torch.save of tensors only), then the JSON."""
    save_weights(model.state_dict(), out_dir / "checkpoint.safetensors", f"train-stage-{config.stage}",
                 config.to_dict(), extra={"step": str(step)})
    temporary = out_dir / "optimizer.pt.tmp"
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, temporary)
    os.replace(temporary, out_dir / "optimizer.pt")
    state = {"version": CHECKPOINT_VERSION, "step": step, "config": config.to_dict(), **extra}
    atomic_write_text(out_dir / "checkpoint.json", json.dumps(state, indent=1, sort_keys=True))


def load_checkpoint(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    config: TrainConfig) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns its JSON state."""
    state = json.loads((out_dir / "checkpoint.json").read_text())
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint in {out_dir} has version {state.get('version')}, expected {CHECKPOINT_VERSION}")
    saved = TrainConfig.from_dict(state["config"]).to_dict()  # fields added since take their defaults
    current = config.to_dict()
    differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES)
    if differing:
        raise ValueError(f"cannot resume {out_dir}: the training config differs in {differing}")
    tensors, metadata = load_weights(out_dir / "checkpoint.safetensors")
    if metadata.get("step") != str(state["step"]):
        raise ValueError(f"checkpoint in {out_dir} is incomplete (weights of step {metadata.get('step')}, "
                         f"JSON of step {state['step']})")
    load_state(model, tensors, f"checkpoint {out_dir}")
    opt_state = torch.load(out_dir / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(opt_state["optimizer"])
    scheduler.load_state_dict(opt_state["scheduler"])
    return state


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` (a resumed run writes them again)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def save_analysis(analysis: SCIReconstructor, path: Path) -> str:
    """Write a reconstructor's trained part (AFR + head; its FEM has its own file); returns the sha256."""
    tensors = {f"afr.{k}": v for k, v in analysis.afr.state_dict().items()}
    tensors.update({f"head.{k}": v for k, v in analysis.head.state_dict().items()})
    return save_weights(tensors, path, "reconstructor", analysis.config.to_dict())


def export_weights(config: TrainConfig, model: nn.Module, out_dir: Path) -> dict[str, str]:
    """Write the shippable weights of a finished stage; returns file name -> sha256."""
    written = {}
    if config.stage == "a":
        written["fem.safetensors"] = save_weights(model.fem.state_dict(), out_dir / "fem.safetensors",
                                                  "fem", model.fem.config.to_dict())
    elif config.stage == "b":
        written["analysis.safetensors"] = save_analysis(model, out_dir / "analysis.safetensors")
    elif config.stage in CODEC_STAGES:
        written["codec.safetensors"] = export_codec(model.codec, out_dir / "codec.safetensors",
                                                   base=model.fem.config.to_dict())
        if config.stage == "c2":
            written["analysis.safetensors"] = save_analysis(model.analysis, out_dir / "analysis.safetensors")
    else:
        written["plain-cnn.safetensors"] = save_weights(model.state_dict(), out_dir / "plain-cnn.safetensors",
                                                        "plain-cnn", model.config.to_dict())
    written["weights.safetensors"] = save_weights(model.state_dict(), out_dir / "weights.safetensors",
                                                  f"stage-{config.stage}", model.config.to_dict())
    return written


def export_codec(codec: nn.Module, path: Path, base: dict[str, Any]) -> str:
    """Freeze a trained codec for coding and save it: the entropy bottlenecks' tail quantiles are
    searched (medians kept: training rounded z around them), then the integer CDF tables are built
    once and saved as buffers, so every decoder uses the encoder's tables bit for bit."""
    from compressai.entropy_models import EntropyBottleneck

    with torch.no_grad():
        for module in codec.modules():
            if isinstance(module, EntropyBottleneck):
                medians = module.quantiles[:, :, 1:2].clone()
                module._update_quantiles()
                module.quantiles[:, :, 1:2] = medians
                low, high = module.quantiles[:, :, 0:1], module.quantiles[:, :, 2:3]
                module.quantiles[:, :, 0:1] = torch.minimum(low, medians - 1)
                module.quantiles[:, :, 2:3] = torch.maximum(high, medians + 1)
    codec.update(force=True)
    return save_weights(codec.state_dict(), path, "codec", codec.config.to_dict(),
                        extra={"fem_config": json.dumps(base, sort_keys=True)})


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
    model: nn.Module
    step: int
    last_validation: dict[str, Any] | None
    exported: dict[str, str]


def train(
    config: TrainConfig, out_dir: str | os.PathLike, resume: bool = False, until: int | None = None,
    progress: bool = True, make: Callable[..., Clip] = make_clip,
    photos: dict[str, list[np.ndarray]] | None = None,
) -> TrainResult:
    """Run (or resume) one training stage; see the module docstring for what is written.

    ``until`` stops after that many steps in all (an interruption, for tests); the schedule still
    spans ``config.steps``. ``make``/``photos`` replace the data source (tests).
    """
    out_dir = Path(out_dir)
    context = setup_distributed()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, out_dir, resume, until, progress, make, photos, context)
    finally:
        if context.initialized_here:
            dist.destroy_process_group()


def _train(config: TrainConfig, out_dir: Path, resume: bool, until: int | None, progress: bool,
           make: Callable[..., Clip], photos: dict[str, list[np.ndarray]] | None,
           context: DistributedContext) -> TrainResult:
    device = context.device
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_training_model(config, device)
    need = model_reach(config, model)
    if config.stage == "c1" and not model.codec.config.feature_mean:
        _set_feature_statistics(config, model, need, make, (photos or {}).get("train"))
    _, before, _ = clip_geometry(config, need)
    task = StageTask(config, model, before)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(config))
    log_path = out_dir / "train_log.jsonl"

    start = 0
    state: dict[str, Any] = {}
    if resume and (out_dir / "checkpoint.json").exists():
        state = load_checkpoint(out_dir, model, optimizer, scheduler, config)
        start = int(state["step"])
    elif context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if log_path.exists():  # a fresh start: an old log describes another run
            log_path.unlink()
    if context.is_main and start:
        truncate_log(log_path, start)
    if context.world_size > 1:
        dist.barrier()  # rank 0 has read the checkpoint and prepared the directory
        wrapped: nn.Module = nn.parallel.DistributedDataParallel(
            task, device_ids=[device.index] if device.type == "cuda" else None
        )
    else:
        wrapped = task

    stop = config.steps if until is None else min(config.steps, until)
    val_clips = validation_clips(config, (photos or {}).get("val"), make, need) if context.is_main else []
    last_validation = state.get("last_validation")
    elapsed = float(state.get("elapsed_s", 0.0))
    began = time.monotonic()
    _set_mode(config, model, True)
    bar = None
    if progress and context.is_main:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=start, desc=f"stage {config.stage}", unit="step")
    batches = training_batches(config, context.rank, start, (photos or {}).get("train"), make, need)
    log = open(log_path, "a") if context.is_main else None
    try:
        for step, batch in batches:
            if step >= stop:
                break
            batch = {k: v.to(device) for k, v in batch.items()}
            batch["spikes"] = batch["spikes"].float()  # converted where the model runs
            # noise inside the models (the codec's uniform quantisation noise) is a function of the step
            # too, so a resumed run repeats it
            torch.manual_seed(int(np.random.SeedSequence([config.seed, context.rank, step, 0x70C4]).generate_state(1)[0]))
            loss, terms, _ = wrapped(**batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            done = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4g}")
            if log is not None and (done % config.log_every == 0 or done == stop):
                entry = {"event": "train", "step": done, "epoch": (done - 1) // config.steps_per_epoch,
                         "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                         "elapsed_s": elapsed + time.monotonic() - began}
                entry.update({k: v.item() for k, v in terms.items()})
                log.write(json.dumps(entry) + "\n")
                log.flush()
            if done % config.steps_per_epoch == 0 or done == stop:
                if context.is_main:
                    last_validation = validate(config, model, val_clips, device)
                    entry = {"event": "val", "step": done, "epoch": (done - 1) // config.steps_per_epoch,
                             **last_validation}
                    log.write(json.dumps(entry) + "\n")  # type: ignore[union-attr]
                    log.flush()  # type: ignore[union-attr]
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss.item():.4g}", val_psnr=f"{last_validation['psnr']:.2f}")
                    save_checkpoint(out_dir, model, optimizer, scheduler, config, done, {
                        "epoch": (done - 1) // config.steps_per_epoch, "last_validation": last_validation,
                        "elapsed_s": elapsed + time.monotonic() - began,
                    })
                if context.world_size > 1:
                    dist.barrier()
    finally:
        batches.close()  # stops the clip workers
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    final_step = max(start, stop)
    exported: dict[str, str] = {}
    if final_step >= config.steps and context.is_main:
        exported = export_weights(config, model, out_dir)
    if context.world_size > 1:
        dist.barrier()
    return TrainResult(model=model, step=final_step, last_validation=last_validation, exported=exported)


def load_train_config(path: str | os.PathLike | None, overrides: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a JSON file (optional) with ``overrides`` (None values ignored) on top."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read training config {path}: {error}") from error
        if not isinstance(data, dict):
            raise ValueError(f"training config {path} must hold a JSON object")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data)


__all__ = [
    "Clip", "ClipPool", "DistributedContext", "STAGES", "StageTask", "TrainConfig", "TrainResult",
    "CODEC_STAGES", "CodecStage", "build_training_model", "clip_geometry", "export_codec", "load_codec_weights", "feature_smoothness", "model_reach", "export_weights", "laplacian", "laplacian_norms",
    "load_checkpoint", "load_train_config", "make_clip", "save_checkpoint", "setup_distributed",
    "smoothness_penalty", "train", "training_batches", "training_photos", "validate", "validation_clips",
]
