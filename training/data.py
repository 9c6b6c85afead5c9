"""Training data: SAR / label GeoTIFF scenes, leakage-free train/val splits and a patch dataset.

A scene is a SAR raster (bands of linear power, e.g. VV and VH) and a single-band class raster on the same grid:
``sar_<suffix>.tif`` with ``labels_<suffix>.tif`` (what :mod:`training.synthetic` writes), or ``image_<suffix>``
with ``label_<suffix>``. Patches are read window by window with GDAL, so rasters of any size can be used.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from osgeo import gdal, osr
from torch.utils.data import Dataset

from sar_seg_plugin.core.patches import patch_positions
from sar_seg_plugin.core.radiometry import DEFAULT_FLOOR_DB, to_db
from training import synthetic
from training.domains import SensorDraw, draw_world, simulate_sensor
from training.synthetic import CLASS_NAMES, LABEL_NODATA, SAR_NODATA

IMAGE_PREFIXES = ("sar_", "image_")
LABEL_PREFIXES = {"sar_": ("labels_", "label_"), "image_": ("label_", "labels_")}
RASTER_SUFFIXES = (".tif", ".tiff")
FLOOR_DB = DEFAULT_FLOOR_DB  # dB given to zeros and negatives: the plugin's (radiometry.to_db)
TRAIN, VAL = "train", "val"


class DataError(ValueError):
    """Training data that cannot be used as it is (missing, mismatched or invalid rasters)."""


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """A SAR raster and its label raster on the same grid."""

    image: Path
    label: Path
    width: int
    height: int
    bands: int
    geotransform: tuple[float, ...] | None
    crs_wkt: str = field(default="", repr=False)

    @property
    def name(self) -> str:
        """The SAR file name."""
        return self.image.name

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """(min x, min y, max x, max y) in map units; None without a geotransform."""
        gt = self.geotransform
        if gt is None:
            return None
        xs = [gt[0] + c * gt[1] + r * gt[2] for c in (0, self.width) for r in (0, self.height)]
        ys = [gt[3] + c * gt[4] + r * gt[5] for c in (0, self.width) for r in (0, self.height)]
        return min(xs), min(ys), max(xs), max(ys)


def _open(path: Path) -> gdal.Dataset:
    """Open a raster read-only, raising DataError (with or without GDAL exceptions enabled)."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise DataError(f"cannot open {path}: {exc}") from exc
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        raise DataError(f"cannot open {path}: {gdal.GetLastErrorMsg() or 'not a raster GDAL can read'}")
    return ds


def _same_crs(a: str, b: str) -> bool:
    if not a or not b or a == b:
        return True
    sa, sb = osr.SpatialReference(), osr.SpatialReference()
    if sa.ImportFromWkt(a) != 0 or sb.ImportFromWkt(b) != 0:
        return False
    return bool(sa.IsSame(sb))


