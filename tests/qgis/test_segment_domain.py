"""sarseg:segment through processing.run with a model that records its training envelope: an input inside it runs
without warnings; inputs outside it (values 15 dB low, single-look speckle on the raster's own grid) give warnings
in the feedback and in the outputs' metadata, and are still segmented; single-look input is averaged 2 x 2 by
default, and is then inside."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from rasters import bilinear_classes

from training import synthetic

pytest.importorskip("onnxruntime")

ENVELOPE_MODEL = Path(__file__).resolve().parents[1] / "data" / "models" / "conv_2to5_envelope.onnx"
SAR = "sar_20260301.tif"


@pytest.fixture(autouse=True)
def collect_garbage():
    """Free GDAL datasets held by exception tracebacks while GDAL is still up (QGIS exits at session end)."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def inputs(sample_dir, tmp_path_factory):
    """The sample scene (10 m, 4.4 looks), a copy 15 dB lower, and the same scene with single-look speckle."""
    folder = tmp_path_factory.mktemp("domain_inputs")
    sar = str(sample_dir / SAR)
    low = str(folder / "low.tif")
    gdal.Translate(low, sar)
    ds = gdal.Open(low, gdal.GA_Update)
    for b in (1, 2):
        band = ds.GetRasterBand(b)
        band.WriteArray(band.ReadAsArray() * np.float32(10**-1.5))
    ds = band = None
    single = folder / "single_look"
    synthetic.write_series(synthetic.generate_series(size=160, days=2, seed=7, n_communes=4, looks=1.0), single)
    return {"inside": sar, "low": low, "single_look": str(single / SAR)}


def domain_warnings(feedback) -> list[str]:  # noqa: ANN001
    """The run's warnings but the one that says the (tiny, untrained) test model is unsure of most pixels."""
    return [w for w in feedback.warnings if not w.startswith("The model is unsure on ")]


def segment(sarseg, feedback, src: str, folder: Path, **params) -> dict[str, dict[str, str]]:  # noqa: ANN001, ANN003
    """Run sarseg:segment with the envelope model, logging to ``feedback``; each output's GDAL metadata."""
    folder.mkdir()
    outputs = {"OUTPUT": str(folder / "classes.tif"), "OUTPUT_CONFIDENCE": str(folder / "confidence.tif")}
    result = sarseg.run(
        "sarseg:segment",
        {"INPUT": src, "MODEL_FILE": str(ENVELOPE_MODEL), "DEVICE": 1, **outputs, **params},
        feedback=feedback,
    )
    metadata = {}
    for key, path in outputs.items():
        assert result[key] == path
        ds = gdal.Open(path)
        metadata[key] = ds.GetMetadata()
        ds = None
    return metadata


def test_input_inside_the_envelope_gives_no_warning(sarseg, inputs, tmp_path, feedback):
    metadata = segment(sarseg, feedback, inputs["inside"], tmp_path / "inside")
    assert domain_warnings(feedback) == []
    summary = [line for line in feedback.lines if line.startswith("Input domain:")]
    assert len(summary) == 1 and summary[0].endswith("inside the model's training envelope"), feedback.lines
    for md in metadata.values():
        assert md["SARSEG_INPUT_DOMAIN"] == "inside" and "SARSEG_DOMAIN_WARNINGS" not in md
        assert 3.5 <= float(md["SARSEG_INPUT_ENL"]) <= 5.3  # L = 4.4


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("low", ["The VV median is -25.", "The VH median is -31."]),
        ("single_look", ["Input ENL about "]),
    ],
)
def test_input_outside_the_envelope_is_warned_of_in_the_log_and_the_outputs(
    sarseg, inputs, tmp_path, feedback, name, expected
):
    # single look: on its own grid (by default it is averaged 2 x 2 first, see the test below)
    params = {"RESAMPLE": False} if name == "single_look" else {}
    metadata = segment(sarseg, feedback, inputs[name], tmp_path / name, **params)
    for start in expected:
        assert sum(w.startswith(start) for w in domain_warnings(feedback)) == 1, domain_warnings(feedback)
    if name == "low":
        assert len(domain_warnings(feedback)) == 2 and all("'Input units'" in w for w in domain_warnings(feedback))
    else:
        enl = next(w for w in domain_warnings(feedback) if w.startswith("Input ENL about "))
        assert "(single look?)" in enl and "sarseg:speckle_filter" in enl
    count = len(domain_warnings(feedback))
    summary = [line for line in feedback.lines if line.startswith("Input domain:")]
    assert len(summary) == 1, feedback.lines
    assert summary[0].endswith(f"outside the model's training envelope ({count} warning{'s' * (count > 1)})")
    for md in metadata.values():
        assert md["SARSEG_INPUT_DOMAIN"] == "outside"
        assert md["SARSEG_DOMAIN_WARNINGS"] == " | ".join(domain_warnings(feedback))


