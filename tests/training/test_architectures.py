"""Every segmentation architecture: shapes, gradients, determinism, ONNX parity; plus registry and transfer helpers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.models import (
    ARCHITECTURES,
    count_parameters,
    create_model,
    export_onnx,
    freeze_encoder,
    required_multiple,
)
from training.models.segmentation import efficientnet_lite0_weights_path

CLASSES = 5
# Small widths keep the whole file fast; the EfficientNet-Lite0 encoder has a fixed size.
SMALL: dict[str, dict] = {
    "unet": {"width": 4},
    "attention_unet": {"width": 4},
    "deeplabv3plus": {"width": 8},
    "vgg16_unet": {"width": 4},
    "mobilenetv2_unet": {"width_mult": 0.35, "decoder_channels": (16, 16, 8, 8, 8)},
    "efficientnet_lite0_unet": {"decoder_channels": (16, 16, 8, 8, 8)},
}


def small_model(arch: str, in_channels: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return create_model(arch, in_channels, CLASSES, **SMALL[arch])


def odd_sizes(arch: str) -> list[tuple[int, int]]:
    """Non-square sizes with an odd number of blocks of the required multiple (e.g. 64 x 96 and 96 x 64)."""
    m = required_multiple(arch)
    return [(2 * m, 3 * m), (3 * m, 2 * m)]


def warm_batchnorm(model: nn.Module, in_channels: int) -> None:
    """Give BatchNorm non-trivial running statistics so eval-mode checks are not run on the identity."""
    model.train()
    with torch.no_grad():
        model(torch.randn(2, in_channels, 64, 64) * 2 + 0.5)
    model.eval()


def test_registry_lists_all_architectures():
    assert set(ARCHITECTURES) == {
        "unet",
        "attention_unet",
        "deeplabv3plus",
        "vgg16_unet",
        "mobilenetv2_unet",
        "efficientnet_lite0_unet",
    }
    assert {a: required_multiple(a) for a in ARCHITECTURES} == {
        "unet": 16,
        "attention_unet": 16,
        "deeplabv3plus": 16,
        "vgg16_unet": 32,
        "mobilenetv2_unet": 32,
        "efficientnet_lite0_unet": 32,
    }


@pytest.mark.parametrize("in_channels", [2, 3])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_shape_any_bands_and_odd_sizes(arch, in_channels):
    model = small_model(arch, in_channels).eval()
    m = required_multiple(arch)
    with torch.no_grad():
        for h, w in [*odd_sizes(arch), (m, 2 * m)]:
            logits = model(torch.randn(2, in_channels, h, w))
            assert logits.shape == (2, CLASSES, h, w)
            assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_backward_gives_finite_gradients_for_every_parameter(arch):
    model = small_model(arch).train()
    h, w = odd_sizes(arch)[0]
    x = torch.randn(2, 2, h, w)
    target = torch.randint(0, CLASSES, (2, h, w))
    F.cross_entropy(model(x), target).backward()
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    missing = [name for name, p in params if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for _, p in params)
    assert sum(p.grad.abs().sum().item() for _, p in params) > 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_eval_mode_is_deterministic_and_leaves_state_alone(arch):
    model = small_model(arch)
    warm_batchnorm(model, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 2, *odd_sizes(arch)[1])
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first, second)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_onnx_export_matches_torch_at_other_sizes_and_batches(arch, tmp_path):
    model = small_model(arch, in_channels=2)
    warm_batchnorm(model, 2)
    path = tmp_path / f"{arch}.onnx"
    export_onnx(model, path, in_channels=2, tile=64)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 2, "height", "width"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, h, w in [(1, 96, 160), (2, 128, 96)]:  # both differ from the 64 x 64 export tile
        x = torch.randn(batch, 2, h, w)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(["logits"], {"input": x.numpy()})
        assert got.shape == (batch, CLASSES, h, w)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_dynamo_exporter_also_gives_dynamic_shapes(tmp_path):
    model = small_model("unet")
    warm_batchnorm(model, 2)
    path = tmp_path / "unet_dynamo.onnx"
    export_onnx(model, path, in_channels=2, tile=64, dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, h, w in [(1, 48, 80), (2, 96, 64)]:
        x = torch.randn(batch, 2, h, w)
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def imagenet_state() -> dict[str, torch.Tensor]:
    return torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)


def test_efficientnet_pretrained_loads_the_shipped_imagenet_weights(imagenet_state):
    rgb = create_model("efficientnet_lite0_unet", 3, CLASSES, pretrained=True).encoder.state_dict()
    assert set(rgb) <= set(imagenet_state)
    assert len(rgb) > 200
    for key, value in rgb.items():
        assert torch.equal(value, imagenet_state[key]), key

    two_band = create_model("efficientnet_lite0_unet", 2, CLASSES, pretrained=True).encoder
    assert torch.equal(two_band._blocks[3]._depthwise_conv.weight, imagenet_state["_blocks.3._depthwise_conv.weight"])
    stem = imagenet_state["_conv_stem.weight"]  # (32, 3, 3, 3)
    expected = stem.mean(dim=1, keepdim=True).repeat(1, 2, 1, 1) * 1.5
    torch.testing.assert_close(two_band._conv_stem.weight.detach(), expected)
    # Equal bands respond like a grey RGB image: the adapted kernel sums to the RGB kernel over channels.
    torch.testing.assert_close(two_band._conv_stem.weight.detach().sum(dim=1), stem.sum(dim=1))

    scratch = create_model("efficientnet_lite0_unet", 3, CLASSES, pretrained=False).encoder
    block_key = "_blocks.3._depthwise_conv.weight"
    assert not torch.equal(scratch._blocks[3]._depthwise_conv.weight, imagenet_state[block_key])


def test_freeze_encoder_toggles_gradients_and_holds_batchnorm_statistics():
    model = small_model("efficientnet_lite0_unet")
    encoder_params = count_parameters(model.encoder)
    total = count_parameters(model)

    freeze_encoder(model, True)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert count_parameters(model, trainable_only=True) == total - encoder_params
    model.train()
    assert not model.encoder.training and model.decoder.training
    stats = model.encoder._bn0.running_mean.clone()
    model(torch.randn(2, 2, 64, 64)).sum().backward()
    assert torch.equal(model.encoder._bn0.running_mean, stats)
    assert all(p.grad is None for p in model.encoder.parameters())

    freeze_encoder(model, False)
    assert all(p.requires_grad for p in model.parameters())
    assert model.encoder.training
    assert count_parameters(model, trainable_only=True) == total


def test_unknown_architecture_raises_and_lists_choices():
    with pytest.raises(ValueError, match="nope") as info:
        create_model("nope", 2, CLASSES)
    for arch in ARCHITECTURES:
        assert arch in str(info.value)
    with pytest.raises(ValueError):
        required_multiple("nope")


def test_count_parameters_matches_a_hand_sum():
    def conv(cin, cout, k):  # weights only: every conv before a BatchNorm has no bias
        return cin * cout * k * k

    def double(cin, cout):  # two 3x3 convs, each followed by BatchNorm (weight + bias)
        return conv(cin, cout, 3) + 2 * cout + conv(cout, cout, 3) + 2 * cout

    w, bands = 4, 2
    widths = [w, 2 * w, 4 * w, 8 * w, 16 * w]
    encoder = sum(double(cin, cout) for cin, cout in zip([bands, *widths[:-1]], widths))
    # Each decoder stage: 2x2 transposed conv with bias, then DoubleConv on [up, skip].
    decoder = sum(conv(widths[i + 1], widths[i], 2) + widths[i] + double(2 * widths[i], widths[i]) for i in range(4))
    head = w * CLASSES + CLASSES
    model = create_model("unet", bands, CLASSES, width=w)
    assert count_parameters(model) == encoder + decoder + head
    assert count_parameters(nn.Conv2d(2, 5, 3)) == 2 * 5 * 9 + 5
