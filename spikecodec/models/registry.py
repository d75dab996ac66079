"""The model registry: stable model ids -> class, config and weights file (safetensors + sha256).

Ids are names, never list positions, and an id's meaning never changes: retrained weights get a
new id and old ids stay so that old bitstreams keep decoding (DESIGN.md "Weights identity"). The
end-side id (``"sci-small-v1"``: the FEM, later with its codec) is what a bitstream names; the
analysis heads have their own ids (``"sci-small-v1-recon"``) naming the end-side id they analyse.

Kinds:

* ``"fem"``: :class:`~spikecodec.models.fem.FEM`; file keys are the FEM's state dict.
* ``"reconstructor"``: :class:`~spikecodec.models.sci.SCIReconstructor`; the FEM is loaded from
  ``base``, the file holds ``afr.*`` and ``head.*``.
* ``"plain-cnn"``: :class:`~spikecodec.models.sci.PlainCNN` (the learned benchmark baseline).
* ``"codec"``: :class:`~spikecodec.models.codec.FeatureCodec` coding the features of the FEM
  ``base``; the file holds the state dict with the integer CDF tables built at export
  (never rebuilt at load). ``analysis`` names the reconstructor that decodes its streams by default.
  A bitstream names a codec id; :func:`stream_identity` is the sha256 it records.
* ``"classifier"``: :class:`~spikecodec.models.classifier.SCIClassifier` for the streams of the
  codec ``base`` (its FEM is the codec's base); the file holds ``afr.*`` and ``head.*``.

Entries with a ``seed`` and no file are *untrained*, deterministic random weights for tests only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import hashlib
import json

from spikecodec.models.afr import AFRConfig
from spikecodec.models.classifier import ClassificationHeadConfig, ClassifierConfig, SCIClassifier
from spikecodec.models.codec import TINY_CODEC_CONFIG, FeatureCodec, FeatureCodecConfig, laplace_config
from spikecodec.models.fem import FEM, FEMConfig
from spikecodec.models.heads import HeadConfig
from spikecodec.models.sci import PlainCNN, PlainCNNConfig, SCIConfig, SCIReconstructor
from spikecodec.models.weights_io import config_of, load_state, load_weights, sha256_of_file, subset

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
KINDS = ("fem", "reconstructor", "plain-cnn", "codec", "classifier")


class ModelNotFoundError(KeyError):
    """An unknown model id; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class WeightsError(RuntimeError):
    """Weights missing, unreadable, or not the ones the registry names (sha256 mismatch)."""


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    kind: str
    config: dict[str, Any]
    weights: str | None = None  # file name under the weights directory
    sha256: str | None = None  # of the weights file; None until the weights are shipped
    base: str | None = None  # reconstructor, codec: FEM id whose features it analyses / codes; classifier: codec id
    analysis: str | None = None  # codec: id of the reconstructor that decodes its streams by default
    seed: int | None = None  # untrained: weights drawn from this seed, no file
    # reconstructor, classifier: AFR reads the stream's FMVR-refined decoded motion (it was trained
    # so, stage c2); otherwise AFR estimates motion from the decoded features, as in stage b
    decoded_motion: bool = False
    # classifier: averages over fixed rotated / scaled / shifted views of each moment's fused
    # features (models.classifier.TEST_VIEWS); for heads trained on such augmented features
    test_views: bool = False
    description: str = ""

    @property
    def untrained(self) -> bool:
        return self.seed is not None


