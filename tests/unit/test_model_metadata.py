"""The model-file contract: metadata round trip and validation, Deepness mapping, loading tiny ONNX models."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.models.metadata import (
    MetadataFieldError,
    ModelMetadata,
    Normalization,
    metadata_from_props,
    metadata_to_props,
)
from sar_seg_plugin.models.registry import ONNXRUNTIME_MISSING, bundled_models, load_model, model_task, resolve_model

DATA = Path(__file__).resolve().parents[1] / "data"
MODELS = DATA / "models"

SEGMENTATION = ModelMetadata(
    task="segmentation",
    name="land cover",
    description="U-Net base 16",
    input_bands=("VV", "VH"),
    input_units=("dB", "dB"),
    normalization=Normalization(mean=(-12.5, -19.25), std=(4.5, 3.75)),
    tile_size=256,
    tile_overlap=32,
    output_kind="classes",
    class_names=("water", "cropland", "forest", "urban", "bare soil"),
    class_colors=("#1f78b4", "#ffff99", "#33a02c", "#e31a1c", "#B15928"),
    pixel_size_m=10.0,
    training={"data": "synthetic scenes, seed 0", "metrics": {"miou": 0.81, "per_class_iou": [0.9, 0.7]}},
)
FORECAST = dataclasses.replace(
    SEGMENTATION,
    task="forecast",
    name="3-day forecast",
    input_units=("linear", "linear"),
    normalization=Normalization(scale=100.0),
    sequence_length=4,
    horizons=(1, 2, 3),
    pixel_size_m=None,
)
ENCODER = dataclasses.replace(
    SEGMENTATION,
    task="encoder",
    name="commune encoder",
    output_kind="continuous",
    class_names=(),
    class_colors=(),
    embedding_size=64,
    normalization=Normalization(),
)


def props_with(**changes: object) -> dict[str, str]:
    """The segmentation example's props with some fields replaced (JSON-encoded) or removed (None -> drop)."""
    props = metadata_to_props(SEGMENTATION)
    for name, value in changes.items():
        key = "sarseg." + name
        if value is None:
            del props[key]
        else:
            props[key] = json.dumps(value)
    return props


def field_error(props: dict[str, str]) -> MetadataFieldError:
    with pytest.raises(MetadataFieldError) as info:
        metadata_from_props(props, "model.onnx")
    assert str(info.value).startswith("model.onnx: ")
    return info.value


# --- Round trip ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("meta", [SEGMENTATION, FORECAST, ENCODER], ids=["segmentation", "forecast", "encoder"])
def test_round_trip(meta):
    props = metadata_to_props(meta)
    assert all(k.startswith("sarseg.") and isinstance(v, str) for k, v in props.items())
    assert json.loads(props["sarseg.task"]) == meta.task
    assert metadata_from_props(props) == meta


def test_other_tools_props_are_ignored():
    props = {**metadata_to_props(SEGMENTATION), "author": "someone", "onnx_version": "x"}
    assert metadata_from_props(props) == SEGMENTATION


def test_lists_become_tuples():
    meta = dataclasses.replace(SEGMENTATION, input_bands=["VV", "VH"], horizons=[])
    assert meta.input_bands == ("VV", "VH") and meta.horizons == ()


# --- Validation: each error names the field and what was expected ---------------------------------------------


def test_missing_field():
    err = field_error(props_with(tile_size=None))
    assert err.field == "tile_size"
    assert "'sarseg.tile_size'" in str(err) and "missing" in str(err)


def test_no_metadata_at_all():
    with pytest.raises(SarSegError, match=r"model.onnx: the model has no SAR Seg metadata \('sarseg\.\*' keys\)"):
        metadata_from_props({"author": "x"}, "model.onnx")


def test_not_json():
    err = field_error({**props_with(), "sarseg.tile_size": "256 px"})
    assert err.field == "tile_size" and "a JSON value" in str(err)


def test_wrong_type():
    err = field_error(props_with(tile_size="256"))
    assert err.field == "tile_size" and "expected an integer, got '256'" in str(err)


def test_wrong_type_list():
    err = field_error(props_with(input_bands="VV"))
    assert err.field == "input_bands" and "a list" in str(err)


def test_unknown_task():
    err = field_error(props_with(task="detection"))
    assert err.field == "task"
    assert "'sarseg.task': expected one of 'segmentation', 'forecast', 'encoder', got 'detection'" in str(err)


def test_newer_format_version():
    # Checked before any other field: a newer format may rename or add fields.
    err = field_error(props_with(format_version=7, tile_size=None, brand_new_field=1))
    assert err.field == "format_version"
    assert "format version 7 is newer than this plugin supports (1); update SAR Seg" in str(err)


def test_missing_format_version():
    err = field_error(props_with(format_version=None))
    assert err.field == "format_version" and "missing" in str(err)


def test_unknown_field_in_current_version():
    err = field_error(props_with(tile_sise=256))
    assert "'sarseg.tile_sise'" in str(err)