def test_single_look_input_is_averaged_first_and_then_inside(sarseg, inputs, tmp_path, feedback):
    metadata = segment(sarseg, feedback, inputs["single_look"], tmp_path / "averaged")
    assert any(line.startswith("Resampling:") and "single-look" in line for line in feedback.lines), feedback.lines
    assert not any(w.startswith("Input ENL about ") for w in domain_warnings(feedback)), domain_warnings(feedback)
    for md in metadata.values():
        assert md["SARSEG_INPUT_DOMAIN"] == "inside"
        assert 2.0 < float(md["SARSEG_INPUT_ENL"]) < 5.0  # about four single looks averaged


@pytest.fixture(scope="module")
def altered(sample_dir, tmp_path_factory):
    """The sample scene through a 5 x 5 median filter, and averaged to 20 m then upsampled to 10 m by nearest
    neighbour (as a reprojection with '-r near' onto a 10 m grid does)."""
    from sar_seg_plugin.core.speckle import apply_filter

    folder = tmp_path_factory.mktemp("altered_inputs")
    median = str(folder / "median.tif")
    gdal.Translate(median, str(sample_dir / SAR))
    ds = gdal.Open(median, gdal.GA_Update)
    for b in (1, 2):
        band = ds.GetRasterBand(b)
        data = band.ReadAsArray()
        band.WriteArray(np.nan_to_num(apply_filter("median", data, data > 0, window=5)))
    ds = band = None
    coarse, nearest = str(folder / "coarse.tif"), str(folder / "nearest.tif")
    gdal.Warp(coarse, str(sample_dir / SAR), xRes=20, yRes=20, resampleAlg="average")
    gdal.Warp(nearest, coarse, xRes=10, yRes=10, resampleAlg="near")
    return {"median": median, "coarse": coarse, "nearest": nearest}


def test_median_filtered_input_is_warned_of(sarseg, altered, tmp_path, feedback):
    metadata = segment(sarseg, feedback, altered["median"], tmp_path / "median")
    warned = [w for w in domain_warnings(feedback) if "looks median-filtered" in w]
    assert len(warned) == 1 and "Refined Lee (sarseg:speckle_filter)" in warned[0], domain_warnings(feedback)
    share = float(warned[0].split("%", 1)[0])
    assert 12 <= share <= 25  # a 5 x 5 median: about a sixth of neighbour pairs share a value
    for md in metadata.values():
        assert md["SARSEG_INPUT_DOMAIN"] == "outside" and warned[0] in md["SARSEG_DOMAIN_WARNINGS"]


def test_nearest_upsampled_input_is_segmented_at_the_pixel_size_it_was_made_at(sarseg, altered, tmp_path, feedback):
    coarse_probabilities = tmp_path / "coarse_probabilities.tif"
    segment(sarseg, feedback, altered["coarse"], tmp_path / "coarse", OUTPUT_PROBABILITIES=str(coarse_probabilities))
    metadata = segment(sarseg, feedback, altered["nearest"], tmp_path / "nearest")
    assert any(line.startswith("Resampling: the raster's values repeat in 2 x 2 blocks") for line in feedback.lines)
    assert metadata["OUTPUT"]["SARSEG_INPUT_DOMAIN"] == "inside"
    got = gdal.Open(str(tmp_path / "nearest" / "classes.tif")).ReadAsArray()
    assert got.shape == (160, 160)
    # the 20 m raster's probabilities, interpolated onto the 10 m grid: their most probable classes
    expected = bilinear_classes(coarse_probabilities, 2)
    ok = (got != 255) & (expected != 255)
    assert ok.mean() > 0.9 and (got[ok] == expected[ok]).mean() >= 0.995