def _same_geotransform(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    tolerance = 1e-6 * max(abs(a[1]), abs(a[5]), 1e-12)
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


def _label_path(image: Path) -> tuple[Path | None, str]:
    """The label raster of a SAR raster if it exists, and the name expected first."""
    name = image.name
    prefix = next(p for p in IMAGE_PREFIXES if name.lower().startswith(p))
    suffix = name[len(prefix) :]
    candidates = [image.with_name(p + suffix) for p in LABEL_PREFIXES[prefix]]
    found = next((c for c in candidates if c.is_file()), None)
    return found, candidates[0].name


def _scene(image: Path, label: Path) -> Scene:
    """Read both rasters' metadata and check that they share a grid."""
    ids, lds = _open(image), _open(label)
    size = (ids.RasterXSize, ids.RasterYSize)
    label_size = (lds.RasterXSize, lds.RasterYSize)
    if size != label_size:
        raise DataError(
            f"{label.name} is {label_size[0]}x{label_size[1]} pixels but {image.name} is {size[0]}x{size[1]}; "
            "a label raster must be on the grid of its SAR raster"
        )
    gt = ids.GetGeoTransform(can_return_null=True)
    label_gt = lds.GetGeoTransform(can_return_null=True)
    gt = tuple(gt) if gt is not None else None
    label_gt = tuple(label_gt) if label_gt is not None else None
    if not _same_geotransform(gt, label_gt):
        raise DataError(
            f"{label.name} and {image.name} have different geotransforms ({label_gt} vs {gt}); "
            "a label raster must be on the grid of its SAR raster"
        )
    wkt, label_wkt = ids.GetProjection() or "", lds.GetProjection() or ""
    if not _same_crs(wkt, label_wkt):
        raise DataError(f"{label.name} and {image.name} have different coordinate reference systems")
    if lds.RasterCount != 1:
        raise DataError(f"{label.name} has {lds.RasterCount} bands; a label raster has exactly one (class ids)")
    return Scene(image, label, size[0], size[1], ids.RasterCount, gt, wkt)


def find_scenes(data_dir: str | Path) -> list[Scene]:
    """Every ``sar_*.tif`` / ``image_*.tif`` under ``data_dir`` (recursively) paired with its label raster.

    ``sar_X.tif`` pairs with ``labels_X.tif`` (or ``label_X.tif``) in the same folder, ``image_X.tif`` with
    ``label_X.tif`` (or ``labels_X.tif``). Raises DataError for an empty folder, a SAR raster without labels,
    a label raster on another grid (size, geotransform or CRS) and scenes with different band counts.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    images = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and p.name.lower().startswith(IMAGE_PREFIXES)
    )
    if not images:
        raise DataError(
            f"no SAR rasters in {root}: expected files named sar_*.tif or image_*.tif "
            "with labels_*.tif or label_*.tif beside them"
        )
    scenes = []
    for image in images:
        label, expected = _label_path(image)
        if label is None:
            raise DataError(f"no label raster for {image.name}; expected {expected} in {image.parent}")
        scenes.append(_scene(image, label))
    first = scenes[0]
    for scene in scenes[1:]:
        if scene.bands != first.bands:
            raise DataError(f"{scene.image} has {scene.bands} bands but {first.image} has {first.bands}")
    return scenes


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def _overlap(a: Scene, b: Scene) -> bool:
    """Whether two scenes cover some common ground (ungeoreferenced: same folder and size)."""
    if a.bounds is None or b.bounds is None:
        same_size = (a.width, a.height) == (b.width, b.height)
        return a.bounds is None and b.bounds is None and a.image.parent == b.image.parent and same_size
    if not _same_crs(a.crs_wkt, b.crs_wkt):
        return False
    ax0, ay0, ax1, ay1 = a.bounds
    bx0, by0, bx1, by1 = b.bounds
    tolerance = 1e-6 * abs(a.geotransform[1])
    return min(ax1, bx1) - max(ax0, bx0) > tolerance and min(ay1, by1) - max(ay0, by0) > tolerance


def scene_groups(scenes: Sequence[Scene]) -> list[list[Scene]]:
    """Scenes grouped so that scenes covering common ground (e.g. dates of one area) share a group."""
    parent = list(range(len(scenes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(scenes)):
        for j in range(i + 1, len(scenes)):
            if _overlap(scenes[i], scenes[j]):
                parent[root(j)] = root(i)
    groups: dict[int, list[Scene]] = {}
    for i, scene in enumerate(scenes):
        groups.setdefault(root(i), []).append(scene)
    return [sorted(g, key=lambda s: str(s.image)) for g in groups.values()]


def split_scenes(scenes: Sequence[Scene], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Scene], list[Scene]]:
    """Split whole scenes into train and validation lists, deterministically by ``seed``.

    Scenes that overlap on the ground (several dates of one area) form one group and go to the same side, so no
    validation pixel was seen in training, not even on another date. Groups are shuffled and moved to validation
    until it holds ``val_fraction`` of the pixels; both sides get at least one group. For a single area, use
    :func:`spatial_block_split` instead.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    groups = sorted(scene_groups(scenes), key=lambda g: str(g[0].image))
    if len(groups) < 2:
        raise DataError(
            f"the {len(scenes)} scenes cover one area; a scene split needs at least two separate areas "
            "(use spatial_block_split for a single area)"
        )
    order = np.random.default_rng(seed).permutation(len(groups))
    pixels = [sum(s.width * s.height for s in g) for g in groups]
    target = val_fraction * sum(pixels)
    val_ids: list[int] = []
    taken = 0
    for i in order:
        if taken >= target or len(val_ids) == len(groups) - 1:
            break
        val_ids.append(int(i))
        taken += pixels[i]
    train = [s for i, g in enumerate(groups) if i not in val_ids for s in g]
    val = [s for i in sorted(val_ids) for s in groups[i]]
    return train, val


@dataclass(frozen=True, eq=False)
class BlockSplit:
    """Square blocks of one raster, each wholly in train or validation (``val_blocks``: (rows, cols) bool)."""

    height: int
    width: int
    block: int
    val_blocks: np.ndarray

    def role(self, row: int, col: int, size: int) -> str | None:
        """``"train"`` or ``"val"`` for a ``size`` patch at (row, col); None when it straddles both splits."""
        if row < 0 or col < 0 or row + size > self.height or col + size > self.width:
            raise ValueError(f"patch at ({row}, {col}) of {size} px is outside the {self.width}x{self.height} raster")
        r0, r1 = row // self.block, (row + size - 1) // self.block + 1
        c0, c1 = col // self.block, (col + size - 1) // self.block + 1
        sub = self.val_blocks[r0:r1, c0:c1]
        if sub.all():
            return VAL
        if not sub.any():
            return TRAIN
        return None

    def val_mask(self) -> np.ndarray:
        """(height, width) bool, True on validation pixels."""
        full = np.repeat(np.repeat(self.val_blocks, self.block, axis=0), self.block, axis=1)
        return full[: self.height, : self.width]


def spatial_block_split(height: int, width: int, block: int, val_fraction: float = 0.2, seed: int = 0) -> BlockSplit:
    """Split one raster into ``block`` x ``block`` squares, a seeded random ``val_fraction`` of them validation.

    For single-scene data. Patches must lie wholly in one split: :meth:`BlockSplit.role` returns None for a
    patch straddling a train and a validation block, and :class:`SegmentationPatches` drops it, so no pixel is
    in both. Neighbouring blocks are still spatially correlated; larger blocks (several patches) leak less.
    """
    if block < 1:
        raise ValueError(f"block must be at least 1 pixel, got {block}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    rows, cols = -(-height // block), -(-width // block)
    n = rows * cols
    if n < 2:
        raise DataError(f"a {block}-pixel block covers the whole {width}x{height} raster; use smaller blocks")
    n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
    val = np.zeros(n, dtype=bool)
    val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return BlockSplit(height, width, block, val.reshape(rows, cols))


# --------------------------------------------------------------------------------------------
# Radiometry and statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormStats:
    """Per-band mean and standard deviation of the SAR bands in dB, used as ``(dB - mean) / std``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (for model metadata)."""
        return {"units": "dB", "mean": list(self.mean), "std": list(self.std)}


def _nodata_values(ds: gdal.Dataset) -> list[float]:
    """Each band's nodata value; SAR_NODATA (0: a linear power of exactly 0 holds no signal) when unset."""
    values = []
    for b in range(1, ds.RasterCount + 1):
        nd = ds.GetRasterBand(b).GetNoDataValue()
        values.append(SAR_NODATA if nd is None else float(nd))
    return values


def _read_sar(
    ds: gdal.Dataset, nodata: Sequence[float], col: int, row: int, w: int, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """Linear power (bands, h, w) float32 of one window and its validity (h, w) bool."""
    data = ds.ReadAsArray(col, row, w, h)
    if data is None:
        raise DataError(f"reading {ds.GetDescription()} failed: {gdal.GetLastErrorMsg()}")
    data = np.asarray(data, dtype=np.float32).reshape(ds.RasterCount, h, w)
    valid = np.isfinite(data).all(axis=0)
    for b, nd in enumerate(nodata):
        valid &= data[b] != nd
    return data, valid


def compute_band_stats(
    scenes: Sequence[Scene], sample: int = 200_000, window: int = 64, seed: int = 0, floor_db: float = FLOOR_DB
) -> NormStats:
    """Mean and std per band in dB over the valid pixels of about ``sample`` pixels read as random windows."""
    if not scenes:
        raise DataError("no scenes to compute band statistics from")
    rng = np.random.default_rng(seed)
    bands = scenes[0].bands
    total = np.zeros(bands)
    squares = np.zeros(bands)
    count = 0
    per_scene = math.ceil(sample / len(scenes))
    for scene in scenes:
        ds = _open(scene.image)
        nodata = _nodata_values(ds)
        w, h = min(window, scene.width), min(window, scene.height)
        whole = (w, h) == (scene.width, scene.height)
        for _ in range(1 if whole else max(1, math.ceil(per_scene / (w * h)))):
            col = int(rng.integers(0, scene.width - w + 1))
            row = int(rng.integers(0, scene.height - h + 1))
            data, valid = _read_sar(ds, nodata, col, row, w, h)
            db = to_db(data[:, valid], floor_db).astype(np.float64)
            total += db.sum(axis=1)
            squares += (db**2).sum(axis=1)
            count += int(valid.sum())
    if count == 0:
        raise DataError("no valid SAR pixel in the sample used for band statistics")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return NormStats(tuple(float(m) for m in mean), tuple(float(max(s, 1e-6)) for s in std))


def _class_ids(raw: np.ndarray, nodata: float | None, n_classes: int, path: Path) -> np.ndarray:
    """Label window as int64 class ids with LABEL_NODATA for nodata; DataError for undeclared values."""
    raw = np.asarray(raw)
    missing = raw == LABEL_NODATA
    if nodata is not None:
        missing |= raw == nodata
    if np.issubdtype(raw.dtype, np.floating):
        missing |= ~np.isfinite(raw)
        fractional = ~missing & (raw != np.round(raw))
        if fractional.any():
            raise DataError(f"label value {raw[fractional][0]:g} in {path.name} is not an integer class id")
    bad = ~missing & ((raw < 0) | (raw >= n_classes))
    if bad.any():
        value = raw[bad][0]
        raise DataError(
            f"label value {value:g} in {path.name} is not a declared class "
            f"(0..{n_classes - 1}, or {LABEL_NODATA} for nodata)"
        )
    out = np.where(missing, 0, raw).astype(np.int64)
    out[missing] = LABEL_NODATA
    return out


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchWindow:
    """One patch: the scene's index in the dataset and the window's top-left pixel."""

    scene: int
    row: int
    col: int


class SegmentationPatches(Dataset):
    """Square patches of SAR scenes as ``(image float32 (bands, H, W), label int64 (H, W))``.

    Each item is a GDAL window read of the SAR and label rasters (never a whole raster): linear power to dB
    (``10 log10``, floor ``floor_db``), then ``(dB - mean) / std`` per band. Nodata SAR pixels (any band at its
    nodata value, 0 when unset, or not finite) get image 0 and label 255. Label values outside
    ``0..n_classes-1`` (other than nodata) raise DataError when read.

    With ``split`` (a :class:`BlockSplit` of the scenes' grid) only the patches wholly in ``role`` are kept.

    ``augment=True`` applies, per item: with probability ``speckle_probability`` extra multiplicative speckle
    Gamma(L, 1/L), L = ``speckle_looks`` (mean 1), on linear power before dB — L = 20 turns Sentinel-1 GRD's
    4.4 looks into about 3.5, so the model sees noisier realisations of the same ground; a uniform offset in
    ``[-max_offset_db, max_offset_db]`` dB per band (a calibration gain); and one of the 8 flips / 90° rotations,
    applied to image and label together. Randomness is drawn from torch's generator, so ``torch.manual_seed``
    and DataLoader worker seeding make it reproducible.

    ``domain=True`` (scenes written nearly speckle-free with ``base_looks`` looks, see :mod:`training.domains`)
    senses every patch anew instead of the extra speckle: a multilook factor 1-4 (the patch is read from a window
    that many times larger, where the scene allows and no block split is used), an ENL of 1-30, maybe one of the
    plugin's speckle filters, and a calibration offset up to +-2 dB. With ``augment=False`` each patch's draw is
    fixed by ``domain_seed`` and its index, so validation sees the same mix of sensors every epoch.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        patch_size: int = 64,
        stride: int | None = None,
        stats: NormStats | None = None,
        n_classes: int = len(CLASS_NAMES),
        augment: bool = False,
        split: BlockSplit | None = None,
        role: str = TRAIN,
        floor_db: float = FLOOR_DB,
        speckle_looks: float | None = 20.0,
        speckle_probability: float = 0.5,
        max_offset_db: float = 1.0,
        domain: bool = False,
        base_looks: float = 100.0,
        domain_seed: int = 0,
    ) -> None:
        if not scenes:
            raise DataError("no scenes given")
        if role not in (TRAIN, VAL):
            raise ValueError(f"role must be '{TRAIN}' or '{VAL}', got {role!r}")
        self.scenes = list(scenes)
        self.stride = stride or patch_size
        self.split = split
        self.base_looks = base_looks
        self.domain_seed = domain_seed
        stats = stats if stats is not None else compute_band_stats(self.scenes, floor_db=floor_db)
        self._configure(
            patch_size, stats, self.scenes[0].bands, n_classes, augment, floor_db, speckle_looks,
            speckle_probability, max_offset_db, domain,
        )  # fmt: skip

        self.windows: list[PatchWindow] = []
        for i, scene in enumerate(self.scenes):
            if scene.width < patch_size or scene.height < patch_size:
                raise DataError(
                    f"{scene.name} is {scene.width}x{scene.height} pixels, smaller than the {patch_size}-pixel patches"
                )
            if split is not None and (split.height, split.width) != (scene.height, scene.width):
                raise DataError(
                    f"the block split is for {split.width}x{split.height} pixels "
                    f"but {scene.name} is {scene.width}x{scene.height}"
                )
            for row in patch_positions(scene.height, patch_size, self.stride):
                for col in patch_positions(scene.width, patch_size, self.stride):
                    if split is None or split.role(row, col, patch_size) == role:
                        self.windows.append(PatchWindow(i, row, col))
        if not self.windows:
            raise DataError(f"no {role} patches of {patch_size} pixels in the scenes")

    def _configure(
        self,
        patch_size: int,
        stats: NormStats,
        bands: int,
        n_classes: int,
        augment: bool,
        floor_db: float,
        speckle_looks: float | None,
        speckle_probability: float,
        max_offset_db: float,
        domain: bool,
    ) -> None:
        """Set what every item goes through (normalisation, augmentation, sensing); shared with subclasses
        that read patches from elsewhere (``read_window``)."""
        if len(stats.mean) != bands or len(stats.std) != bands:
            raise DataError(f"band statistics are for {len(stats.mean)} bands but the patches have {bands}")
        self.patch_size = patch_size
        self.n_classes = n_classes
        self.augment = augment
        self.floor_db = floor_db
        self.speckle_looks = speckle_looks
        self.speckle_probability = speckle_probability
        self.max_offset_db = max_offset_db
        self.domain = domain
        self.stats = stats
        self._mean = np.asarray(stats.mean, dtype=np.float32)[:, None, None]
        self._std = np.asarray(stats.std, dtype=np.float32)[:, None, None]
        self._handles: dict[Path, tuple[gdal.Dataset, list[float]]] = {}

    def __getstate__(self) -> dict:
        # GDAL datasets cannot be pickled: each DataLoader worker opens its own.
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __len__(self) -> int:
        return len(self.windows)

    def _handle(self, path: Path) -> tuple[gdal.Dataset, list[float]]:
        if path not in self._handles:
            ds = _open(path)
            self._handles[path] = (ds, _nodata_values(ds))
        return self._handles[path]

    def read_window(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Linear power (bands, H, W), validity (H, W) and class ids (H, W, 255 where invalid) of a patch."""
        win = self.windows[index]
        return self._read(self.scenes[win.scene], win.row, win.col, self.patch_size)

    def _read(self, scene: Scene, row: int, col: int, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ds, nodata = self._handle(scene.image)
        data, valid = _read_sar(ds, nodata, col, row, p, p)
        lds, _ = self._handle(scene.label)
        band = lds.GetRasterBand(1)
        raw = band.ReadAsArray(col, row, p, p)
        if raw is None:
            raise DataError(f"reading {scene.label} failed: {gdal.GetLastErrorMsg()}")
        label = _class_ids(raw, band.GetNoDataValue(), self.n_classes, scene.label)
        label[~valid] = LABEL_NODATA
        return data, valid, label

    def sense(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
        """A patch sensed by a random sensor (``domain=True``): linear power, validity, labels, dB offsets."""
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        else:
            rng = np.random.default_rng([self.domain_seed, index])
        win = self.windows[index]
        scene = self.scenes[win.scene]
        p = self.patch_size
        most = 1 if self.split is not None else min(scene.height, scene.width) // p
        draw = SensorDraw.draw(rng, scene.bands, max_factor=most)
        if draw.factor == 1:
            row, col = win.row, win.col
        else:
            size = draw.factor * p
            row, col = int(rng.integers(scene.height - size + 1)), int(rng.integers(scene.width - size + 1))
        data, valid, label = self._read(scene, row, col, draw.factor * p)
        data, valid, label = simulate_sensor(data, valid, label, draw, rng, self.base_looks)
        return data, valid, label, draw.offset_db

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.domain:
            data, valid, label, offsets_db = self.sense(index)
            db = to_db(data, self.floor_db) + np.asarray(offsets_db, np.float32)[:, None, None]
            image = (db - self._mean) / self._std
            image[:, ~valid] = 0.0
            return self._finish(image, label, self.augment)
        data, valid, label = self.read_window(index)
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item())) if self.augment else None
        if rng is not None and self.speckle_looks and rng.random() < self.speckle_probability:
            looks = float(self.speckle_looks)
            data = data * (rng.standard_gamma(looks, data.shape, dtype=np.float32) / np.float32(looks))
        db = to_db(data, self.floor_db)
        if rng is not None and self.max_offset_db > 0:
            offsets = rng.uniform(-self.max_offset_db, self.max_offset_db, (db.shape[0], 1, 1))
            db += offsets.astype(np.float32)
        image = (db - self._mean) / self._std
        image[:, ~valid] = 0.0
        return self._finish(image, label, rng is not None)

    @staticmethod
    def _finish(image: np.ndarray, label: np.ndarray, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One of the 8 flips / 90° rotations (torch's generator) when ``flip``; tensors."""
        if flip:
            k = int(torch.randint(0, 4, ()).item())
            image, label = np.rot90(image, k, axes=(1, 2)), np.rot90(label, k)
            if torch.rand(()).item() < 0.5:
                image, label = image[:, :, ::-1], label[:, ::-1]
        image = np.ascontiguousarray(image, dtype=np.float32)
        label = np.ascontiguousarray(label, dtype=np.int64)
        return torch.from_numpy(image), torch.from_numpy(label)


# --------------------------------------------------------------------------------------------
# Synthetic training data
# --------------------------------------------------------------------------------------------


def make_synthetic_dataset(
    out_dir: str | Path,
    n_scenes: int = 4,
    size: int = 256,
    seed: int = 0,
    days: int = 2,
    looks: float = 4.4,
    n_communes: int = 4,
    random_worlds: bool = False,
) -> list[Scene]:
    """Write ``n_scenes`` independent synthetic areas (``scene_NN/sar_*.tif``, ``labels_*.tif``) and list them.

    Each area is drawn with its own seed and placed east of the previous one (with a gap), so areas never
    overlap on the ground and :func:`split_scenes` can put them on different sides; the ``days`` dates of one
    area overlap and always stay together.

    ``random_worlds=True`` gives every area its own world (:func:`training.domains.draw_world`, seeded by the
    area's seed): the domain-randomised training family (write it with ``looks=training.domains.BASE_LOOKS``).
    """
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be at least 1, got {n_scenes}")
    out = Path(out_dir)
    seeds = np.random.SeedSequence(seed).generate_state(n_scenes)
    for i, scene_seed in enumerate(seeds):
        series = synthetic.generate_series(
            size=size,
            days=days,
            seed=int(scene_seed),
            looks=looks,
            start=datetime.date(2026, 3, 1) + datetime.timedelta(days=7 * i),
            n_communes=n_communes,
            world=draw_world(np.random.default_rng([int(scene_seed), 1])) if random_worlds else None,
        )
        shift = i * (size + 16) * series.pixel_size
        gt = list(series.geotransform)
        gt[0] += shift
        polygons = [{**p, "ring": [(x + shift, y) for x, y in p["ring"]]} for p in series.commune_polygons]
        series = dataclasses.replace(series, geotransform=tuple(gt), commune_polygons=polygons)
        synthetic.write_series(series, out / f"scene_{i:02d}")
    return find_scenes(out)
