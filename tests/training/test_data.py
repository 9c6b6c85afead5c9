"""Training data: scene discovery and its errors, leakage-free splits, patch reading and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from osgeo import gdal
from rasters import GT, write_raster

from training.data import (
    DataError,
    NormStats,
    SegmentationPatches,
    find_scenes,
    make_synthetic_dataset,
    scene_groups,
    spatial_block_split,
    split_scenes,
)

STATS = NormStats(mean=(-11.0, -17.0), std=(4.0, 5.0))


@pytest.fixture(scope="module")
def synthetic_scenes(tmp_path_factory):
    """Four independent 64 px synthetic areas, two dates each."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_scenes=4, size=64, seed=5)


def db_reference(path, col, row, size):
    """dB of a SAR window read with plain GDAL, computed in float64."""
    ds = gdal.Open(str(path))
    data = ds.ReadAsArray(col, row, size, size).astype(np.float64)
    return 10.0 * np.log10(np.maximum(data, 1e-5)), data


def label_derived_scene(folder, nodata_corner=True):
    """A scene whose SAR is a function of the label: VV = 3 * class - 20 dB, VH = 3 * class - 25 dB."""
    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(0, 5, (8, 8)), np.ones((4, 4), dtype=np.int64)).astype(np.uint8)  # 32 x 32
    label[:3, :5] = 4  # breaks every symmetry, so each flip / rotation gives a different label
    db = np.stack([3.0 * label - 20.0, 3.0 * label - 25.0])
    sar = 10.0 ** (db / 10.0)
    if nodata_corner:
        sar[:, -4:, -4:] = 0.0
    write_raster(folder / "sar_x.tif", sar, nodata=0.0, geotransform=GT)
    write_raster(folder / "labels_x.tif", label, nodata=255, geotransform=GT)
    return label


# --- Scenes and their errors -----------------------------------------------------------------------


def test_make_synthetic_dataset_finds_independent_areas(synthetic_scenes):
    assert len(synthetic_scenes) == 8
    assert all(s.label.name == s.image.name.replace("sar_", "labels_") for s in synthetic_scenes)
    assert all((s.width, s.height, s.bands) == (64, 64, 2) for s in synthetic_scenes)
    groups = scene_groups(synthetic_scenes)
    assert sorted(len(g) for g in groups) == [2, 2, 2, 2]
    assert all(len({s.image.parent for s in g}) == 1 for g in groups)


def test_image_label_prefixes_pair(tmp_path):
    write_raster(tmp_path / "image_a.tif", np.ones((2, 8, 8)), geotransform=GT)
    write_raster(tmp_path / "label_a.tif", np.zeros((8, 8), np.uint8), geotransform=GT)
    (scene,) = find_scenes(tmp_path)
    assert (scene.image.name, scene.label.name) == ("image_a.tif", "label_a.tif")


def test_error_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no rasters here")
    with pytest.raises(DataError, match=r"no SAR rasters in .*sar_\*\.tif or image_\*\.tif"):
        find_scenes(tmp_path)


def test_error_missing_labels(tmp_path):
    write_raster(tmp_path / "sar_20260301.tif", np.ones((2, 8, 8)), geotransform=GT)
    with pytest.raises(DataError, match="no label raster for sar_20260301.tif; expected labels_20260301.tif"):
        find_scenes(tmp_path)


def test_error_label_size_mismatch(tmp_path):
    write_raster(tmp_path / "sar_a.tif", np.ones((2, 8, 8)), geotransform=GT)
    write_raster(tmp_path / "labels_a.tif", np.zeros((8, 9), np.uint8), geotransform=GT)
    with pytest.raises(DataError, match="labels_a.tif is 9x8 pixels but sar_a.tif is 8x8"):
        find_scenes(tmp_path)


def test_error_label_geotransform_mismatch(tmp_path):
    write_raster(tmp_path / "sar_a.tif", np.ones((2, 8, 8)), geotransform=GT)
    shifted = (GT[0] + 10.0, *GT[1:])
    write_raster(tmp_path / "labels_a.tif", np.zeros((8, 8), np.uint8), geotransform=shifted)
    with pytest.raises(DataError, match="labels_a.tif and sar_a.tif have different geotransforms"):
        find_scenes(tmp_path)


