"""Tests of the synthetic Sentinel-1-like series generator (training.synthetic)."""

import datetime
import json

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from training import synthetic
from training.synthetic import (
    ARCHETYPES,
    BARE_SOIL,
    BUILT_UP,
    CLASS_COLORS,
    CLASS_NAMES,
    CLASS_SIGMA0_DB,
    DEFAULT_EPSG,
    FOREST,
    LABEL_NODATA,
    NOISE_FLOOR,
    SAR_NODATA,
    VEGETATION,
    WATER,
    generate_series,
    main,
    speckle,
    write_series,
)


@pytest.fixture(scope="module")
def series():
    return generate_series(size=128, days=7, seed=3, n_communes=16)


@pytest.fixture(scope="module")
def written(series, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    small = generate_series(size=64, days=2, seed=5, n_communes=4)
    manifest = write_series(small, out)
    return small, out, manifest


def _epsg_of(wkt):
    srs = osr.SpatialReference(wkt=wkt)
    srs.AutoIdentifyEPSG()
    return int(srs.GetAuthorityCode(None))


# ---------------------------------------------------------------------------------------------
# Shapes, types, determinism
# ---------------------------------------------------------------------------------------------


def test_shapes_and_types(series):
    t, n = 7, 128
    assert series.dates == [datetime.date(2026, 3, 1) + datetime.timedelta(days=i) for i in range(t)]
    assert series.labels.shape == (t, n, n) and series.labels.dtype == np.uint8
    assert series.sigma0.shape == (t, 2, n, n) and series.sigma0.dtype == np.float32
    assert series.sigma0_clean.shape == (t, 2, n, n) and series.sigma0_clean.dtype == np.float32
    assert series.valid.shape == (n, n) and series.valid.dtype == bool
    assert series.communes.shape == (n, n) and series.communes.dtype == np.int32
    assert series.epsg == DEFAULT_EPSG == 32631
    assert series.looks == pytest.approx(4.4)
    gt = series.geotransform
    assert gt[1] == 10.0 and gt[5] == -10.0 and gt[2] == 0.0 and gt[4] == 0.0
    assert set(np.unique(series.labels[:, series.valid])) <= set(range(len(CLASS_NAMES)))
    assert len(CLASS_NAMES) == len(CLASS_COLORS) == 5


def test_deterministic_by_seed():
    a = generate_series(size=64, days=3, seed=11)
    b = generate_series(size=64, days=3, seed=11)
    c = generate_series(size=64, days=3, seed=12)
    for name in ("labels", "sigma0_clean", "sigma0", "valid", "communes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.commune_polygons == b.commune_polygons
    assert not np.array_equal(a.sigma0, c.sigma0)
    assert not np.array_equal(a.labels, c.labels)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        generate_series(size=64, days=1)
    with pytest.raises(ValueError):
        generate_series(size=64, days=3, looks=0.0)
    with pytest.raises(ValueError):
        generate_series(size=16, days=3)


# ---------------------------------------------------------------------------------------------
# Speckle statistics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("looks", [1.0, 4.4, 10.0])
def test_speckle_mean_and_enl(looks):
    clean = np.full((400, 500), 0.05, dtype=np.float32)
    noisy = speckle(clean, looks, np.random.default_rng(1))
    assert noisy.shape == clean.shape and noisy.dtype == np.float32
    ratio = noisy.astype(np.float64) / clean
    assert ratio.mean() == pytest.approx(1.0, abs=0.01)
    enl = ratio.mean() ** 2 / ratio.var()
    assert enl == pytest.approx(looks, rel=0.05)


def test_speckle_rejects_non_positive_looks():
    with pytest.raises(ValueError):
        speckle(np.ones((4, 4)), 0.0, np.random.default_rng(0))


def test_series_speckle_is_unit_mean_gamma(series):
    ratio = series.sigma0[:, :, series.valid].astype(np.float64) / series.sigma0_clean[:, :, series.valid]
    assert ratio.size > 200_000
    assert ratio.mean() == pytest.approx(1.0, abs=0.01)
    assert ratio.mean() ** 2 / ratio.var() == pytest.approx(series.looks, rel=0.05)


# ---------------------------------------------------------------------------------------------
# Radiometry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", range(5))
def test_class_medians_match_backscatter_table(series, cls):
    mask = series.labels == cls
    assert mask.any()
    for band in range(2):
        values = series.sigma0_clean[:, band][mask]
        median_db = 10 * np.log10(np.median(values))
        expected_db = 10 * np.log10(10 ** (CLASS_SIGMA0_DB[cls][band] / 10) + NOISE_FLOOR)
        assert abs(median_db - expected_db) < 2.0, (CLASS_NAMES[cls], band, median_db, expected_db)


def test_backscatter_ordering(series):
    def median_db(cls, band):
        return 10 * np.log10(np.median(series.sigma0_clean[:, band][series.labels == cls]))

    for band in range(2):
        ordered = [median_db(c, band) for c in (WATER, BARE_SOIL, VEGETATION, FOREST, BUILT_UP)]
        assert ordered == sorted(ordered)
    for cls in range(5):
        assert median_db(cls, 0) > median_db(cls, 1)  # VV above VH
    # VH over calm water is dominated by the thermal noise floor.
    assert median_db(WATER, 1) < 10 * np.log10(2.5 * NOISE_FLOOR)


def test_built_up_texture_is_heavy_tailed(series):
    built = series.sigma0_clean[:, 0][series.labels == BUILT_UP]
    forest = series.sigma0_clean[:, 0][series.labels == FOREST]
    cv_built, cv_forest = built.std() / built.mean(), forest.std() / forest.mean()
    assert cv_built > 0.7 > cv_forest > 0.2  # Gamma(2) + bright points vs Gamma(10)


def test_incidence_angle_trend(series):
    forest = series.labels[0] == FOREST
    cols = np.nonzero(forest)[1]
    db = 10 * np.log10(series.sigma0_clean[0, 0][forest])
    near, far = db[cols < 32].mean(), db[cols >= 96].mean()
    assert near > far  # backscatter decreases with incidence angle across the swath


# ---------------------------------------------------------------------------------------------
# Time series: flood, crops, stable classes
# ---------------------------------------------------------------------------------------------


def test_flood_rises_then_recedes(series):
    water = np.array([(lab[series.valid] == WATER).mean() for lab in series.labels])
    peak = int(np.argmax(water))
    assert 0 < peak < len(water) - 1
    assert water[peak] > water[0] and water[peak] > water[-1]
    assert np.all(np.diff(water[: peak + 1]) >= 0) and np.all(np.diff(water[peak:]) <= 0)
    newly = (series.labels[peak] == WATER) & (series.labels[0] != WATER)
    assert newly.any()
    assert np.isin(series.labels[0][newly], [VEGETATION, BARE_SOIL]).all()


def test_crops_change_between_vegetation_and_bare_soil(series):
    first, last = series.labels[0], series.labels[-1]
    assert ((first == VEGETATION) & (last == BARE_SOIL)).any()  # harvest
    assert ((first == BARE_SOIL) & (last == VEGETATION)).any()  # green-up


@pytest.mark.parametrize("cls", [FOREST, BUILT_UP])
def test_forest_and_built_up_are_stable(series, cls):
    reference = series.labels[0] == cls
    assert reference.any()
    for lab in series.labels[1:]:
        np.testing.assert_array_equal(lab == cls, reference)


def test_stable_pixels_vary_only_slightly(series):
    stable = (series.labels == FOREST).all(axis=0)
    db = 10 * np.log10(series.sigma0_clean[:, 0][:, stable])
    assert np.abs(db - db[0]).max() <= 0.6 + 1e-4  # +-0.3 dB per date


# ---------------------------------------------------------------------------------------------
# Communes
# ---------------------------------------------------------------------------------------------


def test_communes_tile_the_scene(series):
    n = len(series.commune_polygons)
    assert n == 16
    assert set(np.unique(series.communes)) == set(range(1, n + 1))
    x0, px, _, y0, _, py = series.geotransform
    area = 0.0
    for poly in series.commune_polygons:
        ring = np.array(poly["ring"])
        assert tuple(ring[0]) == tuple(ring[-1])
        x, y = ring[:, 0], ring[:, 1]
        signed = 0.5 * np.sum(x[:-1] * y[1:] - x[1:] * y[:-1])
        assert signed > 0  # counter-clockwise exterior ring
        area += signed
        # Raster agrees with polygon: pixel count close to polygon area.
        pixels = (series.communes == poly["id"]).sum()
        assert pixels * px * px == pytest.approx(signed, rel=0.1)
    assert area == pytest.approx(128 * 128 * px * abs(py))


def test_commune_attributes(series):
    names = list(ARCHETYPES)
    counts = {}
    for i, poly in enumerate(series.commune_polygons, start=1):
        assert poly["id"] == i
        assert poly["name"] == f"Commune {i:02d}"
        assert names[poly["archetype_id"]] == poly["archetype"]
        assert isinstance(poly["population"], int) and poly["population"] >= 500
        counts[poly["archetype"]] = counts.get(poly["archetype"], 0) + 1
    assert set(counts) == set(names)
    assert max(counts.values()) - min(counts.values()) <= 1
    urban = [p["population"] for p in series.commune_polygons if p["archetype"] == "urban"]
    other = [p["population"] for p in series.commune_polygons if p["archetype"] != "urban"]
    assert min(urban) > max(other)


@pytest.mark.parametrize(("size", "seed"), [(128, 3), (256, 0), (256, 1)])
def test_commune_dominant_class_follows_archetype(series, size, seed):
    s = series if (size, seed) == (128, 3) else generate_series(size=size, days=2, seed=seed)
    for poly in s.commune_polygons:
        inside = (s.communes == poly["id"]) & s.valid
        counts = np.bincount(s.labels[0][inside], minlength=5)
        props = ARCHETYPES[poly["archetype"]]
        assert int(np.argmax(counts)) == max(props, key=props.get), (poly, counts)


# ---------------------------------------------------------------------------------------------
# No-data corner
# ---------------------------------------------------------------------------------------------


def test_nodata_corner(series):
    invalid = ~series.valid
    assert 0.02 <= invalid.mean() <= 0.04
    corners = [invalid[0, 0], invalid[0, -1], invalid[-1, 0], invalid[-1, -1]]
    assert sum(corners) == 1
    assert (series.labels[:, invalid] == LABEL_NODATA).all()
    assert (series.sigma0[:, :, invalid] == SAR_NODATA).all()
    assert (series.labels[:, series.valid] != LABEL_NODATA).all()
    assert (series.sigma0[:, :, series.valid] > 0).all()


def test_nodata_corner_can_be_disabled():
    s = generate_series(size=64, days=2, seed=0, nodata_corner=False)
    assert s.valid.all()
    assert (s.labels != LABEL_NODATA).all() and (s.sigma0 > 0).all()


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def test_written_sar_geotiff(written):
    s, out, _ = written
    for t, date in enumerate(s.dates):
        ds = gdal.Open(str(out / f"sar_{date:%Y%m%d}.tif"))
        assert ds is not None
        assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (64, 64, 2)
        assert _epsg_of(ds.GetProjection()) == DEFAULT_EPSG
        assert ds.GetGeoTransform() == pytest.approx(s.geotransform)
        assert ds.GetMetadataItem("ACQUISITION_DATE") == date.isoformat()
        assert float(ds.GetMetadataItem("LOOKS")) == pytest.approx(s.looks)
        assert ds.GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        for b, name in enumerate(("VV", "VH"), start=1):
            band = ds.GetRasterBand(b)
            assert band.DataType == gdal.GDT_Float32
            assert band.GetDescription() == name
            assert band.GetNoDataValue() == SAR_NODATA
            assert band.GetUnitType() == "linear"
            block = band.GetBlockSize()
            assert block[0] == block[1]  # tiled
            np.testing.assert_array_equal(band.ReadAsArray(), s.sigma0[t, b - 1])
        ds = None


def test_written_label_geotiff(written):
    s, out, _ = written
    for t, date in enumerate(s.dates):
        ds = gdal.Open(str(out / f"labels_{date:%Y%m%d}.tif"))
        assert ds is not None
        # GDAL 3.6 loads the .aux.xml sidecar (category names) lazily: touch georeferencing first.
        assert ds.GetGeoTransform() == pytest.approx(s.geotransform)
        assert _epsg_of(ds.GetProjection()) == DEFAULT_EPSG
        assert ds.RasterCount == 1
        band = ds.GetRasterBand(1)
        assert band.DataType == gdal.GDT_Byte
        assert band.GetDescription() == "class"
        assert band.GetNoDataValue() == LABEL_NODATA
        assert band.GetCategoryNames() == list(CLASS_NAMES)
        table = band.GetColorTable()
        assert table is not None
        for cid, colour in enumerate(CLASS_COLORS):
            expected = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)) + (255,)
            assert table.GetColorEntry(cid) == expected
        np.testing.assert_array_equal(band.ReadAsArray(), s.labels[t])
        ds = None


