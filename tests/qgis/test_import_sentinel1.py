"""sarseg:import_sentinel1 through processing.run and qgis_process, on a product built from a real GRD's metadata
(scripts/s1_product.py), checked against the core import and the known look-up functions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import s1_product
from osgeo import gdal
from qgisproc import qgis_process_env, run_algorithm
from rasters import write_raster

from sar_seg_plugin.core import sentinel1 as s1

pytestmark = pytest.mark.skipif(not s1_product.available(), reason="Sentinel-1 test metadata missing: run make setup")
ALG = "sarseg:import_sentinel1"
SCALE = 20


@pytest.fixture(scope="module")
def product_zip(tmp_path_factory):
    return s1_product.write_product(tmp_path_factory.mktemp("s1zip"), SCALE, zip_it=True)


def _aoi_extent(product_zip) -> str:
    gcps = gdal.Open(s1.open_product(str(product_zip)).manifest).GetGCPs()
    lon, lat = s1.footprint_centre(gcps)
    return f"{lon - 0.15},{lon + 0.15},{lat - 0.1},{lat + 0.1} [EPSG:4326]"


def test_processing_run_writes_dated_db_backscatter_like_the_core(sarseg, product_zip, tmp_path):
    import processing

    out = processing.run(
        ALG,
        {"INPUT": str(product_zip), "OUTPUT_SCALE": 1, "PIXEL_SIZE": 100, "EXTENT": _aoi_extent(product_zip),
         "OUTPUT_FOLDER": str(tmp_path / "out")},
    )  # fmt: skip
    path = out["OUTPUT"]
    assert path.endswith("S1B_IW_20210401T052623_VVVH_sigma0_db.tif")
    from sar_seg_plugin.core.timeseries import date_from_name

    assert date_from_name(path) == dt.date(2021, 4, 1)
    ds = gdal.Open(path)
    assert [ds.GetRasterBand(b).GetDescription() for b in (1, 2)] == ["VV", "VH"]
    assert ds.GetRasterBand(1).GetUnitType() == "dB"
    assert ds.GetSpatialRef().GetAuthorityCode(None) == "32632"
    got = ds.ReadAsArray()
    # the same import through the core, in linear power: the algorithm's dB is 10 log10 of it
    ref = tmp_path / "ref.tif"
    srs_wkt = "POLYGON(({0} {2}, {1} {2}, {1} {3}, {0} {3}, {0} {2}))".format(
        *[float(v) for v in _aoi_extent(product_zip).split(" ")[0].split(",")]
    )
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    s1.import_product(s1.open_product(str(product_zip)), str(ref), pixel_size=100, aoi=(srs_wkt, srs))
    lin = gdal.Open(str(ref)).ReadAsArray()
    assert lin.shape == got.shape
    ok = np.isfinite(lin)
    assert ok.mean() > 0.95
    np.testing.assert_allclose(got[ok], 10 * np.log10(lin[ok]), atol=1e-4)
    # and the values are the product's backscatter: fields of -22..-2 dB in VV, 6 dB darker in VH
    assert np.nanpercentile(got[0], 1) > -23.5 and np.nanpercentile(got[0], 99) < -0.5
    assert np.nanmedian(got[0]) - np.nanmedian(got[1]) == pytest.approx(6.0, abs=0.5)


def test_the_loaded_layer_gets_the_acquisition_day(sarseg, product_zip, tmp_path):
    from qgis.core import QgsRasterLayer

    from sar_seg_plugin.processing.import_sentinel1 import AcquisitionDayStyle

    path = tmp_path / "x.tif"
    s1.import_product(s1.open_product(str(product_zip)), str(path), polarisations=["VV"], pixel_size=1000)
    layer = QgsRasterLayer(str(path), "x")
    AcquisitionDayStyle(dt.date(2021, 4, 1)).postProcessLayer(layer, None, None)
    props = layer.temporalProperties()
    assert props.isActive()
    rng = props.fixedTemporalRange()
    assert rng.begin().date().toPyDate() == dt.date(2021, 4, 1)
    assert rng.end().date().toPyDate() == dt.date(2021, 4, 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"POLARISATIONS": [2]}, "no HH measurement"),
        ({"EXTENT": "100,101,10,11 [EPSG:4326]"}, "outside the footprint"),
        ({"CRS": "EPSG:4326"}, "geographic"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(sarseg, product_zip, tmp_path, params, message):
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "out"
    with pytest.raises(QgsProcessingException, match=message):
        processing.run(ALG, {"INPUT": str(product_zip), "OUTPUT_FOLDER": str(out), **params})
    assert not out.exists() or list(out.iterdir()) == []


def test_an_slc_is_refused(sarseg, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    slc = s1_product.SOURCE.parent / "S1B_IW_SLC__1SDV_20210401T052622_20210401T052650_026269_032297_EFA4.SAFE"
    with pytest.raises(QgsProcessingException, match="SLC product"):
        processing.run(ALG, {"INPUT": str(slc / "manifest.safe"), "OUTPUT_FOLDER": str(tmp_path)})
    assert list(tmp_path.iterdir()) == []


def test_qgis_process_imports_an_area_of_interest_layer(product_zip, tmp_path):
    """Headless, with a polygon layer as the area of interest: the output covers the polygon's extent."""
    gcps = gdal.Open(s1.open_product(str(product_zip)).manifest).GetGCPs()
    lon, lat = s1.footprint_centre(gcps)
    gpkg = s1_product.area_of_interest(tmp_path / "aoi.gpkg", (lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05))
    env = qgis_process_env(tmp_path / "profile")
    out = run_algorithm(
        ALG,
        {"INPUT": str(product_zip), "AOI": str(gpkg), "PIXEL_SIZE": 50, "POLARISATIONS": 0,
         "OUTPUT_FOLDER": str(tmp_path / "out")},
        env,
    )  # fmt: skip
    path = out["results"]["OUTPUT"]
    r = gdal.Open(path)
    assert r.RasterCount == 1 and r.GetRasterBand(1).GetDescription() == "VV"
    # 0.1 degree: about 7.5 km east-west and 11.1 km north-south at 47 N, in 50 m pixels
    assert 140 <= r.RasterXSize <= 165 and 215 <= r.RasterYSize <= 235
    assert np.isfinite(r.ReadAsArray()).mean() > 0.98
    assert r.GetMetadata()["ACQUISITION_DATE"] == "2021-04-01"


