"""The int8 agreement check: which pixels it counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from training.quantize import agreement  # noqa: E402


def _model(path: Path, op: str) -> Path:
    """A one-node ONNX model (1, 2, H, W) -> (1, 2, H, W): the input itself (Identity) or clipped at 0 (Relu)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, None, None])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], op, [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_agreement_counts_only_the_masked_pixels(tmp_path: Path) -> None:
    """Left half: channels (2, 1), class 0 under both models. Right half: (-2, -1), class 1 as it is, but both
    channels 0 after Relu, so class 0 (argmax takes the first of a tie): the models disagree on the right half."""
    ref, cand = _model(tmp_path / "identity.onnx", "Identity"), _model(tmp_path / "relu.onnx", "Relu")
    tile = np.empty((1, 2, 4, 8), np.float32)
    tile[0, :, :, :4] = np.array([2.0, 1.0])[:, None, None]
    tile[0, :, :, 4:] = np.array([-2.0, -1.0])[:, None, None]
    assert agreement(ref, cand, [tile]) == pytest.approx(0.5)
    left = np.zeros((1, 4, 8), bool)
    left[:, :, :4] = True
    assert agreement(ref, cand, [tile], [left]) == pytest.approx(1.0)
    left[:, :2, 4:] = True  # 16 left pixels agree, 8 right pixels do not
    assert agreement(ref, cand, [tile], [left]) == pytest.approx(16 / 24)
    assert agreement(ref, ref, [tile, tile], [left, ~left]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        agreement(ref, cand, [tile, tile], [left])