def test_error_undeclared_class_when_read(tmp_path):
    label = np.zeros((16, 16), np.uint8)
    label[5, 7] = 7
    write_raster(tmp_path / "sar_a.tif", np.ones((2, 16, 16)), nodata=0.0, geotransform=GT)
    write_raster(tmp_path / "labels_a.tif", label, nodata=255, geotransform=GT)
    patches = SegmentationPatches(find_scenes(tmp_path), patch_size=8, stats=STATS, n_classes=5)
    patches[1]  # the window without the bad value reads fine
    with pytest.raises(DataError, match=r"label value 7 in labels_a.tif is not a declared class \(0..4"):
        patches[0]


# --- Splits ------------------------------------------------------------------------------------------


def test_split_scenes_keeps_areas_whole_and_is_deterministic(synthetic_scenes):
    train, val = split_scenes(synthetic_scenes, val_fraction=0.25, seed=1)
    assert len(train) + len(val) == len(synthetic_scenes)
    assert {s.image for s in train}.isdisjoint({s.image for s in val})
    # No area (folder = the dates of one area) on both sides.
    assert {s.image.parent for s in train}.isdisjoint({s.image.parent for s in val})
    assert len(val) == 2  # one area of four
    again = split_scenes(list(reversed(synthetic_scenes)), val_fraction=0.25, seed=1)
    assert [s.image for s in again[1]] == [s.image for s in val]
    vals = {tuple(s.image for s in split_scenes(synthetic_scenes, 0.25, seed)[1]) for seed in range(8)}
    assert len(vals) > 1  # the seed matters


def test_split_scenes_refuses_a_single_area(synthetic_scenes):
    one_area = [s for s in synthetic_scenes if s.image.parent == synthetic_scenes[0].image.parent]
    with pytest.raises(DataError, match="spatial_block_split"):
        split_scenes(one_area, 0.5)


def test_spatial_block_split_footprints_are_disjoint(synthetic_scenes):
    scene = synthetic_scenes[0]
    split = spatial_block_split(scene.height, scene.width, block=16, val_fraction=0.3, seed=2)
    assert split.val_blocks.sum() == round(0.3 * 16)
    kw = {"patch_size": 16, "stride": 8, "stats": STATS, "split": split}
    train = SegmentationPatches([scene], role="train", **kw)
    val = SegmentationPatches([scene], role="val", **kw)
    footprint = {}
    for name, ds in (("train", train), ("val", val)):
        mask = np.zeros((scene.height, scene.width), dtype=bool)
        for w in ds.windows:
            mask[w.row : w.row + 16, w.col : w.col + 16] = True
        footprint[name] = mask
    assert not (footprint["train"] & footprint["val"]).any()
    assert not (footprint["train"] & split.val_mask()).any()
    assert not (footprint["val"] & ~split.val_mask()).any()
    assert len(train) + len(val) < 7 * 7  # straddling patches were dropped
    again = spatial_block_split(scene.height, scene.width, block=16, val_fraction=0.3, seed=2)
    np.testing.assert_array_equal(again.val_blocks, split.val_blocks)


# --- Reading patches -------------------------------------------------------------------------------------


def test_patches_equal_the_gdal_window_in_db(synthetic_scenes):
    patches = SegmentationPatches(synthetic_scenes[:2], patch_size=32, stride=16, stats=STATS)
    assert len(patches) == 2 * 3 * 3
    nodata_seen = 0
    mean, std = np.array(STATS.mean)[:, None, None], np.array(STATS.std)[:, None, None]
    for i, w in enumerate(patches.windows):
        scene = patches.scenes[w.scene]
        image, label = patches[i]
        assert image.dtype == torch.float32 and label.dtype == torch.int64
        assert tuple(image.shape) == (2, 32, 32) and tuple(label.shape) == (32, 32)
        db, linear = db_reference(scene.image, w.col, w.row, 32)
        nodata = (linear == 0).any(axis=0)
        expected = np.where(nodata, 0.0, (db - mean) / std)
        np.testing.assert_allclose(image.numpy(), expected, atol=2e-5)
        truth = gdal.Open(str(scene.label)).ReadAsArray(w.col, w.row, 32, 32).astype(np.int64)
        truth[nodata] = 255
        np.testing.assert_array_equal(label.numpy(), truth)
        nodata_seen += int(nodata.sum())
    assert nodata_seen > 0  # the synthetic scenes have a nodata corner


