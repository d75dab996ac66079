"""Learned feature codec of SCI (paper section IV-B): intra (I) and inter (P) coding of FEM features,
and FMVR, the feature-level refinement of the decoded motion.

Everything works on a feature ``F_t`` (B, C, H, W) of any H x W: the feature is padded on the right
and bottom to a multiple of 16 by edge replication (smooth, so the padding costs few bits), coded,
and the reconstruction is cropped back; ``shapes["x"]`` records the original size.

**Normalisation.** The codec works on ``(F - mean) / scale`` per channel (``feature_mean`` /
``feature_scale`` in the config, measured on training features when stage c1 starts) and returns
decoded features in the FEM's units; reference states stay normalised. The FEM's channels differ by
an order of magnitude in mean and spread, and without it the transforms spent their first thousand
steps learning offsets (measured: image MSE 0.009 against 0.016 after 180 steps of stage c1).

**Transforms.** ``transform="conv"`` (sci-codec-v1): the strided convolutions below.
``transform="block"`` (sci-codec-v2 and -v3, the default): :class:`BlockAnalysis` /
:class:`BlockSynthesis` replace g_a / g_s and the contextual encoder / decoder's transforms: a 1x1
projection to ``block_components`` components, 8x8 blocks and a 1x1 block transform (y at 1/8),
set to PCA + DCT before training, with P frames starting as residual coding against the reference
(zero motion, zero means) and the scale heads at the coefficients' spread
(:meth:`FeatureCodec.initialise_block_transforms`). Why: F is nearly rank 2 per pixel, and after
their training v1's convolutions lost more (23 dB without any quantisation, against 34 dB from
uncompressed features) than this untrained transform does with rounding (31 dB); docs/TRAINING.md.
With the block transform, feature_scale is 1 (centring only), so that the projection weighs the
channels as the analysis sees them.

**Intra (I) coding**, a mean-scale hyperprior in compressai's manner::

    y = g_a(F) / q_enc[q]          3x3 convolutions, y at 1/latent_stride resolution (4 or 3 of stride 2)
    z = h_a(y)                     z at y/4, EntropyBottleneck
    (scale code, mean) = h_s(z^)   exact integer network (below), GaussianConditional (or Laplace, ``likelihood``) for y
    F^ = g_s(y^ * q_dec[q])        4 transposed 4x4 convolutions, stride 2

Non-linearities are LeakyReLU, not GDN: the input is already a smooth, decorrelated feature (the
FEM is trained with a Laplacian smoothness penalty), which is where GDN's Gaussianisation of natural
image statistics helps least; GDN costs an extra C x C product and a square root per position at
every resolution, paid on the camera side; and plain activations are what a later integer/fixed-
point port of the end side handles directly (DCVC's successors dropped GDN for the same reasons).

**Inter (P) coding** in the DCVC manner, with the reference in one :class:`ReferenceState` and the
stages named after the pipeline (:class:`InterCodec`):

1. *motion estimation*: :class:`~spikecodec.models.afr.MotionEstimator` (the AFR's light CNN, at
   1/4 resolution, upsampled) between ``F_t`` and the decoded reference feature;
2. *motion coding*: motion encoder to latents at 1/16, its own hyperprior (EntropyBottleneck +
   GaussianConditional, exact hyper-synthesis), motion decoder back to a full-resolution field;
3. *motion compensation*: the reference feature, adapted by a 1x1 convolution, is warped with the
   decoded motion (:func:`~spikecodec.models.afr.flow_warp`) into the context;
4. *contextual encoder / decoder*: both conditioned on the context (concatenated at full
   resolution);
5. *entropy parameters*: a temporal prior computed from the context (at 1/16) is fused with the
   hyper-synthesis features into the means of y; the scales come from the hyperprior (see
   "Determinism"), and the hyper-analysis sees the temporal prior, so ``z`` carries the scale
   information the context does not give. With ``temporal_z`` (sci-codec-v4), a P frame that
   follows a P frame codes its ``z`` symbols as differences from that frame's (carried in the
   :class:`ReferenceState`), under fixed per-quality, per-channel scales
   (:func:`fit_temporal_z`); ``z`` repeats in time at 83-99% of positions. ``forward`` (training)
   still prices ``z`` with the factorized prior.

**FMVR** (:class:`FMVR`, decoder side only) refines the decoded motion with the decoded feature and
the warped reference by 3x3 convolutions (residual, last layer zero-initialised, so that it starts
as the identity); the refined motion is returned as ``motion_refined`` for AFR.

**Multi-rate**: one model serves ``config.qualities`` rates. Per quality q and latent channel there
are learned steps ``q_enc[q]`` and ``q_dec[q]`` (DCVC-DC): y is divided by ``q_enc[q]`` before
quantisation and multiplied by ``q_dec[q]`` after; likewise the motion latents with their own steps.
The rate-distortion weight of each quality is ``config.lambdas[q]`` (loss = bits per feature pixel
+ lambda * MSE of the feature). ``quality`` is an int or a (B,) tensor of ints. With
``hyperprior_per_quality`` the factorized priors of z and motion z are one per quality too
(:func:`with_hyperprior_per_quality`; fitted by the training stage "densities"): one shared prior
cost ~5x the entropy of z at quality 0, whose hyper-latents are nearly constant.

**API** (fixed dictionary keys; frame type "I" when ``reference`` is None, "P" otherwise):

* ``forward(x, quality, reference=None)`` -> ``{"frame_type", "x_hat", "likelihoods", "state",
  "motion", "motion_refined"}``; ``likelihoods`` has ``"z", "y"`` (I) or ``"motion_z", "motion_y",
  "z", "y"`` (P); ``motion``/``motion_refined`` (B, 2, H, W) in pixels, None for I frames.
  Uniform noise (training) or rounding (eval) for the likelihoods, straight-through rounding for
  what the decoders see.
* ``compress(x, quality, reference=None)`` (after ``update()``) -> ``{"frame_type", "strings",
  "shapes", "latents", "x_hat", "state"}``: ``strings[name]`` a list of bytes per batch item,
  ``shapes`` ``{"x": (H, W), "z": (h, w)}`` (+ ``"motion_z"`` for P), ``latents[name]`` the int32
  symbols the entropy coder saw (for the bitstream's end hash), in :data:`LATENT_NAMES` order,
  except that a P frame whose motion symbols are all zero leaves ``motion_z`` and ``motion_y``
  out (:data:`MOTIONLESS_P_NAMES`); ``likelihoods[name]`` those symbols' likelihoods under the
  coder's own parameters; ``x_hat`` is the encoder's own decoded reconstruction and ``state`` the
  next reference.
* ``decompress(strings, shapes, quality, reference=None)`` -> ``{"frame_type", "x_hat", "latents",
  "state", "motion", "motion_refined"}``; a P frame's strings without the motion latents decode
  them as zeros.

**Determinism.** A decoder must pick the same CDF for every symbol as the encoder did, in another
process, with another thread count, on another device. Rounding float outputs to a grid only makes a
mismatch rare (a value within float noise of a grid boundary still flips), so the codec makes the
CDF choice *exact by construction*:

* the hyper-syntheses (:class:`ExactHyperSynthesis`) are integer networks: weights are fixed-point
  (``weight_bits`` fraction bits), activations are fixed-point (``activation_bits``), every layer's
  integer accumulator is computed in float64, where all products and sums of these integers are
  exact (below 2^52, checked at construction), so the summation order (threads, BLAS, GPU) cannot
  change the result; each layer rounds back to the activation grid with ``floor(x + 1/2)``;
* the scale head outputs a code u in units of the scale table's log step; the CDF index is
  ``clamp(ceil(u), 0, levels - 1)``, computed on the exact integer, never from a float scale;
* the input of every hyper-synthesis is the decoded ``z^ = symbols + median`` built by the same
  function on both sides (the encoder never uses the un-quantised z there);
* for I frames and for the motion latents the means come from the same exact network; for P
  frames the means of y also use the temporal context (float), which is safe: symbols are coded
  as ``round(y - mean)`` and decoded with the CDF index alone, so a float difference in the means
  can only perturb the reconstruction ``symbols + mean`` by float noise, never the symbols;
* the CDF tables (``_quantized_cdf``...) are buffers of the model: made once by ``update()`` and
  shipped in the weights file, never recomputed at load (erfc/exp differ between platforms).

During training the same integer networks run in float32 with straight-through rounding
("fake quantisation"), so the trained parameters are the ones the exact path uses.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

with warnings.catch_warnings():  # compressai 1.2.8 scripts a function at import: noise for our users
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional
    from compressai.models.base import CompressionModel, get_scale_table
    from compressai.ops import quantize_ste

from spikecodec.models.afr import MotionEstimator, flow_warp
from spikecodec.models.cost import OpCost, _hook_layer_macs, total_macs

BLOCK = 8  # block size of the "block" transform
PAD_MULTIPLE = 16  # the motion latents (and y at latent_stride 16) are at 1/16 resolution
LATENT_NAMES: dict[str, tuple[str, ...]] = {"I": ("z", "y"), "P": ("motion_z", "motion_y", "z", "y")}
MOTION_NAMES = ("motion_z", "motion_y")
# a P frame whose motion symbols are all zero omits them (their strings and entries would cost ~64
# bytes a frame for no information); the decoder then takes them as zeros
MOTIONLESS_P_NAMES = tuple(name for name in LATENT_NAMES["P"] if name not in MOTION_NAMES)
FRAME_TYPES = ("I", "P")
_ACTIVATION_LIMIT = 2**15 - 1  # integer activations of the exact networks lie in [0, 2^15)
_WEIGHT_LIMIT = 2**15 - 1  # integer weights in [-2^15 + 1, 2^15 - 1]
_BIAS_LIMIT = 2**40
_EXACT_LIMIT = 2**52  # float64 represents every integer below 2^53 exactly
_MEAN_LIMIT = 2.0**15  # means are clamped so that symbols always fit int32


def geometric_lambdas(low: float, high: float, count: int) -> tuple[float, ...]:
    """``count`` rate-distortion weights from ``low`` to ``high`` in geometric progression."""
    if count < 1:
        raise ValueError(f"need at least one quality, got {count}")
    if not 0 < low <= high:
        raise ValueError(f"lambdas need 0 < low <= high, got {low}, {high}")
    if count == 1:
        return (float(low),)
    ratio = (high / low) ** (1.0 / (count - 1))
    return tuple(float(low * ratio**k) for k in range(count))


@dataclass(frozen=True)
class FeatureCodecConfig:
    """Hyper-parameters of :class:`FeatureCodec`; ``to_dict``/``from_dict`` round-trip through JSON.

    ``widths`` are the transform widths at 1/2, 1/4 and 1/8 resolution (encoders and decoders,
    intra and inter). ``lambdas[q]`` weighs the feature MSE against bits per feature pixel for
    quality q (0 = lowest rate), strictly increasing. ``quality_steps`` are the initial
    quantisation steps of quality 0 and Q-1 (geometric in between). ``activation_bits`` and
    ``weight_bits`` are the fraction bits of the exact hyper-syntheses.
    """

    feature_channels: int = 16
    widths: tuple[int, int, int] = (16, 32, 64)
    latent_channels: int = 96
    hyper_channels: int = 64
    context_channels: int = 16
    motion_estimator_width: int = 16
    motion_width: int = 32
    motion_latent_channels: int = 48
    motion_hyper_channels: int = 32
    fmvr_width: int = 16
    # y's resolution divisor: 16 (sci-codec-v1) or 8; motion latents stay at 1/16
    latent_stride: int = 16
    # "conv": strided convolutions (sci-codec-v1); "block": a 1x1 projection to block_components
    # components, 8x8 blocks and a 1x1 block transform, initialised as PCA + DCT (BlockAnalysis)
    transform: str = "conv"
    block_components: int = 2
    qualities: int = 4
    # one factorized prior of z (and of motion z) per quality instead of one shared by all: the
    # hyper-latents' spread depends on the quality (set by the training stage "densities")
    hyperprior_per_quality: bool = False
    lambdas: tuple[float, ...] = (64.0, 256.0, 1024.0, 4096.0)
    quality_steps: tuple[float, float] = (2.0, 0.25)
    # distribution of y (and motion y) given its scale and mean: "gaussian" (compressai's
    # GaussianConditional) or "laplace" (LaplaceConditional: heavier tails; the residuals of the
    # blocks' means have outliers a Gaussian of the predicted scale prices at 16 bits or more)
    likelihood: str = "gaussian"
    # a P frame that follows a P frame codes its hyper-latent z as differences from that frame's z
    # symbols, one discrete distribution (of the y table, zero mean) per quality and channel: z
    # repeats in time (benchmarks/codec_z_in_time.py). Fitted by scripts/codec_temporal_z.py
    temporal_z: bool = False
    # with temporal_z, the encoder keeps the previous P frame's z symbol wherever z lies within
    # 0.5 + z_hysteresis of it: z flickers between neighbouring integers from frame to frame, and
    # each flicker costs bits while z only steers y's probabilities (an encoder choice; decoders
    # do not read it)
    z_hysteresis: float = 0.0
    scale_min: float = 0.11
    scale_max: float = 256.0
    scale_levels: int = 64
    activation_bits: int = 8
    weight_bits: int = 12
    # per-channel affine normalisation of F before coding (the FEM's channels differ in mean and
    # spread by an order of magnitude); empty: none. Set from training data (training.py, stage c1).
    feature_mean: tuple[float, ...] = ()
    feature_scale: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "lambdas", tuple(float(v) for v in self.lambdas))
        object.__setattr__(self, "quality_steps", tuple(float(v) for v in self.quality_steps))
        object.__setattr__(self, "feature_mean", tuple(float(v) for v in self.feature_mean))
        object.__setattr__(self, "feature_scale", tuple(float(v) for v in self.feature_scale))
        if len(self.feature_mean) != len(self.feature_scale) or len(self.feature_mean) not in (0, self.feature_channels):
            raise ValueError(f"codec feature_mean and feature_scale need one value per feature channel "
                             f"({self.feature_channels}) or none")
        if any(not (v > 0 and math.isfinite(v)) for v in self.feature_scale) or any(
                not math.isfinite(v) for v in self.feature_mean):
            raise ValueError("codec feature_scale must be positive and feature_mean finite")
        positive = [
            "feature_channels", "latent_channels", "hyper_channels", "context_channels",
            "motion_estimator_width", "motion_width", "motion_latent_channels",
            "motion_hyper_channels", "fmvr_width", "qualities",
        ]
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"codec {name} must be a positive integer, got {value!r}")
        if self.latent_stride not in (8, 16) or isinstance(self.latent_stride, bool):
            raise ValueError(f"codec latent_stride must be 8 or 16, got {self.latent_stride!r}")
        if self.transform not in ("conv", "block"):
            raise ValueError(f"codec transform must be 'conv' or 'block', got {self.transform!r}")
        if self.transform == "block":
            k = self.block_components
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.feature_channels:
                raise ValueError(f"codec block_components must be in 1..{self.feature_channels}, got {k!r}")
            if self.latent_stride != BLOCK or not self.latent_channels <= k * BLOCK * BLOCK:
                raise ValueError(f"a block transform needs latent_stride {BLOCK} and at most "
                                 f"{k * BLOCK * BLOCK} latent channels, got {self.latent_stride}, {self.latent_channels}")
            if self.context_channels != self.feature_channels:
                raise ValueError("a block transform needs context_channels == feature_channels (the context "
                                 "starts as the reference itself)")
        if self.likelihood not in ("gaussian", "laplace"):
            raise ValueError(f"codec likelihood must be 'gaussian' or 'laplace', got {self.likelihood!r}")
        if not isinstance(self.temporal_z, bool):
            raise ValueError(f"codec temporal_z must be true or false, got {self.temporal_z!r}")
        if isinstance(self.z_hysteresis, bool) or not isinstance(self.z_hysteresis, (int, float)) or not (
                0.0 <= self.z_hysteresis < 1.0):
            raise ValueError(f"codec z_hysteresis must be a number in [0, 1), got {self.z_hysteresis!r}")
        if not isinstance(self.hyperprior_per_quality, bool):
            raise ValueError(f"codec hyperprior_per_quality must be true or false, got {self.hyperprior_per_quality!r}")
        if len(self.widths) != 3 or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"codec widths must be 3 positive integers, got {self.widths!r}")
        if len(self.lambdas) != self.qualities:
            raise ValueError(
                f"codec needs one lambda per quality: {self.qualities} qualities, "
                f"{len(self.lambdas)} lambdas"
            )
        if any(not (v > 0 and math.isfinite(v)) for v in self.lambdas) or any(
            b <= a for a, b in zip(self.lambdas, self.lambdas[1:])
        ):
            raise ValueError(f"codec lambdas must be positive and strictly increasing, got {self.lambdas}")
        steps = self.quality_steps
        if len(steps) != 2 or not (math.isfinite(steps[0]) and steps[0] >= steps[1] > 0):
            raise ValueError(
                f"codec quality_steps must be (step of quality 0, step of the highest) with "
                f"step0 >= step1 > 0, got {steps}"
            )
        if not 0 < self.scale_min < self.scale_max or not math.isfinite(self.scale_max):
            raise ValueError(f"codec needs 0 < scale_min < scale_max, got {self.scale_min}, {self.scale_max}")
        if not 2 <= self.scale_levels <= 256:
            raise ValueError(f"codec scale_levels must be in 2..256, got {self.scale_levels}")
        if not 0 <= self.activation_bits <= 12 or not 0 <= self.weight_bits <= 16:
            raise ValueError(
                f"codec activation_bits must be in 0..12 and weight_bits in 0..16, got "
                f"{self.activation_bits}, {self.weight_bits}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureCodecConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown codec config keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    @property
    def scale_log_step(self) -> float:
        """Natural-log spacing of the scale table (one unit of the scale code)."""
        return (math.log(self.scale_max) - math.log(self.scale_min)) / (self.scale_levels - 1)


TINY_CODEC_CONFIG = FeatureCodecConfig(
    feature_channels=4, widths=(8, 8, 8), latent_channels=8, hyper_channels=8, context_channels=4,
    motion_estimator_width=8, motion_width=8, motion_latent_channels=8, motion_hyper_channels=8,
    fmvr_width=8,
)


# ------------------------------------------------------------------------------- reference state


@dataclass
class ReferenceState:
    """What a P frame is predicted from: the decoded previous feature, on the padded grid.

    Encoder and decoder each keep their own copy, produced by the same code from the same symbols.
    ``size`` is the unpadded (H, W) of the stream's features.
    """

    feature: Tensor  # decoded F_{t-1}, (B, C, H_pad, W_pad)
    size: tuple[int, int]
    # z symbols of F_{t-1} when it was a coded P frame (config temporal_z codes z against them)
    z_symbols: Tensor | None = None

    def detach(self) -> "ReferenceState":
        """A copy cut from the autograd graph (to bound back-propagation through a GOP)."""
        return ReferenceState(self.feature.detach(), self.size, self.z_symbols)

    @property
    def cropped(self) -> Tensor:
        """The decoded feature at the stream's size."""
        return self.feature[..., : self.size[0], : self.size[1]]