def test_class_names_and_colours_lengths_differ():
    err = field_error(props_with(class_colors=["#1f78b4", "#ffff99"]))
    assert err.field == "class_colors"
    assert "'sarseg.class_colors': expected one colour per class name (5 colours)" in str(err)


def test_bad_colour_string():
    err = field_error(props_with(class_colors=["#1f78b4", "#ffff99", "green", "#e31a1c", "#b15928"]))
    assert err.field == "class_colors" and "hex colours" in str(err) and "'green'" in str(err)


def test_band_unit_count_mismatch():
    err = field_error(props_with(input_units=["dB"]))
    assert err.field == "input_units" and "one unit per input band (2: VV, VH)" in str(err)


def test_unknown_unit():
    err = field_error(props_with(input_units=["dB", "DN"]))
    assert err.field == "input_units" and "'DN'" in str(err)


def test_normalization_length_mismatch():
    err = field_error(props_with(normalization={"mean": [0.0], "std": [1.0], "scale": None}))
    assert err.field == "normalization" and "one mean and std per input band (2)" in str(err)


@pytest.mark.parametrize("tile", [500, 0, -16])
def test_tile_size_not_positive_multiple_of_16(tile):
    err = field_error(props_with(tile_size=tile))
    assert err.field == "tile_size" and "a positive multiple of 16" in str(err) and f"got {tile}" in str(err)


def test_overlap_not_smaller_than_tile():
    err = field_error(props_with(tile_overlap=256))
    assert err.field == "tile_overlap" and "less than the tile size (256)" in str(err)


def test_forecast_without_sequence_length():
    props = metadata_to_props(FORECAST)
    props["sarseg.sequence_length"] = "null"
    err = field_error(props)
    assert err.field == "sequence_length" and "'sarseg.sequence_length'" in str(err)


def test_forecast_without_horizons():
    props = metadata_to_props(FORECAST)
    props["sarseg.horizons"] = "[]"
    err = field_error(props)
    assert err.field == "horizons" and "forecast horizons in days" in str(err)


def test_encoder_without_embedding_size():
    props = metadata_to_props(ENCODER)
    del props["sarseg.embedding_size"]
    err = field_error(props)
    assert err.field == "embedding_size"


def test_classes_without_class_names():
    err = field_error(props_with(class_names=[], class_colors=[]))
    assert err.field == "class_names"


def test_training_side_refuses_bad_metadata_too():
    with pytest.raises(MetadataFieldError, match="'sarseg.tile_size'"):
        dataclasses.replace(SEGMENTATION, tile_size=100)


# --- Normalisation ---------------------------------------------------------------------------------------------


def test_normalization_apply_matches_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(-15, 5, size=(2, 8, 9))
    norm = Normalization(mean=(-12.5, -19.25), std=(4.5, 3.75), scale=2.0)
    got = norm.apply(x)
    expected = np.stack([(x[0] * 2.0 + 12.5) / 4.5, (x[1] * 2.0 + 19.25) / 3.75])
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.apply(x[None])[0], got)  # a batch normalises the same
    assert np.array_equal(Normalization().apply(x), x.astype(np.float32))


def test_normalization_refuses_wrong_band_count():
    with pytest.raises(SarSegError, match="expects 2 bands"):
        Normalization(mean=(0.0, 0.0), std=(1.0, 1.0)).apply(np.zeros((3, 4, 4)))


# --- Deepness --------------------------------------------------------------------------------------------------

DEEPNESS = {
    "model_type": '"Segmentor"',
    "class_names": '{"0": "_background", "1": "building", "2": "woodland", "3": "water", "4": "road"}',
    "resolution": "50",
    "tile_size": "512",
    "tiles_overlap": "15",
    "standardization_mean": "[0.485, 0.456, 0.406]",
    "standardization_std": "[0.229, 0.224, 0.225]",
    "seg_thresh": "0.5",
    "seg_small_segment": "7",
}


def test_deepness_mapping():
    meta = metadata_from_props(DEEPNESS, "/zoo/deeplabv3_landcover_4c.onnx")
    assert meta.task == "segmentation" and meta.output_kind == "classes"
    assert meta.name == "deeplabv3_landcover_4c"
    assert meta.class_names == ("_background", "building", "woodland", "water", "road")
    assert len(meta.class_colors) == 5 and len(set(meta.class_colors)) == 5
    assert meta.pixel_size_m == pytest.approx(0.5)  # 50 cm/px
    assert meta.tile_size == 512 and meta.tile_overlap == round(512 * 0.15)
    assert meta.input_bands == ("band 1", "band 2", "band 3") and meta.input_units == ("uint8",) * 3
    assert meta.normalization == Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255)
    assert meta.training["deepness"]["seg_small_segment"] == 7
    # Deepness pre-processing: x / 255, then (x - mean) / std.
    x = np.full((3, 2, 2), 255.0)
    np.testing.assert_allclose(
        meta.normalization.apply(x)[:, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], rtol=1e-5
    )
    # The mapped metadata is ordinary SAR Seg metadata: it survives the native round trip.
    assert metadata_from_props(metadata_to_props(meta)) == meta