def test_multitemporal_filter_through_processing(sarseg, tmp_path):
    """Three dates through sarseg:multitemporal_speckle_filter: outputs named after the inputs, the ENL of a
    homogeneous area about three times the input's."""
    import processing

    from sar_seg_plugin.core.speckle import enl

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        data = (0.05 * rng.gamma(4.4, 1 / 4.4, (2, 200, 200))).astype(np.float32)
        paths.append(str(write_raster(tmp_path / f"s1_2021040{i + 1}.tif", data, descriptions=["VV", "VH"],
                                      units=["linear", "linear"])))  # fmt: skip
    out = processing.run(
        "sarseg:multitemporal_speckle_filter", {"INPUTS": paths, "WINDOW": 9, "OUTPUT_FOLDER": str(tmp_path / "f")}
    )
    names = [p.split("/")[-1] for p in out["OUTPUT_LAYERS"]]
    assert names == ["s1_20210401_mtf.tif", "s1_20210402_mtf.tif", "s1_20210403_mtf.tif"]
    before = enl(gdal.Open(paths[0]).ReadAsArray()[0, 10:-10, 10:-10])
    after = enl(gdal.Open(out["OUTPUT_LAYERS"][0]).ReadAsArray()[0, 10:-10, 10:-10])
    expected = 1.0 / (1.0 / (3 * 4.4) + 1.0 / (4.4 * 81))  # N dates, less the window's own variance
    assert before == pytest.approx(4.4, rel=0.06) and after == pytest.approx(expected, rel=0.12)


