"""Operation counts of the SCI models, per moment, counted per operation.

Convolutions and linear layers are counted from the shapes they actually see (forward hooks:
``C_in/groups * k_h * k_w * C_out`` multiply-accumulates per output pixel, bias excluded), so the
counts follow the configuration. Operations that ``torch.utils.flop_counter`` does not see are
counted by hand where they happen: cumulative sums and run differences of the binary temporal
filters (one addition or subtraction each, counted as one MAC), bilinear sampling in
``grid_sample`` and ``deform_conv2d`` (4 MACs per sampled value), area downsampling and bilinear
upsampling. Element-wise operations (activations, gates, residual additions, scalings) are listed
under ``elementwise`` and left out of the MAC total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from spikecodec.models.afr import AFR
from spikecodec.models.fem import FEM


@dataclass
class OpCost:
    """One line of a cost table: ``macs`` multiply-accumulates (or element operations) per moment."""

    name: str
    macs: int
    kind: str = "mac"  # "mac" (counted in the total) or "elementwise"

    def to_dict(self) -> dict:
        return {"name": self.name, "macs": int(self.macs), "kind": self.kind}


def _hook_layer_macs(module: nn.Module, run: Callable[[], object], prefix: str = "") -> list[OpCost]:
    """Run ``run()`` with hooks on every Conv2d and Linear under ``module``; one OpCost per call."""
    costs: list[OpCost] = []
    handles = []

    def make_hook(name: str) -> Callable:
        def hook(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(layer, nn.Conv2d):
                kh, kw = layer.kernel_size
                per_output = layer.in_channels // layer.groups * kh * kw
                costs.append(OpCost(f"{prefix}{name} conv{kh}x{kw}", per_output * output.numel()))
            else:
                costs.append(OpCost(f"{prefix}{name} linear", layer.in_features * output.numel()))
        return hook

    for name, layer in module.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            handles.append(layer.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return costs


def fem_cost(fem: FEM, height: int, width: int) -> list[OpCost]:
    """Per-moment costs of the FEM inference path at ``height`` x ``width`` (one moment, no sharing).

    When moments of a stream are ``stride`` frames apart, the prefix sum and frame totals are
    shared and cost ``stride`` instead of ``window_length`` additions per pixel each (see
    :func:`fem_cost_summary`). Strip processing recomputes ``halo`` rows per strip boundary; that
    overhead (a few percent) is not counted.
    """
    pixels = height * width
    config = fem.config
    costs = [
        OpCost("temporal prefix sum (adds over the window)", fem.window_length * pixels),
        # frame totals give the attention's spatial means without a pass over the responses
        OpCost("frame totals (adds over the window)", fem.window_length * pixels),
    ]
    filters = [("ventral", fem.ventral_filter)]
    if config.dual_pathway:
        filters.append(("dorsal", fem.dorsal_filter))
    responses = {}
    for name, bank in filters:
        runs, outputs = len(bank.runs()), bank.out_channels
        costs.append(OpCost(f"{name} filter run differences ({runs} runs)", runs * pixels))
        # the first run of a channel is written, the others are accumulated: one add each.
        costs.append(OpCost(f"{name} filter run accumulation", max(runs - outputs, 0) * pixels))
        costs.append(OpCost(f"{name} attention pooling (from frame totals)", 2 * runs))
        # one multiplication per response: attention weight and 1/length folded together
        costs.append(OpCost(f"{name} attention reweighting (x weight/length)", outputs * pixels, "elementwise"))
        responses[name] = torch.zeros(1, outputs, height, width)
    costs += _hook_layer_macs(
        fem, lambda: fem.fuse(responses["ventral"], responses.get("dorsal")), prefix="fem."
    )
    c, cd = config.channels, config.dorsal_channels
    per_layer = (2 * c + cd + c) if config.dual_pathway else 2 * c  # relu v, sigmoid+mul gate, relu d, residual
    costs.append(OpCost("PFU activations, gates, residuals", config.pfu_layers * per_layer * pixels, "elementwise"))
    return costs


def afr_cost(afr: AFR, height: int, width: int, head: nn.Module | None = None) -> list[OpCost]:
    """Per-moment costs of AFR (and optionally the head) at ``height`` x ``width``, motion estimated."""
    config = afr.config
    c, pixels = config.channels, height * width
    features = torch.zeros(1, c, height, width)
    costs: list[OpCost] = []

    def run() -> None:
        out = afr(features, features, features)
        if head is not None:
            head(out["fused"])

    costs += _hook_layer_macs(afr, run, prefix="afr.")
    if head is not None:
        costs += _hook_layer_macs(head, lambda: head(torch.zeros(1, config.fuse_channels, height, width)), "head.")
    quarter = (-(-height // 4)) * (-(-width // 4))
    for branch in ("previous", "next"):
        if config.mode in ("full", "warp"):
            costs.append(OpCost(f"afr.{branch} motion: area downsampling", 2 * c * pixels))
            costs.append(OpCost(f"afr.{branch} motion: bilinear upsampling (1/8 -> 1/4, 1/4 -> 1/1)",
                                4 * config.motion_channels * quarter + 4 * 2 * pixels))
            costs.append(OpCost(f"afr.{branch} warp (grid_sample, bilinear)", 4 * c * pixels))
        if config.mode in ("full", "deform"):
            costs.append(OpCost(f"afr.{branch} deform_conv2d bilinear sampling", 4 * c * 9 * pixels))
            costs.append(OpCost(f"afr.{branch} deform_conv2d mask modulation", c * 9 * pixels, "elementwise"))
        # the branch's own 3x3 weights: deform_conv2d, or a plain conv2d in "warp" mode
        costs.append(OpCost(f"afr.{branch} alignment conv3x3", c * 9 * c * pixels))
    if config.qualities:
        costs.append(OpCost("afr.quality modulation (three inputs, two fusion outputs)",
                            (3 * c + 2 * config.fuse_channels) * pixels, "elementwise"))
    return costs


def total_macs(costs: list[OpCost]) -> int:
    """Sum of the MAC lines (element-wise lines excluded)."""
    return sum(op.macs for op in costs if op.kind == "mac")


def fem_cost_summary(fem: FEM, height: int, width: int, stride: int | None = None) -> dict:
    """Totals for a report: MACs per moment (isolated, and with a prefix sum shared at ``stride``)."""
    costs = fem_cost(fem, height, width)
    macs = total_macs(costs)
    summary = {
        "height": height, "width": width, "macs_per_moment": macs,
        "elementwise_per_moment": sum(op.macs for op in costs if op.kind == "elementwise"),
        "operations": [op.to_dict() for op in costs],
    }
    if stride is not None:
        # prefix sum and frame totals: ``stride`` new frames per moment instead of the whole window
        shared = macs - 2 * (fem.window_length - min(stride, fem.window_length)) * height * width
        summary["stride"] = stride
        summary["macs_per_moment_shared_prefix_sum"] = shared
    return summary


__all__ = ["OpCost", "afr_cost", "fem_cost", "fem_cost_summary", "total_macs"]
