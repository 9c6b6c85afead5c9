"""Sentinel-1 GRD import (sar_seg_plugin.core.sentinel1) on products built from a real product's metadata
(scripts/s1_product.py): calibration and noise removal against the known look-up functions, geocoding against
the geolocation grid, area of interest, and the products this tool refuses."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import s1_product
from osgeo import gdal, ogr, osr

from sar_seg_plugin.core import sentinel1 as s1
from sar_seg_plugin.core.errors import SarSegError

pytestmark = pytest.mark.skipif(not s1_product.available(), reason="Sentinel-1 test metadata missing: run make setup")
SCALE = 20
DATA = s1_product.SOURCE.parent


@pytest.fixture(scope="module")
def product_dir(tmp_path_factory) -> Path:
    return s1_product.write_product(tmp_path_factory.mktemp("s1"), SCALE)


@pytest.fixture(scope="module")
def product(product_dir) -> s1.Product:
    return s1.open_product(str(product_dir))


def _dn(product: s1.Product, pol: str) -> np.ndarray:
    return gdal.Open(product.measurements[pol].tiff).ReadAsArray()


def _no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_metadata_from_the_manifest(product, product_dir):
    assert (product.mission, product.mode, product.product_type) == ("S1B", "IW", "GRD")
    assert product.pass_direction == "DESCENDING"
    assert (product.relative_orbit, product.absolute_orbit) == (168, 26269)
    assert product.start.isoformat() == "2021-04-01T05:26:23.794457"
    assert product.polarisations == ["VV", "VH"] and set(product.measurements) == {"VV", "VH"}
    assert s1.output_name(product, ["VV", "VH"], "sigma0", "db") == "S1B_IW_20210401T052623_VVVH_sigma0_db.tif"
    from sar_seg_plugin.core.timeseries import date_from_name

    assert date_from_name(s1.output_name(product, ["VV"], "sigma0", "linear")).isoformat() == "2021-04-01"
    # the same product through its manifest
    assert s1.open_product(str(product_dir / "manifest.safe")).name == product.name


def test_a_zip_is_read_in_place(tmp_path):
    archive = s1_product.write_product(tmp_path, SCALE, zip_it=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    p = s1.open_product(str(archive))
    assert p.root.startswith("/vsizip/") and p.measurements["VV"].tiff.startswith("/vsizip/")
    r = s1.import_product(p, str(tmp_path / "out.tif"), polarisations=["VV"], pixel_size=800)
    assert r.width > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "out.tif"])  # nothing unpacked


@pytest.mark.parametrize("radiometry", ["sigma0", "beta0", "gamma0"])
def test_calibration_and_noise_match_the_known_look_up_functions(product, radiometry):
    """(DN² - noise) / A² with A and the noise from the functions the LUTs sample, not from the XML."""
    lut = {"sigma0": s1_product.sigma_lut, "beta0": s1_product.beta_lut, "gamma0": s1_product.gamma_lut}[radiometry]
    m = product.measurements["VV"]
    cal = s1.Calibrator(
        s1.calibration_vectors(s1._read_text(m.calibration), radiometry), s1.noise_vectors(s1._read_text(m.noise))
    )
    dn = _dn(product, "VV")
    lines, samples = dn.shape
    rows = np.arange(lines, dtype=float)[:, None]
    cols = np.arange(samples, dtype=float)[None, :]
    a = lut(rows, cols, samples, lines)
    noise = s1_product.noise_range(rows, cols, samples, lines) * s1_product.noise_azimuth(
        rows, s1_product.swath_of(cols, samples), lines
    )
    expected = (dn.astype(float) ** 2 - noise) / a**2
    got = np.vstack([cal(dn[r0 : r0 + 100], r0, 0)[0] for r0 in range(0, lines, 100)])  # strips, as imported
    ok = dn > 0
    assert np.isnan(got[~ok]).all() and ok.sum() > 0.9 * dn.size
    np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-3)
    if radiometry == "sigma0":  # and close to the backscatter the DN encode (DN rounding aside)
        truth = 10.0 ** (s1_product.true_sigma0_db(rows, cols, 0) / 10.0) * np.ones_like(got)
        assert np.median(np.abs(10 * np.log10(got[ok] / truth[ok]))) < 0.05


def test_without_noise_removal_it_is_dn_squared_over_a_squared(product):
    m = product.measurements["VH"]
    cal = s1.Calibrator(s1.calibration_vectors(s1._read_text(m.calibration), "sigma0"), None)
    dn = _dn(product, "VH")[:64, :300]
    rows, cols = np.arange(64.0)[:, None], np.arange(300.0)[None, :]
    a = s1_product.sigma_lut(rows, cols, product_width(product), product_height(product))
    got = cal(dn, 0, 0)[0]
    ok = dn > 0
    np.testing.assert_allclose(got[ok], (dn.astype(float) ** 2 / a**2)[ok], rtol=1e-5)


def product_width(product):
    return gdal.Open(product.measurements["VV"].tiff).RasterXSize


def product_height(product):
    return gdal.Open(product.measurements["VV"].tiff).RasterYSize


def test_negatives_after_noise_removal_become_the_floor_or_nodata(tmp_path):
    def faint(line, pixel, band, samples, lines, scale):  # below the noise in the left half
        n = s1_product.noise_range(line, pixel, samples, lines) * s1_product.noise_azimuth(
            line, s1_product.swath_of(pixel, samples), lines
        )
        dn = np.where(pixel < samples / 2, 0.5 * np.sqrt(n), 3 * np.sqrt(n))
        return np.clip(np.rint(dn), 1, 65535).astype(np.uint16) * np.ones_like(line, dtype=np.uint16)

    p = s1.open_product(str(s1_product.write_product(tmp_path / "p", SCALE, dn=faint)))
    m = p.measurements["VV"]
    cal_xml, noise_xml = s1._read_text(m.calibration), s1._read_text(m.noise)
    dn = gdal.Open(m.tiff).ReadAsArray()[:50]
    floored, n_floor = s1.Calibrator(s1.calibration_vectors(cal_xml, "sigma0"), s1.noise_vectors(noise_xml))(dn, 0, 0)
    masked, n_mask = s1.Calibrator(
        s1.calibration_vectors(cal_xml, "sigma0"), s1.noise_vectors(noise_xml), negative="nodata"
    )(dn, 0, 0)
    left = np.zeros(dn.shape, bool)
    left[:, : dn.shape[1] // 2 - 1] = True
    assert n_floor == n_mask >= left.sum()
    np.testing.assert_allclose(floored[left], 10 ** (s1.DEFAULT_FLOOR_DB / 10), rtol=1e-6)
    assert np.isnan(masked[left]).all()
    right = np.zeros(dn.shape, bool)
    right[:, dn.shape[1] // 2 + 1 :] = True
    assert (masked[right] > 0).all() and np.array_equal(masked[right], floored[right])


def test_border_noise_is_masked_near_the_swath_edges():
    dn = np.full((4, 100), 500, np.uint16)
    dn[:, :3] = 0  # no data
    dn[:, 3:8] = 12  # low-level border noise
    dn[:, 95:] = 20
    dn[:, 50] = 10  # dark, but far from the edges: kept
    mask = s1.border_noise(dn, width_px=10)
    expected = np.zeros(dn.shape, bool)
    expected[:, 3:8] = True
    expected[:, 95:] = True
    assert np.array_equal(mask, expected)


def _gcps(product):
    ds = gdal.Open(product.manifest)
    return ds.GetGCPs(), ds.GetGCPProjection()


def _sample(path: Path, x: float, y: float, band: int = 1) -> float:
    ds = gdal.Open(str(path))
    gt = ds.GetGeoTransform()
    col, row = int((x - gt[0]) / gt[1]), int((y - gt[3]) / gt[5])
    if not (0 <= col < ds.RasterXSize and 0 <= row < ds.RasterYSize):
        return float("nan")
    return float(ds.GetRasterBand(band).ReadAsArray(col, row, 1, 1)[0, 0])


def _to_utm(lon: float, lat: float, epsg: int) -> tuple[float, float]:
    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromEPSG(4326)
    b.ImportFromEPSG(epsg)
    for s in (a, b):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    x, y, _ = osr.CoordinateTransformation(a, b).TransformPoint(lon, lat)
    return x, y


def test_geocoding_puts_each_grid_point_where_the_annotation_says(product, tmp_path):
    """At the position of every inner geolocation grid point inside a field (fields: 37 x 23 radar pixels, 2 dB
    apart), the output holds that field's backscatter: a point put a few pixels off lands in another field."""
    out = tmp_path / "geo.tif"
    r = s1.import_product(product, str(out), polarisations=["VV"], pixel_size=100)
    assert r.epsg == 32632 and gdal.Open(str(out)).GetSpatialRef().GetAuthorityCode(None) == "32632"
    gcps, _ = _gcps(product)
    width, height = product_width(product), product_height(product)
    checked = 0
    for g in gcps:
        col, row = int(round(g.GCPPixel)), int(round(g.GCPLine))
        if not (8 <= col < width - 8 and 4 <= row < height - 4):
            continue
        rows, cols = np.arange(row - 4, row + 5, dtype=float)[:, None], np.arange(col - 4, col + 5, dtype=float)[None]
        truth = s1_product.true_sigma0_db(rows, cols, 0)
        if np.ptp(truth) > 0:
            continue  # a field edge nearby
        value = _sample(out, *_to_utm(g.GCPX, g.GCPY, r.epsg))
        assert 10 * np.log10(value) == pytest.approx(float(truth[0, 0]), abs=0.4), (g.GCPPixel, g.GCPLine)
        checked += 1
    assert checked >= 20


