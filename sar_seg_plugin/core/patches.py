"""Training patches from a raster (+ label raster, + AOI) with a leak-free spatial train/validation split.

The raster is cut into square *split blocks*; whole blocks go to validation, the rest to training. A
patch that would overlap blocks of both splits is dropped, so no pixel is shared between a training and
a validation patch, even with overlapping patches (stride < patch size).

Labels are written as 8-bit class ids 0..254; 255 marks pixels without a label (the label raster's nodata,
pixels it does not cover) and is declared as the nodata value of every label patch. The output folder must
be empty or hold an earlier run's outputs, which are replaced; nothing else in it is ever deleted.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from .errors import CancelledError, SarSegError
from .outputs import check_space, remove_folder, temporary_folder
from .raster_io import (
    CancelFn,
    GeoTiffWriter,
    ProgressFn,
    RasterInfo,
    Window,
    open_raster,
    read_info,
    read_window,
    valid_mask,
)
from .timeseries import Grid, aligned, release, require_crs

TRAIN = "train"
VAL = "val"
FORMATS = ("tif", "npz")
LABEL_NODATA = 255
"""Label of pixels without one in the patches (declared nodata of label GeoTIFFs, ``label_nodata`` in .npz)."""
MAX_CLASS = LABEL_NODATA - 1
INDEX_FIELDS = ("patch_id", "split", "col", "row", "x_min", "y_max", "valid_fraction", "image", "label")
OUTPUT_NAMES = (TRAIN, VAL, "train.npz", "val.npz", "index.csv")
_PATCH_FILE = re.compile(r"(?:train|val)/(?:images|labels)/patch_\d{6}\.tif(?:\.aux\.xml)?")


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


def split_block_size(width: int, height: int, size: int, split_block: int | None, val_fraction: float) -> int:
    """The side of the split blocks in pixels: ``split_block`` (at least the patch size) when given; by default
    4 patch sizes, shrunk by a patch size at a time (down to one) until validation has a block of its own."""
    if split_block:
        return max(split_block, size)
    block = 4 * size
    while val_fraction > 0 and block > size and _block_count(width, height, block) < 2:
        block -= size
    return block


def _block_count(width: int, height: int, block: int) -> int:
    return -(-width // block) * -(-height // block)


def plan_patches(
    width: int, height: int, size: int, stride: int, split_block: int | None, val_fraction: float, seed: int
) -> list[Patch]:
    """Every candidate patch with its split; patches overlapping blocks of both splits get ``None``.

    ``split_block`` None (or 0) picks the default size (see :func:`split_block_size`). A validation fraction
    above 0 needs at least two blocks.
    """
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
    block = split_block_size(width, height, size, split_block, val_fraction)
    if val_fraction > 0 and _block_count(width, height, block) < 2:
        if block == size:
            raise SarSegError(
                f"The raster ({width} x {height} pixels) holds a single patch of {size} pixels, so it cannot be split "
                "into training and validation blocks. Choose a smaller 'Patch size', or set 'Validation fraction' to 0."
            )
        raise SarSegError(
            f"The split block size ({block} pixels) covers the whole raster ({width} x {height} pixels), so no block "
            f"is left for validation. Set 'Split block size' below {max(width, height)} pixels (0 = automatic), or "
            "set 'Validation fraction' to 0."
        )
    nbx = -(-width // block)
    nby = -(-height // block)
    splits = block_splits(nbx, nby, val_fraction, seed)
    patches = []
    for y in patch_positions(height, size, stride):
        for x in patch_positions(width, size, stride):
            covered = splits[y // block : (y + size - 1) // block + 1,
                             x // block : (x + size - 1) // block + 1]  # fmt: skip
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

    def require_overlap(self, bounds: tuple[float, float, float, float]) -> None:
        """Refuse polygons that all lie outside ``bounds`` (xmin, ymin, xmax, ymax): no patch could be kept."""
        xmin, ymin, xmax, ymax = bounds
        box = ogr.CreateGeometryFromWkt(
            f"POLYGON(({xmin} {ymin}, {xmax} {ymin}, {xmax} {ymax}, {xmin} {ymax}, {xmin} {ymin}))"
        )
        envelopes = []
        self.layer.ResetReading()
        for feature in self.layer:
            geom = feature.GetGeometryRef()
            if geom is None or geom.IsEmpty():
                continue
            gx0, gx1, gy0, gy1 = geom.GetEnvelope()
            envelopes.append((gx0, gy0, gx1, gy1))
            if gx0 >= xmax or gx1 <= xmin or gy0 >= ymax or gy1 <= ymin:
                continue
            try:
                if geom.Intersects(box):
                    return
            except RuntimeError:  # an invalid geometry GEOS cannot test: let the rasterisation decide
                return
        if envelopes:
            ax0, ay0 = min(e[0] for e in envelopes), min(e[1] for e in envelopes)
            ax1, ay1 = max(e[2] for e in envelopes), max(e[3] for e in envelopes)
            extent = f"the polygons span {ax0:.1f}, {ay0:.1f}, {ax1:.1f}, {ay1:.1f}"
        else:
            extent = "the polygons are empty"
        raise SarSegError(
            f"The area of interest does not overlap the image raster ({extent}; the image spans {xmin:.1f}, "
            f"{ymin:.1f}, {xmax:.1f}, {ymax:.1f}, in the image's CRS). Give polygons that cover part of the image, "
            "or leave the area of interest empty."
        )

    def mask(self, geotransform: Sequence[float], window: Window) -> np.ndarray:
        x0, dx, rx, y0, ry, dy = geotransform
        mem = gdal.GetDriverByName("MEM").Create("", window.width, window.height, 1, gdal.GDT_Byte)
        mem.SetGeoTransform((x0 + window.x * dx, dx, rx, y0 + window.y * dy, ry, dy))
        gdal.RasterizeLayer(mem, [1], self.layer, burn_values=[1])
        return mem.GetRasterBand(1).ReadAsArray().astype(bool)


def _npz_description(info: RasterInfo) -> dict[str, np.ndarray]:
    """What the .npz archives say about their image bands, as the GeoTIFF patches do in their band metadata:
    names (descriptions), units, nodata values (NaN: none) and, for a georeferenced image, the grid's
    geotransform and CRS (WKT)."""
    described = {
        "band_names": np.asarray(list(info.descriptions), dtype=str),
        "band_units": np.asarray(list(info.units), dtype=str),
        "image_nodata": np.asarray([np.nan if v is None else v for v in info.nodata], dtype=np.float64),
        "crs_wkt": np.asarray(info.projection or "", dtype=str),
    }
    if info.georeferenced:
        described["geotransform"] = np.asarray(info.geotransform, dtype=np.float64)
    return described


class _NpzStream:
    """Appends patches to the arrays of an .npz archive without holding them in memory.

    Each array is streamed to its own .npy file (header first, since the count is known), and the
    files are packed into the archive at the end (zip allows one open member at a time). ``scalars``
    are small arrays stored as they are.
    """

    def __init__(self, path: Path, shapes: dict[str, tuple[tuple[int, ...], np.dtype, int]],
                 scalars: dict[str, np.ndarray] | None = None) -> None:  # fmt: skip
        self.path = path
        self.scalars = dict(scalars or {})
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
            for name, value in self.scalars.items():
                with archive.open(f"{name}.npy", "w") as handle:
                    np.lib.format.write_array(handle, np.asarray(value))


def _is_patch_index(path: Path) -> bool:
    """Whether ``path`` is the index.csv of a SAR Seg patch extraction (judged by its header)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader([fh.readline(4096)]), [])
    except (OSError, UnicodeDecodeError):
        return False
    return tuple(header) == INDEX_FIELDS


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def earlier_outputs(out: Path) -> list[Path]:
    """The outputs of an earlier run in ``out`` that a new run replaces (none for a new or empty folder).

    Refuses (:class:`SarSegError`) an output name (train/, val/, train.npz, val.npz, index.csv) that an
    earlier SAR Seg run did not write, and files of the user's inside an earlier run's train/ or val/: they
    would be deleted.
    """
    if out.exists() and not out.is_dir():
        raise SarSegError(f"The output '{out}' is a file, not a folder. Choose a folder for the patches.")
    if not out.is_dir():
        return []
    present = [out / name for name in OUTPUT_NAMES if os.path.lexists(out / name)]
    if not present:
        return []
    index = out / "index.csv"
    if not _is_patch_index(index):
        names = [p.name + ("/" if p.is_dir() else "") for p in present]
        why = "its index.csv is not a SAR Seg patch index" if os.path.lexists(index) else "no SAR Seg index.csv"
        raise SarSegError(
            f"The output folder '{out}' already holds {_listing(names)}, not written by SAR Seg ({why}); a run "
            "would replace them. Choose an empty folder for the patches, or delete them first."
        )
    foreign = []
    for path in present:
        if path.is_symlink() or (path.name.endswith(".npz") or path.name == "index.csv") != path.is_file():
            foreign.append(path.name)
        elif path.is_dir():
            for item in sorted(path.rglob("*")):
                rel = item.relative_to(out).as_posix()
                if item.is_symlink():
                    foreign.append(rel)
                elif item.is_dir():
                    if rel not in {f"{path.name}/images", f"{path.name}/labels"}:
                        foreign.append(rel + "/")
                elif not _PATCH_FILE.fullmatch(rel):
                    foreign.append(rel)
    if foreign:
        raise SarSegError(
            f"The output folder '{out}' holds the patches of an earlier SAR Seg run, which a run replaces, but also "
            f"{_listing(foreign)}, not written by SAR Seg. Choose an empty folder for the patches, or delete or "
            "move these first."
        )
    return present


