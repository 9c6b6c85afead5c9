"""Flood mapping core (sar_seg_plugin.core.flood): thresholds against independent references, the class rules,
and whole maps against the generators' truth (the training generator's flood series, and pairs of the
evaluation-only flood generator, whose SAR was written for this evaluation alone)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from osgeo import gdal
from rasters import write_raster

from sar_seg_plugin.core import flood
from sar_seg_plugin.core.errors import CancelledError, SarSegError
from training import synthetic
from training.evalflood import flood_sar_pair, write_flood_pair


def _bayes_threshold(m1: float, s1: float, p1: float, m2: float, s2: float, p2: float) -> float:
    """Where p1 N(m1, s1) = p2 N(m2, s2) between the means: the minimum-error threshold KI estimates."""
    a = 1 / (2 * s1**2) - 1 / (2 * s2**2)
    b = m2 / s2**2 - m1 / s1**2
    c = m1**2 / (2 * s1**2) - m2**2 / (2 * s2**2) - math.log((p1 * s2) / (p2 * s1))
    roots = np.roots([a, b, c]) if abs(a) > 1e-12 else np.array([-c / b])
    return float(next(r.real for r in roots if m1 < r.real < m2))


@pytest.mark.parametrize("p1,s1,s2", [(0.5, 1.5, 1.5), (0.2, 1.0, 2.0), (0.7, 2.0, 1.2)])
def test_kittler_illingworth_finds_the_minimum_error_threshold(p1, s1, s2):
    rng = np.random.default_rng(1)
    n = 400_000
    k = int(p1 * n)
    values = np.concatenate([rng.normal(-20, s1, k), rng.normal(-11, s2, n - k)])
    expected = _bayes_threshold(-20, s1, p1, -11, s2, 1 - p1)
    assert flood.kittler_illingworth(values) == pytest.approx(expected, abs=0.25)


def test_otsu_maximises_the_between_class_variance():
    """Against a brute-force search over candidate thresholds (the definition)."""
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(-19, 2.0, 30_000), rng.normal(-10, 2.5, 70_000)])
    candidates = np.linspace(-18, -11, 701)

    def between(t: float) -> float:
        low, high = values[values <= t], values[values > t]
        w1, w2 = low.size / values.size, high.size / values.size
        return w1 * w2 * (low.mean() - high.mean()) ** 2

    best = candidates[int(np.argmax([between(t) for t in candidates]))]
    assert flood.otsu(values) == pytest.approx(best, abs=0.15)


def test_split_based_threshold_is_not_dragged_by_a_scene_of_mostly_land():
    """5 % water in a scene of two kinds of land: KI on the whole scene splits the land (forest vs fields); tiles
    holding water and land, pooled, find the water. Tiles of land alone (bimodal but not water-like) do not count."""
    rng = np.random.default_rng(3)
    image = np.where(rng.random((512, 512)) < 0.5, rng.normal(-12, 1.0, (512, 512)), rng.normal(-7, 1.0, (512, 512)))
    image[:, :256] = rng.normal(-12, 1.0, (512, 256))
    image[:, 256:] = rng.normal(-7, 1.0, (512, 256))
    image[200:232, 100:420] = rng.normal(-21, 1.0, (32, 320))  # a lake, 4 % of the scene
    whole = flood.kittler_illingworth(image.ravel())
    found = flood.split_threshold([image], "water", -18.0, low_below=flood.WATER_MEAN_BELOW_DB)
    assert not -18.5 < whole < -14.0  # the whole-scene threshold is not the water's
    assert found.tiles_used > 0 and -18.5 < found.value < -14.0
    truth = _bayes_threshold(-21, 1.0, 0.5, -12, 1.0, 0.5)
    assert found.value == pytest.approx(truth, abs=1.5)


def test_without_two_populations_the_literature_value_is_used_and_said():
    rng = np.random.default_rng(4)
    land = rng.normal(-10, 1.5, (256, 256))
    t = flood.split_threshold([land], "water threshold", flood.DEFAULT_WATER_DB, low_below=flood.WATER_MEAN_BELOW_DB)
    assert t.value == flood.DEFAULT_WATER_DB and t.tiles_used == 0 and "literature" in t.how


def test_the_class_rules():
    post = np.array([[-20.0, -20.0, -20.0, -10.0, -20.0, -20.0]])
    pre = np.array([[-10.0, -21.0, -16.0, -10.0, -10.0, -10.0]])
    valid = np.array([[True, True, True, True, True, False]])
    rules = flood.Rules(water_db=-17.0, pre_water_db=-17.0, change_db=-3.0, max_height=10.0)
    height = np.array([[1.0, 1.0, 1.0, 1.0, 30.0, 1.0]])
    got = flood.classify(post, pre, valid, rules, height)
    # flooded; permanent; dark after, not water before but only 4 dB darker -> flooded (drop > 3 dB); dry;
    # flooded but 30 m above drainage -> dry; no data
    assert got.tolist() == [[flood.FLOODED, flood.PERMANENT_WATER, flood.FLOODED, flood.DRY, flood.DRY, flood.NODATA]]
    rules.change_db = -5.0  # now the 4 dB drop is not enough
    assert flood.classify(post, pre, valid, rules, height)[0, 2] == flood.DRY
    assert flood.classify(post, None, valid, rules)[0].tolist() == [1, 1, 1, 0, 1, 255]


def _flood_iou(got: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    ok = (truth != 255) & (got != 255)
    a, b = (got == flood.FLOODED) & ok, (truth == flood.FLOODED) & ok
    return (a & b).sum() / max((a | b).sum(), 1), a.sum() / max(b.sum(), 1) - 1


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("flood_series")
    synthetic.write_series(synthetic.generate_series(size=384, days=10, seed=2, n_communes=4), out)
    return out


def test_the_training_generators_flood_is_found(series_dir, tmp_path):
    """The sample series' flood at its peak against its first day: flood IoU and area against the generator's own
    maps (ENL 4.4). Target of the tool: IoU >= 0.85, area within 10 %."""
    manifest = json.loads((series_dir / "manifest.json").read_text())
    labels = [gdal.Open(str(series_dir / f["labels"])).ReadAsArray() for f in manifest["files"]]
    peak = int(np.argmax([(lab == synthetic.WATER).sum() for lab in labels]))
    truth = np.full(labels[0].shape, flood.DRY, np.uint8)
    water_after, water_before = labels[peak] == synthetic.WATER, labels[0] == synthetic.WATER
    truth[water_after & ~water_before] = flood.FLOODED
    truth[water_after & water_before] = flood.PERMANENT_WATER
    truth[(labels[peak] == 255) | (labels[0] == 255)] = 255
    out = tmp_path / "flood.tif"
    result = flood.flood_map(
        str(series_dir / manifest["files"][peak]["sar"]), str(out), pre=str(series_dir / manifest["files"][0]["sar"])
    )
    got = gdal.Open(str(out)).ReadAsArray()
    iou, area_error = _flood_iou(got, truth)
    assert iou >= 0.85 and abs(area_error) <= 0.10, (iou, area_error)
    ok = (truth != 255) & (got != 255)
    perm = ((got == 2) & (truth == 2) & ok).sum() / (((got == 2) | (truth == 2)) & ok).sum()
    assert perm >= 0.8
    assert result.counts["flooded"] == (got == flood.FLOODED).sum()
    assert result.area_km2("flooded") == pytest.approx((got == 1).sum() * 100 / 1e6)
    ds = gdal.Open(str(out))
    assert float(ds.GetMetadataItem("SARSEG_WATER_THRESHOLD_DB")) == pytest.approx(result.thresholds[0].value, abs=1e-3)
    assert ds.GetRasterBand(1).GetCategoryNames()[:3] == list(flood.CLASS_NAMES)  # (GDAL 3.6 reads them after metadata)


# Evaluation-only pairs at ENL 4.4 (VV and VH), measured: flood IoU 0.95, 0.97, 0.93, 0.90, 0.86, 0.89, 0.92, 0.89,
# 0.92, 0.91, 0.90, 0.00 on seeds 0-11 and a mean of 0.89 on seeds 12-35 (three seeds below 0.85: 0.00, 0.42, 0.20).
# Before the VV/VH mean and the 2 dB drop rule, 0.70 and 0.83 (scripts/flood_eval.py prints both choices of bands).
# Tested here: the seeds whose flood is shallow (about -15 dB VV, 2-3 dB below the fields: 0.56, 0.43, 0.00, 0.74
# before), two open floods, and seed 16 (no lake or river: the water threshold is found where the change holds a
# drop).
@pytest.mark.parametrize("seed", [1, 4, 5, 6, 7, 10, 16])
def test_pairs_of_the_evaluation_only_flood_generator(seed, tmp_path):
    pair = flood_sar_pair(seed, 384, 4.4)
    paths = write_flood_pair(pair, str(tmp_path))
    result = flood.flood_map(paths["post"], str(tmp_path / "out.tif"), pre=paths["pre"])
    iou, area_error = _flood_iou(gdal.Open(str(tmp_path / "out.tif")).ReadAsArray(), pair.truth)
    assert iou >= 0.85 and abs(area_error) <= 0.10, (iou, area_error)
    assert ("where the change holds a drop" in result.thresholds[0].how) == (seed == 16)


def test_a_shallow_flood_needs_both_polarisations(tmp_path):
    """Seed 6: flood at -15 dB VV, 2.7 dB below the fields. VV alone finds less of it than the mean of VV and VH
    (0.82 against 0.92 measured). The output says which bands were used."""
    pair = flood_sar_pair(6, 384, 4.4)
    paths = write_flood_pair(pair, str(tmp_path))
    ious = {}
    for pol in flood.POLARISATIONS:
        lines: list[str] = []
        out = tmp_path / f"{pol}.tif"
        flood.flood_map(paths["post"], str(out), pre=paths["pre"], polarisations=pol, log=lines.append)
        ds = gdal.Open(str(out))
        ious[pol] = _flood_iou(ds.ReadAsArray(), pair.truth)[0]
        assert ds.GetMetadataItem("SARSEG_FLOOD_BANDS") == {"auto": "co+cross", "co-pol": "co-pol"}[pol]
        assert any(("bands 1 (VV) and 2 (VH)" if pol == "auto" else "the co-polarised band only") in x for x in lines)
        assert sum("band 2 ('VH'): in linear power" in x for x in lines) == 2  # the units said once per image
    assert ious["auto"] >= 0.85 and ious["co-pol"] < ious["auto"] - 0.05, ious


def test_the_dual_polarised_level_is_the_mean_of_the_db_values(tmp_path):
    rng = np.random.default_rng(7)
    vv, vh = rng.uniform(1e-3, 0.3, (2, 40, 50))
    vh[3, 4] = 0.0  # no data in one band: no data in the mean
    path = write_raster(tmp_path / "dual.tif", np.stack([vv, vh]).astype(np.float32), nodata=0.0,
                        descriptions=["VV", "VH"], units=["linear", "linear"])  # fmt: skip
    ds = gdal.Open(str(path))
    power, valid = flood._linear(ds, flood.Window(0, 0, 50, 40), [1, 2], ["linear", "linear"])
    expected = (10 * np.log10(vv.astype(np.float32)) + 10 * np.log10(np.maximum(vh, 1e-9).astype(np.float32))) / 2
    assert not valid[3, 4] and valid.sum() == 40 * 50 - 1
    assert np.allclose(10 * np.log10(power[valid]), expected[valid], atol=1e-4)
    assert flood.pol_bands(ds) == (1, 2)


def test_unnamed_bands_with_the_cross_polarised_first_use_the_brighter_as_co_pol(tmp_path):
    """Seed 6 written as an export often writes it: VH, VV, no band names. Band 2 (7 dB brighter) is taken as the
    co-polarised band, said in a warning, band 1 as its cross-polarised partner, and the map is the one of the
    named VV and VH bands."""
    pair = flood_sar_pair(6, 256, 4.4)
    named = write_flood_pair(pair, str(tmp_path / "named"))
    unnamed = {}
    for when, data in (("pre", pair.pre), ("post", pair.post)):
        unnamed[when] = write_raster(tmp_path / f"{when}_vh_vv.tif", data[::-1].astype(np.float32), nodata=0.0,
                                     origin=(500000.0, 5000000.0), units=["linear", "linear"])  # fmt: skip
    warnings: list[str] = []
    flood.flood_map(unnamed["post"], str(tmp_path / "unnamed.tif"), pre=unnamed["pre"], warn=warnings.append)
    flood.flood_map(named["post"], str(tmp_path / "both.tif"), pre=named["pre"])
    flood.flood_map(named["post"], str(tmp_path / "vv.tif"), pre=named["pre"], polarisations="co-pol")
    got, both, vv = (gdal.Open(str(tmp_path / n)).ReadAsArray() for n in ("unnamed.tif", "both.tif", "vv.tif"))
    assert np.array_equal(got, both)
    assert sum("band 2 is taken as VV and band 1 as VH" in w for w in warnings) == 2, warnings
    assert flood.pol_bands(gdal.Open(unnamed["post"])) == (2, 1)
    # Band 1 (VH) as the co-polarised band, as before, gives another map: the choice matters.
    wrong = {}
    for when, data in (("pre", pair.pre), ("post", pair.post)):
        wrong[when] = write_raster(tmp_path / f"{when}_named_wrong.tif", data[::-1].astype(np.float32), nodata=0.0,
                                   origin=(500000.0, 5000000.0), descriptions=["VV", "VH"],
                                   units=["linear", "linear"])  # fmt: skip
    flood.flood_map(wrong["post"], str(tmp_path / "vh.tif"), pre=wrong["pre"], polarisations="co-pol")
    vh = gdal.Open(str(tmp_path / "vh.tif")).ReadAsArray()
    assert (vh != vv).mean() > 0.01


def test_unnamed_bands_in_order_are_taken_as_a_pair_by_brightness(tmp_path):
    """Seed 6 (a shallow flood) as VV, VH without names: band 2 is 7 dB darker, so the pair is used as if named
    (the log says so), which finds the shallow flood VV alone misses. Two unnamed dates of VV are not a pair."""
    pair = flood_sar_pair(6, 256, 4.4)
    named = write_flood_pair(pair, str(tmp_path / "named"))
    unnamed = {
        when: write_raster(
            tmp_path / f"{when}.tif",
            data.astype(np.float32),
            nodata=0.0,
            origin=(500000.0, 5000000.0),
            units=["linear", "linear"],
        )  # fmt: skip
        for when, data in (("pre", pair.pre), ("post", pair.post))
    }
    lines: list[str] = []
    flood.flood_map(unnamed["post"], str(tmp_path / "unnamed.tif"), pre=unnamed["pre"], log=lines.append)
    flood.flood_map(named["post"], str(tmp_path / "both.tif"), pre=named["pre"])
    got, both = (gdal.Open(str(tmp_path / n)).ReadAsArray() for n in ("unnamed.tif", "both.tif"))
    assert np.array_equal(got, both)
    assert sum("unnamed bands taken as VV (band 1) and VH (band 2)" in x for x in lines) == 2, lines
    assert gdal.Open(str(tmp_path / "unnamed.tif")).GetMetadataItem("SARSEG_FLOOD_BANDS") == "co+cross"
    dates = write_raster(tmp_path / "two_dates.tif", np.stack([pair.pre[0], pair.post[0]]).astype(np.float32),
                         nodata=0.0, units=["linear", "linear"])  # fmt: skip
    assert flood.pol_bands(gdal.Open(dates)) == (1, None)


def test_a_flood_the_bands_cannot_tell_is_not_invented(tmp_path):
    """Seed 11: flood 2.2 dB (VV) and 1.1 dB (VH) below the fields, as bright as the darkest fields: under-mapped,
    and almost no dry land called flooded."""
    pair = flood_sar_pair(11, 384, 4.4)
    paths = write_flood_pair(pair, str(tmp_path))
    flood.flood_map(paths["post"], str(tmp_path / "out.tif"), pre=paths["pre"])
    got = gdal.Open(str(tmp_path / "out.tif")).ReadAsArray()
    assert ((got == flood.FLOODED) & (pair.truth == flood.DRY)).sum() < 0.005 * (pair.truth == flood.DRY).sum()


def test_height_above_drainage_removes_flood_on_high_ground(tmp_path):
    pair = flood_sar_pair(0, 256, 4.4)
    paths = write_flood_pair(pair, str(tmp_path))
    flood.flood_map(paths["post"], str(tmp_path / "all.tif"), pre=paths["pre"])
    flood.flood_map(paths["post"], str(tmp_path / "low.tif"), pre=paths["pre"], height=paths["hand"], max_height=2.0)
    every, low = (gdal.Open(str(tmp_path / n)).ReadAsArray() for n in ("all.tif", "low.tif"))
    high = pair.hand > 2.5  # away from the limit (the height raster is read bilinearly)
    assert (every[high] == flood.FLOODED).sum() > 0 and (low[high] == flood.FLOODED).sum() == 0
    assert np.array_equal(low[pair.hand < 1.5] == flood.FLOODED, every[pair.hand < 1.5] == flood.FLOODED)


def test_the_minimum_mapping_unit_leaves_no_smaller_patch(series_dir, tmp_path):
    from scipy import ndimage

    manifest = json.loads((series_dir / "manifest.json").read_text())
    post, pre = (str(series_dir / manifest["files"][d]["sar"]) for d in (5, 0))
    flood.flood_map(post, str(tmp_path / "none.tif"), pre=pre, min_area_m2=0)
    flood.flood_map(post, str(tmp_path / "mmu.tif"), pre=pre, min_area_m2=5000)  # 50 pixels of 10 m
    for name, smallest in (("none.tif", 1), ("mmu.tif", 50)):
        got = gdal.Open(str(tmp_path / name)).ReadAsArray()
        lab, n = ndimage.label(got == flood.FLOODED)  # 4-connected, like the sieve
        sizes = np.bincount(lab.ravel())[1:]
        assert n > 0 and sizes.min() >= smallest
    assert ndimage.label(gdal.Open(str(tmp_path / "none.tif")).ReadAsArray() == 1)[1] > n


def test_db_input_gives_the_same_map(series_dir, tmp_path):
    manifest = json.loads((series_dir / "manifest.json").read_text())
    post, pre = (series_dir / manifest["files"][d]["sar"] for d in (5, 0))
    db_paths = []
    for path in (post, pre):
        ds = gdal.Open(str(path))
        data = ds.ReadAsArray().astype(np.float64)
        db = np.where(data > 0, 10 * np.log10(np.where(data > 0, data, 1)), np.nan).astype(np.float32)
        target = tmp_path / f"{path.stem}_db.tif"
        db_paths.append(
            write_raster(
                target,
                db,
                geotransform=ds.GetGeoTransform(),
                nodata=float("nan"),
                descriptions=["VV", "VH"],
                units=["dB", "dB"],
            )  # fmt: skip
        )
    flood.flood_map(str(post), str(tmp_path / "lin.tif"), pre=str(pre))
    flood.flood_map(db_paths[0], str(tmp_path / "db.tif"), pre=db_paths[1])
    a, b = (gdal.Open(str(tmp_path / n)).ReadAsArray() for n in ("lin.tif", "db.tif"))
    assert (a == b).mean() > 0.999


def test_bad_requests_are_refused_and_nothing_is_written(series_dir, tmp_path):
    manifest = json.loads((series_dir / "manifest.json").read_text())
    post = str(series_dir / manifest["files"][5]["sar"])
    out = tmp_path / "f.tif"
    with pytest.raises(SarSegError, match="odd"):
        flood.flood_map(post, str(out), smooth=4)
    with pytest.raises(SarSegError, match="maximum height"):
        flood.flood_map(post, str(out), height=post)
    with pytest.raises(SarSegError):
        flood.flood_map(post, str(out), pre=str(tmp_path / "missing.tif"))
    with pytest.raises(CancelledError):
        flood.flood_map(post, str(out), is_canceled=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_polygons_cover_the_flooded_pixels_with_their_area(series_dir, tmp_path):
    """Polygon areas against pixel counts (the polygons trace pixel edges exactly), and every flooded pixel centre
    inside a polygon, none outside."""
    from osgeo import ogr

    manifest = json.loads((series_dir / "manifest.json").read_text())
    post, pre = (str(series_dir / manifest["files"][d]["sar"]) for d in (5, 0))
    classes = tmp_path / "flood.tif"
    result = flood.flood_map(post, str(classes), pre=pre)
    gpkg = tmp_path / "flood.gpkg"
    n = flood.polygonize(str(classes), str(gpkg))
    ds = ogr.Open(str(gpkg))
    layer = ds.GetLayer(0)
    assert layer.GetFeatureCount() == n > 0
    areas = [f.GetField("area_km2") for f in layer]
    assert sum(areas) == pytest.approx(result.area_km2("flooded"), rel=1e-9)
    assert all(a >= 1000 / 1e6 - 1e-12 for a in areas)  # the minimum mapping unit
    # Burn the polygons back: the same pixels.
    src = gdal.Open(str(classes))
    burnt = gdal.GetDriverByName("MEM").Create("", src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte)
    burnt.SetGeoTransform(src.GetGeoTransform())
    burnt.SetProjection(src.GetProjection())
    gdal.RasterizeLayer(burnt, [1], layer, burn_values=[1])
    assert np.array_equal(burnt.ReadAsArray() == 1, src.ReadAsArray() == flood.FLOODED)
    assert list(tmp_path.glob("*.mask*")) == [] and list(tmp_path.glob(".*")) == []


def test_flood_per_commune_against_the_pixels_inside(series_dir, tmp_path):
    """Per commune: flooded km² and share against a count of the class raster's pixels whose centres the commune
    holds (rasterised independently, with OGR point-in-polygon on pixel centres)."""
    from osgeo import ogr

    manifest = json.loads((series_dir / "manifest.json").read_text())
    post, pre = (str(series_dir / manifest["files"][d]["sar"]) for d in (5, 0))
    classes = tmp_path / "flood.tif"
    flood.flood_map(post, str(classes), pre=pre)
    communes = ogr.Open(str(series_dir / manifest["communes_file"]))
    layer = communes.GetLayer(0)
    geometries = [bytes(f.GetGeometryRef().ExportToWkb()) for f in layer]
    got = flood.flood_per_commune(str(classes), geometries + [None])
    src = gdal.Open(str(classes))
    gt = src.GetGeoTransform()
    data = src.ReadAsArray()
    rows, cols = np.mgrid[0 : data.shape[0] : 7, 0 : data.shape[1] : 7]  # every 7th pixel: a quick independent check
    for i, wkb in enumerate(geometries):
        geom = ogr.CreateGeometryFromWkb(wkb)
        inside = np.zeros(rows.shape, bool)
        for k, (r, c) in enumerate(zip(rows.ravel(), cols.ravel())):
            p = ogr.Geometry(ogr.wkbPoint)
            p.AddPoint_2D(gt[0] + (c + 0.5) * gt[1], gt[3] + (r + 0.5) * gt[5])
            inside.ravel()[k] = geom.Contains(p)
        cls = data[rows, cols][inside]
        land = np.isin(cls, (flood.DRY, flood.FLOODED)).sum()
        if land < 200:
            continue
        share = (cls == flood.FLOODED).sum() / land
        assert got.flooded_share[i] == pytest.approx(share, abs=0.03)
        total = (cls != 255).sum() * 49 * 100 / 1e6  # sampled pixels stand for 7 x 7 pixels of 100 m²
        assert got.flooded_km2[i] + got.permanent_km2[i] <= total * 1.2 + 0.01
    assert got.flooded_km2[-1] == 0 and got.mapped_share[-1] == 0
    assert got.flooded_km2.sum() == pytest.approx((data == flood.FLOODED).sum() * 100 / 1e6, rel=0.02)


def test_a_third_opinion_adds_flood_where_two_of_three_agree():
    post = np.array([[-20.0, -14.0, -20.0, -14.0, -10.0]])
    pre = np.array([[-10.0, -10.0, -16.5, -12.0, -10.0]])
    valid = np.ones(post.shape, bool)
    rules = flood.Rules(water_db=-17.0, pre_water_db=-17.0, change_db=-3.0)
    model = np.array([[False, True, True, True, True]])
    without = flood.classify(post, pre, valid, rules)
    with_model = flood.classify(post, pre, valid, rules, model_water=model)
    # Dark and 10 dB darker: flooded either way. Not dark (-14 dB) but 4 dB darker and water for the model: two of
    # three, flooded with the model only. Dark and 3.5 dB darker: flooded either way. Only the model (a 2 dB drop,
    # not dark): dry. Nothing but the model: dry.
    assert without[0].tolist() == [1, 0, 1, 0, 0]
    assert with_model[0].tolist() == [1, 1, 1, 0, 0]


def test_pixel_areas_in_degrees_shrink_with_latitude():
    from osgeo import osr

    from sar_seg_plugin.core.timeseries import Grid

    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    at_60 = Grid(1000, 1000, (10.0, 0.001, 0.0, 60.5, 0.0, -0.001), wgs84.ExportToWkt())
    # One 0.001 x 0.001 degree cell at 60 N: 111.32 m x cos(60) by 110.57 m (ellipsoid-free approximation)
    assert flood.pixel_area_m2(at_60) == pytest.approx(111.32 * 0.5 * 110.574, rel=1e-3)
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32631)
    assert flood.pixel_area_m2(Grid(5, 5, (0.0, 10.0, 0.0, 0.0, 0.0, -10.0), utm.ExportToWkt())) == 100.0
