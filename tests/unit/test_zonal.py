"""Zonal features: per-polygon statistics, fractions and embeddings against a direct computation on the pixels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from osgeo import gdal, ogr
from rasters import write_raster

from sar_seg_plugin.core import units, zonal
from sar_seg_plugin.core.raster_io import open_raster, read_info
from sar_seg_plugin.core.timeseries import Grid
from sar_seg_plugin.models.metadata import Normalization

X0, Y0, PX = 1000.0, 2000.0, 10.0
W, H = 10, 8


def _poly(*xy: tuple[float, float]) -> bytes:
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in (*xy, xy[0]):
        ring.AddPoint_2D(x, y)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(ring)
    return poly.ExportToWkb()


POLYGONS = [
    _poly((1010, 1990), (1050, 1990), (1050, 1960), (1010, 1960)),  # A: pixels rows 1-3, cols 1-4
    _poly((1050, 2000), (1100, 2000), (1100, 1950)),  # B: a triangle
    _poly((1080, 1940), (1130, 1940), (1130, 1920), (1080, 1920)),  # C: 40 % inside (cols 8-9 of 8-12)
    _poly((3000, 3000), (3010, 3000), (3010, 2990)),  # D: outside
]


def _centres_in(wkb: bytes) -> np.ndarray:
    """(H, W) pixel centres inside a polygon, by point-in-polygon tests (independent of GDAL's rasteriser)."""
    geom = ogr.CreateGeometryFromWkb(wkb)
    inside = np.zeros((H, W), bool)
    for r in range(H):
        for c in range(W):
            pt = ogr.Geometry(ogr.wkbPoint)
            pt.AddPoint_2D(X0 + (c + 0.5) * PX, Y0 - (r + 0.5) * PX)
            inside[r, c] = geom.Contains(pt)
    return inside


@pytest.fixture()
def scene(tmp_path):
    rng = np.random.default_rng(3)
    sar = rng.gamma(4.0, 0.05 / 4.0, size=(2, H, W)).astype(np.float32)
    sar[1] *= 0.2
    sar[0, 2, 2] = 0.0  # nodata inside A
    sar[1, 0, 7] = 0.0  # nodata inside B (VH only: the pixel is invalid)
    classes = rng.integers(0, 5, size=(H, W)).astype(np.uint8)
    classes[1, 1] = 255  # unclassified inside A
    raster = write_raster(tmp_path / "sar.tif", sar, nodata=0.0, origin=(X0, Y0), descriptions=["VV", "VH"])
    class_path = write_raster(tmp_path / "classes.tif", classes, nodata=255, origin=(X0, Y0))
    return SimpleNamespace(sar=sar, classes=classes, raster=raster, class_path=class_path, tmp=tmp_path)


def _run(scene, **kwargs):  # noqa: ANN001, ANN202
    ds = open_raster(scene.raster)
    info = read_info(ds)
    zones_path = str(scene.tmp / "zones.tif")
    zonal.rasterize_zones(POLYGONS, Grid.of(info), zones_path)
    zones = gdal.Open(zones_path)
    classes = gdal.Open(scene.class_path)
    plan = zonal.plan_bands(ds, info)
    res = zonal.zonal_features(
        ds, zones, len(POLYGONS), plan=plan, classes=classes, class_names=list("abcde"), **kwargs
    )
    return ds, zones, plan, res


@pytest.mark.parametrize("strip_pixels", [30, 10**6])  # strips of 3 rows, or the whole raster at once
def test_zone_raster_matches_point_in_polygon(scene, strip_pixels, monkeypatch):
    monkeypatch.setattr(zonal, "ZONE_STRIP_PIXELS", strip_pixels)
    _, zones, _, res = _run(scene)
    z = zones.GetRasterBand(1).ReadAsArray()
    for i, wkb in enumerate(POLYGONS):
        np.testing.assert_array_equal(z == i + 1, _centres_in(wkb), err_msg=f"polygon {i}")
    assert res.zone_pixels.tolist() == [12, int(_centres_in(POLYGONS[1]).sum()), 4, 0]


@pytest.mark.parametrize("block_size", [3, 512])
def test_statistics_equal_a_direct_computation(scene, block_size):
    _, _, plan, res = _run(scene, block_size=block_size)
    assert [s.name for s in plan.series] == ["vv", "vh", "vh_vv"]
    assert plan.to_db == [True, True]  # linear power, converted to dB
    db = 10 * np.log10(np.where(scene.sar > 0, scene.sar, 1.0).astype(np.float64))
    valid = (scene.sar > 0).all(axis=0)
    for i in range(3):
        m = _centres_in(POLYGONS[i]) & valid
        assert res.valid_pixels[i] == m.sum()
        for name, values in (("vv", db[0][m]), ("vh", db[1][m]), ("vh_vv", db[1][m] - db[0][m])):
            series = next(s for s in plan.series if s.name == name)
            bin_width = (series.hi - series.lo) / zonal.HIST_BINS
            assert res.statistics[f"{name}_mean"][i] == pytest.approx(values.mean(), abs=1e-4)
            assert res.statistics[f"{name}_std"][i] == pytest.approx(values.std(), abs=1e-4)
            for q in zonal.PERCENTILES:
                expected = np.percentile(values, q, method="inverted_cdf")
                assert abs(res.statistics[f"{name}_p{q}"][i] - expected) <= bin_width + 1e-5, (name, q, i)
    assert np.isnan(res.statistics["vv_mean"][3])  # outside: no pixel


def test_fractions_equal_class_counts(scene):
    _, _, _, res = _run(scene)
    for i in range(3):
        c = scene.classes[_centres_in(POLYGONS[i])]
        c = c[c < 5]
        expected = np.bincount(c, minlength=5) / c.size
        np.testing.assert_allclose(res.fractions[i], expected, atol=1e-12)
        assert res.classified_pixels[i] == c.size
    assert np.isnan(res.fractions[3]).all()


def test_inside_fraction_and_pixel_window():
    bounds = (X0, Y0 - H * PX, X0 + W * PX, Y0)
    assert zonal.inside_fraction(POLYGONS[0], bounds) == pytest.approx(1.0)
    assert zonal.inside_fraction(POLYGONS[2], bounds) == pytest.approx(0.4)
    assert zonal.inside_fraction(POLYGONS[3], bounds) == 0.0
    gt = (X0, PX, 0.0, Y0, 0.0, -PX)
    env = ogr.CreateGeometryFromWkb(POLYGONS[2]).GetEnvelope()
    assert zonal.pixel_window(env, gt, W, H) == zonal.Window(8, 6, 2, 2)
    assert zonal.pixel_window(ogr.CreateGeometryFromWkb(POLYGONS[3]).GetEnvelope(), gt, W, H) is None


class MeanEncoder:
    """An 'encoder' whose embedding of a tile is (sum of band 1 / pixels not set to 0, same for band 2).

    Pixels outside the zone are set to 0 by zone_embeddings, so weighting each tile by the zone's pixels in it
    makes the zone embedding the plain mean of the zone's own normalised pixels, which the test computes
    directly."""

    def __init__(self, tile: int) -> None:
        self.metadata = SimpleNamespace(
            tile_size=tile, embedding_size=2, normalization=Normalization(mean=(-10.0, -20.0), std=(2.0, 4.0))
        )
        self.tiles_seen = 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32 and batch.shape[1:] == (2, self.metadata.tile_size, self.metadata.tile_size)
        self.tiles_seen += len(batch)
        used = (batch != 0).any(axis=1).sum(axis=(1, 2))[:, None]
        return batch.sum(axis=(2, 3)) / used


@pytest.mark.parametrize("tile", [2, 3, 16])
def test_embeddings_average_the_zone_pixels_only(scene, tile):
    ds, zones, _, res = _run(scene)
    info = read_info(ds)
    windows = [
        zonal.pixel_window(ogr.CreateGeometryFromWkb(g).GetEnvelope(), info.geotransform, W, H) for g in POLYGONS
    ]
    encoder = MeanEncoder(tile)
    to_db = units.ModelInput((1, 2), (units.TO_DB, units.TO_DB), [], [], [])
    emb, tiles = zonal.zone_embeddings(ds, zones, windows, encoder, to_db, batch_size=4)
    assert tiles == encoder.tiles_seen > 0
    db = 10 * np.log10(np.where(scene.sar > 0, scene.sar, 1.0).astype(np.float64))
    normalised = (db - np.array([-10.0, -20.0])[:, None, None]) / np.array([2.0, 4.0])[:, None, None]
    valid = (scene.sar > 0).all(axis=0)
    for i in range(3):
        m = _centres_in(POLYGONS[i]) & valid
        np.testing.assert_allclose(emb[i], normalised[:, m].mean(axis=1), rtol=1e-5, atol=1e-5)
    assert np.isnan(emb[3]).all()


def test_unnamed_bands_in_vh_vv_order_are_summarised_under_their_own_names(scene, tmp_path):
    swapped = write_raster(tmp_path / "vh_vv.tif", scene.sar[::-1], nodata=0.0, origin=(X0, Y0))
    ds = open_raster(swapped)
    plan = zonal.plan_bands(ds, read_info(ds))
    assert [s.name for s in plan.series] == ["vh", "vv", "vh_vv"]
    assert [s.bands for s in plan.series[:2]] == [(0,), (1,)]  # band 1 holds VH
    assert "band 2 is taken as VV and band 1 as VH" in plan.notes[0]
    # the statistics under each name are those of that polarisation (computed here on the unswapped arrays)
    _, _, _, res = _run(SimpleNamespace(**{**vars(scene), "raster": swapped}))
    db = 10 * np.log10(np.where(scene.sar > 0, scene.sar, 1.0).astype(np.float64))
    m = _centres_in(POLYGONS[0]) & (scene.sar > 0).all(axis=0)
    for name, values in (("vv", db[0][m]), ("vh", db[1][m]), ("vh_vv", db[1][m] - db[0][m])):
        assert res.statistics[f"{name}_mean"][0] == pytest.approx(values.mean(), abs=1e-4)
