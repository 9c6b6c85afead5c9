"""Tests of training-patch planning and extraction (sar_seg_plugin.core.patches).

Patch contents are compared with windows of the source arrays read whole with GDAL; the split is
checked for leaks on pixel footprints; the kept set is recomputed from the validity masks.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from rasters import GT, read_raster

from sar_seg_plugin.core import patches
from sar_seg_plugin.core.errors import CancelledError, SarSegError


def read_index(out_dir) -> list[dict[str, str]]:
    with open(Path(out_dir) / "index.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def files_under(folder) -> set[str]:
    root = Path(folder)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sample(sample_dir, sample_series):
    """Paths and arrays of the first date of the sample series."""
    sar = sample_dir / "sar_20260301.tif"
    labels = sample_dir / "labels_20260301.tif"
    return {
        "sar": str(sar),
        "labels": str(labels),
        "image": read_raster(sar),
        "label": read_raster(labels)[0],
        "valid": sample_series.valid,
    }


def _valid_fraction(sample, x, y, size, aoi=None):
    win = (slice(y, y + size), slice(x, x + size))
    ok = (sample["image"][(slice(None), *win)] != 0.0).all(axis=0)
    ok &= sample["label"][win] != 255
    if aoi is not None:
        ok &= aoi[win]
    return float(ok.mean())


# --- Planning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "size", "stride"), [(100, 32, 16), (100, 32, 32), (64, 32, 32), (97, 32, 7),
                                                        (32, 32, 5), (200, 8, 50), (150, 32, 16)])  # fmt: skip
def test_patch_positions_cover_the_axis_including_the_edge(length, size, stride):
    starts = patches.patch_positions(length, size, stride)
    assert starts[0] == 0 and starts[-1] == length - size
    assert starts == sorted(set(starts))
    assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))
    covered = np.zeros(length, np.int32)
    for s in starts:
        covered[s : s + size] += 1
    if stride <= size:
        assert covered.min() >= 1
    else:  # sparse sampling leaves gaps by design, but the last pixel is still covered
        assert covered[-1] == 1 and covered[0] == 1
    # Every regular stride position is there (plus at most one extra one at the end).
    regular = list(range(0, length - size + 1, stride))
    assert starts[: len(regular)] == regular and len(starts) - len(regular) in (0, 1)


def test_patch_positions_examples():
    assert patches.patch_positions(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert patches.patch_positions(64, 32, 32) == [0, 32]
    assert patches.patch_positions(31, 32, 16) == []


def _footprints(plan, width, height, size, split):
    cover = np.zeros((height, width), bool)
    for p in plan:
        if p.split == split:
            cover[p.y : p.y + size, p.x : p.x + size] = True
    return cover


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 7])
def test_plan_patches_train_and_val_share_no_pixel(seed):
    width, height, size, stride, block = 200, 150, 32, 16, 64
    plan = patches.plan_patches(width, height, size, stride, block, 0.3, seed)
    xs, ys = patches.patch_positions(width, size, stride), patches.patch_positions(height, size, stride)
    assert sorted((p.y, p.x) for p in plan) == sorted((y, x) for y in ys for x in xs)
    train = _footprints(plan, width, height, size, patches.TRAIN)
    val = _footprints(plan, width, height, size, patches.VAL)
    assert train.any() and val.any()
    assert not (train & val).any()
    n_train = sum(p.split == patches.TRAIN for p in plan)
    n_val = sum(p.split == patches.VAL for p in plan)
    assert n_train > 0 and n_val > 0
    # A patch inside a single split block always gets that block's split (it is never dropped).
    for p in plan:
        if p.x // block == (p.x + size - 1) // block and p.y // block == (p.y + size - 1) // block:
            assert p.split is not None
    # Patches that straddle split blocks of both kinds are dropped; at least one exists with stride 16.
    assert any(p.split is None for p in plan)


def test_plan_patches_val_fraction_of_blocks():
    # 4 x 3 split blocks of 64 px on 200 x 150; 30 % of 12 = 3.6 -> 4 validation blocks.
    plan = patches.plan_patches(200, 150, 64, 64, 64, 0.3, 5)
    splits = {(p.x // 64, p.y // 64): p.split for p in plan if p.x % 64 == 0 and p.y % 64 == 0}
    assert len(splits) == 6  # the 64-px-aligned patches: 3 x 2
    assert set(splits.values()) <= {patches.TRAIN, patches.VAL}
    grid = patches.block_splits(4, 3, 0.3, 5)
    assert (grid == patches.VAL).sum() == 4 and (grid == patches.TRAIN).sum() == 8
    assert {k: grid[k[1], k[0]] for k in splits} == splits


def test_plan_patches_is_deterministic_by_seed():
    a = patches.plan_patches(200, 150, 32, 16, 64, 0.3, 42)
    b = patches.plan_patches(200, 150, 32, 16, 64, 0.3, 42)
    assert a == b
    others = [patches.plan_patches(200, 150, 32, 16, 64, 0.3, s) for s in range(5)]
    assert any([p.split for p in o] != [p.split for p in a] for o in others)


def test_plan_patches_without_validation():
    plan = patches.plan_patches(200, 150, 32, 16, 64, 0.0, 0)
    assert all(p.split == patches.TRAIN for p in plan)


@pytest.mark.parametrize(
    ("width", "height", "size", "stride", "val"),
    [(100, 100, 4, 4, 0.2), (100, 100, 32, 0, 0.2), (100, 30, 32, 32, 0.2), (20, 100, 32, 32, 0.2),
     (100, 100, 32, 32, 1.0), (100, 100, 32, 32, -0.1)],
)  # fmt: skip
def test_plan_patches_refuses_bad_parameters(width, height, size, stride, val):
    with pytest.raises(SarSegError):
        patches.plan_patches(width, height, size, stride, 64, val, 0)


# --- Extraction: tif layout ---------------------------------------------------------------------------


def test_extract_patches_tif_layout_matches_source_windows(tmp_path, sample):
    out = tmp_path / "out"
    size = 32
    result = patches.extract_patches(sample["sar"], str(out), size=size, stride=32, label_path=sample["labels"],
                                     min_valid=0.5, val_fraction=0.3, split_block=64, fmt="tif", seed=1)  # fmt: skip
    rows = read_index(out)
    assert result["train"] > 0 and result["val"] > 0
    assert len(rows) == result["train"] + result["val"]
    assert sum(r["split"] == "train" for r in rows) == result["train"]
    assert result["index"] == str(out / "index.csv")
    x0, dx, _, y0, _, dy = GT
    listed = set()
    for row in rows:
        x, y = int(row["col"]), int(row["row"])
        split = row["split"]
        assert row["image"] == f"{split}/images/{row['patch_id']}.tif"
        assert row["label"] == f"{split}/labels/{row['patch_id']}.tif"
        listed |= {row["image"], row["label"]}
        image = read_raster(out / row["image"])
        np.testing.assert_array_equal(image, sample["image"][:, y : y + size, x : x + size])
        label = read_raster(out / row["label"])[0]
        np.testing.assert_array_equal(label, sample["label"][y : y + size, x : x + size])
        for path in (out / row["image"], out / row["label"]):
            ds = gdal.Open(str(path))
            gt = ds.GetGeoTransform()
            assert gt[0] == pytest.approx(x0 + x * dx) and gt[3] == pytest.approx(y0 + y * dy)
            assert gt[1] == dx and gt[5] == dy
            assert osr.SpatialReference(wkt=ds.GetProjection()).GetAuthorityCode(None) == "32631"
        assert gdal.Open(str(out / row["image"])).GetRasterBand(1).GetNoDataValue() == 0.0
        assert gdal.Open(str(out / row["label"])).GetRasterBand(1).GetNoDataValue() == 255
        assert float(row["x_min"]) == pytest.approx(x0 + x * dx) and float(row["y_max"]) == pytest.approx(y0 + y * dy)
        fraction = _valid_fraction(sample, x, y, size)
        assert float(row["valid_fraction"]) == pytest.approx(fraction, abs=1e-4)
        assert fraction >= 0.5
    # The files on disk are exactly those listed, in the folders of their split.
    assert files_under(out) == listed | {"index.csv"}
    # No pixel is shared between a training and a validation patch.
    cover = {s: np.zeros((160, 160), bool) for s in ("train", "val")}
    for row in rows:
        cover[row["split"]][int(row["row"]) : int(row["row"]) + size, int(row["col"]) : int(row["col"]) + size] = True
    assert not (cover["train"] & cover["val"]).any()


def test_extract_patches_without_labels(tmp_path, sample):
    out = tmp_path / "out"
    result = patches.extract_patches(sample["sar"], str(out), size=40, stride=40, min_valid=0.0, val_fraction=0.0)
    rows = read_index(out)
    assert len(rows) == result["train"] == 16 and result["val"] == 0
    assert all(r["label"] == "" for r in rows)
    assert not (out / "train" / "labels").exists()
    for row in rows:
        x, y = int(row["col"]), int(row["row"])
        np.testing.assert_array_equal(read_raster(out / row["image"]), sample["image"][:, y : y + 40, x : x + 40])


# --- Extraction: npz layout ---------------------------------------------------------------------------


def test_extract_patches_npz_layout_matches_source_windows(tmp_path, sample):
    out = tmp_path / "out"
    size = 24
    result = patches.extract_patches(sample["sar"], str(out), size=size, stride=20, label_path=sample["labels"],
                                     min_valid=0.6, val_fraction=0.3, split_block=48, fmt="npz", seed=3)  # fmt: skip
    rows = read_index(out)
    assert files_under(out) == {"train.npz", "val.npz", "index.csv"}
    total = 0
    for split in ("train", "val"):
        with np.load(out / f"{split}.npz") as npz:
            assert set(npz.files) == {"images", "labels", "positions"}
            images, labels, positions = npz["images"], npz["labels"], npz["positions"]
        n = result[split]
        assert n > 0
        total += n
        assert images.shape == (n, 2, size, size) and images.dtype == np.float32
        assert labels.shape == (n, size, size) and labels.dtype == np.uint8
        assert positions.shape == (n, 2)
        split_rows = [r for r in rows if r["split"] == split]
        assert [(int(r["col"]), int(r["row"])) for r in split_rows] == [tuple(p) for p in positions]
        assert all(r["image"] == f"{split}.npz" for r in split_rows)
        for i, (x, y) in enumerate(positions):
            np.testing.assert_array_equal(images[i], sample["image"][:, y : y + size, x : x + size])
            np.testing.assert_array_equal(labels[i], sample["label"][y : y + size, x : x + size])
            assert _valid_fraction(sample, x, y, size) >= 0.6
    assert total == len(rows)


def test_extract_patches_npz_without_labels_has_no_label_array(tmp_path, sample):
    out = tmp_path / "out"
    patches.extract_patches(sample["sar"], str(out), size=32, stride=32, min_valid=0.0, val_fraction=0.25,
                            split_block=32, fmt="npz")  # fmt: skip
    for split in ("train", "val"):
        with np.load(out / f"{split}.npz") as npz:
            assert set(npz.files) == {"images", "positions"}
            for image, (x, y) in zip(npz["images"], npz["positions"]):
                np.testing.assert_array_equal(image, sample["image"][:, y : y + 32, x : x + 32])


def test_extract_patches_new_run_replaces_earlier_outputs(tmp_path, sample):
    out = tmp_path / "out"
    patches.extract_patches(sample["sar"], str(out), size=32, stride=32, min_valid=0.0, val_fraction=0.25,
                            split_block=64, fmt="tif")  # fmt: skip
    assert (out / "train").is_dir()
    patches.extract_patches(sample["sar"], str(out), size=32, stride=32, min_valid=0.0, val_fraction=0.25,
                            split_block=64, fmt="npz")  # fmt: skip
    assert sorted(os.listdir(out)) == ["index.csv", "train.npz", "val.npz"]


# --- Filtering: nodata, AOI -------------------------------------------------------------------------


def test_extract_patches_min_valid_drops_patches_over_the_nodata_corner(tmp_path, sample):
    size, stride, block, min_valid = 32, 16, 64, 0.9
    out = tmp_path / "out"
    result = patches.extract_patches(sample["sar"], str(out), size=size, stride=stride, label_path=sample["labels"],
                                     min_valid=min_valid, val_fraction=0.3, split_block=block, fmt="tif",
                                     seed=0)  # fmt: skip
    rows = read_index(out)
    kept = {(int(r["col"]), int(r["row"])) for r in rows}
    for x, y in kept:
        assert _valid_fraction(sample, x, y, size) >= min_valid
    # Recompute the expected kept set from the plan and the validity masks.
    plan = patches.plan_patches(160, 160, size, stride, block, 0.3, 0)
    fractions = {(p.x, p.y): _valid_fraction(sample, p.x, p.y, size) for p in plan if p.split is not None}
    expected = {k for k, f in fractions.items() if f >= min_valid}
    assert kept == expected
    dropped = {k for k, f in fractions.items() if f < min_valid}
    assert dropped, "the sample's nodata corner must make some patches too empty"
    assert result["dropped_invalid"] == len(dropped)
    assert result["dropped_at_split_borders"] == sum(p.split is None for p in plan)
    assert result["candidates"] == len(plan)
    # The dropped patches lie over the corner.
    for x, y in dropped:
        assert not sample["valid"][y : y + size, x : x + size].all()


def test_extract_patches_aoi_polygon_restricts_patches(tmp_path, sample):
    # AOI: pixel columns 20..99, rows 10..69, given in map coordinates (pixel edges, so centres are unambiguous).
    x0, dx, _, y0, _, dy = GT
    c0, c1, r0, r1 = 20, 100, 10, 70
    xa, xb, ya, yb = x0 + c0 * dx, x0 + c1 * dx, y0 + r0 * dy, y0 + r1 * dy
    wkt = f"POLYGON(({xa} {ya}, {xb} {ya}, {xb} {yb}, {xa} {yb}, {xa} {ya}))"
    aoi = np.zeros((160, 160), bool)
    aoi[r0:r1, c0:c1] = True
    size, stride, min_valid = 32, 16, 0.6
    out = tmp_path / "out"
    patches.extract_patches(sample["sar"], str(out), size=size, stride=stride, label_path=sample["labels"],
                            aoi_wkts=[wkt], min_valid=min_valid, val_fraction=0.0, fmt="tif")  # fmt: skip
    rows = read_index(out)
    kept = {(int(r["col"]), int(r["row"])) for r in rows}
    starts = patches.patch_positions(160, size, stride)
    expected = {(x, y) for y in starts for x in starts if _valid_fraction(sample, x, y, size, aoi) >= min_valid}
    assert kept == expected
    assert 0 < len(kept) < len(starts) ** 2
    for row in rows:
        x, y = int(row["col"]), int(row["row"])
        assert float(row["valid_fraction"]) == pytest.approx(_valid_fraction(sample, x, y, size, aoi), abs=1e-4)
        # Every kept patch overlaps the AOI by at least min_valid of its area.
        assert aoi[y : y + size, x : x + size].mean() >= min_valid


def test_extract_patches_aoi_outside_the_raster_raises(tmp_path, sample):
    wkt = "POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))"
    with pytest.raises(SarSegError):
        patches.extract_patches(sample["sar"], str(tmp_path / "out"), size=32, stride=32, aoi_wkts=[wkt])
    assert os.listdir(tmp_path / "out") == []


def _pop_exceptions_until(target) -> list:
    """Turn GDAL exceptions off module by module, top of GDAL's error-handler stack first, until ``target`` is
    off; return the modules turned off, top first (the stack can only be unwound in reverse order)."""
    popped = []
    while target.GetUseExceptions():
        for module in (gdal, ogr, osr):
            if module.GetUseExceptions() and module not in popped:
                try:
                    module.DontUseExceptions()
                except RuntimeError:  # not the top of the stack
                    continue
                popped.append(module)
                break
        else:
            raise AssertionError("could not turn OGR exceptions off")
    return popped


@pytest.fixture(params=[False, True], ids=["ogr_exceptions_off", "ogr_exceptions_on"])
def ogr_exceptions(request):
    """Run with OGR exceptions off (None on bad WKT), then on (RuntimeError, as after QGIS has started, which
    turns on gdal, ogr and osr exceptions); the previous state is restored exactly afterwards."""
    popped: list = []
    pushed: list = []
    if request.param and not ogr.GetUseExceptions():
        ogr.UseExceptions()
        pushed = [ogr]
    elif not request.param and ogr.GetUseExceptions():
        popped = _pop_exceptions_until(ogr)
        pushed = [m for m in reversed(popped) if m is not ogr]
        for module in pushed:
            module.UseExceptions()
    assert bool(ogr.GetUseExceptions()) == request.param
    yield request.param
    for module in reversed(pushed):
        module.DontUseExceptions()
    for module in reversed(popped):
        module.UseExceptions()


def test_extract_patches_empty_aoi_and_bad_wkt_raise(tmp_path, sample, ogr_exceptions):
    with pytest.raises(SarSegError, match="no polygon"):
        patches.extract_patches(sample["sar"], str(tmp_path / "a"), size=32, aoi_wkts=[])
    # A GDAL RuntimeError on unreadable WKT (exceptions on) is turned into a SarSegError as well.
    for wkt in ("POLYGON((nonsense", "not a geometry"):
        with pytest.raises(SarSegError, match="area-of-interest geometry could not be read"):
            patches.extract_patches(sample["sar"], str(tmp_path / "b"), size=32, aoi_wkts=[wkt])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert bool(ogr.GetUseExceptions()) == ogr_exceptions


# --- Errors and cancellation -----------------------------------------------------------------------


def test_extract_patches_refuses_patch_larger_than_raster(tmp_path, sample):
    with pytest.raises(SarSegError, match="larger than the raster"):
        patches.extract_patches(sample["sar"], str(tmp_path / "out"), size=192, stride=192)
    out = tmp_path / "out"
    assert not out.exists() or os.listdir(out) == []


def test_extract_patches_refuses_bad_format_and_min_valid(tmp_path, sample):
    with pytest.raises(SarSegError):
        patches.extract_patches(sample["sar"], str(tmp_path / "out"), size=32, fmt="png")
    with pytest.raises(SarSegError):
        patches.extract_patches(sample["sar"], str(tmp_path / "out"), size=32, min_valid=1.5)


@pytest.mark.parametrize(("fmt", "stop_after"), [("tif", 1), ("tif", 40), ("npz", 1), ("npz", 40)])
def test_extract_patches_cancel_leaves_nothing(tmp_path, sample, fmt, stop_after):
    out = tmp_path / "out"
    calls = []

    def is_canceled():
        calls.append(1)
        return len(calls) > stop_after

    with pytest.raises(CancelledError):
        patches.extract_patches(sample["sar"], str(out), size=32, stride=32, label_path=sample["labels"],
                                min_valid=0.0, val_fraction=0.3, split_block=64, fmt=fmt,
                                is_canceled=is_canceled)  # fmt: skip
    assert os.listdir(out) == []


def test_extract_patches_cancel_keeps_earlier_run_untouched(tmp_path, sample):
    out = tmp_path / "out"
    patches.extract_patches(sample["sar"], str(out), size=32, stride=32, min_valid=0.0, val_fraction=0.25,
                            split_block=64, fmt="npz")  # fmt: skip
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    calls = []

    def is_canceled():
        calls.append(1)
        return len(calls) > 30

    with pytest.raises(CancelledError):
        patches.extract_patches(sample["sar"], str(out), size=32, stride=32, min_valid=0.0, val_fraction=0.25,
                                split_block=64, fmt="tif", is_canceled=is_canceled)  # fmt: skip
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
