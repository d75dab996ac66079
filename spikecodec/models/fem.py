"""Feature extraction module (FEM), the end side of SCI (paper section IV-A).

For a moment t the FEM reads a window of spike frames around t:

* the **ventral pathway** has one temporal sub-filter per receptive field (7, 9, 11, 13 frames by
  default), each centred on t: the field r covers frames ``t - (r-1)/2 .. t + (r-1)/2``;
* the **dorsal pathway** has ``dorsal_count`` sub-filters of ``dorsal_window`` frames sliding
  backward from t: sub-filter k covers ``t - k*w - (w-1) .. t - k*w`` (by default k = 0..3, w = 10,
  so together ``t - 39 .. t``).

The FEM window is therefore ``t - FEM_WINDOW_BEFORE .. t + FEM_WINDOW_AFTER`` (46 frames by
default). The window tensors given to :meth:`FEM.forward` hold exactly those frames, frame
``before`` of the window being the moment itself.

Every sub-filter has ``filter_channels`` output channels, each with its own temporal weights over
the sub-filter's frames. The weights are binary {0, 1} in the forward pass, in training too; a
latent real weight per tap is trained through a straight-through estimator (the gradient of the
hard threshold is taken as the gradient of ``clamp(w, -1, 1)``). A binary filter over binary spikes
is a sum of selected frames, so in ``eval()`` the responses are computed from a cumulative sum over
time: each run of consecutive ones costs one subtraction, and consecutive moments of a stream share
the cumulative sum (:func:`extract_features`).

A squeeze-excitation attention, computed from the spatially pooled responses of a pathway,
reweights its sub-filter channels per sample; then ``pfu_layers`` Pathway Fusion Units (PFU) let
the dorsal (motion) pathway modulate the ventral (structure) pathway, and a 1x1 convolution mixes
both into the feature F_t with ``channels`` channels.

The paper's text gives the PFU only as a figure; our unit is: ``d' = ReLU(Conv3x3(d))``,
``v' = ReLU(Conv3x3(v)) * sigmoid(Conv1x1(d')) (+ v when the widths match)``, i.e. the motion
pathway gates the structure pathway per pixel and channel (it can prefer short windows where
things move and long ones where they do not).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_VENTRAL_FIELDS = (7, 9, 11, 13)
DEFAULT_DORSAL_WINDOW = 10
DEFAULT_DORSAL_COUNT = 4
# Window geometry of the default configuration (frames read before and after the moment t).
FEM_WINDOW_BEFORE = DEFAULT_DORSAL_COUNT * DEFAULT_DORSAL_WINDOW - 1  # 39: dorsal reaches back
FEM_WINDOW_AFTER = (max(DEFAULT_VENTRAL_FIELDS) - 1) // 2  # 6: half the widest ventral field
FEM_WINDOW_LENGTH = FEM_WINDOW_BEFORE + 1 + FEM_WINDOW_AFTER  # 46


@dataclass(frozen=True)
class FEMConfig:
    """Hyper-parameters of the FEM. ``to_dict``/``from_dict`` round-trip through JSON."""

    ventral_fields: tuple[int, ...] = DEFAULT_VENTRAL_FIELDS
    dorsal_window: int = DEFAULT_DORSAL_WINDOW
    dorsal_count: int = DEFAULT_DORSAL_COUNT
    filter_channels: int = 4  # binary temporal patterns per sub-filter
    channels: int = 16  # channels of F_t and of the ventral pathway
    dorsal_channels: int = 8
    pfu_layers: int = 2
    attention_hidden: int = 8
    dual_pathway: bool = True  # False: ventral pathway only (ablation)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ventral_fields", tuple(int(r) for r in self.ventral_fields))
        if not self.ventral_fields:
            raise ValueError("the ventral pathway needs at least one receptive field")
        for r in self.ventral_fields:
            if r < 1 or r % 2 == 0:
                raise ValueError(f"ventral receptive fields must be odd and positive, got {r}")
        positive = {
            "dorsal_window": self.dorsal_window, "dorsal_count": self.dorsal_count,
            "filter_channels": self.filter_channels, "channels": self.channels,
            "dorsal_channels": self.dorsal_channels, "attention_hidden": self.attention_hidden,
        }
        for name, value in positive.items():
            if int(value) != value or value < 1:
                raise ValueError(f"FEM {name} must be a positive integer, got {value!r}")
        if self.pfu_layers < 1:
            raise ValueError(f"FEM needs at least one PFU layer, got {self.pfu_layers}")

    @property
    def window_before(self) -> int:
        """Frames read before the moment (the dorsal reach, or half the widest ventral field)."""
        ventral = (max(self.ventral_fields) - 1) // 2
        if not self.dual_pathway:
            return ventral
        return max(ventral, self.dorsal_count * self.dorsal_window - 1)

    @property
    def window_after(self) -> int:
        """Frames read after the moment (half the widest ventral field)."""
        return (max(self.ventral_fields) - 1) // 2

    @property
    def window_length(self) -> int:
        return self.window_before + 1 + self.window_after

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ventral_fields"] = list(self.ventral_fields)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FEMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FEM config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


def binarize_ste(latent: torch.Tensor) -> torch.Tensor:
    """Heaviside step (1 where latent >= 0) whose gradient is that of clamp(latent, -1, 1)."""
    hard = (latent >= 0).to(latent.dtype)
    soft = latent.clamp(-1.0, 1.0)
    return hard + soft - soft.detach()


class BinaryTemporalFilter(nn.Module):
    """A bank of binarized temporal sub-filters over a window of spike frames.

    ``spans`` lists each sub-filter's first frame and length, as offsets into the window;
    each sub-filter has ``channels`` outputs. The response of a channel is its spike count over the
    selected frames divided by the sub-filter length (a firing rate in [0, 1]).
    """

    def __init__(self, spans: Sequence[tuple[int, int]], channels: int, window_length: int):
        super().__init__()
        self.spans = [(int(s), int(n)) for s, n in spans]
        self.channels = int(channels)
        self.window_length = int(window_length)
        for start, length in self.spans:
            if start < 0 or length < 1 or start + length > window_length:
                raise ValueError(f"sub-filter span {start}+{length} leaves a {window_length}-frame window")
        self.latent = nn.ParameterList(
            nn.Parameter(_initial_latent(channels, length)) for _, length in self.spans
        )
        scale = torch.cat([torch.full((channels,), 1.0 / n) for _, n in self.spans])
        self.register_buffer("scale", scale, persistent=False)

    @property
    def out_channels(self) -> int:
        return len(self.spans) * self.channels

    def dense_weight(self) -> torch.Tensor:
        """The (out_channels, window_length) 0/1 weights, differentiable through the STE."""
        rows = []
        for (start, length), latent in zip(self.spans, self.latent):
            binary = binarize_ste(latent)
            rows.append(F.pad(binary, (start, self.window_length - start - length)))
        return torch.cat(rows, dim=0)

    @torch.no_grad()
    def binary_weight(self) -> torch.Tensor:
        """The 0/1 weights the inference path uses (no gradient, exactly 0.0 or 1.0)."""
        return self.dense_weight().detach().clone()

    @torch.no_grad()
    def runs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Runs of consecutive ones: (channel, first frame, last frame + 1), each a 1-D long tensor."""
        binary = self.binary_weight().to(torch.int8)
        padded = F.pad(binary, (1, 1))
        rises = torch.nonzero(padded[:, 1:-1] > padded[:, :-2])  # 0 -> 1: a run starts here
        falls = torch.nonzero(padded[:, 1:-1] > padded[:, 2:])  # 1 -> 0 next: a run ends here
        # nonzero lists row-major, so the k-th start and the k-th end of a row pair up.
        return rises[:, 0], rises[:, 1], falls[:, 1] + 1

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """(B, window_length, H, W) spike frames -> (B, out_channels, H, W) firing rates."""
        if self.training or (torch.is_grad_enabled() and any(p.requires_grad for p in self.latent)):
            weight = self.dense_weight().to(window.dtype)
            return F.conv2d(window, weight[:, :, None, None]) * self.scale.view(1, -1, 1, 1)
        cumsum = prefix_sum(window, dim=1)
        offsets = torch.zeros(window.shape[0], dtype=torch.long, device=window.device)
        return self.from_prefix_sum(cumsum, offsets)

    def from_prefix_sum(self, cumsum: torch.Tensor, window_starts: torch.Tensor) -> torch.Tensor:
        """Responses from a prefix sum over time (inference path, no gradient through weights).

        ``cumsum`` is (S, L + 1, H, W) with ``cumsum[:, j]`` the sum of the first j frames of S
        streams; ``window_starts`` (N,) gives, per output, the frame where its window starts; with
        S == N each output reads its own stream, with S == 1 all outputs read the same stream.
        """
        channel, first, stop = (x.to(cumsum.device) for x in self.runs())
        count = window_starts.shape[0]
        out = cumsum.new_zeros((count, self.out_channels) + tuple(cumsum.shape[2:]))
        for n in range(count):
            stream = cumsum[n if cumsum.shape[0] == count else 0]
            base = window_starts[n]
            sums = stream[base + stop] - stream[base + first]
            out[n].index_add_(0, channel, sums)
        return out * self.scale.to(out.dtype).view(1, -1, 1, 1)


