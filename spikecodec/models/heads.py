"""Task heads on SCI features (cloud side).

* :class:`ReconstructionHead`: fused, aligned features -> intensity image in [0, 1].
* :class:`ProxyHead`: the light head of training stage (a), intensity from F_t alone; it is kept
  small on purpose so that F_t itself must carry the intensity in an easily decoded form.

A classification head (logits from fused features) will sit beside these with the same
``forward(features) -> tensor`` shape of interface and its own config and registry id.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HeadConfig:
    """A stack of 3x3 convolutions ending in one channel and a sigmoid."""

    in_channels: int = 32
    width: int = 32
    layers: int = 3  # convolutions, the last one to the intensity channel

    def __post_init__(self) -> None:
        for name in ("in_channels", "width", "layers"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"head {name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HeadConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown head config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


class _ConvStack(nn.Module):
    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        convs = []
        channels = config.in_channels
        for _ in range(config.layers - 1):
            convs.append(nn.Conv2d(channels, config.width, 3, padding=1))
            channels = config.width
        self.hidden = nn.ModuleList(convs)
        self.out = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, 1, H, W) intensity in [0, 1]."""
        if features.dim() != 4 or features.shape[1] != self.config.in_channels:
            raise ValueError(
                f"head expects (B, {self.config.in_channels}, H, W), got {tuple(features.shape)}"
            )
        x = features
        for conv in self.hidden:
            x = F.relu(conv(x))
        return torch.sigmoid(self.out(x))


class ReconstructionHead(_ConvStack):
    """Fused AFR features -> intensity image in [0, 1]."""


class ProxyHead(_ConvStack):
    """Stage (a) head: F_t -> intensity; two convolutions by default (see :func:`proxy_head_config`)."""


def proxy_head_config(feature_channels: int, width: int = 16) -> HeadConfig:
    """The default light proxy head for a FEM with ``feature_channels`` channels."""
    return HeadConfig(in_channels=feature_channels, width=width, layers=2)


__all__ = ["HeadConfig", "ReconstructionHead", "ProxyHead", "proxy_head_config"]