TINY_FEM = FEMConfig(filter_channels=2, channels=4, dorsal_channels=4, pfu_layers=1, attention_hidden=4)
TINY_SCI = SCIConfig(
    fem=TINY_FEM,
    afr=AFRConfig(channels=4, motion_channels=8, offset_channels=8, fuse_channels=8),
    head=HeadConfig(in_channels=8, width=8, layers=2),
)
SMALL_SCI = SCIConfig()
# sci-small-v2: the default FEM plus the 1x1 convolution of the sub-filters' rates added to F_t
SMALL_SCI_V2 = SCIConfig(fem=FEMConfig(count_skip=True))
# sci-small-v3: v2 with ventral sub-filters reaching 25 and 41 frames (static scenes need long counts;
# through prefix sums a longer field costs no more)
SMALL_SCI_V3 = SCIConfig(fem=FEMConfig(count_skip=True, ventral_fields=(7, 13, 25, 41)))
# the shipped codec: default architecture, the lambdas of its training and the feature
# normalisation stage c1 measured (docs/TRAINING.md)
CODEC_V1 = FeatureCodecConfig(
    lambdas=(16.0, 64.0, 256.0, 1024.0),
    feature_mean=(2.129606, 0.581905, 0.01073, -1.818017, 0.388453, -2.511557, 3.340976, 6.80863, -0.413573,
                  -0.270523, 2.909738, -0.796188, 1.419391, -1.222606, 0.067436, -3.030525),
    feature_scale=(1.467327, 0.315963, 0.235495, 0.919286, 0.116364, 1.431784, 2.180694, 4.290771, 0.165266,
                   0.306979, 1.727708, 0.465776, 0.946297, 0.686748, 0.196908, 1.93198),
)
CODEC_V2 = FeatureCodecConfig(
    transform="block", latent_stride=8, latent_channels=128, block_components=2, quality_steps=(6.4, 0.8),
    lambdas=(32.0, 128.0, 512.0, 2048.0), hyperprior_per_quality=True,
    feature_mean=(1.786952, 0.519463, 0.064329, -1.603913, 0.357472, -2.1717, 2.848276, 5.80631, -0.377354, -0.197093, 2.509184, -0.69251, 1.206149, -1.072975, 0.033447, -2.579933),
    feature_scale=(1.0,) * 16,
)
# sci-codec-v3: sci-codec-v2's transforms with Laplace distributions of y (its scale table grown downwards)
CODEC_V3 = laplace_config(CODEC_V2)
# sci-codec-v4: sci-codec-v3 whose P frames code z against the previous P frame's z
CODEC_V4 = dataclasses.replace(CODEC_V3, temporal_z=True, z_hysteresis=0.35)
# the default analysis with the AFR's per-quality modulation, for features decoded at the 4 qualities
SMALL_SCI_QUALITY_AWARE = SCIConfig(afr=AFRConfig(qualities=4))
BASELINE_CNN = PlainCNNConfig()  # 41 frames, width 56, 6 layers: ~134k parameters, like SCI's ~138k

# one weights file, two registry entries: sci-codec-v3 streams decode to sci-codec-v2's features
CLASSIFIER_V2 = ModelSpec("sci-codec-v2-mnist", "classifier", ClassifierConfig(fem=SMALL_SCI.fem).to_dict(), base="sci-codec-v2",
        weights="sci-codec-v2-mnist.safetensors",
        sha256="b42505c94c317ac51362881a39d89755e194376f455f309d2618deebbf72fab6", test_views=True,
        description="S-MNIST classifier (AFR + head): sci-codec-v1-mnist fine-tuned on sci-codec-v2 decoded "
                    "features at every quality (and uncompressed ones a quarter of the time), then trained further on four "
                    "renderings of S-MNIST train, then its head alone on rotated, scaled and shifted fused features with quality 0 "
                    "twice as often, then again on every moment a stream codes at strides 20 and 40, the AFR "
                    "estimating motion itself on decoded features as classify does; each moment scored over 9 "
                    "rotated / scaled / shifted views of its fused features")

