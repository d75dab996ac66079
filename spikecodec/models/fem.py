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
the cumulative sum (:class:`SpikePrefix`, :func:`extract_features`). Inference then runs the frame
in strips of rows (activations stay in cache; the result equals whole-frame processing).

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
    # a 1x1 convolution of all the sub-filters' rates added to F_t: the PFUs alone drop intensity
    # that the counts hold linearly (6 dB on static scenes, benchmarks/bench_fem_probe.py)
    count_skip: bool = False

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


class _BinarizeSTE(torch.autograd.Function):
    """Forward: exactly 0.0 or 1.0. Backward: the gradient of clamp(latent, -1, 1).

    Written as a Function rather than ``hard + soft - soft.detach()``: that sum is off by one ulp
    for many latents (0.99999994 instead of 1), which the run-length inference path would then
    truncate to 0, making inference disagree with training.
    """

    @staticmethod
    def forward(ctx, latent: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(latent)
        return (latent >= 0).to(latent.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (latent,) = ctx.saved_tensors
        return grad * (latent.abs() <= 1.0).to(grad.dtype)


def binarize_ste(latent: torch.Tensor) -> torch.Tensor:
    """Heaviside step (1 where latent >= 0, exactly) whose gradient is that of clamp(latent, -1, 1)."""
    return _BinarizeSTE.apply(latent)


class BinaryTemporalFilter(nn.Module):
    """A bank of binarized temporal sub-filters over a window of spike frames.

    ``spans`` lists each sub-filter's first frame and length, as offsets into the window;
    each sub-filter has ``channels`` outputs. The response of a channel is its spike count over the
    selected frames (:meth:`counts`); divided by the sub-filter length (``scale``) it is a firing
    rate in [0, 1] (:meth:`forward`). The FEM folds that division into its attention weights.
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
    def runs(self) -> list[tuple[int, int, int]]:
        """Runs of consecutive ones of the binary weights: (channel, first frame, last frame + 1)."""
        binary = (self.binary_weight() > 0.5).to(torch.int8)
        padded = F.pad(binary, (1, 1))
        rises = torch.nonzero(padded[:, 1:-1] > padded[:, :-2])  # 0 -> 1: a run starts here
        falls = torch.nonzero(padded[:, 1:-1] > padded[:, 2:])  # 1 -> 0 next: a run ends here
        # nonzero lists row-major, so the k-th start and the k-th end of a row pair up.
        return [(int(c), int(a), int(b) + 1) for (c, a), (_, b) in zip(rises.tolist(), falls.tolist())]

    def needs_dense_path(self) -> bool:
        """Training (or a gradient wanted through the weights) takes the differentiable dense path."""
        return self.training or (torch.is_grad_enabled() and any(p.requires_grad for p in self.latent))

    def counts(self, window: torch.Tensor, batched: bool = False) -> torch.Tensor:
        """(B, window_length, H, W) spike frames -> (B, out_channels, H, W) spike counts.

        Inference takes per-sample prefix sums, or with ``batched`` one convolution over the batch
        (the same counts: 0/1 frames times 0/1 weights are exact either way)."""
        if self.needs_dense_path() or batched:
            return F.conv2d(window, self.dense_weight().to(window.dtype)[:, :, None, None])
        cumsum = prefix_sum(window, dim=1)
        return torch.cat([self.counts_from_prefix_sum(cumsum[b], 0) for b in range(window.shape[0])])

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """(B, window_length, H, W) spike frames -> (B, out_channels, H, W) firing rates."""
        return self.counts(window) * self.scale.to(window.dtype).view(1, -1, 1, 1)

    @torch.no_grad()
    def counts_from_prefix_sum(
        self, cumsum: torch.Tensor, window_start: int, runs: list[tuple[int, int, int]] | None = None,
    ) -> torch.Tensor:
        """Counts (1, out_channels, H, W) of the window starting at frame ``window_start``.

        ``cumsum`` (L + 1, H, W) is a prefix sum over one stream (``cumsum[j]``: the first j
        frames); each run of ones costs one subtraction, plus one addition after a channel's first.
        """
        runs = self.runs() if runs is None else runs
        out = cumsum.new_empty((1, self.out_channels) + tuple(cumsum.shape[1:]))
        written = [False] * self.out_channels
        for channel, first, stop in runs:
            newer, older = cumsum[window_start + stop], cumsum[window_start + first]
            if written[channel]:
                out[0, channel] += newer - older
            else:
                torch.sub(newer, older, out=out[0, channel])
                written[channel] = True
        for channel, done in enumerate(written):
            if not done:  # an all-zero filter
                out[0, channel].zero_()
        return out


def prefix_sum(frames: torch.Tensor, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """float32 cumulative sum along ``dim`` with a leading zero; exact for 0/1 frames (< 2**24).

    One whole-plane addition per frame: on CPU several times faster than ``torch.cumsum`` along
    a non-last dimension.
    """
    shape = list(frames.shape)
    shape[dim] += 1
    if out is None:
        dtype = frames.dtype if frames.dtype.is_floating_point else torch.float32
        out = torch.empty(shape, dtype=dtype, device=frames.device)
    elif list(out.shape) != shape:
        raise ValueError(f"prefix sum output must have shape {shape}, got {list(out.shape)}")
    out.select(dim, 0).zero_()
    for index in range(frames.shape[dim]):
        torch.add(out.select(dim, index), frames.select(dim, index), out=out.select(dim, index + 1))
    return out


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
    """Squeeze-excitation over the sub-filter responses of one pathway (per sample, per channel).

    Takes spike counts and their per-channel rate ``scale``; the output is the firing rates
    reweighted, computed with a single multiplication (the rate scaling is folded in).
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)
        nn.init.zeros_(self.excite.weight)
        nn.init.zeros_(self.excite.bias)  # 2 * sigmoid(0) = 1: the identity at initialisation

    def weights(self, mean_counts: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """(B, C) multipliers from the spatial means of the counts: attention x 1/length."""
        scale = scale.to(mean_counts.dtype)
        return 2.0 * torch.sigmoid(self.excite(F.relu(self.squeeze(mean_counts * scale)))) * scale

    def forward(self, counts: torch.Tensor, scale: torch.Tensor, channels_last: bool = False,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        """Reweighted rates; ``weights`` (B, C) precomputed (e.g. over a whole frame, for a strip)."""
        if weights is None:
            weights = self.weights(counts.mean(dim=(2, 3)), scale)
        weights = weights.to(counts.dtype)[:, :, None, None]
        if channels_last:  # the layout change rides on the multiplication (CPU inference)
            out = torch.empty_like(counts, memory_format=torch.channels_last)
            return torch.mul(counts, weights, out=out)
        return counts * weights


class PointwiseConv(nn.Conv2d):
    """1x1 convolution computed as a matrix product over channels (fast in channels-last layout).

    ``forward(*parts)`` takes the input split into channel groups (as if concatenated), which
    saves the concatenation copy.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, *parts: torch.Tensor, channels_first: bool = False) -> torch.Tensor:  # type: ignore[override]
        """``channels_first``: return a contiguous NCHW result (weights times the transposed
        channels-last input, so no layout change is copied); only for a batch of one."""
        weight = self.weight.view(self.out_channels, self.in_channels)
        if channels_first:
            if parts[0].shape[0] != 1:
                raise ValueError("channels_first output is for a batch of one")
            out, offset = None, 0
            for part in parts:
                width = part.shape[1]
                flat = part[0].permute(1, 2, 0).reshape(-1, width)  # (pixels, channels), a view when channels-last
                term = weight[:, offset:offset + width] @ flat.t()
                out = term if out is None else out.add_(term)
                offset += width
            if offset != self.in_channels:
                raise ValueError(f"pointwise conv expects {self.in_channels} input channels, got {offset}")
            out.add_(self.bias[:, None])
            return out.view((1, self.out_channels) + tuple(parts[0].shape[2:]))
        out, offset = None, 0
        for index, part in enumerate(parts):
            width = part.shape[1]
            bias = self.bias if index == 0 else None
            term = F.linear(part.permute(0, 2, 3, 1), weight[:, offset:offset + width], bias)
            out = term if out is None else out.add_(term)
            offset += width
        if offset != self.in_channels:
            raise ValueError(f"pointwise conv expects {self.in_channels} input channels, got {offset}")
        return out.permute(0, 3, 1, 2)


class PathwayFusionUnit(nn.Module):
    """One PFU: the dorsal (motion) pathway gates the ventral (structure) pathway per pixel."""

    def __init__(self, ventral_in: int, dorsal_in: int, ventral_out: int, dorsal_out: int):
        super().__init__()
        self.dorsal = nn.Conv2d(dorsal_in, dorsal_out, 3, padding=1)
        self.ventral = nn.Conv2d(ventral_in, ventral_out, 3, padding=1)
        self.gate = PointwiseConv(dorsal_out, ventral_out)
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
            self.output = PointwiseConv(config.channels + config.dorsal_channels, config.channels)
        else:
            units = []
            for _ in range(config.pfu_layers):
                units.append(VentralUnit(ventral_in, config.channels))
                ventral_in = config.channels
            self.units = nn.ModuleList(units)
            self.output = PointwiseConv(config.channels, config.channels)
        if config.count_skip:
            rates = sum(bank.out_channels for bank in self.filter_banks())
            self.count_skip = PointwiseConv(rates, config.channels)
            nn.init.zeros_(self.count_skip.bias)

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

    def filter_banks(self) -> list[BinaryTemporalFilter]:
        """The binary temporal filter banks: ventral, then dorsal when present."""
        return [self.ventral_filter, self.dorsal_filter] if self.config.dual_pathway else [self.ventral_filter]

    def forward(self, window: torch.Tensor, batched: bool | None = None) -> torch.Tensor:
        """(B, window_length, H, W) spike frames, frame ``window_before`` being the moment -> F_t.

        Inference takes per-sample prefix sums on CPU and one batched convolution elsewhere
        (``batched`` overrides that choice; the features are the same)."""
        if window.dim() != 4 or window.shape[1] != self.window_length:
            raise ValueError(
                f"FEM expects spike windows (B, {self.window_length}, H, W), got {tuple(window.shape)}"
            )
        # off the CPU, the per-sample prefix sums below are bound by kernel launches
        batched = window.device.type != "cpu" if batched is None else batched
        if self.ventral_filter.needs_dense_path() or batched:
            return self.fuse(*[bank.counts(window, batched=True) for bank in self.filter_banks()])
        runs = [bank.runs() for bank in self.filter_banks()]
        return torch.cat([
            self.features_from_prefix(SpikePrefix.of(window[b]), 0, runs=runs) for b in range(window.shape[0])
        ])

    def fuse(self, ventral_counts: torch.Tensor, dorsal_counts: torch.Tensor | None = None,
             channels_last: bool = False, weights: list[torch.Tensor] | None = None,
             rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Attention and PFU layers on the spike counts of both pathways -> F_t.

        ``weights`` (one (B, C) tensor per pathway, see :meth:`attention_weights`) replaces the
        attention computed from the counts themselves, for counts of a strip of the frame;
        ``rows`` (first, stop) keeps only those rows of the result (the strip without its halo),
        returned as contiguous NCHW (batch of one).
        """
        weights = weights or [None, None]
        ventral = self.ventral_attention(ventral_counts, self.ventral_filter.scale, channels_last, weights[0])
        dorsal = None
        if self.config.dual_pathway:
            dorsal = self.dorsal_attention(dorsal_counts, self.dorsal_filter.scale, channels_last, weights[1])
        rates = [ventral] if dorsal is None else [ventral, dorsal]
        if dorsal is not None:
            for unit in self.units:
                ventral, dorsal = unit(ventral, dorsal)
        else:
            for unit in self.units:
                ventral = unit(ventral)
        parts = [ventral] if dorsal is None else [ventral, dorsal]
        if rows is None:
            out = self.output(*parts)
            return out + self.count_skip(*rates) if self.config.count_skip else out
        parts = [part[:, :, rows[0]:rows[1]] for part in parts]  # the output convolutions are 1x1
        out = self.output(*parts, channels_first=True)
        if self.config.count_skip:
            out = out.add_(self.count_skip(*[rate[:, :, rows[0]:rows[1]] for rate in rates], channels_first=True))
        return out

    @property
    def halo(self) -> int:
        """Rows of context a strip needs on each side: one per stacked 3x3 convolution."""
        return self.config.pfu_layers

    @torch.no_grad()
    def attention_weights(self, prefix: "SpikePrefix", window_start: int,
                          runs: list[list[tuple[int, int, int]]]) -> list[torch.Tensor]:
        """Per-pathway (1, C) attention multipliers of a window, from the frame totals alone."""
        pixels = prefix.cumsum.shape[1] * prefix.cumsum.shape[2]
        out = []
        banks = self.filter_banks()
        attentions = [self.ventral_attention] + ([self.dorsal_attention] if self.config.dual_pathway else [])
        for bank, bank_runs, attention in zip(banks, runs, attentions):
            means = torch.zeros(1, bank.out_channels, dtype=torch.float64)
            for channel, first, stop in bank_runs:
                means[0, channel] += prefix.totals[window_start + stop] - prefix.totals[window_start + first]
            means = (means / pixels).to(prefix.cumsum.dtype).to(prefix.cumsum.device)
            out.append(attention.weights(means, bank.scale))
        return out

    @torch.no_grad()
    def features_from_prefix(
        self, prefix: "SpikePrefix", window_start: int, out: torch.Tensor | None = None,
        runs: list[list[tuple[int, int, int]]] | None = None, strip_rows: int | None = 64,
    ) -> torch.Tensor:
        """Inference for the window starting at frame ``window_start`` of a :class:`SpikePrefix`.

        The frame is processed in strips of ``strip_rows`` rows (plus :attr:`halo` rows of
        context, ``None``: the whole frame at once): on CPU the layers are memory-bound, and a
        strip's activations stay in cache. The result equals whole-frame processing (the
        attention pools the whole frame, from the prefix totals). Convolutions run in
        channels-last layout on CPU. ``out`` (1, C, H, W) receives the result; ``runs`` (per filter
        bank, from ``runs()``) saves recomputing them for every moment.
        """
        banks = self.filter_banks()
        runs = runs or [bank.runs() for bank in banks]
        weights = self.attention_weights(prefix, window_start, runs)
        height, width = prefix.cumsum.shape[1:]
        if out is None:
            out = prefix.cumsum.new_empty((1, self.config.channels, height, width))
        channels_last = prefix.cumsum.device.type == "cpu"
        rows = height if strip_rows is None or not channels_last else max(1, int(strip_rows))
        for top in range(0, height, rows):
            bottom = min(height, top + rows)
            start, stop = max(0, top - self.halo), min(height, bottom + self.halo)
            strip = prefix.cumsum[:, start:stop]
            counts = [bank.counts_from_prefix_sum(strip, window_start, r) for bank, r in zip(banks, runs)]
            features = self.fuse(*counts, channels_last=channels_last, weights=weights,
                                 rows=(top - start, bottom - start))
            out[:, :, top:bottom].copy_(features)
        return out


@dataclass
class SpikePrefix:
    """Prefix sums of a block of spike frames: ``cumsum`` (L + 1, H, W) float32 and the frame
    totals ``totals`` (L + 1,) float64 (``totals[j]``: spikes in the first j frames)."""

    cumsum: torch.Tensor
    totals: torch.Tensor

    @classmethod
    def of(cls, frames: torch.Tensor, workspace: dict[str, torch.Tensor] | None = None) -> "SpikePrefix":
        """From (L, H, W) spike frames (uint8, bool or float).

        ``workspace`` keeps the large buffers between calls (freshly allocated ones are paid in
        page faults, which cost more than the sums themselves); the result then lives in it.
        """
        length, height, width = frames.shape
        # float32 holds per-frame counts exactly (< 2**24 pixels); integer reductions are far slower
        converted = _workspace(workspace, "frames", (length, height, width), frames.device)
        converted.copy_(frames)
        sums = converted.sum(dim=(1, 2)).to(torch.float64).cpu()
        totals = torch.cat([torch.zeros(1, dtype=torch.float64), sums.cumsum(0)])
        cumsum = _workspace(workspace, "cumsum", (length + 1, height, width), frames.device)
        return cls(prefix_sum(converted, dim=0, out=cumsum), totals)


def _workspace(workspace: dict[str, torch.Tensor] | None, name: str, shape: tuple[int, ...],
               device: torch.device) -> torch.Tensor:
    """A float32 tensor of ``shape``, reusing (a prefix of) ``workspace[name]`` when it is big enough."""
    size = int(np.prod(shape))
    if workspace is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    buffer = workspace.get(name)
    if buffer is None or buffer.numel() < size or buffer.device != device:
        buffer = workspace[name] = torch.empty(size, dtype=torch.float32, device=device)
    return buffer[:size].view(shape)


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
    if block.dtype == torch.bool:
        block = block.view(torch.uint8)
    return block.to(device=device)  # SpikePrefix.of converts to float once, on the device


PREFIX_BUDGET_BYTES = 256 << 20  # prefix-sum memory of one chunk (float frames + cumulative sum)


def _chunks(moments: np.ndarray, chunk: int, max_frames: int, window: int) -> Iterator[slice]:
    """Consecutive slices of at most ``chunk`` moments whose windows span at most ``max_frames``."""
    begin = 0
    while begin < moments.size:
        end = begin + 1
        low = high = int(moments[begin])
        while end < moments.size and end - begin < chunk:
            t = int(moments[end])
            if max(high, t) - min(low, t) + window > max_frames:
                break
            low, high = min(low, t), max(high, t)
            end += 1
        yield slice(begin, end)
        begin = end


def iter_feature_chunks(
    fem: FEM,
    spikes: np.ndarray | torch.Tensor,
    moments: Sequence[int] | np.ndarray,
    chunk: int = 8,
    device: torch.device | str | None = None,
    out: torch.Tensor | None = None,
    prefix_budget_bytes: int = PREFIX_BUDGET_BYTES,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (moments, features (n, C, H, W)) for consecutive chunks of at most ``chunk`` moments.

    Each chunk reads only the spike frames its windows cover and computes one prefix sum that
    all its moments share. A chunk also ends where its frames would exceed
    ``prefix_budget_bytes`` (at least one window), so memory is bounded whatever the moments.
    With ``out`` (N, C, H, W) the features are written there and the yielded tensors are views.
    """
    spikes = _as_frames(spikes)
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 moment, got {chunk}")
    moments = check_moments(moments, spikes.shape[0], fem.window_before, fem.window_after)
    device = torch.device(device) if device is not None else next(fem.parameters()).device
    shape = (moments.size, fem.config.channels) + tuple(spikes.shape[1:])
    if out is not None and tuple(out.shape) != shape:
        raise ValueError(f"feature output must have shape {shape}, got {tuple(out.shape)}")
    was_training = fem.training
    fem.eval()
    try:
        with torch.no_grad():
            runs = [bank.runs() for bank in fem.filter_banks()]
            workspace: dict[str, torch.Tensor] = {}
            pixels = int(spikes.shape[1]) * int(spikes.shape[2])
            max_frames = max(fem.window_length, prefix_budget_bytes // (8 * pixels))
            for span in _chunks(moments, chunk, max_frames, fem.window_length):
                part, begin = moments[span], span.start
                first = int(part.min()) - fem.window_before
                stop = int(part.max()) + fem.window_after + 1
                prefix = SpikePrefix.of(_frames_tensor(spikes, first, stop, device), workspace)
                block = (out[begin:begin + len(part)] if out is not None
                         else torch.empty((len(part),) + shape[1:], device=device))
                for index, t in enumerate(part):
                    fem.features_from_prefix(prefix, int(t) - fem.window_before - first, block[index:index + 1], runs)
                yield part, block
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
    spikes = _as_frames(spikes)
    count = np.asarray(moments).size
    if count == 0:
        raise ValueError("no moments given")
    device = torch.device(device) if device is not None else next(fem.parameters()).device
    out = torch.empty((count, fem.config.channels) + tuple(spikes.shape[1:]), device=device)
    for _ in iter_feature_chunks(fem, spikes, moments, chunk, device, out=out):
        pass
    return out


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
    "SpikePrefix", "check_moments", "extract_features", "iter_feature_chunks", "prefix_sum",
    "fem_parameter_count", "default_window_geometry", "valid_moment_range",
]
