"""Training data from the output folder of the plugin's ``sarseg:extract_patches``, split as it was extracted.

``extract_patches`` cuts an image and its label raster into square patches and sends whole spatial blocks to
training or validation (no pixel in both); its folder holds ``index.csv`` and either GeoTIFF pairs
(``train|val/images|labels/patch_NNNNNN.tif``) or ``train.npz`` / ``val.npz``. This module reads such a folder
as it is: the extraction's own split (no re-split), every patch whole, and each band's scale (linear power or
dB) decided by the plugin's rule (:func:`sar_seg_plugin.core.units.resolve_band`: the band unit the patches
carry, checked against the values), so patches already in dB are not converted twice. Items are made by
:class:`training.data.SegmentationPatches`' own ``__getitem__`` (dB with the same floor, normalisation, extra
speckle, gain and flips), so a patch folder and the scene it was cut from train alike.
"""

from __future__ import annotations

import csv
import math
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal, gdal_array

from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.patches import INDEX_FIELDS, LABEL_NODATA, TRAIN, VAL
from sar_seg_plugin.core.radiometry import DB, LINEAR, to_db
from sar_seg_plugin.core.units import BandScale, resolve_band
from training.data import FLOOR_DB, DataError, NormStats, SegmentationPatches, _open
from training.synthetic import SAR_NODATA

INDEX_FILE = "index.csv"
TIF, NPZ = "tif", "npz"
SPLITS = (TRAIN, VAL)
SCALE_SAMPLE_PATCHES = 64  # patches whose values are checked against each band's unit


@dataclass(frozen=True)
class PatchRecord:
    """One row of ``index.csv``: the patch and where it lies (``position``: its index in the split's .npz)."""

    patch_id: str
    split: str
    col: int
    row: int
    image: str
    label: str
    position: int


@dataclass
class PatchFolder:
    """An ``extract_patches`` output folder: its layout, patches per split and what the image bands are."""

    root: Path
    layout: str
    records: dict[str, list[PatchRecord]]
    size: int
    descriptions: tuple[str, ...]
    units: tuple[str, ...]
    nodata: tuple[float, ...]
    scales: tuple[BandScale, ...]
    geotransform: tuple[float, ...] | None
    crs_wkt: str = field(default="", repr=False)

    @property
    def bands(self) -> int:
        """Number of image bands."""
        return len(self.descriptions)

    def sources(self, split: str) -> list[str]:
        """Where the split's patches are, relative to the folder (how training metadata names its data)."""
        return [f"{split}/images"] if self.layout == TIF else [f"{split}.npz"]


def is_patch_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``extract_patches`` (an ``index.csv`` with its header)."""
    index = Path(path) / INDEX_FILE
    if not index.is_file():
        return False
    try:
        with open(index, newline="", encoding="utf-8") as fh:
            header = next(csv.reader([fh.readline(4096)]), [])
    except (OSError, UnicodeDecodeError):
        return False
    return tuple(h.strip() for h in header) == INDEX_FIELDS


def _read_index(root: Path) -> dict[str, list[PatchRecord]]:
    records: dict[str, list[PatchRecord]] = {TRAIN: [], VAL: []}
    with open(root / INDEX_FILE, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            split = row["split"]
            if split not in records:
                raise DataError(f"{root / INDEX_FILE} line {line}: split {split!r} is neither {TRAIN} nor {VAL}")
            try:
                col, top = int(row["col"]), int(row["row"])
            except ValueError:
                raise DataError(f"{root / INDEX_FILE} line {line}: col/row are not whole numbers") from None
            position = len(records[split])
            records[split].append(PatchRecord(row["patch_id"], split, col, top, row["image"], row["label"], position))
    for split in SPLITS:
        if not records[split]:
            raise DataError(
                f"{root / INDEX_FILE} lists no {split} patch: run sarseg:extract_patches with a label raster and a "
                "'Validation fraction' above 0, so the folder has both training and validation patches"
            )
    return records


def _layout(root: Path, records: dict[str, list[PatchRecord]]) -> str:
    first = records[TRAIN][0]
    if first.image == f"{TRAIN}.npz":
        return NPZ
    if first.image.lower().endswith((".tif", ".tiff")):
        return TIF
    raise DataError(f"{root / INDEX_FILE}: patch {first.patch_id} points at {first.image!r}, neither a .tif nor .npz")


def _no_labels(root: Path) -> DataError:
    return DataError(
        f"the patches in {root} were extracted without a label raster; run sarseg:extract_patches again with "
        "'Label raster' set (class ids per pixel, e.g. rasterised labelled polygons)"
    )


# --------------------------------------------------------------------------------------------
# .npz members read in place
# --------------------------------------------------------------------------------------------


def npz_member(path: Path, name: str) -> np.ndarray:
    """Array ``name`` of an .npz archive: memory-mapped when stored uncompressed (as extract_patches writes it,
    so a patch is read without loading the split), else loaded whole."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise DataError(f"{path} has no {name!r} array") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if info.compress_type != zipfile.ZIP_STORED:
        with np.load(path, allow_pickle=False) as npz:
            return npz[name]
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if local[:4] != b"PK\x03\x04":
            raise DataError(f"{path}: member {name}.npy has no local zip header")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: {name} holds Python objects, not numbers")
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _npz_strings(npz: np.lib.npyio.NpzFile, name: str, count: int) -> tuple[str, ...]:
    if name not in npz.files:
        return ("",) * count
    values = tuple(str(v) for v in np.atleast_1d(npz[name]))
    return values if len(values) == count else ("",) * count