def test_labels_are_255_where_sar_is_nodata(tmp_path):
    label = np.full((16, 16), 2, np.uint8)
    sar = np.ones((2, 16, 16), np.float32)
    sar[0, 3, 4] = 0.0  # VV nodata only
    sar[1, 10, 11] = np.nan
    write_raster(tmp_path / "sar_a.tif", sar, nodata=0.0, geotransform=GT)
    write_raster(tmp_path / "labels_a.tif", label, nodata=255, geotransform=GT)
    image, out = SegmentationPatches(find_scenes(tmp_path), patch_size=16, stats=STATS)[0]
    assert out[3, 4] == 255 and out[10, 11] == 255
    assert int((out == 2).sum()) == 16 * 16 - 2
    assert torch.all(image[:, 3, 4] == 0) and torch.all(image[:, 10, 11] == 0)


def test_band_stats_are_the_db_moments(tmp_path):
    label_derived_scene(tmp_path, nodata_corner=True)
    patches = SegmentationPatches(find_scenes(tmp_path), patch_size=16)
    label = gdal.Open(str(tmp_path / "labels_x.tif")).ReadAsArray().astype(float)
    valid = np.ones(label.shape, dtype=bool)
    valid[-4:, -4:] = False
    assert patches.stats.mean == pytest.approx((3 * label[valid].mean() - 20, 3 * label[valid].mean() - 25))
    assert patches.stats.std == pytest.approx((3 * label[valid].std(), 3 * label[valid].std()), rel=1e-5)


# --- Augmentation --------------------------------------------------------------------------------------


def orientations(label):
    """The 8 flips / 90-degree rotations of a label."""
    out = []
    for k in range(4):
        rotated = np.rot90(label, k)
        out += [rotated, rotated[:, ::-1]]
    return out


def test_augmentation_keeps_image_and_label_aligned_and_offsets_small(tmp_path):
    label = label_derived_scene(tmp_path)
    stats = NormStats(mean=(0.0, 0.0), std=(1.0, 1.0))
    patches = SegmentationPatches(find_scenes(tmp_path), 32, stats=stats, augment=True, speckle_looks=None)
    expected_label = label.astype(np.int64)
    expected_label[-4:, -4:] = 255  # the SAR nodata corner
    torch.manual_seed(0)
    seen, offsets = set(), []
    for _ in range(40):
        image, out = (t.numpy() for t in patches[0])
        valid = out != 255
        assert valid.sum() == 32 * 32 - 16
        # Each band is the label's dB value plus one constant offset of at most 1 dB.
        for band, base in ((0, -20.0), (1, -25.0)):
            offset = image[band][valid] - (3.0 * out[valid] + base)
            assert np.ptp(offset) < 1e-4
            assert abs(offset[0]) <= 1.0 + 1e-5
            offsets.append(float(offset[0]))
        assert np.all(image[:, ~valid] == 0)
        matches = [k for k, o in enumerate(orientations(expected_label)) if np.array_equal(o, out)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= 6  # the flips and rotations really vary
    assert max(offsets) - min(offsets) > 1.0  # and so do the offsets


def test_fresh_speckle_has_mean_one_and_the_given_looks(tmp_path):
    label_derived_scene(tmp_path, nodata_corner=False)
    stats = NormStats(mean=(0.0, 0.0), std=(1.0, 1.0))
    kw = {"speckle_looks": 20.0, "speckle_probability": 1.0, "max_offset_db": 0.0}
    patches = SegmentationPatches(find_scenes(tmp_path), 32, stats=stats, augment=True, **kw)
    torch.manual_seed(0)
    ratios = []
    for _ in range(20):
        image, out = (t.numpy() for t in patches[0])
        clean_db = np.stack([3.0 * out - 20.0, 3.0 * out - 25.0])
        ratios.append(10.0 ** ((image - clean_db) / 10.0))
    ratios = np.concatenate([r.ravel() for r in ratios])  # 40,960 draws of Gamma(20, 1/20)
    assert ratios.mean() == pytest.approx(1.0, abs=0.01)
    assert ratios.var() == pytest.approx(1.0 / 20.0, rel=0.05)