def test_the_shipped_workflow_equals_its_steps_run_one_by_one(sarseg, tmp_path):
    """sarseg's "Sentinel-1 product to land cover" model against import, Lee 7x7, dB and segment run by hand."""
    import processing
    from qgis.core import QgsApplication

    product = s1_product.write_product(tmp_path / "p", SCALE)
    model_id = "sarseg:Sentinel-1 product to land cover"
    assert QgsApplication.processingRegistry().algorithmById(model_id).group() == "Workflows"
    gcps = gdal.Open(str(product / "manifest.safe")).GetGCPs()
    lon, lat = s1.footprint_centre(gcps)
    gpkg = s1_product.area_of_interest(tmp_path / "aoi.gpkg", (lon - 0.03, lat - 0.03, lon + 0.03, lat + 0.03))
    out = processing.run(
        model_id,
        {"product": str(product), "aoi": str(gpkg), "land_cover": str(tmp_path / "classes.tif"),
         "filtered_backscatter_db": str(tmp_path / "db.tif")},
    )  # fmt: skip
    got = gdal.Open(out["land_cover"]).ReadAsArray()
    imported = processing.run(ALG, {"INPUT": str(product), "AOI": str(gpkg), "OUTPUT_FOLDER": str(tmp_path / "i")})
    lee_params = {"INPUT": imported["OUTPUT"], "FILTER": 0, "WINDOW": 7, "ESTIMATE_LOOKS": True}
    lee = processing.run("sarseg:speckle_filter", {**lee_params, "OUTPUT": str(tmp_path / "lee.tif")})
    db_params = {"INPUT": lee["OUTPUT"], "DIRECTION": 0, "OUTPUT": str(tmp_path / "d.tif")}
    db = processing.run("sarseg:convert_db", db_params)
    ref = processing.run("sarseg:segment", {"INPUT": db["OUTPUT"], "OUTPUT": str(tmp_path / "ref.tif")})
    want = gdal.Open(ref["OUTPUT"]).ReadAsArray()
    assert got.shape == want.shape and np.array_equal(got, want)
    assert set(np.unique(got)) <= {0, 1, 2, 3, 4, 255} and (got < 5).mean() > 0.9


