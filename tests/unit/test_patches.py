"""Tests of training-patch planning and extraction (sar_seg_plugin.core.patches).

Patch contents are compared with windows of the source arrays read whole with GDAL; the split is
checked for leaks on pixel footprints; the kept set is recomputed from the validity masks.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from rasters import GT, read_raster, write_raster

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


DESCRIPTION = {"band_names", "band_units", "image_nodata", "crs_wkt", "geotransform"}


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
            assert set(npz.files) == {"images", "labels", "positions", "label_nodata", *DESCRIPTION}
            images, labels, positions = npz["images"], npz["labels"], npz["positions"]
            label_nodata = npz["label_nodata"]
            # The image's band metadata, as the GeoTIFF patches carry it: read back from the source raster.
            source = gdal.Open(sample["sar"])
            bands = [source.GetRasterBand(b + 1) for b in range(source.RasterCount)]
            assert npz["band_names"].tolist() == [b.GetDescription() for b in bands] == ["VV", "VH"]
            assert npz["band_units"].tolist() == [b.GetUnitType() for b in bands] == ["linear", "linear"]
            assert npz["image_nodata"].tolist() == [b.GetNoDataValue() for b in bands] == [0.0, 0.0]
            assert npz["geotransform"].tolist() == list(source.GetGeoTransform())
            assert osr.SpatialReference(str(npz["crs_wkt"])).IsSame(source.GetSpatialRef())
        assert label_nodata.shape == () and label_nodata.dtype == np.uint8 and label_nodata == 255
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
            assert set(npz.files) == {"images", "positions", *DESCRIPTION}
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
    x0, dx, _, y0, _, dy = GT
    far = "POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))"
    # An L whose envelope covers the raster's top-left corner while the polygon itself stays outside it.
    xa, ya = x0 - 50 * dx, y0 - 50 * dy
    xb, yb = x0 + 50 * dx, y0 + 50 * dy
    ell = f"POLYGON(({xa} {ya}, {xb} {ya}, {xb} {y0 - dy}, {x0 - dx} {y0 - dy}, {x0 - dx} {yb}, {xa} {yb}, {xa} {ya}))"
    for wkts in ([far], [far, ell]):
        with pytest.raises(SarSegError, match="The area of interest does not overlap the image raster"):
            patches.extract_patches(sample["sar"], str(tmp_path / "out"), size=32, stride=32, aoi_wkts=wkts)
    assert not (tmp_path / "out").exists()


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
    assert not out.exists()


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


def test_extract_patches_failure_removes_the_folders_it_created(tmp_path, sample):
    # Cancelled while writing (pass 2) into a folder two levels deep: both new levels go, nothing else.
    out = tmp_path / "new" / "deeper" / "out"
    calls = []

    def is_canceled():
        calls.append(1)
        return len(calls) > 40

    with pytest.raises(CancelledError):
        patches.extract_patches(sample["sar"], str(out), size=32, stride=32, min_valid=0.0, val_fraction=0.25,
                                split_block=64, is_canceled=is_canceled)  # fmt: skip
    assert len(calls) > 25, "the run must have got into the writing pass"
    assert os.listdir(tmp_path) == []
    # A folder that existed before stays, empty.
    out = tmp_path / "existing"
    out.mkdir()
    calls.clear()
    with pytest.raises(CancelledError):
        patches.extract_patches(sample["sar"], str(out), size=32, stride=32, min_valid=0.0, val_fraction=0.25,
                                split_block=64, is_canceled=is_canceled)  # fmt: skip
    assert os.listdir(tmp_path) == ["existing"] and os.listdir(out) == []


# --- Output folder: only an earlier run's outputs are replaced ----------------------------------------


def _tree(folder) -> dict[str, bytes]:
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _foreign_train_folder(out):
    (out / "train").mkdir(parents=True)
    (out / "train" / "notes.txt").write_text("mine")


def _foreign_npz(out):
    out.mkdir()
    np.savez(out / "val.npz", x=np.arange(3))


def _foreign_index(out):
    out.mkdir()
    (out / "index.csv").write_text("id,value\n1,2\n")
    (out / "train.npz").write_bytes(b"not ours")


def _earlier_run_plus_user_file(out, sar):
    patches.extract_patches(sar, str(out), size=32, stride=32, min_valid=0.0, val_fraction=0.25, split_block=64)
    (out / "train" / "images" / "notes.txt").write_text("mine")


@pytest.mark.parametrize(
    ("setup", "named"),
    [(_foreign_train_folder, "train/"), (_foreign_npz, "val.npz"), (_foreign_index, "index.csv"),
     (_earlier_run_plus_user_file, "train/images/notes.txt")],
)  # fmt: skip
def test_extract_patches_refuses_outputs_it_did_not_write(tmp_path, sample, setup, named):
    out = tmp_path / "mywork"
    if setup is _earlier_run_plus_user_file:
        setup(out, sample["sar"])
    else:
        setup(out)
    (out / "keep.txt").write_text("unrelated")
    before = _tree(out)
    work = []
    with pytest.raises(SarSegError, match="Choose an empty folder") as error:
        patches.extract_patches(sample["sar"], str(out), size=32, stride=32, label_path=sample["labels"],
                                min_valid=0.0, val_fraction=0.25, split_block=64, fmt="npz",
                                progress=work.append, is_canceled=lambda: bool(work.append(0)))  # fmt: skip
    assert named in str(error.value)
    assert work == [], "the folder must be checked before any work"
    assert _tree(out) == before
    assert partial_dirs(out) == []


def partial_dirs(folder) -> list[str]:
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".partial")]


def test_extract_patches_replaces_an_earlier_run_and_keeps_other_files(tmp_path, sample):
    out = tmp_path / "mywork"
    patches.extract_patches(sample["sar"], str(out), size=32, stride=32, label_path=sample["labels"], min_valid=0.0,
                            val_fraction=0.25, split_block=64, fmt="npz")  # fmt: skip
    (out / "notes.txt").write_text("mine")
    (out / "other").mkdir()
    (out / "other" / "train.npz").write_bytes(b"mine too")
    result = patches.extract_patches(sample["sar"], str(out), size=32, stride=32, label_path=sample["labels"],
                                     min_valid=0.0, val_fraction=0.25, split_block=64, fmt="tif")  # fmt: skip
    assert sorted(os.listdir(out)) == ["index.csv", "notes.txt", "other", "train", "val"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "other" / "train.npz").read_bytes() == b"mine too"
    assert len(read_index(out)) == result["train"] + result["val"]
    # A third run over the tif layout replaces it again (its train/ and val/ hold only patch files).
    patches.extract_patches(sample["sar"], str(out), size=32, stride=32, min_valid=0.0, val_fraction=0.25,
                            split_block=64, fmt="npz")  # fmt: skip
    assert sorted(os.listdir(out)) == ["index.csv", "notes.txt", "other", "train.npz", "val.npz"]


def test_earlier_outputs_lists_what_a_run_replaces(tmp_path):
    assert patches.earlier_outputs(tmp_path / "missing") == []
    assert patches.earlier_outputs(tmp_path) == []
    (tmp_path / "index.csv").write_text(",".join(patches.INDEX_FIELDS) + "\n")
    (tmp_path / "val.npz").write_bytes(b"")
    assert patches.earlier_outputs(tmp_path) == [tmp_path / "val.npz", tmp_path / "index.csv"]
    a_file = tmp_path / "val.npz"
    with pytest.raises(SarSegError, match="is a file, not a folder"):
        patches.earlier_outputs(a_file)


# --- Validation split never silently empty ----------------------------------------------------------


def _image(path, array, nodata=None, **kwargs) -> str:
    return write_raster(path, array, nodata=nodata, geotransform=GT, **kwargs)


def test_default_split_block_shrinks_so_validation_gets_blocks(tmp_path):
    rng = np.random.default_rng(0)
    image = _image(tmp_path / "img.tif", rng.random((1, 256, 256)).astype(np.float32) + 1)
    # 4 patch sizes (256) would make the whole raster one block and the validation set empty.
    assert patches.split_block_size(256, 256, 64, None, 0.5) == 192
    assert patches.split_block_size(256, 256, 64, None, 0.0) == 256
    assert patches.split_block_size(256, 256, 64, 100, 0.5) == 100
    assert patches.split_block_size(1000, 1000, 64, None, 0.2) == 256
    assert patches.split_block_size(64, 100, 64, None, 0.2) == 64
    result = patches.extract_patches(image, str(tmp_path / "out"), size=64, stride=64, val_fraction=0.5)
    assert result["split_block"] == 192
    rows = read_index(tmp_path / "out")
    assert result["val"] == sum(r["split"] == "val" for r in rows) > 0
    assert result["train"] == sum(r["split"] == "train" for r in rows) > 0
    # The split follows 192-px blocks: 2 x 2 blocks, 2 of them validation.
    grid = patches.block_splits(2, 2, 0.5, 0)
    for r in rows:
        assert r["split"] == grid[int(r["row"]) // 192, int(r["col"]) // 192]


@pytest.mark.parametrize(
    ("shape", "size", "block", "fragment"),
    [((64, 64), 64, None, "'Patch size'"), ((100, 100), 32, 128, "'Split block size' below 100 pixels")],
)
def test_validation_without_a_second_block_is_refused(tmp_path, shape, size, block, fragment):
    image = _image(tmp_path / "img.tif", np.ones((1, *shape), np.float32))
    out = tmp_path / "out"
    with pytest.raises(SarSegError, match="'Validation fraction' to 0") as error:
        patches.extract_patches(image, str(out), size=size, stride=size, val_fraction=0.2, split_block=block)
    assert fragment in str(error.value)
    assert not out.exists()
    # Without validation the same settings work.
    result = patches.extract_patches(image, str(out), size=size, stride=size, val_fraction=0.0, split_block=block)
    assert result["val"] == 0 and result["train"] == len(patches.patch_positions(shape[0], size, size)) ** 2


@pytest.mark.parametrize("empty", ["val", "train"])
def test_an_empty_split_after_filtering_is_refused(tmp_path, empty):
    # Two 64-px blocks side by side, one of each split; the blocks of one split hold no data.
    grid = patches.block_splits(2, 1, 0.5, 3)
    data = np.ones((1, 64, 128), np.float32)
    for bx in range(2):
        if grid[0, bx] == empty:
            data[:, :, bx * 64 : (bx + 1) * 64] = 0.0
    image = _image(tmp_path / "img.tif", data, nodata=0.0)
    out = tmp_path / "out"
    with pytest.raises(SarSegError, match=f"the {'validation' if empty == 'val' else 'training'} set would be empty"):
        patches.extract_patches(image, str(out), size=32, stride=32, val_fraction=0.5, split_block=64, seed=3)
    assert not out.exists()
    # 40 px, 32-px patches and blocks: only the top-left patch lies in a single block. With that block in
    # training, every validation patch straddles a training block: the message points at the split block size.
    seed = next(s for s in range(100) if patches.block_splits(2, 2, 0.5, s)[0, 0] == patches.TRAIN)
    with pytest.raises(SarSegError, match="'Split block size'"):
        patches.extract_patches(_image(tmp_path / "full.tif", np.ones((1, 40, 40), np.float32)), str(out), size=32,
                                stride=32, val_fraction=0.5, split_block=32, seed=seed)  # fmt: skip
    assert not out.exists()


# --- Labels: uint8 class ids, 255 = no label ------------------------------------------------------------


def _label_run(tmp_path, labels, fmt="tif", **kwargs):
    image = _image(tmp_path / "img.tif", np.ones((1, 64, 64), np.float32))
    out = tmp_path / f"out_{fmt}"
    patches.extract_patches(image, str(out), size=32, stride=32, label_path=labels, min_valid=0.0,
                            val_fraction=0.0, fmt=fmt, **kwargs)  # fmt: skip
    rows = read_index(out)
    if fmt == "npz":
        with np.load(out / "train.npz") as npz:
            assert npz["label_nodata"] == 255
            return {(int(x), int(y)): lab for lab, (x, y) in zip(npz["labels"], npz["positions"])}
    found = {}
    for r in rows:
        ds = gdal.Open(str(out / r["label"]))
        band = ds.GetRasterBand(1)
        assert band.DataType == gdal.GDT_Byte and band.GetNoDataValue() == 255
        found[(int(r["col"]), int(r["row"]))] = band.ReadAsArray()
    return found


def _assemble(found, size=32, side=64) -> np.ndarray:
    assert len(found) == (side // size) ** 2
    full = np.zeros((side, side), np.uint8)
    for (x, y), lab in found.items():
        full[y : y + size, x : x + size] = lab
    return full


@pytest.mark.parametrize("fmt", ["tif", "npz"])
@pytest.mark.parametrize(
    ("dtype", "nodata", "no_label"),
    [(np.uint16, 65535.0, 65535), (np.uint8, 0.0, 0), (np.float32, None, np.nan), (np.int16, -1.0, -1)],
)
def test_labels_nodata_becomes_255(tmp_path, fmt, dtype, nodata, no_label):
    classes = (np.arange(64 * 64).reshape(64, 64) % 7 + 1).astype(np.float64)
    classes[:10, :] = no_label
    labels = write_raster(tmp_path / "lab.tif", classes, nodata=nodata, geotransform=GT, dtype=dtype)
    got = _assemble(_label_run(tmp_path, labels, fmt))
    expected = np.where(np.isnan(classes) | (classes == no_label), 255, classes).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)
    assert (got[:10] == 255).all() and (got[10:] < 8).all()


@pytest.mark.parametrize(
    ("value", "dtype", "nodata", "shown"),
    [(300, np.uint16, 65535.0, "300"), (255, np.uint8, None, "255"), (-3, np.int16, None, "-3"),
     (2.5, np.float32, None, "2.5")],
)  # fmt: skip
def test_labels_outside_0_to_254_are_refused(tmp_path, value, dtype, nodata, shown):
    classes = np.ones((64, 64))
    classes[40, 50] = value
    labels = write_raster(tmp_path / "lab.tif", classes, nodata=nodata, geotransform=GT, dtype=dtype)
    image = _image(tmp_path / "img.tif", np.ones((1, 64, 64), np.float32))
    with pytest.raises(SarSegError, match=f"holds the value {re.escape(shown)} .*column 50, row 40") as error:
        patches.extract_patches(image, str(tmp_path / "out"), size=32, stride=32, label_path=labels,
                                val_fraction=0.0)  # fmt: skip
    assert "from 0 to 254" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_warped_labels_outside_their_raster_are_255_and_the_warp_is_released(tmp_path):
    # UInt16 labels without nodata on a coarser (20 m) grid covering only the image's top 48 rows.
    classes = np.arange(32 * 24, dtype=np.uint16).reshape(24, 32) % 5 + 1
    labels = write_raster(tmp_path / "lab.tif", classes, geotransform=(GT[0], 20.0, 0, GT[3], 0, -20.0),
                          dtype=np.uint16)  # fmt: skip
    before = _aligned_vrts()
    got = _assemble(_label_run(tmp_path, labels, "tif"))
    expected = np.full((64, 64), 255, np.uint8)
    expected[:48] = np.repeat(np.repeat(classes, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(got, expected)
    assert _aligned_vrts() == before
    # Released on failure too: cancelled, and refused after the first pass.
    with pytest.raises(CancelledError):
        _label_run(tmp_path, labels, "tif", is_canceled=lambda: True)
    image = _image(tmp_path / "img2.tif", np.ones((1, 64, 64), np.float32))
    with pytest.raises(SarSegError, match="validation set would be empty"):
        patches.extract_patches(image, str(tmp_path / "o2"), size=16, stride=16, label_path=labels, min_valid=0.5,
                                val_fraction=0.07, split_block=16, seed=_seed_with_val_in_bottom_half())  # fmt: skip
    assert _aligned_vrts() == before


def _seed_with_val_in_bottom_half() -> int:
    """A seed whose 4 x 4 split puts its one validation block in the bottom row (where labels are missing)."""
    for seed in range(100):
        grid = patches.block_splits(4, 4, 0.07, seed)
        if (grid[3] == patches.VAL).any():
            return seed
    raise AssertionError("no such seed")


def _aligned_vrts() -> list[str]:
    return sorted(n for n in (gdal.ReadDir("/vsimem/") or []) if n.startswith("sarseg_align_"))


@pytest.mark.parametrize("what", ["labels", "aoi"])
def test_image_without_crs_is_refused_with_labels_or_aoi(tmp_path, sample, what):
    image = write_raster(tmp_path / "img.tif", np.ones((1, 160, 160), np.float32), geotransform=(0, 1, 0, 0, 0, -1),
                         epsg=None)  # fmt: skip
    kwargs = (
        {"label_path": sample["labels"]} if what == "labels" else {"aoi_wkts": ["POLYGON((1 -1, 9 -1, 9 -9, 1 -1))"]}
    )
    with pytest.raises(SarSegError, match="has no valid coordinate reference system"):
        patches.extract_patches(image, str(tmp_path / "out"), size=32, stride=32, val_fraction=0.0, **kwargs)
    assert not (tmp_path / "out").exists()
    # Without labels and AOI the same image is cut.
    assert patches.extract_patches(image, str(tmp_path / "out"), size=32, stride=32, val_fraction=0.0)["train"] == 25
