"""sarseg:flood_map through processing.run and qgis_process: the same classes as the core, polygons, the flooded
area per commune and the report, on the training generator's flood series (truth: its own maps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal, ogr
from qgisproc import qgis_process_env, run_algorithm

from sar_seg_plugin.core import flood
from training import synthetic

ALG = "sarseg:flood_map"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("flood_series")
    synthetic.write_series(synthetic.generate_series(size=320, days=10, seed=2, n_communes=6), out)
    manifest = json.loads((out / "manifest.json").read_text())
    labels = [gdal.Open(str(out / f["labels"])).ReadAsArray() for f in manifest["files"]]
    peak = int(np.argmax([(lab == synthetic.WATER).sum() for lab in labels]))
    return {
        "post": str(out / manifest["files"][peak]["sar"]),
        "pre": str(out / manifest["files"][0]["sar"]),
        "communes": str(out / manifest["communes_file"]),
        "truth_flooded": (labels[peak] == synthetic.WATER) & (labels[0] != synthetic.WATER),
    }


def test_processing_run_writes_classes_polygons_communes_and_report(sarseg, series, tmp_path):
    import processing

    out = processing.run(
        ALG,
        {"POST": series["post"], "PRE": series["pre"], "COMMUNES": series["communes"], "NAME_FIELD": "name",
         "OUTPUT": str(tmp_path / "flood.tif"), "OUTPUT_POLYGONS": str(tmp_path / "flood.gpkg"),
         "OUTPUT_COMMUNES": str(tmp_path / "communes.gpkg"), "OUTPUT_HTML": str(tmp_path / "flood.html")},
    )  # fmt: skip
    got = gdal.Open(out["OUTPUT"]).ReadAsArray()
    core = flood.flood_map(series["post"], str(tmp_path / "core.tif"), pre=series["pre"])
    assert np.array_equal(got, gdal.Open(str(tmp_path / "core.tif")).ReadAsArray())
    assert out["FLOODED_KM2"] == pytest.approx(core.area_km2("flooded"))
    assert out["WATER_THRESHOLD_OUT"] == pytest.approx(core.thresholds[0].value)
    assert out["CHANGE_THRESHOLD_OUT"] == pytest.approx(core.thresholds[2].value)
    truth = series["truth_flooded"]
    iou = ((got == 1) & truth).sum() / ((got == 1) | truth).sum()
    assert iou > 0.8
    polygons = ogr.Open(out["OUTPUT_POLYGONS"])  # (the datasource must outlive its layer)
    assert sum(f.GetField("area_km2") for f in polygons.GetLayer(0)) == pytest.approx(out["FLOODED_KM2"], rel=1e-9)
    communes, given = ogr.Open(out["OUTPUT_COMMUNES"]), ogr.Open(series["communes"])
    rows = [(f.GetField("name"), f.GetField("flooded_km2"), f.GetField("flooded_pct")) for f in communes.GetLayer(0)]
    assert len(rows) == 6 and {r[0] for r in rows} == {f.GetField("name") for f in given.GetLayer(0)}
    assert sum(r[1] for r in rows) == pytest.approx(out["FLOODED_KM2"], rel=0.02)  # the communes tile the scene
    assert all(0 <= r[2] <= 100 for r in rows)
    text = (tmp_path / "flood.html").read_text()
    assert f"{core.thresholds[0].value:.2f}" in text and "<svg" in text and rows[0][0] in text
    assert text.count("<svg") == 2 and "<h3>post-event, VV and VH (or HH and HV) averaged in dB (dB)</h3>" in text


def test_without_a_pre_event_image_all_water_is_mapped(sarseg, series, tmp_path):
    import processing

    out = processing.run(ALG, {"POST": series["post"], "OUTPUT": str(tmp_path / "water.tif")})
    ds = gdal.Open(out["OUTPUT"])
    ds.GetMetadata()
    assert ds.GetRasterBand(1).GetCategoryNames()[:2] == ["dry", "water"]
    assert out["CHANGE_THRESHOLD_OUT"] is None
    assert set(np.unique(ds.ReadAsArray())) <= {0, 1, 255}


def test_co_polarised_only_is_the_cores_co_pol_map(sarseg, series, tmp_path):
    import processing

    out = processing.run(
        ALG, {"POST": series["post"], "PRE": series["pre"], "POLARISATIONS": 1, "OUTPUT": str(tmp_path / "co.tif")}
    )
    flood.flood_map(series["post"], str(tmp_path / "core.tif"), pre=series["pre"], polarisations="co-pol")
    flood.flood_map(series["post"], str(tmp_path / "dual.tif"), pre=series["pre"])
    got, core, dual = (gdal.Open(p) for p in (out["OUTPUT"], str(tmp_path / "core.tif"), str(tmp_path / "dual.tif")))
    assert np.array_equal(got.ReadAsArray(), core.ReadAsArray())
    assert not np.array_equal(got.ReadAsArray(), dual.ReadAsArray())  # the default uses VH too
    assert got.GetMetadataItem("SARSEG_FLOOD_BANDS") == "co-pol"
    assert dual.GetMetadataItem("SARSEG_FLOOD_BANDS") == "co+cross"


@pytest.mark.parametrize("with_communes", [False, True])
def test_every_output_queued_for_loading_opens(sarseg, series, tmp_path, with_communes):
    """As the dialog runs it, every output a temporary layer to open after running: each queued layer exists
    (without communes, the communes output is none; a queued name no layer has is an error in the dialog)."""
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingOutputLayerDefinition, QgsProcessingUtils, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())

    def temporary():  # noqa: ANN202
        return QgsProcessingOutputLayerDefinition("TEMPORARY_OUTPUT", QgsProject.instance())

    params = {"POST": series["post"], "PRE": series["pre"], "OUTPUT": temporary(), "OUTPUT_POLYGONS": temporary(),
              "OUTPUT_COMMUNES": temporary()}  # fmt: skip
    if with_communes:
        params["COMMUNES"] = series["communes"]
    out = processing.run(ALG, params, context=context)
    returned = {value.id(): value for value in out.values() if hasattr(value, "id")}  # memory layers handed over
    queued = context.layersToLoadOnCompletion()
    found = [key in returned or QgsProcessingUtils.mapLayerFromString(key, context) is not None for key in queued]
    assert len(queued) == (3 if with_communes else 2) and all(found), list(queued)
    if with_communes:
        assert out["OUTPUT_COMMUNES"].featureCount() == 6 and out["OUTPUT_COMMUNES"].id() in queued
    else:
        assert "OUTPUT_COMMUNES" not in out


def test_polygons_other_than_geopackage_are_refused_and_nothing_is_written(sarseg, series, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="GeoPackage"):
        processing.run(ALG, {"POST": series["post"], "OUTPUT": str(tmp_path / "f.tif"),
                             "OUTPUT_POLYGONS": str(tmp_path / "f.shp")})  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_qgis_process_maps_the_flood(series, tmp_path):
    env = qgis_process_env(tmp_path / "profile")
    res = run_algorithm(
        ALG, {"POST": series["post"], "PRE": series["pre"], "OUTPUT": str(tmp_path / "f.tif"),
              "OUTPUT_POLYGONS": str(tmp_path / "f.gpkg")}, env,
    )["results"]  # fmt: skip
    core = flood.flood_map(series["post"], str(tmp_path / "core.tif"), pre=series["pre"])
    assert res["FLOODED_KM2"] == pytest.approx(core.area_km2("flooded"))
    assert np.array_equal(
        gdal.Open(str(tmp_path / "f.tif")).ReadAsArray(), gdal.Open(str(tmp_path / "core.tif")).ReadAsArray()
    )


def test_the_models_opinion_only_adds_flood(sarseg, series, tmp_path):
    """With the segmentation model as a third opinion (two of three), every pixel flooded without it stays flooded
    (dark and darker is two already) and the log says the model was used."""
    import processing
    from qgis.core import QgsProcessingFeedback

    class Log(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def pushInfo(self, info: str) -> None:  # noqa: N802 - QGIS API name
            self.lines.append(info)

    base = {"POST": series["post"], "PRE": series["pre"]}
    plain = processing.run(ALG, {**base, "OUTPUT": str(tmp_path / "a.tif")})
    log = Log()
    voted = processing.run(ALG, {**base, "MODEL_OPINION": True, "OUTPUT": str(tmp_path / "b.tif")}, feedback=log)
    a, b = (gdal.Open(p).ReadAsArray() for p in (plain["OUTPUT"], voted["OUTPUT"]))
    assert ((a == 1) & (b != 1)).sum() <= 0.002 * (a == 1).sum()  # only the minimum mapping unit may move a pixel
    assert any("third opinion" in line for line in log.lines)
    assert any(line.startswith("Model check: ") for line in log.lines)  # the int8 copy, checked as in segment
    truth = series["truth_flooded"]
    assert ((b == 1) & truth).sum() / ((b == 1) | truth).sum() > 0.8


def test_flooded_area_per_commune_against_the_generators_maps(sarseg, series, tmp_path):
    """Flooded km² of every commune against the same count on the generator's own flood (its maps burnt into a
    class raster on the same grid): within 10 % where a commune has more than 0.05 km² flooded."""
    import processing

    out = processing.run(
        ALG,
        {"POST": series["post"], "PRE": series["pre"], "COMMUNES": series["communes"],
         "OUTPUT": str(tmp_path / "flood.tif"), "OUTPUT_COMMUNES": str(tmp_path / "communes.gpkg")},
    )  # fmt: skip
    ds = gdal.Open(out["OUTPUT"])
    truth = gdal.GetDriverByName("GTiff").CreateCopy(str(tmp_path / "truth.tif"), ds)
    truth.GetRasterBand(1).WriteArray(np.where(series["truth_flooded"], flood.FLOODED, flood.DRY).astype(np.uint8))
    truth = None
    given = ogr.Open(series["communes"])
    wkbs = [bytes(f.GetGeometryRef().ExportToWkb()) for f in given.GetLayer(0)]
    want = flood.flood_per_commune(str(tmp_path / "truth.tif"), wkbs).flooded_km2
    got_ds = ogr.Open(out["OUTPUT_COMMUNES"])
    got = np.array([f.GetField("flooded_km2") for f in got_ds.GetLayer(0)])
    big = want > 0.05
    assert big.sum() >= 2
    assert np.all(np.abs(got[big] / want[big] - 1) <= 0.10), (got, want)


def test_loaded_outputs_are_styled(sarseg, series, tmp_path):
    """runAndLoadResults: the classes paletted with their names, the communes graduated by flooded_pct."""
    import processing
    from qgis.core import QgsGraduatedSymbolRenderer, QgsPalettedRasterRenderer, QgsProject

    project = QgsProject.instance()
    project.clear()
    out = processing.runAndLoadResults(
        ALG,
        {"POST": series["post"], "PRE": series["pre"], "COMMUNES": series["communes"],
         "OUTPUT": str(tmp_path / "flood.tif"), "OUTPUT_COMMUNES": str(tmp_path / "communes.gpkg")},
    )  # fmt: skip
    layers = {layer.source().split("|")[0]: layer for layer in project.mapLayers().values()}
    raster = layers[out["OUTPUT"]]
    assert isinstance(raster.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in raster.renderer().classes()] == list(flood.CLASS_NAMES)
    communes = layers[str(tmp_path / "communes.gpkg")]
    renderer = communes.renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer) and renderer.classAttribute() == "flooded_pct"
    project.clear()


def test_an_unwritable_output_folder_is_refused_before_any_work(sarseg, series, readonly_dir, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=str(readonly_dir)):
        processing.run(ALG, {"POST": series["post"], "PRE": series["pre"], "OUTPUT": str(tmp_path / "f.tif"),
                             "OUTPUT_POLYGONS": str(readonly_dir / "f.gpkg")})  # fmt: skip
    assert list(tmp_path.glob("f.*")) == [] and list(tmp_path.glob(".*")) == []