def test_written_communes_geopackage(written):
    s, out, _ = written
    ds = ogr.Open(str(out / "communes.gpkg"))
    assert ds is not None
    layer = ds.GetLayerByName("communes")
    assert layer is not None
    assert layer.GetFeatureCount() == len(s.commune_polygons) == 4
    assert layer.GetGeomType() == ogr.wkbPolygon
    assert _epsg_of(layer.GetSpatialRef().ExportToWkt()) == DEFAULT_EPSG
    defn = layer.GetLayerDefn()
    fields = {defn.GetFieldDefn(i).GetName(): defn.GetFieldDefn(i).GetType() for i in range(defn.GetFieldCount())}
    assert fields == {
        "commune_id": ogr.OFTInteger,
        "name": ogr.OFTString,
        "archetype": ogr.OFTString,
        "archetype_id": ogr.OFTInteger,
        "population": ogr.OFTInteger,
    }
    total = 0.0
    by_id = {p["id"]: p for p in s.commune_polygons}
    for feature in layer:
        poly = by_id[feature.GetField("commune_id")]
        assert feature.GetField("name") == poly["name"]
        assert feature.GetField("archetype") == poly["archetype"]
        assert feature.GetField("archetype_id") == poly["archetype_id"]
        assert feature.GetField("population") == poly["population"]
        geometry = feature.GetGeometryRef()
        assert geometry.IsValid()
        total += geometry.GetArea()
    assert total == pytest.approx((64 * 10.0) ** 2)
    ds = None


