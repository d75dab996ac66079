"""Classification from SCI features (cloud side, paper section V-D).

:class:`SCIClassifier` aligns the decoded features of the previous and next moments to the
current one with its own AFR (reading the FMVR-refined decoded motion, like reconstruction), and a
:class:`ClassificationHead` turns the fused features into class logits. A clip's label aggregates
its moments: the mean of their log-probabilities. The same bitstream serves reconstruction and
classification; only the cloud-side heads differ.

A head trained on rotated, scaled and shifted fused features (``train-classifier --augment-*``) can
also average its log-probabilities over :data:`TEST_VIEWS` of each moment (registry
``test_views``): on a fresh rendering of the training digits this lowered the per-moment
log-loss by 7-8%, uncompressed and at quality 0.

:class:`ImageClassifier` is the reference: the same head on one intensity image (TFP frames made
from the raw spikes, 1 bpp).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spikecodec.models.afr import AFR, AFRConfig
from spikecodec.models.fem import FEM, FEMConfig


def config_from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """``cls(**data)``, refusing keys the dataclass does not have."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; known: {sorted(known)}")
    return cls(**data)


@dataclass(frozen=True)
class ClassificationHeadConfig:
    """``layers`` stride-2 3x3 convolutions of ``width`` channels, global average pooling, a linear layer."""

    in_channels: int = 32
    width: int = 48
    layers: int = 5  # 64x64 -> 2x2: the last layers see the whole digit before pooling
    classes: int = 10

    def __post_init__(self) -> None:
        for name in ("in_channels", "width", "layers", "classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"classification head {name} must be a positive integer, got {value!r}")
        if self.classes < 2:
            raise ValueError("a classifier needs at least 2 classes")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassificationHeadConfig":
        return config_from_dict(cls, data, "classification head")


class ClassificationHead(nn.Module):
    """(B, in_channels, H, W) -> (B, classes) logits."""

    def __init__(self, config: ClassificationHeadConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = config.in_channels
        for _ in range(config.layers):
            layers += [nn.Conv2d(channels, config.width, 3, stride=2, padding=1), nn.BatchNorm2d(config.width),
                       nn.ReLU()]
            channels = config.width
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(channels, config.classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4 or features.shape[1] != self.config.in_channels:
            raise ValueError(f"classification head expects (B, {self.config.in_channels}, H, W), "
                             f"got {tuple(features.shape)}")
        return self.out(self.body(features).mean(dim=(2, 3)))


@dataclass(frozen=True)
class ClassifierConfig:
    """AFR + classification head on the features of ``fem`` (whose weights come from the registry)."""

    fem: FEMConfig = field(default_factory=FEMConfig)
    afr: AFRConfig = field(default_factory=AFRConfig)
    head: ClassificationHeadConfig = field(default_factory=ClassificationHeadConfig)

    def __post_init__(self) -> None:
        if self.afr.channels != self.fem.channels:
            raise ValueError(f"AFR channels {self.afr.channels} differ from the FEM's {self.fem.channels}")
        if self.head.in_channels != self.afr.fuse_channels:
            raise ValueError(f"head in_channels {self.head.in_channels} differ from AFR's fused "
                             f"{self.afr.fuse_channels}")

    def to_dict(self) -> dict[str, Any]:
        return {"fem": self.fem.to_dict(), "afr": self.afr.to_dict(), "head": self.head.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassifierConfig":
        unknown = sorted(set(data) - {"fem", "afr", "head"})
        if unknown:
            raise ValueError(f"unknown classifier config keys {unknown}")
        # channel counts not given follow the FEM's and the AFR's
        fem = FEMConfig.from_dict(data["fem"]) if "fem" in data else FEMConfig()
        afr = AFRConfig.from_dict({"channels": fem.channels, **data.get("afr", {})})
        head = ClassificationHeadConfig.from_dict({"in_channels": afr.fuse_channels, **data.get("head", {})})
        return cls(fem=fem, afr=afr, head=head)


def affine_warp(features: torch.Tensor, degrees: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> torch.Tensor:
    """``features`` (B, C, H, W), each sample rotated by ``degrees`` (B,), scaled by ``scale`` (B,)
    and shifted by ``shift`` (B, 2) pixels (x, y) about its centre; the border repeats (the
    backgrounds are textured, not black)."""
    batch, _, height, width = features.shape
    angle = np.deg2rad(np.asarray(degrees, dtype=float))
    scale = np.asarray(scale, dtype=float)
    shift = np.asarray(shift, dtype=float)
    # affine_grid maps output to input positions in [-1, 1] coordinates
    theta = np.zeros((batch, 2, 3))
    theta[:, 0, 0] = theta[:, 1, 1] = np.cos(angle) / scale
    theta[:, 0, 1] = -np.sin(angle) / scale * height / width
    theta[:, 1, 0] = np.sin(angle) / scale * width / height
    theta[:, 0, 2] = 2 * shift[:, 0] / width
    theta[:, 1, 2] = 2 * shift[:, 1] / height
    grid = F.affine_grid(torch.from_numpy(theta).to(features), list(features.shape), align_corners=False)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)


# (degrees, scale, shift x, shift y): the unchanged features, then small moves well inside the
# training augmentation (12 degrees, 0.9-1.1, 3 pixels); fixed before any test clip was scored
TEST_VIEWS = ((0.0, 1.0, 0.0, 0.0), (6.0, 1.0, 0.0, 0.0), (-6.0, 1.0, 0.0, 0.0), (0.0, 1.06, 0.0, 0.0),
              (0.0, 0.94, 0.0, 0.0), (0.0, 1.0, 2.0, 0.0), (0.0, 1.0, -2.0, 0.0), (0.0, 1.0, 0.0, 2.0),
              (0.0, 1.0, 0.0, -2.0))


class SCIClassifier(nn.Module):
    """FEM (for uncompressed features) + AFR + classification head.

    ``test_views``: :meth:`analyze` averages the head's log-probabilities over :data:`TEST_VIEWS`
    of the fused features (for heads trained on augmented features; the registry sets it)."""

    def __init__(self, config: ClassifierConfig | None = None, test_views: bool = False):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        self.fem = FEM(config.fem)
        self.afr = AFR(config.afr)
        self.head = ClassificationHead(config.head)
        self.test_views = test_views

    @property
    def classes(self) -> int:
        return self.config.head.classes

    def analyze(self, f_prev: torch.Tensor, f_cur: torch.Tensor, f_next: torch.Tensor,
                motion_prev: torch.Tensor | None = None) -> torch.Tensor:
        """Features of t - stride, t, t + stride (decoded or not) -> (B, classes) logits
        (log-probabilities averaged over the views with ``test_views``)."""
        fused = self.afr(f_prev, f_cur, f_next, motion_prev, None)["fused"]
        if not self.test_views:
            return self.head(fused)
        batch, views = fused.shape[0], np.asarray(TEST_VIEWS).repeat(fused.shape[0], axis=0)
        warped = affine_warp(fused.repeat(len(TEST_VIEWS), 1, 1, 1), views[:, 0], views[:, 1], views[:, 2:])
        log_probabilities = F.log_softmax(self.head(warped), dim=-1).view(len(TEST_VIEWS), batch, -1)
        return log_probabilities.mean(dim=0)


class ImageClassifier(nn.Module):
    """The reference: the classification head on one intensity image (B, 1, H, W)."""

    def __init__(self, config: ClassificationHeadConfig | None = None):
        super().__init__()
        self.config = config or ClassificationHeadConfig(in_channels=1)
        if self.config.in_channels != 1:
            raise ValueError("ImageClassifier takes one intensity channel")
        self.head = ClassificationHead(self.config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images)


def clip_log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """A clip's class log-probabilities from its moments' logits (M, classes): the mean of the
    moments' log-softmax, renormalised."""
    mean = F.log_softmax(logits, dim=-1).mean(dim=0)
    return mean - torch.logsumexp(mean, dim=-1)


__all__ = [
    "ClassificationHead", "ClassificationHeadConfig", "ClassifierConfig", "ImageClassifier", "SCIClassifier",
    "TEST_VIEWS", "affine_warp", "clip_log_probabilities",
]
