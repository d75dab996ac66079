"""SCI analysis models tying FEM, AFR and heads together, plus the plain-CNN baseline.

* :class:`FEMWithProxy`: FEM + proxy head, the model of training stage (a).
* :class:`SCIReconstructor`: FEM (end side) + AFR + reconstruction head (cloud side), with the
  reconstruction interface shared by the baselines: ``reconstruct(spikes, moments) -> images``.
* :class:`PlainCNN`: a plain CNN on the raw spike frames of a window centred on the moment (the
  benchmark's learned baseline), with the same interface.

A moment is valid when its FEM window lies inside the stream (DESIGN.md "Time"). AFR reads the
features of ``t - stride`` and ``t + stride``; where such a neighbour is not a valid moment the
current moment's feature stands in for it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from spikecodec import DEFAULT_STRIDE
from spikecodec.models.afr import AFR, AFRConfig
from spikecodec.models.fem import FEM, FEMConfig, check_moments, extract_features
from spikecodec.models.heads import HeadConfig, ProxyHead, ReconstructionHead, proxy_head_config



def _check_spikes(spikes: np.ndarray) -> np.ndarray:
    if not isinstance(spikes, np.ndarray) or spikes.ndim != 3:
        raise ValueError(f"spikes must be a (T, H, W) array, got shape {getattr(spikes, 'shape', None)}")
    if spikes.shape[0] == 0 or spikes.shape[1] == 0 or spikes.shape[2] == 0:
        raise ValueError(f"spikes hold no data (shape {spikes.shape})")
    return spikes


def _unknown_keys(cls: type, data: dict[str, Any], what: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; known: {sorted(known)}")


@dataclass(frozen=True)
class ProxyConfig:
    """Stage (a) model: a FEM and its proxy head."""

    fem: FEMConfig = field(default_factory=FEMConfig)
    proxy_width: int = 16

    def to_dict(self) -> dict[str, Any]:
        return {"fem": self.fem.to_dict(), "proxy_width": self.proxy_width}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProxyConfig":
        _unknown_keys(cls, data, "proxy model")
        data = dict(data)
        if "fem" in data:
            data["fem"] = FEMConfig.from_dict(data["fem"])
        return cls(**data)


class FEMWithProxy(nn.Module):
    """FEM + proxy head: ``forward(window) -> {"features", "image"}`` (training stage (a))."""

    def __init__(self, config: ProxyConfig | None = None):
        super().__init__()
        self.config = config = config or ProxyConfig()
        self.fem = FEM(config.fem)
        self.proxy = ProxyHead(proxy_head_config(config.fem.channels, config.proxy_width))

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.fem(window)
        return {"features": features, "image": self.proxy(features)}


@dataclass(frozen=True)
class SCIConfig:
    """FEM + AFR + reconstruction head. ``stride`` is the moment spacing AFR was trained for."""

    fem: FEMConfig = field(default_factory=FEMConfig)
    afr: AFRConfig = field(default_factory=AFRConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    stride: int = DEFAULT_STRIDE

    def __post_init__(self) -> None:
        if self.afr.channels != self.fem.channels:
            raise ValueError(
                f"AFR channels ({self.afr.channels}) must equal FEM channels ({self.fem.channels})"
            )
        if self.head.in_channels != self.afr.fuse_channels:
            raise ValueError(
                f"head in_channels ({self.head.in_channels}) must equal AFR fuse_channels "
                f"({self.afr.fuse_channels})"
            )
        if int(self.stride) != self.stride or self.stride < 1:
            raise ValueError(f"stride must be a positive integer, got {self.stride!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "fem": self.fem.to_dict(), "afr": self.afr.to_dict(), "head": self.head.to_dict(),
            "stride": self.stride,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SCIConfig":
        _unknown_keys(cls, data, "SCI")
        data = dict(data)
        parsers = {"fem": FEMConfig.from_dict, "afr": AFRConfig.from_dict, "head": HeadConfig.from_dict}
        for key, parse in parsers.items():
            if key in data:
                data[key] = parse(data[key])
        return cls(**data)


def neighbour_moments(moments: np.ndarray, stride: int, num_frames: int, before: int, after: int) -> tuple[np.ndarray, np.ndarray]:
    """(previous, next) moments for AFR: t -+ stride where valid, else t itself."""
    first, last = before, num_frames - 1 - after
    previous = np.where(moments - stride >= first, moments - stride, moments)
    following = np.where(moments + stride <= last, moments + stride, moments)
    return previous, following


class SCIReconstructor(nn.Module):
    """FEM + AFR + reconstruction head.

    ``forward(spikes_windows)`` takes (B, 3, Tw, H, W) windows of the previous, current and next
    moments (or (B, Tw, H, W), the current one standing in for both neighbours) and returns
    ``{"features": F_t, "image": (B, 1, H, W)}``. :meth:`analyze` is the cloud side alone (decoded
    features and optional motion in); :meth:`reconstruct` works on a whole spike stream.
    """

    def __init__(self, config: SCIConfig | None = None):
        super().__init__()
        self.config = config = config or SCIConfig()
        self.fem = FEM(config.fem)
        self.afr = AFR(config.afr)
        self.head = ReconstructionHead(config.head)

    def forward(self, spikes_windows: torch.Tensor) -> dict[str, torch.Tensor]:
        length = self.fem.window_length
        if spikes_windows.dim() == 4:
            features = self.fem(spikes_windows)
            out = self.analyze(features, features, features)
        elif spikes_windows.dim() == 5 and spikes_windows.shape[1] == 3:
            batch = spikes_windows.shape[0]
            flat = spikes_windows.reshape((batch * 3,) + tuple(spikes_windows.shape[2:]))
            features = self.fem(flat).reshape((batch, 3) + (-1,) + tuple(spikes_windows.shape[3:]))
            out = self.analyze(features[:, 0], features[:, 1], features[:, 2])
            features = features[:, 1]
        else:
            raise ValueError(
                f"expected spike windows (B, 3, {length}, H, W) or (B, {length}, H, W), "
                f"got {tuple(spikes_windows.shape)}"
            )
        return {"features": features, "image": out["image"]}

    def analyze(
        self,
        f_prev: torch.Tensor,
        f_cur: torch.Tensor,
        f_next: torch.Tensor,
        motion_prev: torch.Tensor | None = None,
        motion_next: torch.Tensor | None = None,
        quality: int | torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Cloud side: features of t - stride, t, t + stride -> ``{"image", "fused", "motion_prev", "motion_next"}``.

        ``quality``: the coding quality of decoded features (see :class:`AFR`); None for raw features.
        """
        aligned = self.afr(f_prev, f_cur, f_next, motion_prev, motion_next, quality=quality)
        return {
            "image": self.head(aligned["fused"]), "fused": aligned["fused"],
            "motion_prev": aligned["motion_prev"], "motion_next": aligned["motion_next"],
        }

    def valid_moments(self, num_frames: int) -> tuple[int, int]:
        """First and last valid moment of a stream of ``num_frames`` spike frames."""
        return self.fem.window_before, num_frames - 1 - self.fem.window_after

    @torch.no_grad()
    def reconstruct(
        self,
        spikes: np.ndarray,
        moments: Sequence[int],
        stride: int | None = None,
        chunk: int = 4,
        device: torch.device | str | None = None,
    ) -> np.ndarray:
        """Intensity images (N, H, W) float32 in [0, 1] of a (T, H, W) spike stream at ``moments``.

        Works ``chunk`` moments at a time; features are cached only while a chunk needs them.
        ``stride`` (default: the trained one) sets which neighbours AFR reads.
        """
        spikes = _check_spikes(spikes)
        stride = self.config.stride if stride is None else int(stride)
        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 moment, got {chunk}")
        before, after = self.fem.window_before, self.fem.window_after
        moments = check_moments(moments, spikes.shape[0], before, after)
        if moments.size == 0:
            raise ValueError("no moments given")
        previous, following = neighbour_moments(moments, stride, spikes.shape[0], before, after)
        device = torch.device(device) if device is not None else next(self.parameters()).device
        was_training = self.training
        self.eval()
        images = np.empty((moments.size,) + spikes.shape[1:], dtype=np.float32)
        cache: dict[int, torch.Tensor] = {}
        try:
            for begin in range(0, moments.size, chunk):
                sl = slice(begin, begin + chunk)
                needed = sorted(set(moments[sl].tolist()) | set(previous[sl].tolist()) | set(following[sl].tolist()))
                missing = [t for t in needed if t not in cache]
                if missing:
                    new = extract_features(self.fem, spikes, missing, chunk=max(chunk, 1), device=device)
                    cache.update({t: f.to(device) for t, f in zip(missing, new)})
                cache = {t: cache[t] for t in needed}
                stack = lambda ts: torch.stack([cache[int(t)] for t in ts])  # noqa: E731
                out = self.analyze(stack(previous[sl]), stack(moments[sl]), stack(following[sl]))
                images[sl] = out["image"][:, 0].clamp(0.0, 1.0).cpu().numpy()
        finally:
            self.train(was_training)
        return images


