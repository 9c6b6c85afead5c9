"""Training patches from a raster (+ label raster, + AOI) with a leak-free spatial train/validation split.

The raster is cut into square *split blocks*; whole blocks go to validation, the rest to training. A
patch that would overlap blocks of both splits is dropped, so no pixel is shared between a training and
a validation patch, even with overlapping patches (stride < patch size).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from .errors import CancelledError, SarSegError
from .raster_io import (
    CancelFn,
    GeoTiffWriter,
    ProgressFn,
    Window,
    open_raster,
    read_info,
    read_window,
    valid_mask,
)
from .timeseries import Grid, aligned

TRAIN = "train"
VAL = "val"
FORMATS = ("tif", "npz")


@dataclass
class Patch:
    """A candidate patch at pixel (x, y) and the split it falls in (None: straddles both splits)."""

    x: int
    y: int
    split: str | None


def patch_positions(length: int, size: int, stride: int) -> list[int]:
    """Start offsets along one axis: every ``stride``, plus one flush with the end so the edge is covered."""
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def block_splits(n_blocks_x: int, n_blocks_y: int, val_fraction: float, seed: int) -> np.ndarray:
    """A (rows, cols) array of split names: a seeded random ``val_fraction`` of blocks is validation."""
    n = n_blocks_x * n_blocks_y
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    splits = np.full(n, TRAIN, dtype=object)
    splits[order[:n_val]] = VAL
    return splits.reshape(n_blocks_y, n_blocks_x)


def plan_patches(
    width: int, height: int, size: int, stride: int, split_block: int, val_fraction: float, seed: int
) -> list[Patch]:
    """Every candidate patch with its split; patches overlapping blocks of both splits get ``None``."""
    if size < 8:
        raise SarSegError(f"The patch size must be at least 8 pixels (got {size}).")
    if stride < 1:
        raise SarSegError(f"The stride must be at least 1 pixel (got {stride}).")
    if size > width or size > height:
        raise SarSegError(
            f"The patch size {size} is larger than the raster ({width} x {height} pixels). Choose a smaller patch."
        )
    if not 0.0 <= val_fraction < 1.0:
        raise SarSegError(f"The validation fraction must be in [0, 1) (got {val_fraction}).")
    split_block = max(split_block, size)
    nbx = -(-width // split_block)
    nby = -(-height // split_block)
    splits = block_splits(nbx, nby, val_fraction, seed)
    patches = []
    for y in patch_positions(height, size, stride):
        for x in patch_positions(width, size, stride):
            covered = splits[y // split_block : (y + size - 1) // split_block + 1,
                             x // split_block : (x + size - 1) // split_block + 1]  # fmt: skip
            kinds = set(covered.ravel())
            patches.append(Patch(x, y, kinds.pop() if len(kinds) == 1 else None))
    return patches


class _AoiMask:
    """Rasterises AOI polygons (WKT in the raster's CRS) over one patch at a time."""

    def __init__(self, wkts: Sequence[str], projection: str) -> None:
        self.ds = ogr.GetDriverByName("Memory").CreateDataSource("aoi")
        srs = osr.SpatialReference()
        if projection:
            srs.ImportFromWkt(projection)
        self.layer = self.ds.CreateLayer("aoi", srs, ogr.wkbUnknown)
        for wkt in wkts:
            try:
                geom = ogr.CreateGeometryFromWkt(wkt)
            except RuntimeError:  # GDAL exceptions on (as inside QGIS)
                geom = None
            if geom is None:
                raise SarSegError("An area-of-interest geometry could not be read. Fix the AOI layer's geometries.")
            feature = ogr.Feature(self.layer.GetLayerDefn())
            feature.SetGeometry(geom)
            self.layer.CreateFeature(feature)

    def mask(self, geotransform: Sequence[float], window: Window) -> np.ndarray:
        x0, dx, rx, y0, ry, dy = geotransform
        mem = gdal.GetDriverByName("MEM").Create("", window.width, window.height, 1, gdal.GDT_Byte)
        mem.SetGeoTransform((x0 + window.x * dx, dx, rx, y0 + window.y * dy, ry, dy))
        gdal.RasterizeLayer(mem, [1], self.layer, burn_values=[1])
        return mem.GetRasterBand(1).ReadAsArray().astype(bool)


class _NpzStream:
    """Appends patches to the arrays of an .npz archive without holding them in memory.

    Each array is streamed to its own .npy file (header first, since the count is known), and the
    files are packed into the archive at the end (zip allows one open member at a time).
    """

    def __init__(self, path: Path, shapes: dict[str, tuple[tuple[int, ...], np.dtype, int]]) -> None:
        self.path = path
        self.files: dict[str, Path] = {}
        self.handles = {}
        for name, (shape, dtype, count) in shapes.items():
            member = path.with_name(f"{path.stem}.{name}.npy")
            handle = open(member, "wb")  # noqa: SIM115 - closed in close()
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                      "shape": (count, *shape)}  # fmt: skip
            np.lib.format.write_array_header_2_0(handle, header)
            self.files[name] = member
            self.handles[name] = handle

    def append(self, name: str, array: np.ndarray) -> None:
        self.handles[name].write(np.ascontiguousarray(array).tobytes())

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        with zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, member in self.files.items():
                archive.write(member, f"{name}.npy")
                member.unlink()