def _aoi(lon: float, lat: float, half: float) -> tuple[str, osr.SpatialReference]:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ring = f"{lon - half} {lat - half}, {lon + half} {lat - half}, {lon + half} {lat + half}, {lon - half} {lat + half}"
    return f"POLYGON(({ring}, {lon - half} {lat - half}))", srs


def test_an_area_of_interest_is_processed_alone_with_the_same_values(product, tmp_path):
    gcps, _ = _gcps(product)
    lon, lat = s1.footprint_centre(gcps)
    full = tmp_path / "full.tif"
    s1.import_product(product, str(full), polarisations=["VV"], pixel_size=200, epsg=32632)
    part = tmp_path / "part.tif"
    r = s1.import_product(product, str(part), polarisations=["VV"], pixel_size=200, epsg=32632, aoi=_aoi(lon, lat, 0.1))
    x0, y0, w, h = r.window
    assert w * h < 0.05 * product_width(product) * product_height(product)
    ds = gdal.Open(str(part))
    gt = ds.GetGeoTransform()
    cx, cy = _to_utm(lon, lat, 32632)
    assert gt[0] <= cx <= gt[0] + gt[1] * ds.RasterXSize and gt[3] + gt[5] * ds.RasterYSize <= cy <= gt[3]
    assert ds.RasterXSize * 200 <= 2 * 0.1 * 111_000 + 400  # clipped to the area (about 15 x 22 km)
    a = ds.ReadAsArray()
    fds = gdal.Open(str(full))
    fgt = fds.GetGeoTransform()
    col, row = round((gt[0] - fgt[0]) / fgt[1]), round((gt[3] - fgt[3]) / fgt[5])
    b = fds.ReadAsArray(col, row, ds.RasterXSize, ds.RasterYSize)
    # The same pixels, to the position error warping tolerates (an eighth of a pixel, GDAL's default): on the
    # DN-rounding texture that is up to 1 %, and more where a field edge crosses the pixel.
    from scipy.ndimage import maximum_filter, minimum_filter

    same = np.isclose(a, b, rtol=1e-2)
    edge = (maximum_filter(b, 3) - minimum_filter(b, 3)) > 0.05 * b
    assert same.mean() > 0.85 and (~same & ~edge).mean() < 0.005