# ------------------------------------------------------------------------------------ helpers


def padded_size(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """(H, W) rounded up to a multiple of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def _ceil_half(size: int, times: int) -> int:
    for _ in range(times):
        size = -(-size // 2)
    return size


def latent_sizes(height: int, width: int, latent_stride: int = 16) -> dict[str, tuple[int, int]]:
    """Spatial sizes of the padded feature, of y (1/latent_stride) and its z (y/4), and of the motion
    latents (1/16) and their z (1/64)."""
    hp, wp = padded_size(height, width)
    y = (hp // latent_stride, wp // latent_stride)
    motion_y = (hp // 16, wp // 16)
    def quarter(size: tuple[int, int]) -> tuple[int, int]:
        return _ceil_half(size[0], 2), _ceil_half(size[1], 2)
    return {"padded": (hp, wp), "y": y, "z": quarter(y), "motion_y": motion_y, "motion_z": quarter(motion_y)}


def pad_features(x: Tensor) -> Tensor:
    """Edge-replicate ``x`` on the right and bottom to a multiple of 16."""
    hp, wp = padded_size(x.shape[-2], x.shape[-1])
    if (hp, wp) == tuple(x.shape[-2:]):
        return x
    return F.pad(x, (0, wp - x.shape[-1], 0, hp - x.shape[-2]), mode="replicate")


def likelihood_bits(likelihoods: dict[str, Tensor]) -> Tensor:
    """Estimated bits per batch item: sum of -log2 likelihoods over every latent."""
    total = None
    for value in likelihoods.values():
        bits = -torch.log2(value).flatten(1).sum(1)
        total = bits if total is None else total + bits
    if total is None:
        raise ValueError("no likelihoods given")
    return total


def string_bits(strings: dict[str, list[bytes]]) -> int:
    """Total bits of the entropy-coded strings of a compress() result."""
    return 8 * sum(len(s) for values in strings.values() for s in values)


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    """x2 up-sampling: 4x4 transposed convolution, stride 2 (4 cin*cout MACs per output pixel, less
    than half a 3x3 sub-pixel convolution's 9, which matters at full resolution)."""
    return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)


def _analysis(cin: int, widths: Sequence[int], cout: int, latent_stride: int = 16) -> nn.Sequential:
    w1, w2, w3 = widths
    return nn.Sequential(
        _conv(cin, w1, stride=2), _act(), _conv(w1, w2, stride=2), _act(),
        _conv(w2, w3, stride=2), _act(), _conv(w3, cout, stride=2 if latent_stride == 16 else 1),
    )


def _synthesis(cin: int, widths: Sequence[int], cout: int, latent_stride: int = 16) -> nn.Sequential:
    w1, w2, w3 = widths
    return nn.Sequential(
        _up(cin, w3) if latent_stride == 16 else _conv(cin, w3), _act(), _up(w3, w2), _act(), _up(w2, w1), _act(),
        _up(w1, cout),
    )


def _hyper_analysis(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout), _act(), _conv(cout, cout, stride=2), _act(), _conv(cout, cout, stride=2))