# --------------------------------------------------------------------------------------------
# Reading patches
# --------------------------------------------------------------------------------------------


class PatchReader:
    """Reads the image (bands, size, size) float32 and labels (size, size) uint8 of a patch of either layout.

    Files (GDAL datasets, memory maps) are opened on first use in each process, never pickled."""

    def __init__(self, root: Path, layout: str) -> None:
        self.root = root
        self.layout = layout
        self._open: dict[str, object] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}

    def _npz(self, split: str, name: str) -> np.ndarray:
        key = f"{split}:{name}"
        if key not in self._open:
            self._open[key] = npz_member(self.root / f"{split}.npz", name)
        return self._open[key]

    def image(self, record: PatchRecord) -> np.ndarray:
        """The patch's image bands as stored (float32)."""
        if self.layout == NPZ:
            return np.array(self._npz(record.split, "images")[record.position], dtype=np.float32)
        ds = _open(self.root / record.image)
        data = ds.ReadAsArray()
        if data is None:
            raise DataError(f"reading {self.root / record.image} failed: {gdal.GetLastErrorMsg()}")
        return np.asarray(data, dtype=np.float32).reshape(ds.RasterCount, ds.RasterYSize, ds.RasterXSize)

    def labels(self, record: PatchRecord) -> np.ndarray:
        """The patch's class ids (LABEL_NODATA where unlabelled)."""
        if self.layout == NPZ:
            return np.array(self._npz(record.split, "labels")[record.position], dtype=np.uint8)
        if not record.label:
            raise _no_labels(self.root)
        ds = _open(self.root / record.label)
        data = ds.GetRasterBand(1).ReadAsArray()
        if data is None:
            raise DataError(f"reading {self.root / record.label} failed: {gdal.GetLastErrorMsg()}")
        return np.asarray(data)