_SPECS = [
    ModelSpec("sci-tiny-test", "fem", TINY_FEM.to_dict(), seed=0,
              description="UNTRAINED tiny FEM with seeded random weights, for tests only"),
    ModelSpec("sci-tiny-test-recon", "reconstructor", TINY_SCI.to_dict(), base="sci-tiny-test", seed=1,
              description="UNTRAINED tiny reconstructor with seeded random weights, for tests only"),
    ModelSpec("sci-tiny-test-codec", "codec", TINY_CODEC_CONFIG.to_dict(), base="sci-tiny-test",
              analysis="sci-tiny-test-recon", seed=2,
              description="UNTRAINED tiny feature codec with seeded random weights, for tests only"),
    ModelSpec("sci-tiny-test-mnist", "classifier", ClassifierConfig(
        fem=TINY_FEM, afr=TINY_SCI.afr, head=ClassificationHeadConfig(in_channels=8, width=8, layers=2)).to_dict(),
        base="sci-tiny-test-codec", seed=3,
        description="UNTRAINED tiny S-MNIST classifier with seeded random weights, for tests only"),
    ModelSpec("sci-small-v1", "fem", SMALL_SCI.fem.to_dict(), weights="sci-small-v1.safetensors",
              sha256="5052c869583de0036610b819033a3a40710489b71944b6848d29dc941b7060a2",
              description="default FEM (end side), trained in stage (a)"),
    ModelSpec("sci-small-v1-recon", "reconstructor", SMALL_SCI.to_dict(), base="sci-small-v1",
              weights="sci-small-v1-recon.safetensors",
              sha256="2c2af9f5f5059a640354ffb71adc16dcc0a9562337ec1936a02a9b5be5ecd8b7",
              description="AFR + reconstruction head on sci-small-v1 features, trained in stage (b)"),
    ModelSpec("sci-small-v2", "fem", SMALL_SCI_V2.fem.to_dict(), weights="sci-small-v2.safetensors",
              sha256="1f9538900b594d66f30ca9a26d20a94c37376ef3b3efcf048576e480801ed659",
              description="FEM with the sub-filter rates also passed to F_t linearly (count_skip), trained in stage (a); "
                          "analysis path only (the codecs code sci-small-v1 features)"),
    ModelSpec("sci-small-v2-recon", "reconstructor", SMALL_SCI_V2.to_dict(), base="sci-small-v2",
              weights="sci-small-v2-recon.safetensors",
              sha256="58ae704e19e0c7c35b6c847b9ce155d338ae6240b4d44bc0c578c1c9f4ea2c28",
              description="AFR + reconstruction head on sci-small-v2 features, trained in stage (b) on this machine"),
    ModelSpec("sci-small-v2-recon-long", "reconstructor", SMALL_SCI_V2.to_dict(), base="sci-small-v2",
              weights="sci-small-v2-recon-long.safetensors",
              sha256="78e127ebb40757d841747e34b820f794710322b4851017472b1ebee9f0832a8b",
              description="AFR + reconstruction head on sci-small-v2 features: stage (b) trained 11x longer than "
                          "sci-small-v2-recon (4,221 steps of batch 64 on a GPU), then 669 steps on log-MSE (mean PSNR)"),
    ModelSpec("sci-small-v3", "fem", SMALL_SCI_V3.fem.to_dict(), weights="sci-small-v3.safetensors",
              sha256="8abfc1d9e7372a9a40e52b49da45a0edb313021c4edff1303d44c9c8c9a6542d",
              description="sci-small-v2's FEM with ventral fields 7/13/25/41, trained in stage (a) on log-MSE; "
                          "analysis path only (the codecs code sci-small-v1 features)"),
    ModelSpec("sci-small-v3-recon", "reconstructor", SMALL_SCI_V3.to_dict(), base="sci-small-v3",
              weights="sci-small-v3-recon.safetensors",
              sha256="a85a58ec7891b7881a437024be2e0f594d595af590d79805d132aa65fb0e67ce",
              description="AFR + reconstruction head on sci-small-v3 features, trained in stage (b) on log-MSE on this machine"),
    ModelSpec("sci-small-v3-recon-long", "reconstructor", SMALL_SCI_V3.to_dict(), base="sci-small-v3",
              weights="sci-small-v3-recon-long.safetensors",
              sha256="f7824519f44b2e9cbcf3872b1c7ef8b9238b998838e26f9c0d71b86485e34dd2",
              description="sci-small-v3-recon trained 4,377 steps more in stage (b) on log-MSE, new clips (seed 2), "
                          "on this machine; the shipped analysis path"),
    ModelSpec("sci-codec-v1", "codec", CODEC_V1.to_dict(), base="sci-small-v1", analysis="sci-codec-v1-recon",
              weights="sci-codec-v1.safetensors", sha256="a1f2aaa764d934450bfcbad52039a7363fd023b101ee977faea1d87c6006451c",
              description="feature codec with FMVR on sci-small-v1 features, qualities 0..3 (stages c1 + c2)"),
    ModelSpec("sci-codec-v1-recon", "reconstructor", SMALL_SCI.to_dict(), base="sci-small-v1",
              weights="sci-codec-v1-recon.safetensors", sha256="839671f36d3a91c1149535b48f9be7e28b067c85b77852139efd5f027487ffa6",
              decoded_motion=True,
              description="AFR + reconstruction head fine-tuned on decoded sci-codec-v1 features (stage c2)"),
    ModelSpec("sci-codec-v1-mnist", "classifier", ClassifierConfig(fem=SMALL_SCI.fem).to_dict(), base="sci-codec-v1",
              weights="sci-codec-v1-mnist.safetensors",
              sha256="ff45997aa93c830f6c364377bd788a479dd54392d79ca45a323cc9400f192f5a",
              description="S-MNIST classifier (AFR + head) trained on uncompressed sci-small-v1 features only; "
                          "reads sci-codec-v1 streams (accuracy by rate: docs/BENCHMARKS.md)"),
    ModelSpec("sci-codec-v2", "codec", CODEC_V2.to_dict(), base="sci-small-v1", analysis="sci-small-v1-recon",
              weights="sci-codec-v2.safetensors", sha256="b34de1ef9763c741a7e96c4508e3866ea835bf6663259d936700fc57e7cb7445",
              description="feature codec with block transforms (PCA + DCT initialised) on sci-small-v1 features, "
                          "qualities 0..3 (stage c1, then hyper-priors refitted, one per quality, then hyper-priors, scale heads "
                          "and per-quality scale offsets refitted on 16-moment chains, then the I-frame coder fine-tuned on "
                          "the I frame's image (stage intra); decoded by the stage-b reconstructor)"),
    CLASSIFIER_V2,
    ModelSpec("sci-codec-v3", "codec", CODEC_V3.to_dict(), base="sci-small-v1", analysis="sci-small-v1-recon",
              weights="sci-codec-v3.safetensors", sha256="508f587f818f9ac7767824ea8a7a3120df6d36e42523e6e279bf4a8347248fa1",
              description="sci-codec-v2 with y and motion y coded under Laplace distributions, their scale heads, "
                          "per-quality scale offsets and hyper-priors refitted (stage densities); decodes the same "
                          "features as sci-codec-v2 at 4-16% fewer bits"),
    dataclasses.replace(CLASSIFIER_V2, model_id="sci-codec-v3-mnist", base="sci-codec-v3",
                        description="sci-codec-v2-mnist's weights for sci-codec-v3 streams (which decode to the "
                                    "features sci-codec-v2 streams decode to)"),
    ModelSpec("sci-codec-v4", "codec", CODEC_V4.to_dict(), base="sci-small-v1", analysis="sci-small-v1-recon",
              weights="sci-codec-v4.safetensors", sha256="b6c2a9cfa3c74744f4e80ce0555849a43a55af8e1dfa62008177e66a5efddbe7",
              description="sci-codec-v3 whose P frames after a P frame code z as differences from that frame's z "
                          "symbols (one Laplace per quality and channel, fitted on S-Motion train streams; the "
                          "encoder keeps a z symbol within 0.85 of its value)"),
    ModelSpec("sci-codec-v4-recon", "reconstructor", SMALL_SCI.to_dict(), base="sci-small-v1",
              weights="sci-codec-v4-recon.safetensors", sha256="bdd686c9a98be58e2086beac387c2fc14a96502d4a55dc8909195ab15d532910",
              description="sci-small-v1-recon fine-tuned on the features decoded from sci-codec-v4 streams of S-Motion "
                          "train at every quality, the codec frozen (stage c2 on decoded streams); not the default: "
                          "+0.4 dB at quality 0, -0.4 dB at quality 3 on S-Motion test (docs/TRAINING.md)"),
    dataclasses.replace(CLASSIFIER_V2, model_id="sci-codec-v4-mnist", base="sci-codec-v4",
                        description="sci-codec-v2-mnist's weights for sci-codec-v4 streams"),
    ModelSpec("sci-codec-v5", "codec", CODEC_V4.to_dict(), base="sci-small-v1", analysis="sci-small-v1-recon",
              weights="sci-codec-v5.safetensors", sha256="a98fa3eb63153484508e000c88c5f19a59b78091e76634e50df61925cdb23f84",
              description="sci-codec-v4 whose P-frame coder was fine-tuned 500 steps with stage c1's loss on 6-moment "
                          "chains, the I-frame coder and the analysis frozen (stage inter), then its z scales in time "
                          "refitted; S-Motion val: BD-rate -14% against sci-codec-v4"),
    dataclasses.replace(CLASSIFIER_V2, model_id="sci-codec-v5-mnist", base="sci-codec-v5",
                        description="sci-codec-v2-mnist's weights for sci-codec-v5 streams"),
    ModelSpec("sci-codec-v6-recon", "reconstructor", SMALL_SCI_QUALITY_AWARE.to_dict(), base="sci-small-v1",
              weights="sci-codec-v6-recon.safetensors", sha256="71c8be7ae9228a7d59ba23347597769fc891503eb7c2670a1bc4aa8583b2f095",
              description="sci-small-v1-recon fine-tuned on the features decoded from sci-codec-v6 streams of S-Motion "
                          "train at every quality, the codec frozen, its AFR modulated per quality (stage c2 "
                          "--quality-aware); sci-codec-v6's analysis"),
    ModelSpec("sci-codec-v6", "codec", CODEC_V4.to_dict(), base="sci-small-v1", analysis="sci-codec-v6-recon",
              weights="sci-codec-v6.safetensors", sha256="0cc789e8dd2ef03f31081c95a20a07a64c7078c3b6eee1fb945d4a16f5f60b4f",
              description="sci-codec-v5 whose P-frame coder was fine-tuned 625 more steps (stage inter), then its z "
                          "scales in time refitted; S-Motion val: BD-rate -9.6% against sci-codec-v5"),
    dataclasses.replace(CLASSIFIER_V2, model_id="sci-codec-v6-mnist", base="sci-codec-v6",
                        description="sci-codec-v2-mnist's weights for sci-codec-v6 streams"),
    ModelSpec("cnn-baseline-v1", "plain-cnn", BASELINE_CNN.to_dict(), weights="cnn-baseline-v1.safetensors",
              sha256="36b6a05c3d12d4f45d4d032cd4eb5c7dc47d08f1718eae078ae0116439824f46",
              description="plain CNN on 41 raw spike frames (benchmark baseline)"),
    ModelSpec("cnn-baseline-v2", "plain-cnn", BASELINE_CNN.to_dict(), weights="cnn-baseline-v2.safetensors",
              sha256="05e1649941869998735cf6c51ad431fdd94cf03136f8cb4dff270a3cf182fe99",
              description="plain CNN on 41 raw spike frames: 6,248 steps of batch 64 on a GPU (12x v1's samples), "
                          "then 1,122 steps on log-MSE (mean PSNR)"),
]
REGISTRY: dict[str, ModelSpec] = {spec.model_id: spec for spec in _SPECS}


