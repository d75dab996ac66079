"""Associated Feature Regression (AFR), the cloud-side alignment of SCI (paper section IV-C).

For a moment t the features of the previous and next moments (t - stride, t + stride) are aligned
to t in two steps, in separate previous and next branches:

1. **warp** (large motion): backward warping with a motion field ``flow`` in pixels, so that
   ``warped(x) = neighbour(x + flow(x))`` (bilinear ``grid_sample``, border padding);
2. **deform** (small motion): a modulated deformable 3x3 convolution (``torchvision.ops.
   deform_conv2d``) whose offsets and masks are predicted from the warped neighbour and the current
   feature. Offsets start at zero and are bounded by ``max_offset`` pixels (DCN trains unstably
   with free offsets).

The two aligned neighbours and the current feature are fused by two 3x3 convolutions. An AFR
trained on decoded features of several coding qualities (``qualities`` > 0) scales and shifts its
input features and both fusion convolutions' outputs per channel by the quality the features were
coded at (FiLM; identity at initialisation, and when no quality is given). The motion
comes from the caller (the decoded, FMVR-refined motion of the codec) or, when absent, from a
light motion estimator working at a quarter of the resolution. ``mode`` selects the ablations:
``"full"`` (warp then deform), ``"warp"`` (warp, then the same 3x3 convolution without offsets)
and ``"deform"`` (no warp: deformable convolution on the raw neighbour).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

AFR_MODES = ("full", "warp", "deform")


@dataclass(frozen=True)
class AFRConfig:
    """Hyper-parameters of the AFR. ``channels`` must equal the FEM's feature channels."""

    channels: int = 16
    mode: str = "full"
    motion_channels: int = 24  # width of the motion estimator (at 1/4 and 1/8 resolution)
    offset_channels: int = 16  # width of the offset predictor
    deform_groups: int = 1
    max_offset: float = 8.0  # pixels; bounds the deformable offsets
    fuse_channels: int = 32
    qualities: int = 0  # > 0: per-quality modulation for features decoded at quality 0..qualities-1

    def __post_init__(self) -> None:
        if self.mode not in AFR_MODES:
            raise ValueError(f"AFR mode must be one of {AFR_MODES}, got {self.mode!r}")
        for name in ("channels", "motion_channels", "offset_channels", "deform_groups", "fuse_channels"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"AFR {name} must be a positive integer, got {value!r}")
        if int(self.qualities) != self.qualities or self.qualities < 0:
            raise ValueError(f"AFR qualities must be a non-negative integer, got {self.qualities!r}")
        if self.channels % self.deform_groups:
            raise ValueError(
                f"AFR channels ({self.channels}) must be divisible by deform_groups ({self.deform_groups})"
            )
        if not self.max_offset > 0:
            raise ValueError(f"AFR max_offset must be positive, got {self.max_offset}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AFRConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown AFR config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


def flow_warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: out(x) = features(x + flow(x)); flow (B, 2, H, W) in pixels, (dx, dy)."""
    if flow.shape[1] != 2 or flow.shape[2:] != features.shape[2:] or flow.shape[0] != features.shape[0]:
        raise ValueError(
            f"motion field must be (B, 2, H, W) matching features {tuple(features.shape)}, "
            f"got {tuple(flow.shape)}"
        )
    batch, _, height, width = features.shape
    ys = torch.arange(height, device=flow.device, dtype=flow.dtype)
    xs = torch.arange(width, device=flow.device, dtype=flow.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    x = grid_x + flow[:, 0]
    y = grid_y + flow[:, 1]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels.
    x = 2.0 * x / max(width - 1, 1) - 1.0
    y = 2.0 * y / max(height - 1, 1) - 1.0
    grid = torch.stack([x, y], dim=-1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)


def deform_conv3x3_sampled(
    features: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    mask: torch.Tensor,
) -> torch.Tensor:
    """``deform_conv2d(features, offset, weight, bias, padding=1, mask=mask)`` for 3x3 kernels,
    computed with ``grid_sample`` (bilinear, zeros outside) and a 1x1 convolution.

    Same result as torchvision's operator (offsets as (dy, dx) per kernel tap and offset group),
    up to float rounding; on CPU its backward pass is about ten times faster, so CPU training
    uses it while inference keeps ``torchvision.ops.deform_conv2d``.
    """
    batch, channels, height, width = features.shape
    groups = offset.shape[1] // 18
    taps = torch.arange(9, device=features.device)
    tap_y = (taps // 3 - 1).to(features.dtype).view(1, 9, 1, 1)
    tap_x = (taps % 3 - 1).to(features.dtype).view(1, 9, 1, 1)
    rows = torch.arange(height, dtype=features.dtype, device=features.device).view(1, 1, height, 1)
    cols = torch.arange(width, dtype=features.dtype, device=features.device).view(1, 1, 1, width)
    pairs = offset.reshape(batch * groups, 9, 2, height, width)
    y = rows + tap_y + pairs[:, :, 0]
    x = cols + tap_x + pairs[:, :, 1]
    grid = torch.stack([2.0 * x / max(width - 1, 1) - 1.0, 2.0 * y / max(height - 1, 1) - 1.0], dim=-1)
    grouped = features.reshape(batch * groups, channels // groups, height, width)
    sampled = F.grid_sample(grouped, grid.view(batch * groups, 9 * height, width, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=True)
    sampled = sampled.view(batch * groups, channels // groups, 9, height, width)
    sampled = sampled * mask.reshape(batch * groups, 1, 9, height, width)
    columns = sampled.view(batch, channels * 9, height, width)
    return F.conv2d(columns, weight.reshape(weight.shape[0], channels * 9, 1, 1), bias)


def _downsampled_size(height: int, width: int, factor: int) -> tuple[int, int]:
    return -(-height // factor), -(-width // factor)


class MotionEstimator(nn.Module):
    """Light CNN: motion field (pixels) from the current feature to a neighbour's, at 1/4 resolution.

    Area-downsamples both features by 4, reaches 1/8 resolution for a wide receptive field (about
    +-60 pixels), predicts the field at 1/4 and upsamples it bilinearly (scaling the vectors).
    """

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.inp = nn.Conv2d(2 * channels, width, 3, padding=1)
        self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.mid1 = nn.Conv2d(width, width, 3, padding=2, dilation=2)
        self.mid2 = nn.Conv2d(width, width, 3, padding=2, dilation=2)
        self.up = nn.Conv2d(2 * width, width, 3, padding=1)
        self.flow = nn.Conv2d(width, 2, 3, padding=1)
        nn.init.zeros_(self.flow.weight)
        nn.init.zeros_(self.flow.bias)

    def forward(self, current: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        height, width = current.shape[2:]
        quarter = _downsampled_size(height, width, 4)
        x = F.interpolate(torch.cat([current, neighbour], dim=1), size=quarter, mode="area")
        x = F.relu(self.inp(x))
        y = F.relu(self.down(x))
        y = F.relu(self.mid1(y))
        y = F.relu(self.mid2(y))
        y = F.interpolate(y, size=quarter, mode="bilinear", align_corners=False)
        x = F.relu(self.up(torch.cat([x, y], dim=1)))
        flow = self.flow(x) * 4.0  # vectors in quarter-resolution pixels -> full-resolution pixels
        flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
        scale = torch.tensor(
            [width / (quarter[1] * 4.0), height / (quarter[0] * 4.0)], dtype=flow.dtype, device=flow.device
        )
        return flow * scale.view(1, 2, 1, 1)


class AlignBranch(nn.Module):
    """Aligns one neighbour's feature to the current moment (warp and/or deformable convolution).

    ``deform_backend``: ``"torchvision"`` (``deform_conv2d``), ``"sampled"``
    (:func:`deform_conv3x3_sampled`) or None: the sampled form when training on CPU (where
    torchvision's backward pass is slow), torchvision otherwise.
    """

    deform_backend: str | None = None

    def __init__(self, config: AFRConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.use_warp = config.mode in ("full", "warp")
        self.use_deform = config.mode in ("full", "deform")
        if self.use_warp:
            self.motion = MotionEstimator(c, config.motion_channels)
        if self.use_deform:
            self.offset_hidden = nn.Conv2d(2 * c, config.offset_channels, 3, padding=1)
            self.offset = nn.Conv2d(config.offset_channels, 3 * 9 * config.deform_groups, 3, padding=1)
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)
        # The same 3x3 weights in every mode: with offsets (deform) or without (warp only).
        self.weight = nn.Parameter(torch.empty(c, c, 3, 3))
        self.bias = nn.Parameter(torch.zeros(c))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(
        self, current: torch.Tensor, neighbour: torch.Tensor, motion: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.use_warp:
            if motion is None:
                motion = self.motion(current, neighbour)
            neighbour = flow_warp(neighbour, motion)
        if not self.use_deform:
            return F.conv2d(neighbour, self.weight, self.bias, padding=1), motion
        hidden = F.relu(self.offset_hidden(torch.cat([neighbour, current], dim=1)))
        raw = self.offset(hidden)
        groups = self.config.deform_groups
        offsets = self.config.max_offset * torch.tanh(raw[:, : 2 * 9 * groups])
        # 2 * sigmoid(0) = 1: at initialisation the modulation leaves the convolution unchanged.
        mask = 2.0 * torch.sigmoid(raw[:, 2 * 9 * groups:])
        backend = self.deform_backend or (
            "sampled" if self.training and neighbour.device.type == "cpu" else "torchvision"
        )
        if backend == "sampled":
            aligned = deform_conv3x3_sampled(neighbour, offsets, self.weight, self.bias, mask)
        else:
            aligned = deform_conv2d(neighbour, offsets, self.weight, self.bias, padding=(1, 1), mask=mask)
        return aligned, motion


class AFR(nn.Module):
    """Aligns the previous and next features to the current one and fuses the three."""

    def __init__(self, config: AFRConfig | None = None):
        super().__init__()
        self.config = config = config or AFRConfig()
        self.previous = AlignBranch(config)
        self.next = AlignBranch(config)
        self.fuse1 = nn.Conv2d(3 * config.channels, config.fuse_channels, 3, padding=1)
        self.fuse2 = nn.Conv2d(config.fuse_channels, config.fuse_channels, 3, padding=1)
        if config.qualities:
            # log-scales and shifts per (quality, channel): zeros are the identity, so a quality-aware
            # AFR starts as the quality-blind one it is fine-tuned from
            for name, width in (("input", config.channels), ("fuse1", config.fuse_channels),
                                ("fuse2", config.fuse_channels)):
                self.register_parameter(f"{name}_log_scale", nn.Parameter(torch.zeros(config.qualities, width)))
                self.register_parameter(f"{name}_shift", nn.Parameter(torch.zeros(config.qualities, width)))

    @property
    def out_channels(self) -> int:
        return self.config.fuse_channels

    def forward(
        self,
        f_prev: torch.Tensor,
        f_cur: torch.Tensor,
        f_next: torch.Tensor,
        motion_prev: torch.Tensor | None = None,
        motion_next: torch.Tensor | None = None,
        quality: int | torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Fused features for the current moment.

        ``motion_prev``/``motion_next`` (B, 2, H, W), in pixels, map each current pixel to where it
        lies in the previous/next feature (backward warp); None lets the motion estimator predict
        them (ignored in ``"deform"`` mode). ``quality`` (an int or one per batch item): the coding
        quality of the features, read by a quality-aware AFR (``qualities`` > 0) and ignored by
        others; None (uncompressed features) leaves a quality-aware AFR unmodulated. Returns
        ``fused``, ``aligned_prev``, ``aligned_next``, ``motion_prev``, ``motion_next`` (the motion
        used, None in ``"deform"`` mode).
        """
        for name, tensor in (("f_prev", f_prev), ("f_next", f_next)):
            if tensor.shape != f_cur.shape:
                raise ValueError(f"{name} has shape {tuple(tensor.shape)}, f_cur {tuple(f_cur.shape)}")
        if f_cur.dim() != 4 or f_cur.shape[1] != self.config.channels:
            raise ValueError(
                f"AFR expects features (B, {self.config.channels}, H, W), got {tuple(f_cur.shape)}"
            )
        modulate = self._modulation(quality, f_cur.shape[0])
        f_prev, f_cur, f_next = (modulate("input", f) for f in (f_prev, f_cur, f_next))
        aligned_prev, motion_prev = self.previous(f_cur, f_prev, motion_prev)
        aligned_next, motion_next = self.next(f_cur, f_next, motion_next)
        x = F.relu(modulate("fuse1", self.fuse1(torch.cat([aligned_prev, f_cur, aligned_next], dim=1))))
        fused = F.relu(modulate("fuse2", self.fuse2(x)))
        return {
            "fused": fused, "aligned_prev": aligned_prev, "aligned_next": aligned_next,
            "motion_prev": motion_prev, "motion_next": motion_next,
        }

    def _modulation(
        self, quality: int | torch.Tensor | None, batch: int
    ) -> Callable[[str, torch.Tensor], torch.Tensor]:
        """``modulate(name, x)``: x scaled and shifted per channel for ``quality`` (identity when the
        AFR is quality-blind or no quality is given)."""
        if quality is None or not self.config.qualities:
            return lambda name, x: x
        index = torch.as_tensor(quality, dtype=torch.long, device=self.fuse1.weight.device).reshape(-1)
        if index.numel() == 1:
            index = index.expand(batch)
        if index.numel() != batch:
            raise ValueError(f"quality holds {index.numel()} values for a batch of {batch}")
        if bool(((index < 0) | (index >= self.config.qualities)).any()):
            raise ValueError(f"this AFR knows qualities 0..{self.config.qualities - 1}, got {index.tolist()}")

        def modulate(name: str, x: torch.Tensor) -> torch.Tensor:
            scale = getattr(self, f"{name}_log_scale")[index].exp()[:, :, None, None]
            return x * scale + getattr(self, f"{name}_shift")[index][:, :, None, None]

        return modulate


__all__ = ["AFR", "AFRConfig", "AFR_MODES", "AlignBranch", "MotionEstimator", "deform_conv3x3_sampled", "flow_warp"]
