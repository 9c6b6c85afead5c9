"""Builds the tiny ONNX test models in tests/data/models/ with onnx.helper (no torch): a few KB each.

Run with the project's venv: .venv/bin/python tests/data/make_tiny_models.py
Each model is a 1x1 convolution (weights from a fixed seed) with dynamic batch, height and width, so a test can
compare onnxruntime's output with the same convolution in numpy.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sar_seg_plugin.models.metadata import ModelMetadata, Normalization, metadata_to_props  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent / "models"
OPSET = 17
IR_VERSION = 8  # readable by the older onnxruntime builds found in users' QGIS installs

SEGMENTATION = ModelMetadata(
    task="segmentation",
    name="tiny conv segmentation",
    description="1x1 convolution, 2 SAR bands to 5 land-cover classes (test model)",
    input_bands=("VV", "VH"),
    input_units=("dB", "dB"),
    normalization=Normalization(mean=(-12.0, -19.0), std=(5.0, 4.0)),
    tile_size=64,
    tile_overlap=16,
    output_kind="classes",
    class_names=("water", "cropland", "forest", "urban", "bare soil"),
    class_colors=("#1f78b4", "#ffff99", "#33a02c", "#e31a1c", "#b15928"),
    pixel_size_m=10.0,
    training={"data": "synthetic", "metrics": {"miou": 0.5}},
)

# The same model with the envelope of its "training" inputs (sar_seg_plugin.core.domain): the synthetic sample
# scenes (training.synthetic: 10 m, L = 4.4) measured with measure_domain (ENL 3.6-4.1; medians VV about -10.8 dB,
# VH about -16.8 dB) and widened by a few dB, so the sample is inside and a single-look or a -15 dB copy is not.
INPUT_DOMAIN = {
    "enl": [2.0, 30.0],
    "pixel_size_m": [10.0, 40.0],
    "db_percentiles": {
        "levels": [2, 50, 98],
        "bands": {
            "VV": [[-26.0, -17.0], [-16.0, -6.0], [-5.0, 5.0]],
            "VH": [[-29.0, -21.0], [-22.0, -12.0], [-11.0, -2.0]],
        },
    },
}
SEGMENTATION_WITH_ENVELOPE = dataclasses.replace(
    SEGMENTATION,
    name="tiny conv segmentation with input envelope",
    training={**SEGMENTATION.training, "input_domain": INPUT_DOMAIN},
)

DEEPNESS_PROPS = {
    "model_type": '"Segmentor"',
    "class_names": '{"0": "_background", "1": "building", "2": "water"}',
    "resolution": "50",
    "tile_size": "32",
    "tiles_overlap": "25",
    "standardization_mean": "[0.485, 0.456, 0.406]",
    "standardization_std": "[0.229, 0.224, 0.225]",
    "seg_thresh": "0.5",
}


def conv_weights(in_channels: int, out_channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (out, in, 1, 1) weights and (out,) bias of a model, reproducible from its seed."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(out_channels, in_channels, 1, 1)).astype(np.float32)
    bias = rng.normal(size=out_channels).astype(np.float32)
    return weight, bias


def conv_model(in_channels: int, out_channels: int, seed: int, props: dict[str, str]) -> onnx.ModelProto:
    """A 1x1 Conv graph with input "input" (n, in, h, w) and output "logits" (n, out, h, w)."""
    weight, bias = conv_weights(in_channels, out_channels, seed)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "weight", "bias"], ["logits"], kernel_shape=[1, 1])],
        "tiny_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", in_channels, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", out_channels, "h", "w"])],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sar-seg-tests")
    model.ir_version = IR_VERSION
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def build() -> dict[str, onnx.ModelProto]:
    """File name -> model, for every tiny test model."""
    seg_props = metadata_to_props(SEGMENTATION)
    return {
        # Good: 2 bands (VV, VH) to 5 classes.
        "conv_2to5.onnx": conv_model(2, 5, seed=1, props=seg_props),
        # Graph takes 3 channels but the metadata lists 2 bands.
        "conv_3to5_bad_bands.onnx": conv_model(3, 5, seed=2, props=seg_props),
        # As conv_2to5, with the envelope of its training inputs (input-domain check, pixel-size range).
        "conv_2to5_envelope.onnx": conv_model(2, 5, seed=1, props=metadata_to_props(SEGMENTATION_WITH_ENVELOPE)),
        # Deepness-style metadata: 3 bands (RGB) to 3 classes.
        "deepness_3to3.onnx": conv_model(3, 3, seed=3, props=DEEPNESS_PROPS),
    }


def main() -> None:
    MODELS_DIR.mkdir(exist_ok=True)
    for name, model in build().items():
        onnx.save(model, MODELS_DIR / name)
        print(f"{name}: {(MODELS_DIR / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