@dataclass(frozen=True)
class PlainCNNConfig:
    """Plain CNN on the raw spike frames ``t - window//2 .. t + window//2`` (odd window)."""

    window: int = 41
    width: int = 56  # ~134k parameters, like the default SCI reconstructor (~138k)
    layers: int = 6

    def __post_init__(self) -> None:
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"plain CNN window must be odd and positive, got {self.window}")
        if self.width < 1 or self.layers < 2:
            raise ValueError("plain CNN needs width >= 1 and at least 2 layers")

    @property
    def window_before(self) -> int:
        return self.window // 2

    @property
    def window_after(self) -> int:
        return self.window // 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PlainCNNConfig":
        _unknown_keys(cls, data, "plain CNN")
        return cls(**data)


class PlainCNN(nn.Module):
    """Raw spike window (B, window, H, W) -> {"image": (B, 1, H, W)}: 3x3 convolutions and ReLU."""

    def __init__(self, config: PlainCNNConfig | None = None):
        super().__init__()
        self.config = config = config or PlainCNNConfig()
        self.head = ReconstructionHead(HeadConfig(in_channels=config.window, width=config.width, layers=config.layers))

    @property
    def window_before(self) -> int:
        return self.config.window_before

    @property
    def window_after(self) -> int:
        return self.config.window_after

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        if window.dim() != 4 or window.shape[1] != self.config.window:
            raise ValueError(
                f"plain CNN expects (B, {self.config.window}, H, W), got {tuple(window.shape)}"
            )
        return {"image": self.head(window)}

    @torch.no_grad()
    def reconstruct(
        self, spikes: np.ndarray, moments: Sequence[int], chunk: int = 4,
        device: torch.device | str | None = None,
    ) -> np.ndarray:
        """Intensity images (N, H, W) float32 in [0, 1] at valid moments of a (T, H, W) stream."""
        spikes = _check_spikes(spikes)
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 moment, got {chunk}")
        moments = check_moments(moments, spikes.shape[0], self.window_before, self.window_after)
        if moments.size == 0:
            raise ValueError("no moments given")
        device = torch.device(device) if device is not None else next(self.parameters()).device
        was_training = self.training
        self.eval()
        images = np.empty((moments.size,) + spikes.shape[1:], dtype=np.float32)
        try:
            for begin in range(0, moments.size, chunk):
                part = moments[begin:begin + chunk]
                windows = np.stack([spikes[t - self.window_before:t + self.window_after + 1] for t in part])
                x = torch.from_numpy(windows).to(device=device, dtype=torch.float32)
                images[begin:begin + len(part)] = self(x)["image"][:, 0].clamp(0, 1).cpu().numpy()
        finally:
            self.train(was_training)
        return images


def parameter_count(module: nn.Module) -> int:
    """Number of parameters (binary filter taps count as one each)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "DEFAULT_STRIDE", "FEMWithProxy", "PlainCNN", "PlainCNNConfig", "ProxyConfig", "SCIConfig",
    "SCIReconstructor", "neighbour_moments", "parameter_count",
]