def test_manifest(written):
    s, out, manifest = written
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["dates"] == [d.isoformat() for d in s.dates]
    assert [f["sar"] for f in on_disk["files"]] == [f"sar_{d:%Y%m%d}.tif" for d in s.dates]
    assert [f["labels"] for f in on_disk["files"]] == [f"labels_{d:%Y%m%d}.tif" for d in s.dates]
    assert on_disk["class_names"] == list(CLASS_NAMES)
    assert on_disk["class_colors"] == list(CLASS_COLORS)
    assert on_disk["looks"] == pytest.approx(s.looks)
    assert (on_disk["seed"], on_disk["size"], on_disk["epsg"]) == (5, 64, DEFAULT_EPSG)
    assert on_disk["pixel_size"] == 10.0
    assert on_disk["archetypes"] == {str(p["id"]): p["archetype"] for p in s.commune_polygons}


def test_cli_writes_files(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--size", "64", "--days", "3"]) == 0
    assert len(list(tmp_path.glob("sar_*.tif"))) == 3
    assert len(list(tmp_path.glob("labels_*.tif"))) == 3
    assert (tmp_path / "communes.gpkg").exists()
    assert json.loads((tmp_path / "manifest.json").read_text())["days"] == 3
    assert "64x64" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--size", "64", "--days", "1"])


def test_module_exports():
    for name in ("CLASS_NAMES", "CLASS_COLORS", "LABEL_NODATA", "SAR_NODATA", "ARCHETYPES", "DEFAULT_EPSG"):
        assert hasattr(synthetic, name)
    assert LABEL_NODATA == 255 and SAR_NODATA == 0.0
    for props in ARCHETYPES.values():
        assert set(props) == set(range(5))
        assert sum(props.values()) == pytest.approx(1.0)