def known_model_ids() -> list[str]:
    return sorted(REGISTRY)


def get_spec(model_id: str) -> ModelSpec:
    """The registry entry of ``model_id``; ModelNotFoundError lists the known ids."""
    try:
        return REGISTRY[model_id]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model id {model_id!r}; known ids: {', '.join(known_model_ids())}"
        ) from None


# kind -> (model class, config class)
MODEL_CLASSES = {"fem": (FEM, FEMConfig), "reconstructor": (SCIReconstructor, SCIConfig),
                 "plain-cnn": (PlainCNN, PlainCNNConfig), "codec": (FeatureCodec, FeatureCodecConfig),
                 "classifier": (SCIClassifier, ClassifierConfig)}


def build_model(kind: str, config: dict[str, Any]) -> nn.Module:
    """An untrained module of ``kind`` from its config dictionary."""
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {', '.join(KINDS)}")
    model_class, config_class = MODEL_CLASSES[kind]
    return model_class(config_class.from_dict(config))


def _weights_path(spec: ModelSpec, weights_dir: Path) -> Path:
    if spec.weights is None:
        raise WeightsError(f"model {spec.model_id!r} has no weights file in the registry")
    path = weights_dir / spec.weights
    if not path.is_file():
        raise WeightsError(
            f"weights of model {spec.model_id!r} are missing: expected {path}. They are made by "
            f"`spikecodec train` (docs/TRAINING.md); known ids: {', '.join(known_model_ids())}"
        )
    actual = sha256_of_file(path)
    if spec.sha256 is None:
        raise WeightsError(
            f"weights of model {spec.model_id!r} at {path} are not registered yet: record "
            f"sha256={actual!r} in spikecodec/models/registry.py"
        )
    if actual != spec.sha256:
        raise WeightsError(
            f"weights of model {spec.model_id!r} at {path} do not match the registry "
            f"(sha256 {actual}, registered {spec.sha256})"
        )
    return path