def _band_scales(
    folder_root: Path,
    reader: PatchReader,
    records: Sequence[PatchRecord],
    descriptions: Sequence[str],
    units: Sequence[str],
    nodata: Sequence[float],
    dtype: np.dtype,
) -> tuple[BandScale, ...]:
    """Each band's scale by the plugin's rule, from its unit and the values of up to SCALE_SAMPLE_PATCHES patches."""
    step = max(1, len(records) // SCALE_SAMPLE_PATCHES)
    samples: list[list[np.ndarray]] = [[] for _ in descriptions]
    for record in records[::step][:SCALE_SAMPLE_PATCHES]:
        data = reader.image(record)
        valid = valid_pixels(data, nodata)
        for b in range(len(descriptions)):
            samples[b].append(data[b][valid])
    scales = []
    for b, (description, unit) in enumerate(zip(descriptions, units)):
        label = f"band {b + 1}" + (f" ('{description}')" if description else "") + f" of the patches in {folder_root}"
        try:
            scales.append(resolve_band(b + 1, label, unit, description, dtype, np.concatenate(samples[b])))
        except SarSegError as exc:
            raise DataError(str(exc)) from None
    return tuple(scales)


def valid_pixels(data: np.ndarray, nodata: Sequence[float]) -> np.ndarray:
    """(h, w) bool: finite in every band and at no band's nodata value."""
    valid = np.isfinite(data).all(axis=0)
    for b, value in enumerate(nodata):
        if not math.isnan(value):
            valid &= data[b] != value
    return valid


def open_patch_folder(path: str | Path) -> PatchFolder:
    """Read ``index.csv`` and the band metadata of an extract_patches folder, and decide each band's scale.

    DataError for a folder without labels, without training or validation patches, with missing files or
    with bands that are not backscatter (the plugin's unit rule says why).
    """
    root = Path(path)
    if not is_patch_folder(root):
        raise DataError(f"{root} holds no {INDEX_FILE} written by sarseg:extract_patches")
    records = _read_index(root)
    layout = _layout(root, records)
    reader = PatchReader(root, layout)
    geotransform, crs_wkt = None, ""
    if layout == NPZ:
        for split in SPLITS:
            npz_path = root / f"{split}.npz"
            if not npz_path.is_file():
                raise DataError(f"{npz_path} is missing ({INDEX_FILE} lists {len(records[split])} {split} patches)")
            try:
                npz = np.load(npz_path, allow_pickle=False)
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise DataError(f"cannot read {npz_path}: {exc}") from exc
            with npz:
                if "labels" not in npz.files:
                    raise _no_labels(root)
                images = npz_member(npz_path, "images")
                if images.ndim != 4 or images.shape[0] != len(records[split]):
                    raise DataError(
                        f"{npz_path} holds images of shape {images.shape}, but {INDEX_FILE} lists "
                        f"{len(records[split])} {split} patches: the folder is not one extraction"
                    )
                positions = npz["positions"] if "positions" in npz.files else None
                expected = np.array([(r.col, r.row) for r in records[split]])
                if positions is not None and not np.array_equal(np.asarray(positions), expected):
                    raise DataError(f"{npz_path}: the patch positions differ from those of {INDEX_FILE}")
                if split == TRAIN:
                    bands, size = images.shape[1], images.shape[2]
                    descriptions = _npz_strings(npz, "band_names", bands)
                    units = _npz_strings(npz, "band_units", bands)
                    stored = npz["image_nodata"] if "image_nodata" in npz.files else np.full(bands, np.nan)
                    # Archives without it (older extractions): 0 and non-finite values hold no signal.
                    nodata = tuple(float(SAR_NODATA if math.isnan(v) else v) for v in np.atleast_1d(stored))
                    if "geotransform" in npz.files:
                        geotransform = tuple(float(v) for v in npz["geotransform"])
                    crs_wkt = str(npz["crs_wkt"]) if "crs_wkt" in npz.files else ""
                elif images.shape[1:] != (bands, size, size):
                    raise DataError(f"{npz_path} holds patches of shape {images.shape[1:]}, train.npz {bands, size}")
        dtype = np.dtype(np.float32)
    else:
        first = records[TRAIN][0]
        if not first.label:
            raise _no_labels(root)
        ds = _open(root / first.image)
        bands, size = ds.RasterCount, ds.RasterXSize
        described = [ds.GetRasterBand(b + 1) for b in range(bands)]
        descriptions = tuple(b.GetDescription().strip() for b in described)
        units = tuple(b.GetUnitType() or "" for b in described)
        nodata = tuple(float(SAR_NODATA if b.GetNoDataValue() is None else b.GetNoDataValue()) for b in described)
        dtype = np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(described[0].DataType))
        gt = ds.GetGeoTransform(can_return_null=True)
        geotransform = tuple(gt) if gt is not None else None
        crs_wkt = ds.GetProjection() or ""
        ds = None
    scales = _band_scales(root, reader, records[TRAIN], descriptions, units, nodata, dtype)
    return PatchFolder(root, layout, records, size, descriptions, units, nodata, scales, geotransform, crs_wkt)


def check_patch_labels(folder: PatchFolder, n_classes: int, class_listing: str, classes_file: str) -> np.ndarray:
    """Pixel count per class over every label patch of both splits; DataError for an undeclared class id, and
    for image patches of another size or band count than the first (GeoTIFF layout)."""
    reader = PatchReader(folder.root, folder.layout)
    counts = np.zeros(256, dtype=np.int64)
    for split in SPLITS:
        for record in folder.records[split]:
            if folder.layout == TIF:
                if not record.label:
                    raise _no_labels(folder.root)
                ds = _open(folder.root / record.image)
                if (ds.RasterCount, ds.RasterXSize, ds.RasterYSize) != (folder.bands, folder.size, folder.size):
                    raise DataError(
                        f"{folder.root / record.image} has {ds.RasterCount} bands of {ds.RasterXSize}x"
                        f"{ds.RasterYSize} px, but the first patch {folder.bands} of {folder.size}x{folder.size}"
                    )
                ds = None
            labels = reader.labels(record)
            if labels.shape != (folder.size, folder.size):
                raise DataError(f"the labels of patch {record.patch_id} are {labels.shape}, not {folder.size} px")
            here = np.bincount(labels.ravel().astype(np.int64), minlength=256)
            bad = np.flatnonzero(here[n_classes:LABEL_NODATA])
            if bad.size:
                where = record.label or f"{record.split}.npz"
                raise DataError(
                    f"patch {record.patch_id} ({where}) holds label value {n_classes + int(bad[0])}, which is not a "
                    f"declared class ({class_listing}; {LABEL_NODATA} = nodata). Declare the classes in "
                    f"{classes_file} beside index.csv"
                )
            counts += here
    return counts[:n_classes]


