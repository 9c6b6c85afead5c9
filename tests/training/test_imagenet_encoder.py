"""The bundled ImageNet EfficientNet-Lite0 RGB encoder: it loads in the plugin with the encoder contract, its
float16-stored weights give the embeddings of the float32 PyTorch model, and it is what the export script writes."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("onnxruntime")

from sar_seg_plugin.models.metadata import Normalization, metadata_to_props  # noqa: E402
from sar_seg_plugin.models.registry import MODELS_DIR, bundled_models, load_model  # noqa: E402
from training.export import (  # noqa: E402
    FP16_STORAGE_NOTE,
    export_imagenet_encoder,
    export_model,
    imagenet_encoder_metadata,
    store_weights_float16,
)
from training.models.encoder import SarEncoder, efficientnet_lite0_encoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NAME = "imagenet_effnetlite0_encoder_rgb"
PATH = MODELS_DIR / f"{NAME}.onnx"
SCRIPT = "export_imagenet_encoder.py"
MB = 1_000_000
# Measured: min cosine 0.99996, max abs difference 2.2e-3 against torch's float32 model on random uint8 tiles.
MIN_COSINE = 0.9995
MAX_ABS = 1e-2

if not PATH.is_file():
    pytest.skip(f"{PATH.name} is not bundled: run `make imagenet-encoder`", allow_module_level=True)


def _script() -> ModuleType:
    """``scripts/export_imagenet_encoder.py`` as a module (importing it runs nothing)."""
    spec = importlib.util.spec_from_file_location("export_imagenet_encoder", ROOT / "scripts" / SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bundled_encoder_loads_with_the_encoder_contract() -> None:
    assert NAME in bundled_models()
    assert PATH.name == _script().IMAGENET_ENCODER_FILE
    model = load_model(NAME, device="cpu")
    meta = model.metadata
    assert (meta.task, meta.input_bands, meta.input_units) == ("encoder", ("R", "G", "B"), ("uint8",) * 3)
    assert (meta.embedding_size, meta.tile_size, meta.tile_overlap, meta.output_kind) == (1280, 224, 0, "continuous")
    assert (meta.normalization.mean, meta.normalization.std) == ((127.0,) * 3, (128.0,) * 3)
    # The metadata props are exactly those of a float32 export: the storage does not change the contract.
    assert metadata_to_props(meta) == metadata_to_props(imagenet_encoder_metadata())


def test_bundled_encoder_stores_its_weights_as_float16() -> None:
    assert PATH.stat().st_size < 8 * MB
    proto = onnx.load(str(PATH))
    weights = [init for init in proto.graph.initializer if len(init.dims) >= 2]
    assert len(weights) == 49 and all(init.data_type == onnx.TensorProto.FLOAT16 for init in weights)
    assert all(init.data_type == onnx.TensorProto.FLOAT for init in proto.graph.initializer if len(init.dims) < 2)
    assert sum(node.op_type == "Cast" and node.name.endswith("_cast_fp32") for node in proto.graph.node) == 49
    assert FP16_STORAGE_NOTE in proto.graph.doc_string


def test_bundled_encoder_matches_the_pytorch_model() -> None:
    model = load_model(NAME, device="cpu")
    rgb = _script().random_rgb_tiles(n=2, seed=7)  # deterministic uint8 RGB tiles, 224 px
    x = model.metadata.normalization.apply(rgb).astype(np.float32)
    got = model.run(x)
    reference = efficientnet_lite0_encoder(3, pretrained=True).eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (2, 1280)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert _cosine(expected, got).min() >= MIN_COSINE
    assert np.abs(expected - got).max() <= MAX_ABS
    # A smaller, non-square tile runs too (dynamic height and width).
    assert model.run(x[:1, :, :96, :128]).shape == (1, 1280)


def test_bundled_encoder_is_what_the_export_writes(tmp_path: Path) -> None:
    proto = onnx.load(str(PATH))
    if proto.producer_version != torch.__version__.split("+")[0]:
        pytest.skip(f"the file was exported with torch {proto.producer_version}, this is torch {torch.__version__}")
    out = export_imagenet_encoder(tmp_path / PATH.name, fp16_weights=True)
    got = onnx.load(str(out))
    # Same graph and metadata; the weights equal but for rounding: folding batch norms into the convolutions is
    # float32 arithmetic whose rounding depends on the CPU's vector instructions, and a few of the 3.35 M values
    # (1,346 on one machine) then round to the neighbouring float16 (weights) or float32 (biases, where the
    # subtraction of two nearly equal terms leaves rounding at the scale of the terms).
    assert list(got.graph.node) == list(proto.graph.node)
    assert list(got.metadata_props) == list(proto.metadata_props)
    want = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    have = {t.name: onnx.numpy_helper.to_array(t) for t in got.graph.initializer}
    assert have.keys() == want.keys()
    differing = 0
    for name, w in want.items():
        h = have[name]
        assert h.dtype == w.dtype and h.shape == w.shape, name
        if w.dtype == np.float16:  # stored weights: within 2 units in the last place
            ulp = np.spacing(np.maximum(np.abs(w), np.abs(h))).astype(np.float64)
            assert (np.abs(h.astype(np.float64) - w.astype(np.float64)) <= 2 * ulp).all(), name
            differing += int((h != w).sum())
        elif np.issubdtype(w.dtype, np.floating):  # float32 biases, beta - mean * scale: rounding at the tensor's scale
            tolerance = 4 * float(np.spacing(np.abs(w).max()))
            np.testing.assert_allclose(h, w, rtol=0, atol=tolerance, err_msg=name)
            differing += int((h != w).sum())
        else:
            np.testing.assert_array_equal(h, w, err_msg=name)
    assert differing <= 0.001 * sum(w.size for w in want.values())


def test_fp16_weights_option_on_a_small_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SarEncoder(2, embedding_size=16, width=4).eval()
    meta = replace(
        imagenet_encoder_metadata(),
        input_bands=("VV", "VH"),
        input_units=("dB", "dB"),
        normalization=Normalization((0.0, 0.0), (1.0, 1.0)),
        embedding_size=16,
        tile_size=32,
    )
    fp32 = export_model(model, tmp_path / "fp32.onnx", meta, tile=32)
    fp16 = export_model(model, tmp_path / "fp16.onnx", meta, tile=32, fp16_weights=True)
    again = export_model(model, tmp_path / "again.onnx", meta, tile=32, fp16_weights=True)
    assert fp16.read_bytes() == again.read_bytes()  # reproducible
    p32, p16 = onnx.load(str(fp32)), onnx.load(str(fp16))
    weight_bytes = [sum(len(init.raw_data) for init in p.graph.initializer) for p in (p32, p16)]
    assert weight_bytes[1] < 0.55 * weight_bytes[0]
    assert list(p16.metadata_props) == list(p32.metadata_props)
    # Weight tensors are float16 copies of the float32 ones; 1-D tensors are untouched.
    f32 = {init.name: onnx.numpy_helper.to_array(init) for init in p32.graph.initializer}
    for init in p16.graph.initializer:
        values = onnx.numpy_helper.to_array(init)
        if init.name.endswith("_fp16"):
            np.testing.assert_array_equal(values, f32[init.name[: -len("_fp16")]].astype(np.float16))
        else:
            np.testing.assert_array_equal(values, f32[init.name])
    x = np.random.default_rng(1).standard_normal((3, 2, 48, 64)).astype(np.float32)
    a, b = load_model(str(fp32), device="cpu").run(x), load_model(str(fp16), device="cpu").run(x)
    assert _cosine(a, b).min() >= 0.999
    # Converting twice is a no-op: nothing float32 of two or more dimensions is left.
    assert store_weights_float16(p16) == 0