def test_a_product_holding_a_known_scene_comes_back_in_place_and_level(sarseg, sample_dir, tmp_path):
    """The sample scene encoded as the digital numbers of a product (real geolocation grid, the scene set down in
    UTM at the footprint centre), imported over its extent: the same backscatter on the same grid. Position: the
    fields line up with the scene at no shift better than at any other within 2 px. Level: the mean sigma0 of every
    class inside (3 px from its edges) within 0.2 dB of the scene's: the round trip resamples the speckle twice but
    keeps the means."""
    import json

    import processing
    from scipy import ndimage

    manifest = json.loads((sample_dir / "manifest.json").read_text())
    sar, truth = (sample_dir / manifest["files"][0][k] for k in ("sar", "labels"))
    product, placed = s1_product.scene_product(tmp_path / "p", sar)
    xmin, ymin, xmax, ymax = placed.extent
    out = processing.run(
        ALG,
        {"INPUT": str(product), "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:{placed.epsg}]",
         "OUTPUT_FOLDER": str(tmp_path / "out")},
    )  # fmt: skip
    ds = gdal.Open(out["OUTPUT"])
    gt = ds.GetGeoTransform()
    assert gt[1] == 10.0 and str(placed.epsg) in ds.GetSpatialRef().GetAuthorityCode(None)
    col0, row0 = round((xmin - gt[0]) / gt[1]), round((gt[3] - ymax) / gt[1])
    got = ds.ReadAsArray()
    scene = gdal.Open(str(sar)).ReadAsArray().astype(np.float64)
    classes = gdal.Open(str(truth)).ReadAsArray()
    m = 6  # away from the edges, where the import's bilinear kernel meets the nodata outside the scene
    h, w = placed.height, placed.width

    def window(dy: int, dx: int) -> np.ndarray:
        return got[:, row0 + m + dy : row0 + h - m + dy, col0 + m + dx : col0 + w - m + dx].astype(np.float64)

    want = scene[:, m : h - m, m : w - m]
    ok = (want > 0).all(axis=0)
    smooth = ndimage.uniform_filter(10 * np.log10(np.where(want > 0, want, 1)), (0, 5, 5))

    def agreement(dy: int, dx: int) -> float:
        g = window(dy, dx)
        valid = ok & np.isfinite(g).all(axis=0)
        gs = ndimage.uniform_filter(10 * np.log10(np.where(g > 0, g, 1)), (0, 5, 5))
        return float(np.corrcoef(gs[0][valid], smooth[0][valid])[0, 1])

    scores = {(dy, dx): agreement(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert max(scores, key=scores.get) == (0, 0) and scores[(0, 0)] > 0.9, scores
    g = window(0, 0)
    cls = classes[m : h - m, m : w - m]
    checked = 0
    for band in range(2):
        for c in np.unique(cls[ok & (cls < 5)]):
            # Class interiors: at class edges the two resamplings mix in the neighbours, 20 dB brighter for water.
            sel = ok & ndimage.binary_erosion(cls == c, iterations=3) & np.isfinite(g[band])
            if sel.sum() < 1000:  # fewer: the mean of two differently resampled speckle samples differs by ~0.1 dB
                continue
            diff = 10 * np.log10(g[band][sel].mean() / want[band][sel].mean())
            assert abs(diff) < 0.2, (band, c, diff)
            checked += 1
    assert checked >= 6  # water, vegetation, forest, built-up (this scene) in both bands


def test_the_shipped_flood_workflow_equals_its_steps(sarseg, tmp_path):
    """The shipped "Sentinel-1 flood per commune" on two products holding a flood series' first and peak days
    (radar geometry), against import, import and flood map run by hand; the flood found against the series' maps."""
    import json

    import processing
    from osgeo import ogr

    from training import synthetic

    series = tmp_path / "series"
    synthetic.write_series(synthetic.generate_series(size=256, days=10, seed=2, n_communes=4), series)
    manifest = json.loads((series / "manifest.json").read_text())
    labels = [series / f["labels"] for f in manifest["files"]]
    peak = int(np.argmax([(gdal.Open(str(p)).ReadAsArray() == synthetic.WATER).sum() for p in labels]))
    products, truths = [], []
    for name, day in (("pre", 0), ("post", peak)):
        product, truth = s1_product.radar_scene_product(
            tmp_path / name, series / manifest["files"][day]["sar"], labels[day], zip_it=True
        )
        products.append(product)
        truths.append(gdal.Open(str(truth)).ReadAsArray())
    ds = gdal.Open(str(tmp_path / "post" / "labels_geocoded.tif"))
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    w, h = ds.RasterXSize, ds.RasterYSize
    communes = tmp_path / "communes.gpkg"
    out = ogr.GetDriverByName("GPKG").CreateDataSource(str(communes))
    layer = out.CreateLayer("communes", ds.GetSpatialRef(), ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    xm, ym = x0 + px * w / 2, y0 + py * h / 2
    for i, (ax, bx, ay, by) in enumerate(
        [(x0, xm, ym, y0), (xm, x0 + px * w, ym, y0), (x0, xm, y0 + py * h, ym), (xm, x0 + px * w, y0 + py * h, ym)]
    ):
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetField("name", f"c{i}")
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({ax} {ay},{bx} {ay},{bx} {by},{ax} {by},{ax} {ay}))"))
        layer.CreateFeature(f)
    out = layer = None
    got = processing.run(
        "sarseg:Sentinel-1 flood per commune",
        {"pre_product": str(products[0]), "post_product": str(products[1]), "communes": str(communes),
         "flood_classes": str(tmp_path / "flood.tif"), "flood_polygons": str(tmp_path / "flood.gpkg"),
         "communes_with_flooded_area": str(tmp_path / "communes_flooded.gpkg")},
    )  # fmt: skip
    pre = processing.run(ALG, {"INPUT": str(products[0]), "AOI": str(communes), "OUTPUT_FOLDER": str(tmp_path / "a")})
    post = processing.run(ALG, {"INPUT": str(products[1]), "AOI": str(communes), "OUTPUT_FOLDER": str(tmp_path / "b")})
    by_hand = processing.run(
        "sarseg:flood_map",
        {"POST": post["OUTPUT"], "PRE": pre["OUTPUT"], "COMMUNES": str(communes), "OUTPUT": str(tmp_path / "h.tif"),
         "OUTPUT_COMMUNES": str(tmp_path / "h.gpkg")},
    )  # fmt: skip
    flood_map = gdal.Open(got["flood_classes"]).ReadAsArray()
    assert np.array_equal(flood_map, gdal.Open(by_hand["OUTPUT"]).ReadAsArray())
    a_ds, b_ds = ogr.Open(got["communes_with_flooded_area"]), ogr.Open(by_hand["OUTPUT_COMMUNES"])
    a = {f.GetField("name"): f.GetField("flooded_km2") for f in a_ds.GetLayer(0)}
    b = {f.GetField("name"): f.GetField("flooded_km2") for f in b_ds.GetLayer(0)}
    assert a == b and sum(a.values()) > 0.1
    # Against the series' own maps, geocoded like the products: the flood is found.
    fm = gdal.Open(got["flood_classes"])
    gt, tg = fm.GetGeoTransform(), ds.GetGeoTransform()
    c0, r0 = round((tg[0] - gt[0]) / gt[1]), round((gt[3] - tg[3]) / gt[1])
    mapped = flood_map[r0 : r0 + h, c0 : c0 + w]
    truth = (truths[1] == synthetic.WATER) & (truths[0] != synthetic.WATER) & (truths[1] != 255) & (truths[0] != 255)
    iou = ((mapped == 1) & truth).sum() / ((mapped == 1) | truth).sum()
    assert iou > 0.8, iou