# --------------------------------------------------------------------------------------------
# Statistics and datasets
# --------------------------------------------------------------------------------------------


def _as_db(data: np.ndarray, scales: Sequence[BandScale], floor_db: float) -> np.ndarray:
    """(bands, ...) patch values in dB with the floor of :func:`sar_seg_plugin.core.radiometry.to_db`."""
    out = np.empty(data.shape, dtype=np.float32)
    for b, scale in enumerate(scales):
        out[b] = to_db(data[b], floor_db) if scale.scale == LINEAR else np.maximum(data[b], np.float32(floor_db))
    return out


def patch_band_stats(
    folder: PatchFolder, sample: int = 200_000, seed: int = 0, floor_db: float = FLOOR_DB
) -> NormStats:
    """Mean and std per band in dB over the valid pixels of training patches taken in a seeded random order
    until about ``sample`` pixels (as :func:`training.data.compute_band_stats` does for scenes)."""
    reader = PatchReader(folder.root, folder.layout)
    records = folder.records[TRAIN]
    total, squares, count = np.zeros(folder.bands), np.zeros(folder.bands), 0
    for i in np.random.default_rng(seed).permutation(len(records)):
        data = reader.image(records[int(i)])
        valid = valid_pixels(data, folder.nodata)
        db = _as_db(data[:, valid], folder.scales, floor_db).astype(np.float64)
        total += db.sum(axis=1)
        squares += (db**2).sum(axis=1)
        count += int(valid.sum())
        if count >= sample:
            break
    if count == 0:
        raise DataError(f"no valid pixel in the training patches of {folder.root}")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return NormStats(tuple(float(m) for m in mean), tuple(float(max(s, 1e-6)) for s in std))


class ExtractedPatches(SegmentationPatches):
    """The patches of one split of an extract_patches folder as ``(image (bands, H, W), label (H, W))`` tensors.

    Items come from :class:`training.data.SegmentationPatches`' ``__getitem__`` (extra speckle, dB with the
    floor, calibration offset, ``(dB - mean) / std``, flips); only where a patch is read from differs
    (:meth:`read_window`). Patches in dB are handed to it as linear power (``10^(dB/10)``), which it turns back
    into the same dB values (to float32 precision). Its scene-window planning is not used: the patches are cut.
    """

    def __init__(
        self,
        folder: PatchFolder,
        split: str,
        stats: NormStats,
        n_classes: int,
        augment: bool = False,
        floor_db: float = FLOOR_DB,
        speckle_looks: float | None = 20.0,
        speckle_probability: float = 0.5,
        max_offset_db: float = 1.0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be '{TRAIN}' or '{VAL}', got {split!r}")
        self.folder = folder
        self.records = list(folder.records[split])
        self.reader = PatchReader(folder.root, folder.layout)
        self.scenes = []
        self.split = None
        self.windows = []
        self.stride = folder.size
        self._configure(
            folder.size, stats, folder.bands, n_classes, augment, floor_db, speckle_looks, speckle_probability,
            max_offset_db, domain=False,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.records)

    def read_window(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Linear power (bands, H, W), validity (H, W) and class ids (H, W, 255 where invalid) of a patch."""
        record = self.records[index]
        data = self.reader.image(record)
        valid = valid_pixels(data, self.folder.nodata)
        for b, scale in enumerate(self.folder.scales):
            if scale.scale == DB:
                data[b] = np.power(np.float32(10.0), data[b] / np.float32(10.0))
        labels = self.reader.labels(record).astype(np.int64)
        bad = (labels >= self.n_classes) & (labels != LABEL_NODATA)
        if bad.any():
            raise DataError(f"patch {record.patch_id} holds label value {labels[bad][0]}, not a declared class")
        labels[~valid] = LABEL_NODATA
        return data, valid, labels