def test_deepness_python_literal_class_names_and_graph_defaults():
    props = {"model_type": "'segmentor'", "class_names": "{0: 'background', 1: 'field'}"}
    meta = metadata_from_props(props, input_channels=4, input_size=256)
    assert meta.class_names == ("background", "field")
    assert meta.input_bands == ("band 1", "band 2", "band 3", "band 4") and meta.tile_size == 256
    assert meta.pixel_size_m is None


def test_deepness_unsupported_model_type():
    with pytest.raises(SarSegError, match="Deepness metadata 'model_type': expected one of Segmentor, Regressor"):
        metadata_from_props({**DEEPNESS, "model_type": '"Detector"'})


def test_deepness_bad_tile_size_names_deepness_key():
    with pytest.raises(MetadataFieldError, match="Deepness metadata 'tile_size': expected a positive multiple of 16"):
        metadata_from_props({**DEEPNESS, "tile_size": "500"})


# --- Registry and onnxruntime ----------------------------------------------------------------------------------


def test_load_model_runs_like_numpy_conv():
    tiny = _load_script()
    model = load_model(str(MODELS / "conv_2to5.onnx"), device="cpu")
    assert model.metadata == tiny.SEGMENTATION
    assert model.device_used == "cpu"
    assert model.input_names == ["input"] and model.output_names == ["logits"]
    x = np.random.default_rng(1).normal(-15, 5, size=(2, 24, 40))
    batch = model.metadata.normalization.apply(x)[None]
    weight, bias = tiny.conv_weights(2, 5, seed=1)
    expected = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0], batch) + bias[None, :, None, None]
    got = model.run(batch)
    assert got.shape == (1, 5, 24, 40)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_load_model_auto_device_reports_provider():
    import onnxruntime

    model = load_model(str(MODELS / "conv_2to5.onnx"), device="auto")
    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert model.device_used == ("cuda" if has_cuda else "cpu")
    assert load_model(str(MODELS / "conv_2to5.onnx"), device="cuda").device_used == model.device_used


def test_load_model_unknown_device():
    with pytest.raises(SarSegError, match="unknown device 'gpu'"):
        load_model(str(MODELS / "conv_2to5.onnx"), device="gpu")


def test_load_deepness_model():
    model = load_model(str(MODELS / "deepness_3to3.onnx"))
    assert model.metadata.class_names == ("_background", "building", "water")
    assert model.metadata.tile_size == 32 and model.metadata.tile_overlap == 8


def test_graph_metadata_mismatch_refused():
    with pytest.raises(SarSegError, match="graph takes 3 input channels but its metadata lists 2 input bands"):
        load_model(str(MODELS / "conv_3to5_bad_bands.onnx"))


def test_text_file_renamed_onnx_refused(tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_text("this is not a model\n")
    with pytest.raises(SarSegError, match=r"model.onnx is not an ONNX model file or is corrupt"):
        load_model(str(fake))


def test_missing_onnxruntime_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(SarSegError) as info:
        load_model(str(MODELS / "conv_2to5.onnx"))
    assert str(info.value) == ONNXRUNTIME_MISSING
    assert "install onnxruntime, e.g. with the QPIP plugin or `python3 -m pip install --user onnxruntime`" in str(
        info.value
    )


def test_resolve_model():
    assert bundled_models() == {p.stem: p for p in bundled_models().values()}
    assert resolve_model(str(MODELS / "conv_2to5.onnx")) == MODELS / "conv_2to5.onnx"
    with pytest.raises(SarSegError, match="unknown model 'landcover_unet'.*bundled model name") as info:
        resolve_model("landcover_unet")
    for name in bundled_models():
        assert name in str(info.value)
    with pytest.raises(SarSegError, match="does not exist"):
        resolve_model(str(MODELS / "missing.onnx"))


def _load_script():
    spec = importlib.util.spec_from_file_location("make_tiny_models", DATA / "make_tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_tiny_models_match_their_script():
    pytest.importorskip("onnx")
    for name, model in _load_script().build().items():
        assert (MODELS / name).read_bytes() == model.SerializeToString(), (
            f"rerun tests/data/make_tiny_models.py ({name})"
        )


def test_model_task_is_read_from_the_metadata(tmp_path):
    """Tools list models by the task their metadata records, not by their file names."""
    pytest.importorskip("onnxruntime")
    assert model_task(MODELS / "conv_2to5.onnx") == "segmentation"
    assert model_task(MODELS / "deepness_3to3.onnx") == "segmentation"  # Deepness "Segmentor"
    renamed = tmp_path / "my_encoder_v2.onnx"  # a name that says "encoder" does not make an encoder
    renamed.write_bytes((MODELS / "conv_2to5.onnx").read_bytes())
    assert model_task(renamed) == "segmentation"
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert model_task(broken) == ""
    assert model_task(tmp_path / "missing.onnx") == ""
    by_task = {task: set(bundled_models(task)) for task in ("segmentation", "encoder")}
    assert by_task["segmentation"] and by_task["encoder"]
    assert not by_task["segmentation"] & by_task["encoder"]
    assert by_task["segmentation"] | by_task["encoder"] == set(bundled_models())