def dct_basis(size: int = BLOCK) -> Tensor:
    """Orthonormal 2-D DCT-II basis (size^2, size^2), rows ordered by frequency u + v (then u):
    row r holds basis function r over the block's pixels in raster order (pixel_unshuffle's order)."""
    n = torch.arange(size, dtype=torch.float64)
    d = torch.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size)) * math.sqrt(2 / size)
    d[0] /= math.sqrt(2)
    basis = torch.einsum("ui,vj->uvij", d, d).reshape(size * size, size * size)
    order = sorted(range(size * size), key=lambda r: (r // size + r % size, r // size))
    return basis[order].float()


class BlockAnalysis(nn.Module):
    """F (C, H, W) -> y (M, H/8, W/8): a 1x1 projection to k components, 8x8 blocks, a 1x1 block
    transform. Initialised as the DCT (orthonormal, lowest frequencies first); the projection is
    set from the features' principal components before training (``FeatureCodec.initialise_block_transforms``).
    Measured: F of the shipped FEM is nearly rank 2 per pixel (2 components keep 33.9 of 34.3 dB),
    and this transform with plain rounding beats the strided convolutions of sci-codec-v1 after
    their stage-c1 training by ~8 dB at a lower rate (docs/TRAINING.md)."""

    def __init__(self, cin: int, components: int, cout: int):
        super().__init__()
        self.project = nn.Conv2d(cin, components, 1, bias=False)
        self.transform = nn.Conv2d(components * BLOCK * BLOCK, cout, 1, bias=False)
        with torch.no_grad():
            self.project.weight.zero_()
            for k in range(components):
                self.project.weight[k, k % cin] = 1.0
            self.transform.weight.copy_(_block_transform_weight(components, cout))

    def forward(self, x: Tensor) -> Tensor:
        return self.transform(F.pixel_unshuffle(self.project(x), BLOCK))


class BlockSynthesis(nn.Module):
    """The inverse of :class:`BlockAnalysis` (initialised as its transpose) and a 3x3 residual
    refinement at full resolution that starts at zero (deblocking is learned)."""

    def __init__(self, cin: int, components: int, cout: int, refine: bool = True):
        super().__init__()
        self.transform = nn.Conv2d(cin, components * BLOCK * BLOCK, 1, bias=False)
        self.project = nn.Conv2d(components, cout, 1)
        self.refine = _conv(cout, cout) if refine else None
        with torch.no_grad():
            self.transform.weight.copy_(_block_transform_weight(components, cin).transpose(0, 1))
            self.project.weight.zero_()
            self.project.bias.zero_()
            for k in range(components):
                self.project.weight[k % cout, k] = 1.0
            if self.refine is not None:
                self.refine.weight.zero_()
                self.refine.bias.zero_()

    def forward(self, y: Tensor) -> Tensor:
        x = self.project(F.pixel_shuffle(self.transform(y), BLOCK))
        return x if self.refine is None else x + self.refine(x)


def _block_transform_weight(components: int, latents: int) -> Tensor:
    """(latents, components * 64, 1, 1): the DCT of each component, lowest frequencies of all
    components first, so that fewer latents than coefficients keep the low frequencies."""
    basis = dct_basis()
    per = BLOCK * BLOCK
    weight = torch.zeros(latents, components * per)
    rows = [(r, k) for r in range(per) for k in range(components)][:latents]
    for index, (r, k) in enumerate(rows):
        weight[index, k * per:(k + 1) * per] = basis[r]
    return weight[:, :, None, None]


def _round_half_up(x: Tensor) -> Tensor:
    return torch.floor(x + 0.5)


def _ste(x: Tensor, rounded: Tensor) -> Tensor:
    """``rounded`` in the forward pass, the identity's gradient in the backward pass."""
    return x + (rounded - x).detach()


# --------------------------------------------------------------------- exact integer networks


class ExactConv2d(nn.Conv2d):
    """A convolution with fixed-point weights that can be evaluated exactly.

    ``forward(x)`` (training) fake-quantises in float32 with straight-through rounding;
    ``forward(a, exact=True)`` takes integer activations (float64 tensor, units of
    2^-activation_bits) and computes the integer accumulator exactly in float64. A ``hidden``
    layer then rounds back to the activation grid and applies ReLU and the activation limit; an
    output layer returns the accumulator (units of 2^-(activation_bits + weight_bits)).
    """

    def __init__(self, cin: int, cout: int, kernel: int, *, activation_bits: int, weight_bits: int,
                 hidden: bool):
        super().__init__(cin, cout, kernel, padding=kernel // 2)
        self.activation_bits = activation_bits
        self.weight_bits = weight_bits
        self.hidden = hidden
        fan_in = cin * kernel * kernel
        bound = fan_in * _ACTIVATION_LIMIT * _WEIGHT_LIMIT + _BIAS_LIMIT
        if bound >= _EXACT_LIMIT:
            raise ValueError(f"exact convolution with fan-in {fan_in} could exceed 2^52; use fewer channels")

    def integer_weight(self) -> Tensor:
        return torch.round(torch.clamp(self.weight * 2.0**self.weight_bits, -_WEIGHT_LIMIT, _WEIGHT_LIMIT))

    def integer_bias(self) -> Tensor:
        scale = 2.0 ** (self.activation_bits + self.weight_bits)
        return torch.round(torch.clamp(self.bias * scale, -_BIAS_LIMIT, _BIAS_LIMIT))

    def forward(self, x: Tensor, exact: bool = False) -> Tensor:  # type: ignore[override]
        if exact:
            return self._exact(x)
        weight_scale = 2.0**self.weight_bits
        bias_scale = 2.0 ** (self.activation_bits + self.weight_bits)
        weight = _ste(self.weight * weight_scale, self.integer_weight()) / weight_scale
        bias = _ste(self.bias * bias_scale, self.integer_bias()) / bias_scale
        out = F.conv2d(x, weight, bias, padding=self.padding)
        if self.hidden:
            scale = 2.0**self.activation_bits
            scaled = out * scale
            out = torch.clamp(_ste(scaled, _round_half_up(scaled)), 0, _ACTIVATION_LIMIT) / scale
        return out

    def _exact(self, a: Tensor) -> Tensor:
        if a.dtype != torch.float64:
            raise ValueError("exact convolution needs float64 integer activations")
        weight = self.integer_weight().detach().to(torch.float64)
        bias = self.integer_bias().detach().to(torch.float64)
        # Integer products and sums below 2^52 are exact in float64 in any order; the round()
        # only guards against algorithms that are not exact (FFT), whose error is far below 1/2.
        acc = torch.round(F.conv2d(a, weight, bias, padding=self.padding))
        if not self.hidden:
            return acc
        return torch.clamp(_round_half_up(acc / 2.0**self.weight_bits), 0, _ACTIVATION_LIMIT)


class ExactHyperSynthesis(nn.Module):
    """Hyper-synthesis from z^ to the y grid (4x finer), evaluable in exact integer arithmetic.

    Layers: 3x3 conv, two x2 sub-pixel up-samplings (3x3 conv + pixel shuffle, a permutation),
    crop to the y size, then one 1x1 output conv per head. ``forward(z_hat, size, exact)`` returns
    ``(hidden, heads)``: with ``exact=False`` float32 values in real units (differentiable, fake
    quantisation); with ``exact=True`` integer float64 tensors, ``hidden`` in units of
    2^-activation_bits and each head in units of 2^-(activation_bits + weight_bits).
    """

    def __init__(self, in_channels: int, width: int, heads: dict[str, int], activation_bits: int, weight_bits: int):
        super().__init__()
        bits = {"activation_bits": activation_bits, "weight_bits": weight_bits}
        self.activation_bits = activation_bits
        self.weight_bits = weight_bits
        self.inp = ExactConv2d(in_channels, width, 3, hidden=True, **bits)
        self.up1 = ExactConv2d(width, 4 * width, 3, hidden=True, **bits)
        self.up2 = ExactConv2d(width, 4 * width, 3, hidden=True, **bits)
        self.heads = nn.ModuleDict(
            {name: ExactConv2d(width, ch, 1, hidden=False, **bits) for name, ch in heads.items()}
        )

    @property
    def head_bits(self) -> int:
        return self.activation_bits + self.weight_bits

    def quantize_input(self, z_hat: Tensor, exact: bool) -> Tensor:
        scale = 2.0**self.activation_bits
        if exact:
            scaled = torch.clamp(z_hat.detach().to(torch.float64) * scale, -_ACTIVATION_LIMIT, _ACTIVATION_LIMIT)
            return _round_half_up(scaled)
        scaled = torch.clamp(z_hat * scale, -_ACTIVATION_LIMIT, _ACTIVATION_LIMIT)
        return _ste(scaled, _round_half_up(scaled)) / scale

    def forward(self, z_hat: Tensor, size: Sequence[int], exact: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        h = self.quantize_input(z_hat, exact)
        h = self.inp(h, exact=exact)
        h = F.pixel_shuffle(self.up1(h, exact=exact), 2)
        h = F.pixel_shuffle(self.up2(h, exact=exact), 2)
        height, width = int(size[0]), int(size[1])
        if h.shape[-2] < height or h.shape[-1] < width:
            raise ValueError(f"hyper-synthesis output {tuple(h.shape[-2:])} smaller than the latent {size}")
        h = h[..., :height, :width]
        return h, {name: head(h, exact=exact) for name, head in self.heads.items()}


def exact_to_real(value: Tensor, bits: int) -> Tensor:
    """Integer float64 tensor in units of 2^-bits -> float32 real values (one IEEE rounding)."""
    return (value * 2.0**-bits).to(torch.float32)


def scale_indexes(code: Tensor, bits: int, levels: int) -> Tensor:
    """CDF indexes from the exact scale code (units of 2^-bits): clamp(ceil(u), 0, levels-1), int32.

    ceil() picks the smallest table scale not below the predicted one, as compressai's
    ``build_indexes`` does.
    """
    u = code * 2.0**-bits  # exact: a power-of-two scaling of an integer below 2^53
    return torch.clamp(torch.ceil(u), 0, levels - 1).to(torch.int32)


class _BoundedClamp(torch.autograd.Function):
    """clamp() whose gradient still passes where it would move a clamped value back into range
    (as compressai's LowerBound does), so that a scale code stuck below the table can recover."""

    @staticmethod
    def forward(ctx, x: Tensor, low: float, high: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return torch.clamp(x, low, high)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        inside = (x >= ctx.low) & (x <= ctx.high)
        returning = ((x < ctx.low) & (grad < 0)) | ((x > ctx.high) & (grad > 0))
        return grad * (inside | returning).to(grad.dtype), None, None


def scales_from_code(code: Tensor, config: FeatureCodecConfig) -> Tensor:
    """Differentiable scales of the table entry ``ceil(u)`` chosen for code u (training path)."""
    u = _BoundedClamp.apply(code, 0.0, float(config.scale_levels - 1))
    u = _ste(u, torch.ceil(u))
    return torch.exp(math.log(config.scale_min) + config.scale_log_step * u)


def _clamp_means(means: Tensor) -> Tensor:
    return torch.clamp(means, -_MEAN_LIMIT, _MEAN_LIMIT)


class QualityScales(nn.Module):
    """Learned per-quality, per-channel quantisation steps (DCVC-DC): ``enc(q)`` and ``dec(q)``;
    and a per-quality, per-channel offset of the scale code (in scale-table steps), which picks
    the CDFs only: the densities stage fits it to each quality's actual residuals."""

    def __init__(self, qualities: int, channels: int, steps: tuple[float, float]):
        super().__init__()
        if qualities == 1:
            logs = torch.tensor([math.log(steps[0])])
        else:
            logs = torch.linspace(math.log(steps[0]), math.log(steps[1]), qualities)
        self.log_enc = nn.Parameter(logs.view(-1, 1).repeat(1, channels).clone())
        self.log_dec = nn.Parameter(logs.view(-1, 1).repeat(1, channels).clone())
        self.scale_offset = nn.Parameter(torch.zeros(qualities, channels))

    def enc(self, quality: Tensor) -> Tensor:
        return torch.exp(self.log_enc[quality])[:, :, None, None]

    def dec(self, quality: Tensor) -> Tensor:
        return torch.exp(self.log_dec[quality])[:, :, None, None]

    def offset_code(self, code: Tensor, quality: Tensor, bits: int | None = None) -> Tensor:
        """``code`` plus the quality's offsets: the float path's code in table steps
        (``bits=None``), or the exact path's integer code in units of 2^-bits (offsets rounded
        to that grid, so both sides add the same integers)."""
        offset = self.scale_offset[quality][:, :, None, None]
        if bits is None:
            return code + offset
        return code + torch.round(offset.detach().to(torch.float64) * 2.0**bits)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # weights saved before the offsets existed decode as they did: offsets 0
        if prefix + "log_enc" in state_dict and prefix + "scale_offset" not in state_dict:
            state_dict[prefix + "scale_offset"] = torch.zeros_like(self.scale_offset)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ---------------------------------------------------------------------------- entropy coding


def _z_priors(channels: int, config: FeatureCodecConfig) -> nn.Module:
    """The factorized prior of a hyper-latent: one EntropyBottleneck, or one per quality."""
    if config.hyperprior_per_quality:
        return nn.ModuleList(EntropyBottleneck(channels) for _ in range(config.qualities))
    return EntropyBottleneck(channels)


def _by_quality(priors: nn.Module, quality: Tensor) -> list[tuple[EntropyBottleneck, Tensor | None]]:
    """(prior, indexes of the batch items it codes; None: all of them)."""
    if isinstance(priors, EntropyBottleneck):
        return [(priors, None)]
    return [(priors[q], torch.nonzero(quality == q).reshape(-1)) for q in torch.unique(quality).tolist()]


def _medians(eb: EntropyBottleneck, batch: int) -> Tensor:
    # (B, C, 1, 1), as EntropyBottleneck.compress/decompress expand them
    return eb._get_medians().detach().reshape(1, -1, 1, 1).expand(batch, -1, 1, 1)


def _encode_z(priors: nn.Module, z: Tensor, quality: Tensor) -> tuple[list[bytes], Tensor, Tensor, Tensor]:
    """(strings, int32 symbols, decoded z^, likelihoods of the coded symbols) — z^ built exactly as
    the decoder builds it."""
    strings: list[bytes] = [b""] * z.shape[0]
    symbols = torch.empty(z.shape, dtype=torch.int32, device=z.device)
    z_hat, likelihoods = torch.empty_like(z), torch.empty_like(z)
    for eb, items in _by_quality(priors, quality):
        part = z if items is None else z[items]
        medians = _medians(eb, part.shape[0])
        part_symbols = eb.quantize(part, "symbols", medians)
        for k, string in zip(range(z.shape[0]) if items is None else items.tolist(), eb.compress(part)):
            strings[k] = string
        part_likelihoods = eb(part, training=False)[1]
        if items is None:
            symbols, z_hat, likelihoods = part_symbols, eb.dequantize(part_symbols, medians), part_likelihoods
        else:
            symbols[items], z_hat[items] = part_symbols, eb.dequantize(part_symbols, medians)
            likelihoods[items] = part_likelihoods
    return strings, symbols, z_hat, likelihoods


def _gather_by_quality(outputs: list[tuple[Tensor | None, Tensor, Tensor]], batch: int) -> tuple[Tensor, Tensor]:
    """(symbols, z^) of the whole batch from (batch items or None: all, symbols, z^) per prior."""
    if len(outputs) == 1 and outputs[0][0] is None:
        return outputs[0][1], outputs[0][2]
    shape = (batch,) + tuple(outputs[0][1].shape[1:])
    symbols, z_hat = outputs[0][1].new_empty(shape), outputs[0][2].new_empty(shape)
    for items, part_symbols, part_hat in outputs:
        symbols[items], z_hat[items] = part_symbols, part_hat
    return symbols, z_hat


def _dequantize_z(priors: nn.Module, symbols: Tensor, quality: Tensor) -> Tensor:
    """z^ of int32 ``symbols`` (rounded around each quality's medians)."""
    outputs = []
    for eb, items in _by_quality(priors, quality):
        part = symbols if items is None else symbols[items]
        outputs.append((items, part, eb.dequantize(part, _medians(eb, part.shape[0]))))
    return _gather_by_quality(outputs, symbols.shape[0])[1]


def _decode_z(priors: nn.Module, strings: list[bytes], size: Sequence[int], quality: Tensor) -> tuple[Tensor, Tensor]:
    outputs = []
    for eb, items in _by_quality(priors, quality):
        chosen = list(strings) if items is None else [strings[k] for k in items.tolist()]
        batch, channels = len(chosen), eb.channels
        indexes = torch.arange(channels, dtype=torch.int32).view(1, -1, 1, 1).repeat(
            batch, 1, int(size[0]), int(size[1]))
        symbols = EntropyModel.decompress(eb, chosen, indexes, torch.int32)
        outputs.append((items, symbols, eb.dequantize(symbols, _medians(eb, batch))))
    return _gather_by_quality(outputs, len(strings))


class ListedConditional(GaussianConditional):
    """compressai's GaussianConditional whose rANS calls receive only the CDF rows a tensor uses,
    each cut to its length, taken from Python lists made once per table, where compressai converts
    the whole padded table at every call. Measured on a 128 x 32 x 50 latent (2 threads): compress
    15.2 -> 11.9 ms with the 64 x 3,133 Gaussian table, 25.1 -> 10.7 ms with the 72 x 10,615
    Laplace one; decompress 32.9 -> 18.6 ms (Laplace). The coder sees the same CDF for every
    symbol, so the strings are the same bit for bit."""

    def _listed_tables(self) -> tuple[list[list[int]], list[int], list[int]]:
        cdf = self._quantized_cdf
        key = (cdf.data_ptr(), cdf._version, tuple(cdf.shape))  # update() replaces, loading copies in place
        if getattr(self, "_listed_key", None) != key:
            lengths = self._cdf_length.reshape(-1).int().tolist()
            rows = [row[:length] for row, length in zip(cdf.tolist(), lengths)]
            self._listed = (rows, lengths, self._offset.reshape(-1).int().tolist())
            self._listed_key = key
        return self._listed

    def _rows_for(self, indexes: Tensor) -> tuple[list[int], list[list[int]], list[int], list[int]]:
        """(indexes renumbered into the used rows, those rows, their lengths, their offsets)."""
        rows, lengths, offsets = self._listed_tables()
        flat = indexes.reshape(-1).cpu().numpy()
        present = np.bincount(flat, minlength=len(rows)) > 0  # linear time, where unique() sorts
        renumbered = (np.cumsum(present) - 1)[flat]
        chosen = np.flatnonzero(present).tolist()
        return (renumbered.tolist(), [rows[k] for k in chosen], [lengths[k] for k in chosen],
                [offsets[k] for k in chosen])

    def compress(self, inputs: Tensor, indexes: Tensor, means: Tensor | None = None) -> list[bytes]:
        if inputs.size() != indexes.size():
            raise ValueError("inputs and indexes should have the same size")
        symbols = self.quantize(inputs, "symbols", means)
        return [self.entropy_coder.encode_with_indexes(symbols[i].reshape(-1).int().tolist(), *self._rows_for(indexes[i]))
                for i in range(symbols.size(0))]

    def decompress(self, strings: list[bytes], indexes: Tensor, dtype: torch.dtype = torch.float,
                   means: Tensor | None = None) -> Tensor:
        if len(strings) != indexes.size(0):
            raise ValueError("one string per batch item of the indexes")
        values = [torch.tensor(self.entropy_coder.decode_with_indexes(string, *self._rows_for(indexes[i])),
                               dtype=torch.int32).reshape(indexes[i].shape) for i, string in enumerate(strings)]
        return self.dequantize(torch.stack(values).to(indexes.device), means, dtype)


class LaplaceConditional(ListedConditional):
    """:class:`ListedConditional` with a Laplace distribution of scale b = the table scale: the
    same scale table, CDF tables, rANS coding and likelihoods, only the standardized distribution
    changes. Its tails fall linearly in log-probability, a Gaussian's quadratically."""

    def _standardized_cumulative(self, inputs: Tensor) -> Tensor:
        # each branch evaluates exp() of a non-positive number: exact in the tails on both sides
        lower = 0.5 * torch.exp(-inputs.abs())
        return torch.where(inputs < 0, lower, 1.0 - lower)

    @staticmethod
    def _standardized_quantile(quantile: float) -> float:
        return math.log(2.0 * quantile) if quantile < 0.5 else -math.log(2.0 * (1.0 - quantile))


LIKELIHOODS: dict[str, type[GaussianConditional]] = {"gaussian": ListedConditional, "laplace": LaplaceConditional}


def _conditional(config: FeatureCodecConfig) -> GaussianConditional:
    return LIKELIHOODS[config.likelihood](None, scale_bound=config.scale_min)


def _encode_y(gc: GaussianConditional, y: Tensor, indexes: Tensor,
              means: Tensor) -> tuple[list[bytes], Tensor, Tensor, Tensor]:
    """(strings, int32 symbols, y^, likelihoods under the very scales and means the coder used)."""
    strings = gc.compress(y, indexes, means)
    symbols = gc.quantize(y, "symbols", means)
    likelihoods = gc(y, gc.scale_table[indexes.long()], means, training=False)[1]
    return strings, symbols, gc.dequantize(symbols, means), likelihoods


def _zero_z(priors: nn.Module, batch: int, size: Sequence[int], quality: Tensor) -> tuple[Tensor, Tensor]:
    """(symbols, z^) of a hyper-latent whose symbols are all zero (z^ = the medians), as
    :func:`_decode_z` would decode them."""
    channels = (priors if isinstance(priors, EntropyBottleneck) else priors[0]).channels
    symbols = torch.zeros((batch, channels, int(size[0]), int(size[1])), dtype=torch.int32)
    return symbols, _dequantize_z(priors, symbols, quality)


def _decode_y(gc: GaussianConditional, strings: list[bytes], indexes: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
    symbols = gc.decompress(list(strings), indexes, torch.int32)
    return symbols, gc.dequantize(symbols, means)


def _train_quantize_z(priors: nn.Module, z: Tensor, quality: Tensor) -> tuple[Tensor, Tensor]:
    """(likelihoods, z^ with straight-through rounding around the medians) for forward()."""
    likelihoods, z_hat = torch.empty_like(z), torch.empty_like(z)
    for eb, items in _by_quality(priors, quality):
        part = z if items is None else z[items]
        _, part_likelihoods = eb(part)
        medians = eb._get_medians().reshape(1, -1, 1, 1)
        part_hat = quantize_ste(part - medians) + medians
        if items is None:
            return part_likelihoods, part_hat
        likelihoods = likelihoods.index_copy(0, items, part_likelihoods)
        z_hat = z_hat.index_copy(0, items, part_hat)
    return likelihoods, z_hat


def _train_quantize_y(gc: GaussianConditional, y: Tensor, scales: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
    _, likelihoods = gc(y, scales, means)
    return likelihoods, quantize_ste(y - means) + means


# ------------------------------------------------------------------------------------- intra


@torch.no_grad()
def _start_entropy_parameters(synthesis: "ExactHyperSynthesis", config: FeatureCodecConfig,
                              scale: float = 4.0) -> None:
    """Zero means and scale ``scale`` everywhere to start with (block transforms: the coefficients
    are large from the first step, and the smallest table scale would make their first rates huge)."""
    synthesis.heads["scale"].weight.mul_(0.01)
    synthesis.heads["scale"].bias.fill_(math.log(scale / config.scale_min) / config.scale_log_step)
    if "mean" in synthesis.heads:
        synthesis.heads["mean"].weight.zero_()
        synthesis.heads["mean"].bias.zero_()


class IntraCodec(nn.Module):
    """I-frame coder: mean-scale hyperprior with an exact hyper-synthesis, on padded features."""

    def __init__(self, config: FeatureCodecConfig):
        super().__init__()
        self.config = c = config
        m, n = c.latent_channels, c.hyper_channels
        if c.transform == "block":
            self.g_a = BlockAnalysis(c.feature_channels, c.block_components, m)
            self.g_s = BlockSynthesis(m, c.block_components, c.feature_channels)
        else:
            self.g_a = _analysis(c.feature_channels, c.widths, m, c.latent_stride)
            self.g_s = _synthesis(m, c.widths, c.feature_channels, c.latent_stride)
        self.h_a = _hyper_analysis(m, n)
        self.h_s = ExactHyperSynthesis(n, n, {"scale": m, "mean": m}, c.activation_bits, c.weight_bits)
        self.entropy_bottleneck = _z_priors(n, c)
        self.gaussian_conditional = _conditional(c)
        self.quality = QualityScales(c.qualities, m, c.quality_steps)
        if c.transform == "block":
            _start_entropy_parameters(self.h_s, c)

    def _y_params(self, z_hat: Tensor, size: Sequence[int], quality: Tensor) -> tuple[Tensor, Tensor]:
        """Exact (CDF indexes, means) of y from the decoded z^ (both sides)."""
        _, heads = self.h_s(z_hat, size, exact=True)
        bits = self.h_s.head_bits
        indexes = scale_indexes(self.quality.offset_code(heads["scale"], quality, bits), bits, self.config.scale_levels)
        return indexes, _clamp_means(exact_to_real(heads["mean"], bits))

    def forward(self, xp: Tensor, quality: Tensor) -> dict[str, Any]:
        y = self.g_a(xp) / self.quality.enc(quality)
        z_likelihoods, z_hat = _train_quantize_z(self.entropy_bottleneck, self.h_a(y), quality)
        _, heads = self.h_s(z_hat, y.shape[-2:])
        scales = scales_from_code(self.quality.offset_code(heads["scale"], quality), self.config)
        y_likelihoods, y_hat = _train_quantize_y(self.gaussian_conditional, y, scales, _clamp_means(heads["mean"]))
        x_hat = self.g_s(y_hat * self.quality.dec(quality))
        return {"x_hat": x_hat, "likelihoods": {"z": z_likelihoods, "y": y_likelihoods}}

    def compress(self, xp: Tensor, quality: Tensor) -> dict[str, Any]:
        y = self.g_a(xp) / self.quality.enc(quality)
        z_strings, z_symbols, z_hat, z_likelihoods = _encode_z(self.entropy_bottleneck, self.h_a(y), quality)
        indexes, means = self._y_params(z_hat, y.shape[-2:], quality)
        y_strings, y_symbols, y_hat, y_likelihoods = _encode_y(self.gaussian_conditional, y, indexes, means)
        return {
            "strings": {"z": z_strings, "y": y_strings},
            "latents": {"z": z_symbols, "y": y_symbols},
            "likelihoods": {"z": z_likelihoods, "y": y_likelihoods},
            "x_hat": self.g_s(y_hat * self.quality.dec(quality)),
        }

    def decompress(self, strings: dict[str, list[bytes]], sizes: dict[str, tuple[int, int]],
                   quality: Tensor) -> dict[str, Any]:
        z_symbols, z_hat = _decode_z(self.entropy_bottleneck, strings["z"], sizes["z"], quality)
        indexes, means = self._y_params(z_hat, sizes["y"], quality)
        y_symbols, y_hat = _decode_y(self.gaussian_conditional, strings["y"], indexes, means)
        return {
            "latents": {"z": z_symbols, "y": y_symbols},
            "x_hat": self.g_s(y_hat * self.quality.dec(quality)),
        }


# ------------------------------------------------------------------------------------- inter


class ContextualDecoder(nn.Module):
    """y^ (1/latent_stride) -> feature at full resolution, fused with the context by a 3x3 convolution."""

    def __init__(self, config: FeatureCodecConfig):
        super().__init__()
        c = config
        if c.transform == "block":
            # residual coding to start with: the decoded residual plus the context
            self.synthesis = BlockSynthesis(c.latent_channels, c.block_components, c.feature_channels, refine=False)
        else:
            self.synthesis = _synthesis(c.latent_channels, c.widths, c.feature_channels, c.latent_stride)
        self.fuse = _conv(c.feature_channels + c.context_channels, c.feature_channels)
        if c.transform == "block":
            with torch.no_grad():
                self.fuse.weight.zero_()
                self.fuse.bias.zero_()
                for k in range(c.context_channels):
                    self.fuse.weight[k, c.feature_channels + k, 1, 1] = 1.0

    def forward(self, y_hat: Tensor, context: Tensor) -> Tensor:
        up = self.synthesis(y_hat)
        return up + self.fuse(torch.cat([up, context], dim=1))


class InterCodec(nn.Module):
    """P-frame coder in the DCVC manner; stages are named after the pipeline (module docstring)."""

    def __init__(self, config: FeatureCodecConfig):
        super().__init__()
        self.config = c = config
        cf, cc, m, n = c.feature_channels, c.context_channels, c.latent_channels, c.hyper_channels
        mw, mm, mn = c.motion_width, c.motion_latent_channels, c.motion_hyper_channels
        bits = (c.activation_bits, c.weight_bits)
        # motion estimation (encoder side)
        self.motion_estimation = MotionEstimator(cf, c.motion_estimator_width)
        # motion coding: latents at 1/16 from the field area-averaged to 1/4
        self.motion_encoder = nn.Sequential(
            _conv(2, mw), _act(), _conv(mw, mw, stride=2), _act(), _conv(mw, mm, stride=2)
        )
        self.motion_hyper_analysis = _hyper_analysis(mm, mn)
        self.motion_hyper_synthesis = ExactHyperSynthesis(mn, mn, {"scale": mm, "mean": mm}, *bits)
        self.motion_entropy_bottleneck = _z_priors(mn, c)
        self.motion_gaussian_conditional = _conditional(c)
        self.motion_quality = QualityScales(c.qualities, mm, c.quality_steps)
        self.motion_decoder = nn.Sequential(_up(mm, mw), _act(), _up(mw, mw), _act(), _conv(mw, 2))
        # motion compensation
        self.feature_adaptor = _conv(cf, cc, 1)
        # temporal prior, from the context area-averaged to 1/4
        self.temporal_prior_encoder = nn.Sequential(
            _conv(cc, c.widths[1], stride=2), _act(), _conv(c.widths[1], m, stride=2 if c.latent_stride == 16 else 1)
        )
        # contextual coding
        if c.transform == "block":
            self.contextual_encoder = BlockAnalysis(cf + cc, c.block_components, m)
        else:
            self.contextual_encoder = _analysis(cf + cc, c.widths, m, c.latent_stride)
        self.contextual_decoder = ContextualDecoder(c)
        self.hyper_analysis = _hyper_analysis(2 * m, n)
        self.hyper_synthesis = ExactHyperSynthesis(n, n, {"scale": m}, *bits)
        self.entropy_fusion = nn.Sequential(_conv(n + m, m), _act(), _conv(m, m, 1))
        self.entropy_bottleneck = _z_priors(n, c)
        self.gaussian_conditional = _conditional(c)
        self.quality = QualityScales(c.qualities, m, c.quality_steps)
        if c.temporal_z:
            # scale-table index of each quality's and channel's z difference (fitted, not learnt by
            # gradient); the start, ~scale 1, is a placeholder
            start = round(math.log(1.0 / c.scale_min) / c.scale_log_step)
            self.register_buffer("temporal_z_index", torch.full((c.qualities, n), start, dtype=torch.int32))
        if c.transform == "block":
            # start as residual coding without motion: context = reference, zero motion, zero means
            with torch.no_grad():
                self.feature_adaptor.weight.copy_(torch.eye(cc, cf)[:, :, None, None])
                self.feature_adaptor.bias.zero_()
                for layer in (self.motion_decoder[-1], self.entropy_fusion[-1]):
                    layer.weight.zero_()
                    layer.bias.zero_()
            _start_entropy_parameters(self.hyper_synthesis, c)

    # --- stages shared by forward, compress and decompress

    def motion_latent(self, flow: Tensor, quality: Tensor) -> Tensor:
        """Motion encoder: full-resolution field (pixels) -> scaled latents at 1/16."""
        quarter = F.avg_pool2d(flow, 4) / 4.0  # in quarter-resolution pixels
        return self.motion_encoder(quarter) / self.motion_quality.enc(quality)

    def decode_motion(self, motion_y_hat: Tensor, quality: Tensor, size: Sequence[int]) -> Tensor:
        """Motion decoder: latents -> full-resolution field in pixels (bilinear from 1/4)."""
        quarter = self.motion_decoder(motion_y_hat * self.motion_quality.dec(quality))
        flow = F.interpolate(quarter, size=tuple(size), mode="bilinear", align_corners=False)
        return flow * 4.0

    def motion_compensation(self, reference: Tensor, motion: Tensor) -> Tensor:
        """The context: the reference feature, adapted by a 1x1 convolution, warped with the decoded
        motion. (A 3x3 refinement here would cost 9*Cc^2 MACs per pixel on both sides; the 3x3
        layers of the contextual encoder and decoder that read the context do that work.)"""
        return flow_warp(self.feature_adaptor(reference), motion)

    def temporal_prior(self, context: Tensor) -> Tensor:
        """Prior features of y (1/latent_stride) from the context."""
        return self.temporal_prior_encoder(F.avg_pool2d(context, 4))

    def _motion_params(self, motion_z_hat: Tensor, size: Sequence[int], quality: Tensor) -> tuple[Tensor, Tensor]:
        _, heads = self.motion_hyper_synthesis(motion_z_hat, size, exact=True)
        bits = self.motion_hyper_synthesis.head_bits
        code = self.motion_quality.offset_code(heads["scale"], quality, bits)
        indexes = scale_indexes(code, bits, self.config.scale_levels)
        return indexes, _clamp_means(exact_to_real(heads["mean"], bits))

    def _y_params(self, z_hat: Tensor, prior: Tensor, quality: Tensor) -> tuple[Tensor, Tensor]:
        """CDF indexes (exact, hyperprior only) and means (hyperprior + temporal prior) of y."""
        hidden, heads = self.hyper_synthesis(z_hat, prior.shape[-2:], exact=True)
        bits = self.hyper_synthesis.head_bits
        indexes = scale_indexes(self.quality.offset_code(heads["scale"], quality, bits), bits, self.config.scale_levels)
        hidden = exact_to_real(hidden, self.hyper_synthesis.activation_bits)
        return indexes, _clamp_means(self.entropy_fusion(torch.cat([hidden, prior], dim=1)))

    def _temporal_z_indexes(self, quality: Tensor, shape: Sequence[int]) -> Tensor:
        return self.temporal_z_index[quality].view(shape[0], shape[1], 1, 1).expand(*shape).contiguous()

    def _encode_z_in_time(self, z: Tensor, quality: Tensor,
                          previous: Tensor) -> tuple[list[bytes], Tensor, Tensor, Tensor]:
        """:func:`_encode_z` coding the symbols' differences from ``previous`` (the last P frame's)."""
        medians = _zero_z(self.entropy_bottleneck, z.shape[0], (1, 1), quality)[1]  # z^ of symbol 0
        centred = z - medians
        symbols = torch.round(centred).to(torch.int32)  # as EntropyBottleneck rounds them
        keep = (centred - previous).abs() < 0.5 + self.config.z_hysteresis
        symbols = torch.where(keep, previous, symbols)
        indexes = self._temporal_z_indexes(quality, symbols.shape)
        strings, _, _, likelihoods = _encode_y(self.gaussian_conditional, symbols.float(), indexes, previous.float())
        return strings, symbols, _dequantize_z(self.entropy_bottleneck, symbols, quality), likelihoods

    def _decode_z_in_time(self, strings: list[bytes], quality: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
        indexes = self._temporal_z_indexes(quality, previous.shape)
        symbols = self.gaussian_conditional.decompress(list(strings), indexes, torch.int32) + previous
        return symbols, _dequantize_z(self.entropy_bottleneck, symbols, quality)

    # --- the three entry points

    def forward(self, xp: Tensor, quality: Tensor, reference: Tensor) -> dict[str, Any]:
        flow = self.motion_estimation(xp, reference)
        my = self.motion_latent(flow, quality)
        mz_likelihoods, mz_hat = _train_quantize_z(
            self.motion_entropy_bottleneck, self.motion_hyper_analysis(my), quality)
        _, mheads = self.motion_hyper_synthesis(mz_hat, my.shape[-2:])
        mscales = scales_from_code(self.motion_quality.offset_code(mheads["scale"], quality), self.config)
        my_likelihoods, my_hat = _train_quantize_y(
            self.motion_gaussian_conditional, my, mscales, _clamp_means(mheads["mean"])
        )
        motion = self.decode_motion(my_hat, quality, xp.shape[-2:])
        context = self.motion_compensation(reference, motion)
        prior = self.temporal_prior(context)
        y = self.contextual_encoder(torch.cat([xp, context], dim=1)) / self.quality.enc(quality)
        z_likelihoods, z_hat = _train_quantize_z(
            self.entropy_bottleneck, self.hyper_analysis(torch.cat([y, prior], 1)), quality)
        hidden, heads = self.hyper_synthesis(z_hat, y.shape[-2:])
        scales = scales_from_code(self.quality.offset_code(heads["scale"], quality), self.config)
        means = _clamp_means(self.entropy_fusion(torch.cat([hidden, prior], dim=1)))
        y_likelihoods, y_hat = _train_quantize_y(self.gaussian_conditional, y, scales, means)
        x_hat = self.contextual_decoder(y_hat * self.quality.dec(quality), context)
        likelihoods = {"motion_z": mz_likelihoods, "motion_y": my_likelihoods, "z": z_likelihoods, "y": y_likelihoods}
        return {"x_hat": x_hat, "likelihoods": likelihoods, "motion": motion}

    def compress(self, xp: Tensor, quality: Tensor, reference: Tensor,
                 previous_z: Tensor | None = None) -> dict[str, Any]:
        """``previous_z``: the last P frame's z symbols, to code z against (config temporal_z)."""
        flow = self.motion_estimation(xp, reference)
        my = self.motion_latent(flow, quality)
        mz_strings, mz_symbols, mz_hat, mz_likelihoods = _encode_z(
            self.motion_entropy_bottleneck, self.motion_hyper_analysis(my), quality)
        mindexes, mmeans = self._motion_params(mz_hat, my.shape[-2:], quality)
        my_strings, my_symbols, my_hat, my_likelihoods = _encode_y(
            self.motion_gaussian_conditional, my, mindexes, mmeans)
        # from here on the encoder follows the decoder's path (decoded motion, decoded z)
        motion = self.decode_motion(my_hat, quality, xp.shape[-2:])
        context = self.motion_compensation(reference, motion)
        prior = self.temporal_prior(context)
        y = self.contextual_encoder(torch.cat([xp, context], dim=1)) / self.quality.enc(quality)
        z = self.hyper_analysis(torch.cat([y, prior], 1))
        if previous_z is None:
            z_strings, z_symbols, z_hat, z_likelihoods = _encode_z(self.entropy_bottleneck, z, quality)
        else:
            z_strings, z_symbols, z_hat, z_likelihoods = self._encode_z_in_time(z, quality, previous_z)
        indexes, means = self._y_params(z_hat, prior, quality)
        y_strings, y_symbols, y_hat, y_likelihoods = _encode_y(self.gaussian_conditional, y, indexes, means)
        x_hat = self.contextual_decoder(y_hat * self.quality.dec(quality), context)
        return {
            "strings": {"motion_z": mz_strings, "motion_y": my_strings, "z": z_strings, "y": y_strings},
            "latents": {"motion_z": mz_symbols, "motion_y": my_symbols, "z": z_symbols, "y": y_symbols},
            "likelihoods": {"motion_z": mz_likelihoods, "motion_y": my_likelihoods, "z": z_likelihoods,
                            "y": y_likelihoods},
            "x_hat": x_hat, "motion": motion,
        }

    def decompress(self, strings: dict[str, list[bytes]], sizes: dict[str, tuple[int, int]], quality: Tensor,
                   reference: Tensor, previous_z: Tensor | None = None) -> dict[str, Any]:
        if "motion_z" in strings:
            mz_symbols, mz_hat = _decode_z(
                self.motion_entropy_bottleneck, strings["motion_z"], sizes["motion_z"], quality)
        else:  # a motionless P frame: every motion symbol is zero
            mz_symbols, mz_hat = _zero_z(self.motion_entropy_bottleneck, len(strings["y"]), sizes["motion_z"], quality)
        mindexes, mmeans = self._motion_params(mz_hat, sizes["motion_y"], quality)
        if "motion_y" in strings:
            my_symbols, my_hat = _decode_y(self.motion_gaussian_conditional, strings["motion_y"], mindexes, mmeans)
        else:
            my_symbols = torch.zeros(mindexes.shape, dtype=torch.int32)
            my_hat = self.motion_gaussian_conditional.dequantize(my_symbols, mmeans)
        motion = self.decode_motion(my_hat, quality, sizes["padded"])
        context = self.motion_compensation(reference, motion)
        prior = self.temporal_prior(context)
        if previous_z is None:
            z_symbols, z_hat = _decode_z(self.entropy_bottleneck, strings["z"], sizes["z"], quality)
        else:
            z_symbols, z_hat = self._decode_z_in_time(strings["z"], quality, previous_z)
        indexes, means = self._y_params(z_hat, prior, quality)
        y_symbols, y_hat = _decode_y(self.gaussian_conditional, strings["y"], indexes, means)
        x_hat = self.contextual_decoder(y_hat * self.quality.dec(quality), context)
        return {
            "latents": {"motion_z": mz_symbols, "motion_y": my_symbols, "z": z_symbols, "y": y_symbols},
            "x_hat": x_hat, "motion": motion,
        }


# -------------------------------------------------------------------------------------- FMVR


class FMVR(nn.Module):
    """Feature-level motion vector refinement (paper Eq. 8), decoder side.

    ``refined = motion + D(motion, F^_t, warp(F^_{t-1}, motion))`` with D three 3x3 convolutions at
    full resolution; D's last layer starts at zero, so FMVR starts as the identity.
    """

    def __init__(self, config: FeatureCodecConfig):
        super().__init__()
        c, w = config.feature_channels, config.fmvr_width
        self.body = nn.Sequential(_conv(2 + 2 * c, w), _act(), _conv(w, w), _act())
        self.delta = _conv(w, 2)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(self, motion: Tensor, feature: Tensor, reference: Tensor) -> Tensor:
        if motion.shape[1] != 2 or motion.shape[-2:] != feature.shape[-2:] or reference.shape != feature.shape:
            raise ValueError(
                f"FMVR needs motion (B, 2, H, W), feature and reference (B, C, H, W) of one size, got "
                f"{tuple(motion.shape)}, {tuple(feature.shape)}, {tuple(reference.shape)}"
            )
        warped = flow_warp(reference, motion)
        return motion + self.delta(self.body(torch.cat([motion, feature, warped], dim=1)))


# -------------------------------------------------------------------------------- the codec


class FeatureCodec(CompressionModel):
    """Intra + inter feature codec with FMVR and a quality index (see the module docstring)."""

    def __init__(self, config: FeatureCodecConfig | None = None):
        super().__init__()
        self.config = config = config or FeatureCodecConfig()
        self.intra = IntraCodec(config)
        self.inter = InterCodec(config)
        self.fmvr = FMVR(config)
        channels = config.feature_channels
        mean = torch.tensor(config.feature_mean or (0.0,) * channels).view(1, -1, 1, 1)
        scale = torch.tensor(config.feature_scale or (1.0,) * channels).view(1, -1, 1, 1)
        self.register_buffer("_feature_mean", mean, persistent=False)
        self.register_buffer("_feature_scale", scale, persistent=False)

    def set_feature_statistics(self, mean: Sequence[float], scale: Sequence[float]) -> None:
        """Fix the per-channel normalisation (before training: it is part of the config)."""
        self.config = dataclasses.replace(self.config, feature_mean=tuple(mean), feature_scale=tuple(scale))
        self._feature_mean.copy_(torch.tensor(self.config.feature_mean).view(1, -1, 1, 1))
        self._feature_scale.copy_(torch.tensor(self.config.feature_scale).view(1, -1, 1, 1))

    @torch.no_grad()
    def initialise_block_transforms(self, features: Tensor, following: Tensor | None = None) -> None:
        """Set the projections of the block transforms to the principal components of ``features``
        (B, C, H, W) in the codec's normalised units (before training; a "block" transform only).
        The contextual encoder starts coding the residual ``F - context`` (projection [P, -P]).

        The scale heads of the hyper-syntheses start at each latent channel's RMS (the log-mean
        over the qualities) of the I-frame coefficients and, given ``following`` (the features one
        stride later), of the residual coefficients: in the scale table's units a head's bias
        moves ~lr per step, so from a flat start the rates would take tens of thousands of steps
        to come down (measured: 0.75 bits per pixel for P frames of a static scene after 300)."""
        if self.config.transform != "block":
            raise ValueError("only a 'block' transform codec has projections to initialise")
        x = self._normalise(features).permute(0, 2, 3, 1).reshape(-1, self.config.feature_channels)
        x = x - x.mean(dim=0)
        _, vectors = torch.linalg.eigh(x.T.double() @ x.double())
        basis = vectors.flip(1)[:, : self.config.block_components].T.float()  # (k, C), largest first
        self.intra.g_a.project.weight.copy_(basis[:, :, None, None])
        self.intra.g_s.project.weight.copy_(basis.T[:, :, None, None])
        self.inter.contextual_encoder.project.weight.copy_(torch.cat([basis, -basis], dim=1)[:, :, None, None])
        self.inter.contextual_decoder.synthesis.project.weight.copy_(basis.T[:, :, None, None])
        normalised = pad_features(self._normalise(features))
        self._start_scales(self.intra.h_s, self.intra.g_a(normalised), self.intra.quality)
        if following is not None:
            later = pad_features(self._normalise(following))
            residual = self.inter.contextual_encoder(torch.cat([later, normalised], dim=1))
            self._start_scales(self.inter.hyper_synthesis, residual, self.inter.quality)

    def _start_scales(self, synthesis: "ExactHyperSynthesis", coefficients: Tensor, quality: "QualityScales") -> None:
        c = self.config
        codes = []
        for q in range(c.qualities):
            rms = (coefficients / quality.enc(torch.tensor([q]))).square().mean(dim=(0, 2, 3)).sqrt()
            codes.append(torch.log(rms.clamp_min(c.scale_min) / c.scale_min) / c.scale_log_step)
        synthesis.heads["scale"].bias.copy_(torch.stack(codes).mean(dim=0).clamp(0, c.scale_levels - 1))

    def _normalise(self, x: Tensor) -> Tensor:
        return (x - self._feature_mean) / self._feature_scale

    def _denormalise(self, x: Tensor) -> Tensor:
        """Decoded features back in the FEM's units (reference states stay normalised)."""
        return x * self._feature_scale + self._feature_mean

    # --- set-up

    def scale_table(self) -> Tensor:
        """The scale table (of the Gaussian or Laplace, per ``likelihood``); entry k is the scale of code k."""
        c = self.config
        return get_scale_table(c.scale_min, c.scale_max, c.scale_levels)

    def update(self, scale_table: Tensor | None = None, force: bool = False, update_quantiles: bool = False) -> bool:
        """Build the integer CDF tables (needed once before compress/decompress).

        They are buffers: save them with the weights and do not recompute them at load, so that
        every decoder uses the encoder's tables bit for bit.
        """
        if scale_table is not None and not torch.equal(torch.as_tensor(scale_table), self.scale_table()):
            raise ValueError("the codec's scale table is fixed by its config (scale_min, scale_max, scale_levels)")
        return super().update(scale_table=self.scale_table(), force=force, update_quantiles=update_quantiles)

    def decoder_side_modules(self) -> list[nn.Module]:
        """What stage (c2) may fine-tune: modules both sides run from decoded data only, outside the
        CDF choice (the hyper-syntheses and entropy models stay frozen). The encoder codes with the
        fine-tuned copy too, so both sides still agree."""
        inter = self.inter
        return [self.intra.g_s, inter.motion_decoder, inter.feature_adaptor, inter.temporal_prior_encoder,
                inter.contextual_decoder, inter.entropy_fusion, self.fmvr]

    def probability_parameters(self) -> list[nn.Parameter]:
        """What sets probabilities but never a decoded value (what the densities stage refits): the
        factorized priors of the hyper-latents (z^ is rounded around fixed medians), the scale
        heads of the hyper-syntheses (the means and the hidden features come from other layers)
        and the per-quality scale offsets."""
        from compressai.entropy_models import EntropyBottleneck

        modules = [m for m in self.modules() if isinstance(m, EntropyBottleneck)]
        modules += [s.heads["scale"] for s in (self.intra.h_s, self.inter.hyper_synthesis,
                                                self.inter.motion_hyper_synthesis)]
        offsets = [q.scale_offset for q in (self.intra.quality, self.inter.quality, self.inter.motion_quality)]
        return [p for m in modules for p in m.parameters()] + offsets

    def lmbda(self, quality: int) -> float:
        """The rate-distortion weight of ``quality``."""
        return self.config.lambdas[self._quality_list([quality])[0]]

    # --- validation

    def _check_features(self, x: Tensor) -> None:
        c = self.config.feature_channels
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != c or not x.is_floating_point():
            raise ValueError(f"codec expects float features (B, {c}, H, W), got {getattr(x, 'shape', type(x))}")
        if x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"codec features are empty: {tuple(x.shape)}")

    def _quality_list(self, values: Sequence[Any]) -> list[int]:
        count = self.config.qualities
        out = []
        for value in values:
            if isinstance(value, bool) or int(value) != value or not 0 <= int(value) < count:
                raise ValueError(f"quality must be an integer in 0..{count - 1}, got {value!r}")
            out.append(int(value))
        return out

    def _quality(self, quality: int | Tensor, batch: int, device: torch.device) -> Tensor:
        if isinstance(quality, Tensor):
            if quality.is_floating_point() or quality.dim() > 1:
                raise ValueError(
                    f"quality tensor must be integer, scalar or (B,), got {quality.dtype} {tuple(quality.shape)}"
                )
            values = self._quality_list(quality.reshape(-1).tolist())
            if quality.dim() == 1 and len(values) != batch:
                raise ValueError(f"quality tensor has {len(values)} entries for a batch of {batch}")
            if quality.dim() == 0:
                values = values * batch
        else:
            values = self._quality_list([quality]) * batch
        return torch.tensor(values, dtype=torch.long, device=device)

    def _check_reference(self, reference: ReferenceState, batch: int, padded: tuple[int, int],
                         size: tuple[int, int]) -> None:
        if not isinstance(reference, ReferenceState):
            raise ValueError(f"reference must be a ReferenceState, got {type(reference).__name__}")
        expected = (batch, self.config.feature_channels) + tuple(padded)
        if tuple(reference.feature.shape) != expected or tuple(reference.size) != tuple(size):
            raise ValueError(
                f"reference feature {tuple(reference.feature.shape)} of size {tuple(reference.size)} does not "
                f"match the frame (expected {expected} of size {tuple(size)})"
            )
        if reference.z_symbols is not None:
            expected = (batch, self.config.hyper_channels) + latent_sizes(*size, self.config.latent_stride)["z"]
            if tuple(reference.z_symbols.shape) != expected:
                raise ValueError(f"reference z symbols {tuple(reference.z_symbols.shape)} do not match the "
                                 f"frame (expected {expected})")

    def _previous_z(self, reference: ReferenceState) -> Tensor | None:
        """What a P frame's z is coded against: the reference's z symbols when the reference was a
        P frame and the config codes z in time; otherwise None (the factorized prior)."""
        return reference.z_symbols if self.config.temporal_z else None

    # --- entry points

    def forward(self, x: Tensor, quality: int | Tensor, reference: ReferenceState | None = None) -> dict[str, Any]:
        """Rate-estimating pass (training): I frame without ``reference``, P frame with it."""
        self._check_features(x)
        size = (x.shape[-2], x.shape[-1])
        xp = pad_features(self._normalise(x))
        q = self._quality(quality, x.shape[0], x.device)
        if reference is None:
            out = self.intra(xp, q)
            return {
                "frame_type": "I", "x_hat": self._denormalise(out["x_hat"][..., : size[0], : size[1]]),
                "likelihoods": out["likelihoods"], "state": ReferenceState(out["x_hat"], size),
                "motion": None, "motion_refined": None,
            }
        self._check_reference(reference, x.shape[0], tuple(xp.shape[-2:]), size)
        out = self.inter(xp, q, reference.feature)
        refined = self.fmvr(out["motion"], out["x_hat"], reference.feature)
        return {
            "frame_type": "P", "x_hat": self._denormalise(out["x_hat"][..., : size[0], : size[1]]),
            "likelihoods": out["likelihoods"], "state": ReferenceState(out["x_hat"], size),
            "motion": out["motion"][..., : size[0], : size[1]],
            "motion_refined": refined[..., : size[0], : size[1]],
        }

    @torch.no_grad()
    def compress(self, x: Tensor, quality: int | Tensor, reference: ReferenceState | None = None) -> dict[str, Any]:
        """Entropy-code one frame (``update()`` first). Returns strings, shapes, latents, x_hat, state."""
        self._check_features(x)
        size = (x.shape[-2], x.shape[-1])
        xp = pad_features(self._normalise(x))
        q = self._quality(quality, x.shape[0], x.device)
        sizes = latent_sizes(*size, self.config.latent_stride)
        if reference is None:
            frame_type, out = "I", self.intra.compress(xp, q)
            shapes = {"x": size, "z": sizes["z"]}
        else:
            self._check_reference(reference, x.shape[0], sizes["padded"], size)
            frame_type, out = "P", self.inter.compress(xp, q, reference.feature, self._previous_z(reference))
            shapes = {"x": size, "motion_z": sizes["motion_z"], "z": sizes["z"]}
        order = LATENT_NAMES[frame_type]
        if frame_type == "P" and not any(bool(out["latents"][name].any()) for name in MOTION_NAMES):
            order = MOTIONLESS_P_NAMES
        return {
            "frame_type": frame_type,
            "strings": {name: out["strings"][name] for name in order},
            "shapes": shapes,
            "latents": {name: out["latents"][name] for name in order},
            # of the symbols coded, under the coder's own parameters: the payload's entropy estimate
            "likelihoods": {name: out["likelihoods"][name] for name in order},
            "x_hat": self._denormalise(out["x_hat"][..., : size[0], : size[1]]),
            "state": ReferenceState(out["x_hat"], size, out["latents"]["z"] if frame_type == "P" else None),
        }

    @torch.no_grad()
    def decompress(self, strings: dict[str, Sequence[bytes]], shapes: dict[str, Sequence[int]],
                   quality: int | Tensor, reference: ReferenceState | None = None) -> dict[str, Any]:
        """Decode one frame from ``compress``'s strings and shapes (I without reference, P with)."""
        frame_type = "I" if reference is None else "P"
        names = LATENT_NAMES[frame_type]
        if frame_type == "P" and isinstance(strings, dict) and set(strings) == set(MOTIONLESS_P_NAMES):
            names = MOTIONLESS_P_NAMES
        if not isinstance(strings, dict) or set(strings) != set(names):
            got = sorted(strings) if isinstance(strings, dict) else type(strings).__name__
            raise ValueError(f"a {frame_type} frame needs strings {list(names)} (P: or {list(MOTIONLESS_P_NAMES)}), "
                             f"got {got}")
        batch = len(strings["y"]) if isinstance(strings["y"], (list, tuple)) else 0
        if batch < 1:
            raise ValueError("strings['y'] must be a non-empty list of byte strings, one per batch item")
        for name in names:
            values = strings[name]
            if not isinstance(values, (list, tuple)) or len(values) != batch or not all(
                isinstance(s, (bytes, bytearray)) for s in values
            ):
                raise ValueError(f"strings[{name!r}] must be a list of {batch} byte strings")
        try:
            height, width = (int(v) for v in shapes["x"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"shapes must give the feature size as shapes['x'] = (H, W), got {shapes!r}") from None
        if height < 1 or width < 1:
            raise ValueError(f"feature size must be positive, got {(height, width)}")
        sizes = latent_sizes(height, width, self.config.latent_stride)
        for name in ("z", "motion_z") if frame_type == "P" else ("z",):
            if name in shapes and tuple(int(v) for v in shapes[name]) != sizes[name]:
                raise ValueError(
                    f"shapes[{name!r}] = {tuple(shapes[name])} does not match a {height}x{width} feature "
                    f"(expected {sizes[name]})"
                )
        device = next(self.parameters()).device
        q = self._quality(quality, batch, device)
        size = (height, width)
        if reference is None:
            out = self.intra.decompress(strings, sizes, q)
            motion = refined = None
        else:
            self._check_reference(reference, batch, sizes["padded"], size)
            out = self.inter.decompress(strings, sizes, q, reference.feature, self._previous_z(reference))
            refined = self.fmvr(out["motion"], out["x_hat"], reference.feature)
            motion, refined = out["motion"][..., :height, :width], refined[..., :height, :width]
        return {
            "frame_type": frame_type,
            "x_hat": self._denormalise(out["x_hat"][..., :height, :width]),
            "latents": {name: out["latents"][name] for name in names},
            "state": ReferenceState(out["x_hat"], size, out["latents"]["z"] if frame_type == "P" else None),
            "motion": motion, "motion_refined": refined,
        }


def with_hyperprior_per_quality(codec: FeatureCodec) -> FeatureCodec:
    """A copy of ``codec`` whose z and motion-z priors are one per quality, each starting as the
    shared prior (same medians, so z^ and everything decoded stay as they were)."""
    if codec.config.hyperprior_per_quality:
        return copy.deepcopy(codec)
    config = dataclasses.replace(codec.config, hyperprior_per_quality=True)
    converted = FeatureCodec(config).to(next(codec.parameters()).device)
    shared = ("intra.entropy_bottleneck.", "inter.entropy_bottleneck.", "inter.motion_entropy_bottleneck.")
    state = {}
    for key, value in codec.state_dict().items():
        prefix = next((p for p in shared if key.startswith(p)), None)
        if prefix is None:
            state[key] = value
            continue
        for q in range(config.qualities):
            state[f"{prefix}{q}.{key[len(prefix):]}"] = value.clone()
    converted.load_state_dict(state)
    return converted


def laplace_config(config: FeatureCodecConfig) -> FeatureCodecConfig:
    """``config`` (Gaussian) with the Laplace likelihood and its scale table: the same log step,
    grown downwards by k levels to the Laplace scale at which a zero costs what it cost the
    Gaussian at ``scale_min`` (see :func:`with_laplace_likelihood`)."""
    step = config.scale_log_step
    nonzero = math.erfc(0.5 / config.scale_min / math.sqrt(2.0))  # P(|y - mean| >= 1/2) at the smallest scale
    smallest = 0.5 / -math.log(nonzero)  # the Laplace scale with that probability
    k = math.ceil(math.log(config.scale_min / smallest) / step - 1e-9)
    return dataclasses.replace(config, likelihood="laplace", scale_min=config.scale_min * math.exp(-k * step),
                               scale_levels=config.scale_levels + k)


def with_laplace_likelihood(codec: FeatureCodec) -> FeatureCodec:
    """A copy of ``codec`` coding y and motion y with :class:`LaplaceConditional`; nothing decoded
    changes, and the densities stage then refits the scales.

    The scale table keeps its log step and grows downwards by k levels (:func:`laplace_config`):
    a Laplace of the Gaussian's smallest scale would make near-certain zeros, most of y at low
    qualities, cost 0.016 bits each. Each quality's scale offsets move so that every predicted
    distribution keeps its variance (a Laplace of scale b has variance 2 b^2). The CDF tables are
    rebuilt."""
    if codec.config.likelihood == "laplace":
        return copy.deepcopy(codec)
    config = laplace_config(codec.config)
    step, k = config.scale_log_step, config.scale_levels - codec.config.scale_levels
    converted = FeatureCodec(config).to(next(codec.parameters()).device)
    # everything but the conditionals' scale bounds (set by the config); the old CDF tables too,
    # as compressai's loader sizes its buffers from them: update() replaces them below
    bounds = ("gaussian_conditional.scale_bound", "gaussian_conditional.lower_bound_scale.bound")
    state = converted.state_dict()
    state.update({key: value for key, value in codec.state_dict().items() if not key.endswith(bounds)})
    converted.load_state_dict(state)
    with torch.no_grad():
        for quality in (converted.intra.quality, converted.inter.quality, converted.inter.motion_quality):
            quality.scale_offset += k + math.log(math.sqrt(0.5)) / step
    converted.update(force=True)
    return converted


def with_temporal_z(codec: FeatureCodec, hysteresis: float = 0.0) -> FeatureCodec:
    """A copy of ``codec`` with ``temporal_z`` and ``z_hysteresis``: a P frame that follows a P
    frame codes its z symbols as differences from that frame's, under the y conditional's table
    with zero mean, one table scale per quality and channel (placeholders until
    :func:`fit_temporal_z`). Without hysteresis nothing decoded changes."""
    if codec.config.temporal_z:
        raise ValueError("the codec already codes z in time")
    config = dataclasses.replace(codec.config, temporal_z=True, z_hysteresis=float(hysteresis))
    converted = FeatureCodec(config).to(next(codec.parameters()).device)
    state = converted.state_dict()
    state.update(codec.state_dict())
    converted.load_state_dict(state)
    return converted


def fit_temporal_z(codec: FeatureCodec, differences: Sequence[Tensor]) -> list[float]:
    """Set the table scales of a ``temporal_z`` codec's z differences, in place; returns, per
    quality, the bits the chosen scales code those differences in.

    ``differences[q]``: integer z-symbol differences (N, hyper_channels, H, W) of consecutive P
    frames at quality q, from training streams this codec coded (with its hysteresis). Each scale
    is the table's that codes them in the fewest bits, the probabilities floored at 2^-16 as in the
    16-bit rANS tables."""
    config = codec.config
    if not config.temporal_z:
        raise ValueError("only a codec with temporal_z has scales of z differences to fit")
    if len(differences) != config.qualities:
        raise ValueError(f"need z differences for each of the {config.qualities} qualities, got {len(differences)}")
    gc, table = codec.inter.gaussian_conditional, codec.scale_table().reshape(-1, 1)
    estimates = []
    with torch.no_grad():
        for quality, values in enumerate(differences):
            if values.dim() != 4 or values.shape[1] != config.hyper_channels or values.is_floating_point():
                raise ValueError(f"z differences of quality {quality} must be integer (N, {config.hyper_channels}, "
                                 f"H, W), got {values.dtype} {tuple(values.shape)}")
            estimates.append(0.0)
            for channel in range(config.hyper_channels):
                levels, counts = torch.unique(values[:, channel], return_counts=True)
                pmf = gc._likelihood(levels.float().expand(len(table), -1), table)
                bits = -(counts * torch.log2(pmf.clamp_min(2.0**-16))).sum(dim=1)
                codec.inter.temporal_z_index[quality, channel] = int(torch.argmin(bits))
                estimates[-1] += float(bits.min())
    return estimates


# -------------------------------------------------------------------------------------- cost


def _count_transposed(module: nn.Module, run: Callable[[], object], costs: list[OpCost]) -> None:
    """Run ``run()`` counting every ConvTranspose2d call (``cost.py`` hooks count Conv2d/Linear):
    each input value meets ``C_out/groups * k_h * k_w`` weights."""

    def make_hook(name: str) -> Callable:
        def hook(layer: nn.ConvTranspose2d, inputs: tuple, output: Tensor) -> None:
            kh, kw = layer.kernel_size
            per_input = layer.out_channels // layer.groups * kh * kw
            costs.append(OpCost(f"{name} convT{kh}x{kw}", per_input * inputs[0].numel()))
        return hook

    handles = [layer.register_forward_hook(make_hook(name)) for name, layer in module.named_modules()
               if isinstance(layer, nn.ConvTranspose2d)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()


def codec_cost(codec: FeatureCodec, height: int = 250, width: int = 400, gop: int = 32) -> dict[str, Any]:
    """MACs per moment of the encoder and decoder sides, for I and P frames, at ``height`` x ``width``.

    Convolutions are counted by hooks while ``compress`` (encoder: analysis, hyper-analysis, and
    the in-loop decoding it must repeat) and ``decompress`` (decoder, FMVR included) run on a
    zero feature; the exact hyper-syntheses count as MACs although they run in float64. Warping
    (bilinear, 4 MACs per sampled value), bilinear up-sampling and area averaging are counted by
    hand. Entropy coding (rANS) is not a MAC count and is left out. ``gop_average`` weighs one I
    and ``gop - 1`` P frames.
    """
    if height < 1 or width < 1 or gop < 1:
        raise ValueError(f"cost needs positive height, width and gop, got {height}, {width}, {gop}")
    import copy

    model = copy.deepcopy(codec).cpu().eval()
    model.update()
    c = model.config
    hp, wp = padded_size(height, width)
    pixels, quarter = hp * wp, (hp // 4) * (wp // 4)
    x = torch.zeros(1, c.feature_channels, height, width)
    results: dict[str, Any] = {}

    encoded_i: dict[str, Any] = {}
    encoded_p: dict[str, Any] = {}
    runs = [
        lambda: encoded_i.update(model.compress(x, 0)),
        lambda: model.decompress(encoded_i["strings"], encoded_i["shapes"], 0),
        lambda: encoded_p.update(model.compress(x, 0, encoded_i["state"])),
        lambda: model.decompress(encoded_p["strings"], encoded_p["shapes"], 0, encoded_i["state"]),
    ]
    counted, extra = [], []
    for run in runs:
        transposed: list[OpCost] = []
        counted.append(_hook_layer_macs(model, lambda: _count_transposed(model, run, transposed)))
        extra.append(transposed)
    ops_enc_i, ops_dec_i, ops_enc_p, ops_dec_p = counted

    motion_decode = [
        OpCost("motion decoder bilinear up-sampling (1/4 -> 1/1)", 4 * 2 * pixels),
        OpCost("motion compensation warp (grid_sample, bilinear)", 4 * c.context_channels * pixels),
        OpCost("temporal prior area averaging", c.context_channels * pixels),
    ]
    ops_enc_p += [
        OpCost("motion estimation area downsampling", 2 * c.feature_channels * pixels),
        OpCost("motion estimation bilinear up-sampling (1/8 -> 1/4, 1/4 -> 1/1)",
               4 * c.motion_estimator_width * quarter + 4 * 2 * pixels),
        OpCost("motion encoder area averaging", 2 * pixels),
    ] + motion_decode
    ops_dec_p += motion_decode + [OpCost("FMVR warp (grid_sample, bilinear)", 4 * c.feature_channels * pixels)]

    for ops in (ops_enc_i, ops_dec_i, ops_enc_p, ops_dec_p):
        ops += extra.pop(0)
    tables = {"encoder_I": ops_enc_i, "decoder_I": ops_dec_i, "encoder_P": ops_enc_p, "decoder_P": ops_dec_p}
    results["height"], results["width"], results["padded"] = height, width, (hp, wp)
    results["macs_per_moment"] = {name: total_macs(ops) for name, ops in tables.items()}
    macs = results["macs_per_moment"]
    results["gop"] = gop
    results["gop_average"] = {
        side: (macs[f"{side}_I"] + (gop - 1) * macs[f"{side}_P"]) / gop for side in ("encoder", "decoder")
    }
    results["operations"] = {name: [op.to_dict() for op in ops] for name, ops in tables.items()}
    return results


__all__ = [
    "ExactConv2d", "ExactHyperSynthesis", "FMVR", "FRAME_TYPES", "FeatureCodec", "FeatureCodecConfig",
    "BlockAnalysis", "BlockSynthesis", "IntraCodec", "InterCodec", "LaplaceConditional", "ListedConditional",
    "dct_basis", "laplace_config", "with_laplace_likelihood", "with_temporal_z", "fit_temporal_z", "LATENT_NAMES", "MOTIONLESS_P_NAMES", "PAD_MULTIPLE", "QualityScales", "ReferenceState",
    "TINY_CODEC_CONFIG", "codec_cost", "exact_to_real", "geometric_lambdas", "latent_sizes",
    "likelihood_bits", "pad_features", "padded_size", "scale_indexes", "scales_from_code", "string_bits",
]