def extract_patches(
    image_path: str,
    out_dir: str,
    size: int = 256,
    stride: int = 256,
    label_path: str | None = None,
    aoi_wkts: Sequence[str] | None = None,
    min_valid: float = 0.9,
    val_fraction: float = 0.2,
    split_block: int | None = None,
    fmt: str = "tif",
    seed: int = 0,
    progress: ProgressFn | None = None,
    is_canceled: CancelFn | None = None,
) -> dict[str, object]:
    """Write training patches and ``index.csv`` into ``out_dir``; return counts per split.

    A patch is kept when at least ``min_valid`` of its pixels hold data in every band, have a valid label
    and lie inside the AOI. Layout ``tif``: ``train|val/images|labels/patch_NNNNNN.tif`` (georeferenced).
    Layout ``npz``: ``train.npz`` / ``val.npz`` with ``images`` (N, bands, size, size), ``labels``
    (N, size, size) and ``positions`` (N, 2: column, row).
    """
    if fmt not in FORMATS:
        raise SarSegError(f"Unknown patch format '{fmt}'. Use 'tif' or 'npz'.")
    if not 0.0 <= min_valid <= 1.0:
        raise SarSegError(f"The minimum valid fraction must be between 0 and 1 (got {min_valid}).")
    ds = open_raster(image_path)
    info = read_info(ds)
    grid = Grid.of(info)
    labels_ds = None
    label_nodata = None
    if label_path:
        labels_ds = aligned(label_path, grid, "nearest")
        label_nodata = labels_ds.GetRasterBand(1).GetNoDataValue()
    aoi = _AoiMask(aoi_wkts, info.projection) if aoi_wkts is not None else None
    if aoi is not None and len(aoi_wkts) == 0:
        raise SarSegError("The area-of-interest layer has no polygon. Give polygons or leave the AOI empty.")
    split_block = split_block or 4 * size
    plan = plan_patches(info.width, info.height, size, stride, split_block, val_fraction, seed)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = out / f".partial-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        result = _write_patches(ds, info, labels_ds, label_nodata, aoi, plan, size, min_valid, fmt, stage,
                                progress, is_canceled)  # fmt: skip
        _publish(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    result["index"] = str(out / "index.csv")
    return result


def _read_patch(ds: gdal.Dataset, labels_ds: gdal.Dataset | None, info: object, label_nodata: float | None,
                aoi: _AoiMask | None, window: Window) -> tuple[np.ndarray, np.ndarray | None, float]:  # fmt: skip
    data = read_window(ds, window)
    ok = valid_mask(data, info.nodata).all(axis=0)
    labels = None
    if labels_ds is not None:
        labels = read_window(labels_ds, window, [1], dtype=np.float64)[0]
        ok &= valid_mask(labels[None], [label_nodata])[0]
    if aoi is not None:
        ok &= aoi.mask(info.geotransform, window)
    return data, labels, float(ok.mean())


def _write_patches(ds: gdal.Dataset, info: object, labels_ds: gdal.Dataset | None, label_nodata: float | None,
                   aoi: _AoiMask | None, plan: list[Patch], size: int, min_valid: float, fmt: str, stage: Path,
                   progress: ProgressFn | None, is_canceled: CancelFn | None) -> dict[str, object]:  # fmt: skip
    # Pass 1 decides which patches are kept (npz headers need the counts up front).
    kept: list[tuple[Patch, float]] = []
    dropped_border = dropped_invalid = 0
    row = 0
    for i, patch in enumerate(plan):
        if is_canceled and is_canceled():
            raise CancelledError("Cancelled by the user.")
        if patch.y != row:  # patches go row by row: free finished tiles from GDAL's cache
            row = patch.y
            ds.FlushCache()
        if patch.split is None:
            dropped_border += 1
            continue
        _, _, fraction = _read_patch(ds, labels_ds, info, label_nodata, aoi, Window(patch.x, patch.y, size, size))
        if fraction >= min_valid and fraction > 0:
            kept.append((patch, fraction))
        else:
            dropped_invalid += 1
        if progress:
            progress(50.0 * (i + 1) / len(plan))
    if not kept:
        raise SarSegError(
            f"No patch has at least {min_valid:.0%} valid pixels (of {len(plan)} candidates, {dropped_invalid} had "
            "too much nodata or lay outside the AOI). Lower the minimum valid fraction, the patch size, or check "
            "that the AOI and label raster overlap the image."
        )
    counts = {TRAIN: sum(p.split == TRAIN for p, _ in kept), VAL: sum(p.split == VAL for p, _ in kept)}
    streams: dict[str, _NpzStream] = {}
    if fmt == "npz":
        for split, count in counts.items():
            shapes = {"images": ((info.band_count, size, size), np.float32, count),
                      "positions": ((2,), np.int32, count)}  # fmt: skip
            if labels_ds is not None:
                shapes["labels"] = ((size, size), np.uint8, count)
            streams[split] = _NpzStream(stage / f"{split}.npz", shapes)
    rows = []
    x0, dx, rx, y0, ry, dy = info.geotransform
    try:
        for n, (patch, fraction) in enumerate(kept, start=1):
            if is_canceled and is_canceled():
                raise CancelledError("Cancelled by the user.")
            window = Window(patch.x, patch.y, size, size)
            data, labels, _ = _read_patch(ds, labels_ds, info, label_nodata, None, window)
            name = f"patch_{n:06d}"
            row = {"patch_id": name, "split": patch.split, "col": patch.x, "row": patch.y,
                   "x_min": x0 + patch.x * dx, "y_max": y0 + patch.y * dy, "valid_fraction": round(fraction, 4),
                   "image": "", "label": ""}  # fmt: skip
            if fmt == "tif":
                gt = (x0 + patch.x * dx, dx, rx, y0 + patch.y * dy, ry, dy)
                image_file = Path(patch.split, "images", f"{name}.tif")
                (stage / image_file).parent.mkdir(parents=True, exist_ok=True)
                with GeoTiffWriter(
                    stage / image_file, size, size, info.band_count, info.dtype, gt, info.projection,
                    nodata=info.nodata[0], descriptions=info.descriptions, units=info.units,
                ) as w:  # fmt: skip
                    w.write(Window(0, 0, size, size), data)
                row["image"] = image_file.as_posix()
                if labels is not None:
                    label_file = Path(patch.split, "labels", f"{name}.tif")
                    (stage / label_file).parent.mkdir(parents=True, exist_ok=True)
                    with GeoTiffWriter(stage / label_file, size, size, 1, np.uint8, gt, info.projection,
                                       nodata=label_nodata) as w:  # fmt: skip
                        w.write(Window(0, 0, size, size), labels.astype(np.uint8))
                    row["label"] = label_file.as_posix()
            else:
                stream = streams[patch.split]
                stream.append("images", data.astype(np.float32))
                stream.append("positions", np.array([patch.x, patch.y], np.int32))
                if labels is not None:
                    stream.append("labels", labels.astype(np.uint8))
                row["image"] = f"{patch.split}.npz"
            rows.append(row)
            if progress:
                progress(50.0 + 50.0 * n / len(kept))
    finally:
        for stream in streams.values():
            stream.close()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (stage / "index.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return {"train": counts[TRAIN], "val": counts[VAL], "dropped_at_split_borders": dropped_border,
            "dropped_invalid": dropped_invalid, "candidates": len(plan)}  # fmt: skip


def _publish(stage: Path, out: Path) -> None:
    """Move finished outputs from the staging folder into place, replacing an earlier run's outputs."""
    for name in (TRAIN, VAL, "train.npz", "val.npz", "index.csv"):
        old = out / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    for item in stage.iterdir():
        os.replace(item, out / item.name)