def _canonical_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """A config with the defaults of fields added after its weights were saved (the codec's
    ``latent_stride``, the FEM's ``count_skip``), so that older files still match their entry."""
    return MODEL_CLASSES[kind][1].from_dict(config).to_dict() if kind in MODEL_CLASSES else config


def _checked_tensors(spec: ModelSpec, weights_dir: Path) -> dict[str, torch.Tensor]:
    path = _weights_path(spec, weights_dir)
    tensors, metadata = load_weights(path)
    if metadata.get("kind") not in (None, spec.kind) or _canonical_config(spec.kind, config_of(metadata, path)) != \
            _canonical_config(spec.kind, spec.config):
        raise WeightsError(
            f"weights file {path} describes a {metadata.get('kind')!r} model whose config differs "
            f"from registry entry {spec.model_id!r}"
        )
    return tensors


def load_model(model_id: str, weights_dir: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The registered model with its weights, in eval mode on ``device``.

    Raises ModelNotFoundError for an unknown id and WeightsError for missing or mismatched weights.
    """
    spec = get_spec(model_id)
    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    with torch.random.fork_rng(devices=[]):
        if spec.seed is not None:
            torch.manual_seed(spec.seed)
        model = build_model(spec.kind, spec.config)
    if spec.kind == "classifier":
        model.test_views = spec.test_views
    if spec.kind in ("reconstructor", "classifier"):
        if spec.base is None:
            raise WeightsError(f"{spec.kind} {model_id!r} names no base")
        base = get_spec(spec.base)
        if spec.kind == "classifier":  # a classifier names the codec whose streams it reads
            if base.kind != "codec" or base.base is None:
                raise WeightsError(f"classifier {model_id!r} names {spec.base!r}, which is not a codec")
            base = get_spec(base.base)
        if base.kind != "fem" or base.config != spec.config["fem"]:
            raise WeightsError(f"{spec.kind} {model_id!r} and {base.model_id!r} disagree on the FEM config")
        fem = load_model(base.model_id, weights_dir, device="cpu")
        model.fem.load_state_dict(fem.state_dict())
        if not spec.untrained:
            tensors = _checked_tensors(spec, weights_dir)
            load_state(model.afr, subset(tensors, "afr."), f"{model_id} (AFR)")
            load_state(model.head, subset(tensors, "head."), f"{model_id} (head)")
            stray = [name for name in tensors if not name.startswith(("afr.", "head."))]
            if stray:
                raise WeightsError(f"weights of {model_id!r} hold unexpected tensors {stray[:5]}")
    elif spec.kind == "codec":
        base = get_spec(spec.base) if spec.base else None
        if base is None or base.kind != "fem" or base.config.get("channels") != spec.config["feature_channels"]:
            raise WeightsError(f"codec {model_id!r} names no FEM base with {spec.config['feature_channels']} channels")
        if spec.untrained:
            model.update(force=True)  # tests only: trained codecs ship their tables
        else:
            tensors = _checked_tensors(spec, weights_dir)
            try:
                model.load_state_dict(tensors)  # compressai's: sizes the CDF buffers first
            except (RuntimeError, KeyError) as error:
                raise WeightsError(f"weights of {model_id!r} do not match the codec: {error}") from None
    elif not spec.untrained:
        load_state(model, _checked_tensors(spec, weights_dir), model_id)
    return model.to(device).eval()


def classifiers_for(codec_id: str) -> list[str]:
    """Ids of the registered classifiers that read the streams of codec ``codec_id``."""
    return sorted(spec.model_id for spec in REGISTRY.values() if spec.kind == "classifier" and spec.base == codec_id)


def stream_identity(model_id: str, weights_dir: str | Path | None = None) -> str:
    """The sha256 a bitstream of codec ``model_id`` records (DESIGN.md "Weights identity").

    It covers the codec's weights file and its base FEM's (both decide the latents): the sha256 of
    ``"<fem sha256>:<codec sha256>"``. Untrained test entries hash their id, config and seed instead.
    """
    spec = get_spec(model_id)
    if spec.kind != "codec":
        raise WeightsError(f"model {model_id!r} is a {spec.kind}, not a codec: bitstreams name codecs")
    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    parts = []
    for entry in (get_spec(spec.base), spec):  # type: ignore[arg-type]
        if entry.untrained:
            record = {"id": entry.model_id, "config": entry.config, "seed": entry.seed}
            parts.append(hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest())
        else:
            _weights_path(entry, weights_dir)  # checks the file against the registry
            parts.append(entry.sha256)
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


__all__ = [
    "KINDS", "ModelNotFoundError", "ModelSpec", "REGISTRY", "WEIGHTS_DIR", "WeightsError",
    "build_model", "classifiers_for", "get_spec", "known_model_ids", "load_model", "stream_identity",
]
