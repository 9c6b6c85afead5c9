"""Embedding models: an image patch ``(N, C, H, W)`` -> an embedding ``(N, E)`` of unit L2 length.

Every encoder here ends with global average pooling, so it accepts any H and W (those of the EfficientNet-based
ones are best kept multiples of 32, see :class:`~training.models.segmentation.EfficientNetLite0Encoder`), and
with L2 normalisation, so the embeddings of an ONNX ``encoder`` model can be compared by cosine similarity (a dot
product) and clustered with k-means directly. Three kinds:

* :class:`SarEncoder`: a small CNN trained from scratch on SAR patches (e.g. with a contrastive loss);
* :func:`efficientnet_lite0_encoder`: the ImageNet EfficientNet-Lite0 features (1280-d) for optical RGB imagery;
* :func:`encoder_from_segmentation`: the encoder of a trained segmentation network, its deepest features pooled.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from training.models.blocks import ConvBNAct
from training.models.segmentation import EfficientNetLite0Encoder, create_model, efficientnet_lite0_weights_path

EFFICIENTNET_LITE0_EMBEDDING = 1280


def _embed(features: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Global average pooling of (N, C, H, W) features, then (optionally) unit L2 length per row."""
    pooled = features.mean(dim=(2, 3))
    return F.normalize(pooled, p=2.0, dim=1) if normalize else pooled