def prefix_sum(frames: torch.Tensor, dim: int) -> torch.Tensor:
    """Cumulative sum along ``dim`` with a leading zero, exact for 0/1 frames up to 2**24 frames."""
    shape = list(frames.shape)
    shape[dim] = 1
    zero = frames.new_zeros(shape)
    return torch.cat([zero, frames.cumsum(dim)], dim=dim)


def _initial_latent(channels: int, length: int) -> torch.Tensor:
    """Latent weights whose binary start is a spread of windows: whole, older half, newer half, centre.

    Varied contiguous windows give the network short and long integrations from the first step;
    the small magnitude lets training flip taps quickly. Extra channels get alternating patterns.
    """
    patterns = []
    half = (length + 1) // 2  # odd fields: both halves include the centre frame
    for c in range(channels):
        mask = torch.zeros(length)
        kind = c % 4
        if kind == 0:
            mask[:] = 1
        elif kind == 1:
            mask[:half] = 1
        elif kind == 2:
            mask[length - half:] = 1
        else:
            third = max(1, length // 3)
            mask[third:length - third] = 1
        if c >= 4:  # beyond the four base patterns: drop every (c // 4 + 1)-th tap
            mask[:: c // 4 + 1] = 0
            if mask.sum() == 0:
                mask[length // 2] = 1
        patterns.append(mask)
    mask = torch.stack(patterns)
    return torch.where(mask > 0, 0.1, -0.1)


class PathwayAttention(nn.Module):
    """Squeeze-excitation over the sub-filter responses of one pathway (per sample, per channel)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)
        nn.init.zeros_(self.excite.weight)
        nn.init.zeros_(self.excite.bias)  # 2 * sigmoid(0) = 1: the identity at initialisation

    def forward(self, responses: torch.Tensor) -> torch.Tensor:
        pooled = responses.mean(dim=(2, 3))
        weights = 2.0 * torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))
        return responses * weights[:, :, None, None]


class PathwayFusionUnit(nn.Module):
    """One PFU: the dorsal (motion) pathway gates the ventral (structure) pathway per pixel."""

    def __init__(self, ventral_in: int, dorsal_in: int, ventral_out: int, dorsal_out: int):
        super().__init__()
        self.dorsal = nn.Conv2d(dorsal_in, dorsal_out, 3, padding=1)
        self.ventral = nn.Conv2d(ventral_in, ventral_out, 3, padding=1)
        self.gate = nn.Conv2d(dorsal_out, ventral_out, 1)
        self.residual = ventral_in == ventral_out

    def forward(self, ventral: torch.Tensor, dorsal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dorsal = F.relu(self.dorsal(dorsal))
        fused = F.relu(self.ventral(ventral)) * torch.sigmoid(self.gate(dorsal))
        return (fused + ventral if self.residual else fused), dorsal


class VentralUnit(nn.Module):
    """The ventral-only counterpart of a PFU (ablation): a 3x3 convolution, residual when possible."""

    def __init__(self, ventral_in: int, ventral_out: int):
        super().__init__()
        self.ventral = nn.Conv2d(ventral_in, ventral_out, 3, padding=1)
        self.residual = ventral_in == ventral_out

    def forward(self, ventral: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.ventral(ventral))
        return out + ventral if self.residual else out


class FEM(nn.Module):
    """Dual-pathway feature extraction: spike windows (B, Tw, H, W) -> features F_t (B, C, H, W)."""

    def __init__(self, config: FEMConfig | None = None):
        super().__init__()
        self.config = config = config or FEMConfig()
        before, length = config.window_before, config.window_length
        ventral_spans = [(before - (r - 1) // 2, r) for r in config.ventral_fields]
        self.ventral_filter = BinaryTemporalFilter(ventral_spans, config.filter_channels, length)
        self.ventral_attention = PathwayAttention(self.ventral_filter.out_channels, config.attention_hidden)
        ventral_in = self.ventral_filter.out_channels
        if config.dual_pathway:
            w = config.dorsal_window
            dorsal_spans = [(before - k * w - (w - 1), w) for k in range(config.dorsal_count)]
            self.dorsal_filter = BinaryTemporalFilter(dorsal_spans, config.filter_channels, length)
            self.dorsal_attention = PathwayAttention(self.dorsal_filter.out_channels, config.attention_hidden)
            dorsal_in = self.dorsal_filter.out_channels
            units = []
            for _ in range(config.pfu_layers):
                units.append(PathwayFusionUnit(ventral_in, dorsal_in, config.channels, config.dorsal_channels))
                ventral_in, dorsal_in = config.channels, config.dorsal_channels
            self.units = nn.ModuleList(units)
            self.output = nn.Conv2d(config.channels + config.dorsal_channels, config.channels, 1)
        else:
            units = []
            for _ in range(config.pfu_layers):
                units.append(VentralUnit(ventral_in, config.channels))
                ventral_in = config.channels
            self.units = nn.ModuleList(units)
            self.output = nn.Conv2d(config.channels, config.channels, 1)

    @property
    def window_before(self) -> int:
        return self.config.window_before

    @property
    def window_after(self) -> int:
        return self.config.window_after

    @property
    def window_length(self) -> int:
        return self.config.window_length

    def binarized_weights(self) -> dict[str, torch.Tensor]:
        """The temporal filter weights as the inference path uses them (values exactly 0 or 1)."""
        out = {"ventral": self.ventral_filter.binary_weight()}
        if self.config.dual_pathway:
            out["dorsal"] = self.dorsal_filter.binary_weight()
        return out

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """(B, window_length, H, W) spike frames, frame ``window_before`` being the moment -> F_t."""
        if window.dim() != 4 or window.shape[1] != self.window_length:
            raise ValueError(
                f"FEM expects spike windows (B, {self.window_length}, H, W), got {tuple(window.shape)}"
            )
        ventral = self.ventral_filter(window)
        dorsal = self.dorsal_filter(window) if self.config.dual_pathway else None
        return self.fuse(ventral, dorsal)

    def fuse(self, ventral: torch.Tensor, dorsal: torch.Tensor | None) -> torch.Tensor:
        """Attention and PFU layers on the temporal responses of both pathways -> F_t."""
        ventral = self.ventral_attention(ventral)
        if not self.config.dual_pathway:
            for unit in self.units:
                ventral = unit(ventral)
            return self.output(ventral)
        dorsal = self.dorsal_attention(dorsal)
        for unit in self.units:
            ventral, dorsal = unit(ventral, dorsal)
        return self.output(torch.cat([ventral, dorsal], dim=1))

    def forward_from_prefix_sum(self, cumsum: torch.Tensor, window_starts: torch.Tensor) -> torch.Tensor:
        """Inference from a shared prefix sum (see :meth:`BinaryTemporalFilter.from_prefix_sum`)."""
        ventral = self.ventral_filter.from_prefix_sum(cumsum, window_starts)
        dorsal = (
            self.dorsal_filter.from_prefix_sum(cumsum, window_starts)
            if self.config.dual_pathway else None
        )
        return self.fuse(ventral, dorsal)


def valid_moment_range(num_frames: int, before: int, after: int) -> tuple[int, int]:
    """First and last moment whose window ``[t - before, t + after]`` fits in the stream."""
    return before, num_frames - 1 - after


def check_moments(moments: Sequence[int] | np.ndarray, num_frames: int, before: int, after: int) -> np.ndarray:
    """Moments as an int64 array, or ValueError naming the first one whose window leaves the stream."""
    array = np.asarray(moments)
    if array.dtype.kind not in "iu" and array.size:
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError("moments must be integer spike-frame indices")
    array = array.astype(np.int64).reshape(-1)
    first, last = valid_moment_range(num_frames, before, after)
    bad = array[(array < first) | (array > last)]
    if bad.size:
        raise ValueError(
            f"moment {int(bad[0])} is not valid for a stream of {num_frames} spike frames: its window "
            f"t-{before}..t+{after} must lie inside the stream (valid moments {first}..{last})"
        )
    return array


def _as_frames(spikes: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    if spikes.ndim != 3:
        raise ValueError(f"spikes must be a (T, H, W) array, got shape {tuple(spikes.shape)}")
    return spikes


def _frames_tensor(spikes: np.ndarray | torch.Tensor, start: int, stop: int, device: torch.device) -> torch.Tensor:
    block = spikes[start:stop]
    if isinstance(block, np.ndarray):
        block = torch.from_numpy(np.ascontiguousarray(block))
    return block.to(device=device, dtype=torch.float32)


def iter_feature_chunks(
    fem: FEM,
    spikes: np.ndarray | torch.Tensor,
    moments: Sequence[int] | np.ndarray,
    chunk: int = 8,
    device: torch.device | str | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (moments, features (n, C, H, W)) for consecutive chunks of at most ``chunk`` moments.

    Each chunk converts only the spike frames its windows cover and computes one prefix sum that
    all its moments share; memory is bounded by the chunk, not the stream.
    """
    spikes = _as_frames(spikes)
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 moment, got {chunk}")
    moments = check_moments(moments, spikes.shape[0], fem.window_before, fem.window_after)
    device = torch.device(device) if device is not None else next(fem.parameters()).device
    was_training = fem.training
    fem.eval()
    try:
        with torch.no_grad():
            for begin in range(0, moments.size, chunk):
                part = moments[begin:begin + chunk]
                first = int(part.min()) - fem.window_before
                stop = int(part.max()) + fem.window_after + 1
                frames = _frames_tensor(spikes, first, stop, device)
                cumsum = prefix_sum(frames, dim=0).unsqueeze(0)
                starts = torch.as_tensor(part - fem.window_before - first, device=device)
                yield part, fem.forward_from_prefix_sum(cumsum, starts)
    finally:
        fem.train(was_training)


def extract_features(
    fem: FEM,
    spikes: np.ndarray | torch.Tensor,
    moments: Sequence[int] | np.ndarray,
    chunk: int = 8,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Features (N, C, H, W) of a whole (T, H, W) spike stream at the given moments.

    Moments must be valid (their FEM window inside the stream). Work proceeds in chunks of
    ``chunk`` moments; the result itself holds N feature maps (use :func:`iter_feature_chunks` to
    stream them instead).
    """
    parts = [features.cpu() for _, features in iter_feature_chunks(fem, spikes, moments, chunk, device)]
    if not parts:
        raise ValueError("no moments given")
    return torch.cat(parts, dim=0)


def fem_parameter_count(fem: FEM) -> dict[str, int]:
    """Parameters: real-valued ones and binary taps of the temporal filters (1 bit each at inference)."""
    binary = sum(p.numel() for name, p in fem.named_parameters() if ".latent." in name)
    real = sum(p.numel() for name, p in fem.named_parameters() if ".latent." not in name)
    return {"real": real, "binary": binary, "total": real + binary}


def default_window_geometry() -> dict[str, int]:
    """The default FEM window as stored in a bitstream header."""
    return {"before": FEM_WINDOW_BEFORE, "after": FEM_WINDOW_AFTER, "length": FEM_WINDOW_LENGTH}


__all__ = [
    "FEM", "FEMConfig", "FEM_WINDOW_BEFORE", "FEM_WINDOW_AFTER", "FEM_WINDOW_LENGTH",
    "BinaryTemporalFilter", "PathwayAttention", "PathwayFusionUnit", "binarize_ste",
    "check_moments", "extract_features", "iter_feature_chunks", "prefix_sum",
    "fem_parameter_count", "default_window_geometry", "valid_moment_range",
]
