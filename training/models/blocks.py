"""Layers shared by the segmentation architectures: conv units, U-Net decoder stages, attention gate, ASPP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNAct(nn.Sequential):
    """Convolution (same padding, no bias) -> BatchNorm -> activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvBNAct units: the basic U-Net stage."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNAct(in_channels, out_channels), ConvBNAct(out_channels, out_channels))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, Attention U-Net): weights a skip by a coarser gating signal.

    ``gate`` and ``skip`` must have the same spatial size (the gate is the up-sampled decoder feature).
    """

    def __init__(self, gate_channels: int, skip_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.gate_proj = ConvBNAct(gate_channels, inter_channels, kernel_size=1, activation=None)
        self.skip_proj = ConvBNAct(skip_channels, inter_channels, kernel_size=1, activation=None)
        self.psi = nn.Sequential(ConvBNAct(inter_channels, 1, kernel_size=1, activation=None), nn.Sigmoid())

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Return ``skip`` scaled per pixel by an attention coefficient in (0, 1)."""
        alpha = self.psi(F.relu(self.gate_proj(gate) + self.skip_proj(skip)))
        return skip * alpha


class UpBlock(nn.Module):
    """U-Net decoder stage: 2x transposed-conv up-sampling, optional attention on the skip, concat, DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, attention: bool = False) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.gate = AttentionGate(out_channels, skip_channels, max(skip_channels // 2, 1)) if attention else None
        self.conv = DoubleConv(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Up-sample ``x`` to the size of ``skip`` and fuse them."""
        x = self.up(x)
        if self.gate is not None:
            skip = self.gate(x, skip)
        return self.conv(torch.cat([x, skip], dim=1))


class InterpolateBlock(nn.Module):
    """Decoder stage for encoder-backed U-Nets: 2x nearest up-sampling, concat an optional skip, DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """Up-sample ``x`` by two and fuse it with ``skip`` (same size as the up-sampled ``x``) if given."""
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class UNetDecoder(nn.Module):
    """Decoder for an encoder returning features at strides 2, 4, 8, 16, 32; the last stage restores stride 1."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int]) -> None:
        super().__init__()
        if len(encoder_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError("expected 5 encoder feature widths (strides 2..32) and 5 decoder widths")
        skips = list(encoder_channels[:-1])[::-1] + [0]  # strides 16, 8, 4, 2, then none at full resolution
        in_chs = [encoder_channels[-1], *decoder_channels[:-1]]
        self.stages = nn.ModuleList(
            InterpolateBlock(i, s, o) for i, s, o in zip(in_chs, skips, decoder_channels, strict=True)
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fuse ``features`` (finest first, stride 2 .. 32) into a full-resolution feature map."""
        x = features[-1]
        skips = list(features[:-1])[::-1]
        for i, stage in enumerate(self.stages):
            x = stage(x, skips[i] if i < len(skips) else None)
        return x


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection, residual if possible."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, kernel_size=1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, stride=stride, groups=hidden, activation=nn.ReLU6),
            ConvBNAct(hidden, out_channels, kernel_size=1, activation=None),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.body(x)
        return x + out if self.residual else out


class BasicResidual(nn.Module):
    """ResNet basic block (two 3x3 convs) with optional stride or dilation and a 1x1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, out_channels, stride=stride, dilation=dilation)
        self.conv2 = ConvBNAct(out_channels, out_channels, dilation=dilation, activation=None)
        self.shortcut = (
            ConvBNAct(in_channels, out_channels, kernel_size=1, stride=stride, activation=None)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabV3): 1x1, three atrous 3x3 and an image-pooling branch.

    The pooling branch has no BatchNorm so that training with batch size 1 works (a 1x1 map has one value
    per channel, which BatchNorm cannot normalise).
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNAct(in_channels, out_channels, kernel_size=1)]
            + [ConvBNAct(in_channels, out_channels, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1), nn.ReLU())
        self.project = ConvBNAct(out_channels * (len(rates) + 2), out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return multi-scale context features at the resolution of ``x``."""
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, dim=1))