def _first_existing(path: Path) -> Path:
    """The folder of ``path`` (or above it) that exists: the disk the patches will be written on."""
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` that does not exist yet (the one a run creates), or None."""
    path = path.absolute()
    missing = None
    while not os.path.lexists(path):
        missing = path
        if path.parent == path:
            break
        path = path.parent
    return missing


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
    Layout ``npz``: ``train.npz`` / ``val.npz`` with ``images`` (N, bands, size, size), ``positions``
    (N, 2: column, row), the image's ``band_names``, ``band_units``, ``image_nodata`` (NaN: none), ``crs_wkt``
    and (georeferenced) ``geotransform``, and, with a label raster, ``labels`` (N, size, size, uint8) and
    ``label_nodata`` (255). Labels must be whole numbers 0..254; pixels without a label become 255.

    ``out_dir`` must be new, empty or hold an earlier run's outputs (see :func:`earlier_outputs`); it is
    checked before any work. Nothing is left behind by a failed or cancelled run (nor a folder it created).
    """
    if fmt not in FORMATS:
        raise SarSegError(f"Unknown patch format '{fmt}'. Use 'tif' or 'npz'.")
    if not 0.0 <= min_valid <= 1.0:
        raise SarSegError(f"The minimum valid fraction must be between 0 and 1 (got {min_valid}).")
    out = Path(out_dir)
    earlier_outputs(out)
    ds = open_raster(image_path)
    info = read_info(ds)
    if aoi_wkts is not None and len(aoi_wkts) == 0:
        raise SarSegError("The area-of-interest layer has no polygon. Give polygons or leave the AOI empty.")
    if label_path or aoi_wkts is not None:
        require_crs(info)  # labels and polygons are placed on the image by their coordinates
    grid = Grid.of(info)
    aoi = None
    if aoi_wkts is not None:
        aoi = _AoiMask(aoi_wkts, info.projection)
        aoi.require_overlap(grid.bounds)
    block = split_block_size(info.width, info.height, size, split_block, val_fraction)
    plan = plan_patches(info.width, info.height, size, stride, block, val_fraction, seed)

    labels_ds = None
    try:
        label_nodata = None
        if label_path:
            labels_ds = aligned(label_path, grid, "nearest", role="image raster")
            label_nodata = labels_ds.GetRasterBand(1).GetNoDataValue()
        source = _Source(ds, info, labels_ds, label_nodata, size)
        kept, dropped_border, dropped_invalid = _select(source, aoi, plan, min_valid, progress, is_canceled)
        _check_selection(kept, plan, min_valid, val_fraction, dropped_invalid)
        patch_bytes = size * size * (4 * info.band_count + (1 if label_path else 0))
        check_space(_first_existing(out), len(kept) * patch_bytes)
        created = _first_missing(out)
        stage = None
        try:
            try:
                out.mkdir(parents=True, exist_ok=True)
                stage = temporary_folder(out)
            except OSError as exc:
                raise SarSegError(
                    f"Cannot write into the output folder '{out}' ({exc.strerror}). Choose a folder you can write to."
                ) from exc
            _write_patches(source, kept, fmt, stage, progress, is_canceled)
            _publish(stage, out)
        except BaseException:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
        finally:
            remove_folder(stage)
    finally:
        release(labels_ds)
    counts = {split: sum(p.split == split for p, _ in kept) for split in (TRAIN, VAL)}
    return {"train": counts[TRAIN], "val": counts[VAL], "dropped_at_split_borders": dropped_border,
            "dropped_invalid": dropped_invalid, "candidates": len(plan), "split_block": block,
            "index": str(out / "index.csv")}  # fmt: skip


@dataclass
class _Source:
    """The image and its aligned label raster, read one patch window at a time."""

    ds: gdal.Dataset
    info: RasterInfo
    labels_ds: gdal.Dataset | None
    label_nodata: float | None
    size: int

    def window(self, patch: Patch) -> Window:
        return Window(patch.x, patch.y, self.size, self.size)

    def flush(self) -> None:
        """Free finished tiles from GDAL's block cache (patches go row by row)."""
        self.ds.FlushCache()
        if self.labels_ds is not None:
            self.labels_ds.FlushCache()

    def read(self, window: Window, aoi: _AoiMask | None) -> tuple[np.ndarray, np.ndarray | None, float]:
        """Image data, uint8 labels (255 where there is no label) and the valid fraction of a window."""
        data = read_window(self.ds, window)
        ok = valid_mask(data, self.info.nodata).all(axis=0)
        labels = None
        if self.labels_ds is not None:
            raw = read_window(self.labels_ds, window, [1], dtype=np.float64)[0]
            labelled = valid_mask(raw[None], [self.label_nodata])[0]
            labels = _class_ids(raw, labelled, window)
            ok &= labelled
        if aoi is not None:
            ok &= aoi.mask(self.info.geotransform, window)
        return data, labels, float(ok.mean())


def _class_ids(raw: np.ndarray, labelled: np.ndarray, window: Window) -> np.ndarray:
    """Labels as uint8 class ids, LABEL_NODATA where ``labelled`` is False; refuse values that do not fit."""
    bad = labelled & ((raw < 0) | (raw > MAX_CLASS) | (raw != np.round(raw)))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = float(raw[row, col])
        text = str(int(value)) if value.is_integer() else f"{value:g}"
        raise SarSegError(
            f"The label raster holds the value {text} (at image pixel column {window.x + col}, row {window.y + row}). "
            f"Class ids must be whole numbers from 0 to {MAX_CLASS}: the patches store labels as 8-bit values, "
            f"with {LABEL_NODATA} for pixels without a label. Renumber the classes or, if {text} marks pixels "
            "without a label, set it as the label raster's nodata value."
        )
    ids = np.full(raw.shape, LABEL_NODATA, np.uint8)
    ids[labelled] = raw[labelled]
    return ids


def _select(
    source: _Source,
    aoi: _AoiMask | None,
    plan: list[Patch],
    min_valid: float,
    progress: ProgressFn | None,
    is_canceled: CancelFn | None,
) -> tuple[list[tuple[Patch, float]], int, int]:
    """Pass 1: the patches kept (with their valid fraction), and the counts dropped at borders / as invalid."""
    kept: list[tuple[Patch, float]] = []
    dropped_border = dropped_invalid = 0
    row = 0
    for i, patch in enumerate(plan):
        if is_canceled and is_canceled():
            raise CancelledError("Cancelled by the user.")
        if patch.y != row:
            row = patch.y
            source.flush()
        if patch.split is None:
            dropped_border += 1
            continue
        _, _, fraction = source.read(source.window(patch), aoi)
        if fraction >= min_valid and fraction > 0:
            kept.append((patch, fraction))
        else:
            dropped_invalid += 1
        if progress:
            progress(50.0 * (i + 1) / len(plan))
    return kept, dropped_border, dropped_invalid


def _check_selection(kept: list[tuple[Patch, float]], plan: list[Patch], min_valid: float, val_fraction: float,
                     dropped_invalid: int) -> None:  # fmt: skip
    """Refuse a selection that would give an empty training or validation set."""
    if not kept:
        raise SarSegError(
            f"No patch has at least {min_valid:.0%} valid pixels (of {len(plan)} candidates, {dropped_invalid} had "
            "too much nodata or lay outside the AOI). Lower the minimum valid fraction, the patch size, or check "
            "that the AOI and label raster overlap the image."
        )
    kept_splits = [p.split for p, _ in kept]
    if val_fraction > 0 and VAL not in kept_splits:
        candidates = sum(p.split == VAL for p in plan)
        if candidates == 0:
            raise SarSegError(
                "Every patch of the validation blocks also overlaps a training block and was dropped, so the "
                "validation set would be empty. Set a larger 'Split block size' (several patch sizes) or a smaller "
                "'Patch size', or set 'Validation fraction' to 0."
            )
        raise SarSegError(
            f"None of the {candidates} patches of the validation blocks has at least {min_valid:.0%} valid pixels, "
            "so the validation set would be empty. Change the 'Random seed' (other blocks go to validation), lower "
            "the 'Minimum valid fraction', or set 'Validation fraction' to 0."
        )
    if TRAIN not in kept_splits:
        raise SarSegError(
            f"All {len(kept)} patches kept fall in validation blocks, so the training set would be empty. Change the "
            "'Random seed', lower the 'Validation fraction' or the 'Minimum valid fraction'."
        )


def _write_patches(source: _Source, kept: list[tuple[Patch, float]], fmt: str, stage: Path,
                   progress: ProgressFn | None, is_canceled: CancelFn | None) -> None:  # fmt: skip
    """Pass 2: write the kept patches and index.csv into the staging folder."""
    info, size, with_labels = source.info, source.size, source.labels_ds is not None
    counts = {split: sum(p.split == split for p, _ in kept) for split in (TRAIN, VAL)}
    streams: dict[str, _NpzStream] = {}
    if fmt == "npz":
        for split, count in counts.items():
            shapes = {"images": ((info.band_count, size, size), np.float32, count),
                      "positions": ((2,), np.int32, count)}  # fmt: skip
            scalars = _npz_description(info)
            if with_labels:
                shapes["labels"] = ((size, size), np.uint8, count)
                scalars["label_nodata"] = np.uint8(LABEL_NODATA)
            streams[split] = _NpzStream(stage / f"{split}.npz", shapes, scalars)
    rows = []
    x0, dx, rx, y0, ry, dy = info.geotransform
    last_row = 0
    try:
        for n, (patch, fraction) in enumerate(kept, start=1):
            if is_canceled and is_canceled():
                raise CancelledError("Cancelled by the user.")
            if patch.y != last_row:
                last_row = patch.y
                source.flush()
            data, labels, _ = source.read(source.window(patch), None)
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
                                       nodata=LABEL_NODATA) as w:  # fmt: skip
                        w.write(Window(0, 0, size, size), labels)
                    row["label"] = label_file.as_posix()
            else:
                stream = streams[patch.split]
                stream.append("images", data.astype(np.float32))
                stream.append("positions", np.array([patch.x, patch.y], np.int32))
                if labels is not None:
                    stream.append("labels", labels)
                row["image"] = f"{patch.split}.npz"
            rows.append(row)
            if progress:
                progress(50.0 + 50.0 * n / len(kept))
    finally:
        for stream in streams.values():
            stream.close()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(INDEX_FIELDS))
    writer.writeheader()
    writer.writerows(rows)
    (stage / "index.csv").write_text(buffer.getvalue(), encoding="utf-8")


def _publish(stage: Path, out: Path) -> None:
    """Move finished outputs from the staging folder into place, replacing an earlier run's outputs only."""
    for old in earlier_outputs(out):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    for item in stage.iterdir():
        os.replace(item, out / item.name)
