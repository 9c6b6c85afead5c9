"""Tiny ONNX segmentation models for the unit tests: one 3x3 convolution (zero padding, dynamic batch and size),
2 bands -> 5 class logits, with SAR Seg metadata; small enough to run on a whole raster and check against numpy.

Importable as ``from tiny_models import ...`` (``tests`` is on the pytest ``pythonpath``). Needs the onnx package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sar_seg_plugin.models.metadata import ModelMetadata, Normalization, metadata_to_props
from sar_seg_plugin.models.registry import load_model

#: Metadata of the convolution: VV/VH in dB, the bundled model's five classes, 32 px tiles with 8 px overlap.
CONV_META = ModelMetadata(
    task="segmentation",
    name="tiny 3x3 conv",
    input_bands=("VV", "VH"),
    input_units=("dB", "dB"),
    normalization=Normalization(mean=(-12.0, -19.0), std=(5.0, 4.0)),
    tile_size=32,
    tile_overlap=8,
    output_kind="classes",
    class_names=("water", "vegetation", "forest", "built-up", "bare soil"),
    class_colors=("#1f78b4", "#b2df8a", "#33a02c", "#e31a1c", "#d9b26f"),
)


def conv3x3_model(path: Path, meta: ModelMetadata, weight: np.ndarray, bias: np.ndarray):
    """Write the convolution (``weight`` (5, 2, 3, 3), ``bias`` (5,)) with ``meta`` to ``path``; the loaded model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "weight", "bias"], ["logits"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        "conv3x3",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 2, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 5, "h", "w"])],
        initializer=[
            numpy_helper.from_array(weight.astype(np.float32), "weight"),
            numpy_helper.from_array(bias.astype(np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, metadata_to_props(meta))
    onnx.save(model, path)
    return load_model(str(path), "cpu")