class SarEncoder(nn.Module):
    """Small CNN for SAR patches: three stride-2 stages (widths ``width * (1, 2, 4)``), pooling, linear projection.

    Output: ``(N, embedding_size)`` with unit L2 norm. Any H and W work (odd sizes too).
    """

    def __init__(self, in_channels: int, embedding_size: int = 64, width: int = 16, normalize: bool = True) -> None:
        super().__init__()
        if in_channels < 1 or embedding_size < 1 or width < 1:
            raise ValueError(
                f"in_channels, embedding_size and width must be positive, got {in_channels}, {embedding_size}, {width}"
            )
        w1, w2, w3 = width, 2 * width, 4 * width
        self.in_channels = in_channels
        self.embedding_size = embedding_size
        self.normalize = normalize
        self.features = nn.Sequential(
            ConvBNAct(in_channels, w1),
            ConvBNAct(w1, w1, stride=2),
            ConvBNAct(w1, w2),
            ConvBNAct(w2, w2, stride=2),
            ConvBNAct(w2, w3),
            ConvBNAct(w3, w3, stride=2),
        )
        self.projection = nn.Linear(w3, embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (N, embedding_size) embeddings."""
        pooled = self.features(x).mean(dim=(2, 3))
        z = self.projection(pooled)
        return F.normalize(z, p=2.0, dim=1) if self.normalize else z


class EfficientNetLite0Embedder(nn.Module):
    """EfficientNet-Lite0 up to its 1x1 head convolution (320 -> 1280, BN, ReLU6), globally pooled: no classifier.

    The stem and blocks are :class:`EfficientNetLite0Encoder` (same submodule names as the ImageNet state dict);
    ``_conv_head`` and ``_bn1`` come from the same weights file.
    """

    def __init__(self, in_channels: int = 3, pretrained: bool = True, normalize: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.encoder = EfficientNetLite0Encoder(in_channels, pretrained=pretrained, drop_connect_rate=0.0)
        net = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        self._conv_head = net._conv_head
        self._bn1 = net._bn1
        self.act = nn.ReLU6()
        self.in_channels = in_channels
        self.embedding_size = EFFICIENTNET_LITE0_EMBEDDING
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (N, 1280) embeddings."""
        deepest = self.encoder(x)[-1]
        return _embed(self.act(self._bn1(self._conv_head(deepest))), self.normalize)


def efficientnet_lite0_encoder(in_channels: int = 3, pretrained: bool = True, normalize: bool = True) -> nn.Module:
    """The ImageNet EfficientNet-Lite0 feature extractor: (N, in_channels, H, W) -> (N, 1280), in eval mode.

    The weights are those of the TensorFlow EfficientNet-Lite0 release (converted to PyTorch), which expect RGB
    8-bit values standardised as ``(x - 127) / 128``. With ``in_channels != 3`` the stem is adapted as in
    :class:`EfficientNetLite0Encoder`.
    """
    return EfficientNetLite0Embedder(in_channels, pretrained, normalize).eval()


class SegmentationEmbedder(nn.Module):
    """The encoder of a segmentation network, its deepest feature map globally averaged (no projection).

    Works with every architecture of :mod:`training.models.segmentation`: U-Net encoders (a ``ModuleList`` of
    stages with max pooling between them), and encoders returning a list/tuple of features (the last one is the
    deepest: stride 16 or 32). The decoder and head are dropped.
    """

    def __init__(self, model: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"{type(model).__name__} has no encoder to turn into an embedding model")
        self.encoder = copy.deepcopy(encoder)
        self.pool = copy.deepcopy(getattr(model, "pool", nn.MaxPool2d(2)))
        self.normalize = normalize
        conv = next((m for m in self.encoder.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            raise TypeError(f"the encoder of {type(model).__name__} has no convolution")
        self.in_channels = conv.in_channels
        self.eval()
        with torch.no_grad():
            self.embedding_size = int(self.deepest(torch.zeros(2, self.in_channels, 32, 32)).shape[1])

    def deepest(self, x: torch.Tensor) -> torch.Tensor:
        """The deepest (N, C, h, w) feature map of the encoder."""
        if isinstance(self.encoder, nn.ModuleList):  # U-Net: stages with pooling in between
            for i, stage in enumerate(self.encoder):
                x = stage(x if i == 0 else self.pool(x))
            return x
        out = self.encoder(x)
        return out[-1] if isinstance(out, (list, tuple)) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (N, C) embeddings, C being the deepest feature map's channel count."""
        return _embed(self.deepest(x), self.normalize)


def encoder_from_segmentation(model: nn.Module, normalize: bool = True) -> SegmentationEmbedder:
    """An embedding model from a trained segmentation network (a copy of its encoder; the network is unchanged).

    Embedding = global average of the deepest encoder features (stride 16 or 32), L2-normalised; no projection,
    so its size is that map's channel count (e.g. ``16 * width`` for a U-Net, 320 for EfficientNet-Lite0). The
    result is in eval mode.
    """
    return SegmentationEmbedder(model, normalize).eval()


def _segmentation_encoder(segmentation_arch: str, in_channels: int, classes: int, **kwargs: object) -> nn.Module:
    kwargs.pop("pretrained", None)  # the checkpoint's weights replace any pretrained ones
    return encoder_from_segmentation(create_model(segmentation_arch, in_channels, classes, **kwargs))


# name -> builder; each builder takes keyword arguments only (those stored as a checkpoint's ``arch_kwargs``).
_ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "sar_encoder": SarEncoder,
    "efficientnet_lite0_encoder": efficientnet_lite0_encoder,
    "segmentation_encoder": _segmentation_encoder,
}
ENCODERS: tuple[str, ...] = tuple(_ENCODERS)


def create_encoder(arch: str, **kwargs: object) -> nn.Module:
    """Build encoder ``arch``: ``sar_encoder`` (in_channels, embedding_size, width), ``efficientnet_lite0_encoder``
    (in_channels, pretrained) or ``segmentation_encoder`` (segmentation_arch, in_channels, classes, and that
    architecture's keyword arguments)."""
    try:
        builder = _ENCODERS[arch]
    except KeyError:
        raise ValueError(f"unknown encoder {arch!r}; choose one of: {', '.join(ENCODERS)}") from None
    return builder(**kwargs)


__all__ = [
    "EFFICIENTNET_LITE0_EMBEDDING",
    "ENCODERS",
    "EfficientNetLite0Embedder",
    "SarEncoder",
    "SegmentationEmbedder",
    "create_encoder",
    "efficientnet_lite0_encoder",
    "encoder_from_segmentation",
]