def test_db_output_is_ten_log10_of_the_linear_one(product, tmp_path):
    lin, db = tmp_path / "lin.tif", tmp_path / "db.tif"
    s1.import_product(product, str(lin), pixel_size=800)
    s1.import_product(product, str(db), pixel_size=800, scale="db")
    a, b = gdal.Open(str(lin)).ReadAsArray(), gdal.Open(str(db)).ReadAsArray()
    ok = np.isfinite(a)
    np.testing.assert_allclose(b[ok], 10 * np.log10(a[ok]), atol=1e-4)
    ds = gdal.Open(str(db))
    assert [ds.GetRasterBand(i).GetDescription() for i in (1, 2)] == ["VV", "VH"]
    assert ds.GetRasterBand(1).GetUnitType() == "dB"
    md = ds.GetMetadata()
    assert md["ACQUISITION_DATE"] == "2021-04-01" and md["RELATIVE_ORBIT"] == "168" and md["PASS"] == "DESCENDING"
    assert md["POLARISATIONS"] == "VV,VH" and md["PRODUCT"] == product.name


def grid_incidence_around(product, column: float) -> tuple[float, float]:
    """The median incidenceAngle of the annotation's grid points in the grid columns either side of ``column``."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(s1._read_text(product.measurements["VV"].annotation))
    points = [
        (float(p.findtext("pixel")), float(p.findtext("incidenceAngle"))) for p in root.iter("geolocationGridPoint")
    ]
    below = max(px for px, _ in points if px <= column)
    above = min(px for px, _ in points if px >= column)
    return tuple(sorted(float(np.median([a for px, a in points if px == c])) for c in (below, above)))


def test_the_incidence_angle_of_the_imported_columns_is_recorded(product, tmp_path):
    """What brings gamma0 (cos) and beta0 (sin) back to sigma0 for the models; real IW grid: 30.6 .. 46 deg."""
    out = tmp_path / "g.tif"
    s1.import_product(product, str(out), pixel_size=800, radiometry="gamma0")
    md = gdal.Open(str(out)).GetMetadata()
    assert md["RADIOMETRY"] == "gamma0"
    width = product_width(product)
    low, high = grid_incidence_around(product, width / 2)
    assert low - 0.05 <= float(md["INCIDENCE_ANGLE"]) <= high + 0.05
    assert 37.0 < float(md["INCIDENCE_ANGLE"]) < 40.5  # the middle of an IW swath
    # the near-range quarter of the swath only: a steeper angle
    near = s1.incidence_angle(s1._read_text(product.measurements["VV"].annotation), 0, width / 4)
    low, high = grid_incidence_around(product, width / 8)
    assert low - 0.05 <= near <= high + 0.05 and near < 35.0


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("S1B_IW_SLC__1SDV_20210401T052622_20210401T052650_026269_032297_EFA4.SAFE", "is a SLC product"),
        ("S1A_EW_SLC__1SDH_20210403T122536_20210403T122630_037286_046484_8152.SAFE", "is a SLC product"),
        ("S1B_WV_SLC__1SSV_20210403T083025_20210403T084452_026300_032390_D542.SAFE", "is a SLC product"),
    ],
)
def test_slc_ew_and_wave_products_are_refused(folder, message):
    with pytest.raises(SarSegError, match=message):
        s1.open_product(str(DATA / folder))


def test_an_ew_grd_is_refused(product_dir, tmp_path):
    copy = tmp_path / product_dir.name
    shutil.copytree(product_dir, copy)
    manifest = copy / "manifest.safe"
    manifest.write_text(
        manifest.read_text().replace("<s1sarl1:mode>IW</s1sarl1:mode>", "<s1sarl1:mode>EW</s1sarl1:mode>")
    )
    with pytest.raises(SarSegError, match="acquired in EW mode"):
        s1.open_product(str(copy))


def test_bad_products_and_requests_write_nothing(product, tmp_path):
    out = tmp_path / "out.tif"
    with pytest.raises(SarSegError, match="no HH measurement"):
        s1.import_product(product, str(out), polarisations=["HH"])
    lon, lat = s1.footprint_centre(_gcps(product)[0])
    with pytest.raises(SarSegError, match="outside the footprint"):
        s1.import_product(product, str(out), aoi=_aoi(lon + 20, lat, 0.1))
    broken = s1.open_product(str(s1_product.write_product(tmp_path / "nocal", SCALE, calibration=False)))
    with pytest.raises(SarSegError, match="no calibration file"):
        s1.import_product(broken, str(out))
    bad_zip = tmp_path / "S1B_IW_GRDH_1SDV_broken.zip"
    bad_zip.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(SarSegError, match="not a Sentinel-1 product archive"):
        s1.open_product(str(bad_zip))
    empty_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(empty_zip, "w") as zf:
        zf.writestr("readme.txt", "no product here")
    with pytest.raises(SarSegError, match="not a Sentinel-1 product archive"):
        s1.open_product(str(empty_zip))
    with pytest.raises(SarSegError, match="is not a Sentinel-1 product"):
        s1.open_product(str(tmp_path / "nothing.tif"))
    assert not out.exists() and _no_leftovers(tmp_path) == []


def test_cancel_leaves_nothing(product, tmp_path):
    from sar_seg_plugin.core.errors import CancelledError

    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(CancelledError):
        s1.import_product(product, str(tmp_path / "out.tif"), pixel_size=800, is_canceled=cancel)
    assert list(tmp_path.iterdir()) == []


def test_aoi_polygon_in_a_projected_crs(product, tmp_path):
    lon, lat = s1.footprint_centre(_gcps(product)[0])
    x, y = _to_utm(lon, lat, 32632)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    geom = ogr.CreateGeometryFromWkt(f"POINT({x} {y})").Buffer(5000)
    r = s1.import_product(product, str(tmp_path / "a.tif"), aoi=(geom.ExportToWkt(), srs), pixel_size=100)
    assert r.epsg == 32632 and 90 <= r.width <= 110 and 90 <= r.height <= 110


def test_a_disk_without_room_is_refused_before_any_work(product, small_disk):
    """The radar-geometry temporary and the output need room (several GB for a whole product at 10 m): a disk
    without it is refused up front, with the sizes, and nothing is left on it."""
    with pytest.raises(SarSegError, match="free, but the outputs may need"):
        s1.import_product(product, str(small_disk / "out.tif"))
    assert list(small_disk.iterdir()) == []
