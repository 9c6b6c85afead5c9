"""Train a SAR land-cover segmentation model on GeoTIFF scenes (``sar_*.tif`` + ``labels_*.tif``) or patches.

Usage::

    python -m training.train_segmentation --data DIR --arch unet --epochs 50 --batch-size 16 --out runs/unet
    torchrun --nproc_per_node=2 -m training.train_segmentation --data DIR ...   # DistributedDataParallel
    python -m training.train_segmentation --data PATCHES --init bundled --freeze-encoder-epochs 2 --out runs/local

AdamW with a linear-warmup cosine schedule, early stopping on validation mIoU, ``best.pt`` and ``last.pt`` in
``--out`` (``--resume`` continues from ``last.pt``), optional TensorBoard logs. The split is leakage-free: whole
areas go to train or validation (:func:`training.data.split_scenes`) when the data covers two or more separate
areas, otherwise square blocks of the one area do (:func:`training.data.spatial_block_split`). Band statistics
(dB mean and std) come from the training scenes and are stored, with everything the ONNX model metadata needs
(class names and colours, input bands and units, tile size and overlap, pixel size), in the checkpoint.

``--data`` may also be the output folder of the plugin's ``sarseg:extract_patches`` (:mod:`training.patch_folders`):
its own train/validation split is used as it is. ``--init bundled`` (or a checkpoint path) fine-tunes from
trained weights instead of a random initialisation: the architecture, the band statistics and the class list
are the checkpoint's, and the data must have the same bands and classes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from osgeo import gdal, osr
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from training.checkpoint import (
    BUNDLED,
    BUNDLED_SEGMENTATION,
    Checkpoint,
    CheckpointError,
    file_sha256,
    load_checkpoint,
    resolve_init,
    save_checkpoint,
)
from training.data import (
    FLOOR_DB,
    DataError,
    NormStats,
    Scene,
    SegmentationPatches,
    compute_band_stats,
    find_scenes,
    scene_groups,
    spatial_block_split,
    split_scenes,
)
from training.losses import LOSSES, create_loss
from training.metrics import ConfusionMatrix, segmentation_metrics
from training.models import ARCHITECTURES, count_parameters, create_model, freeze_encoder, required_multiple
from training.patch_folders import (
    ExtractedPatches,
    PatchFolder,
    check_patch_labels,
    is_patch_folder,
    open_patch_folder,
    patch_band_stats,
)
from training.synthetic import BAND_NAMES, CLASS_COLORS, CLASS_NAMES, LABEL_NODATA

TASK = "segmentation"
DEFAULT_ARCH = "unet"
CLASSES_FILE = "classes.json"
DEFAULT_TILE_SIZE = 384  # the bundled model's (scripts/make_models.py says why)
DEFAULT_TILE_OVERLAP = 32
WARMUP_FRACTION = 0.05
MIN_LR_FACTOR = 0.01
# Colours for classes declared without any (classes.json without "class_colors").
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


# --------------------------------------------------------------------------------------------
# What the data declares: classes, bands, pixel size
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassSet:
    """Class names and ``#rrggbb`` colours, index = class id in the label rasters."""

    names: tuple[str, ...]
    colors: tuple[str, ...]


def load_classes(data_dir: str | Path) -> ClassSet:
    """The classes of ``data_dir/classes.json`` if present, else those of :mod:`training.synthetic`.

    ``classes.json`` is ``{"class_names": [...], "class_colors": ["#rrggbb", ...]}`` (colours optional) or a
    list ``[{"name": ..., "color": ...}, ...]`` in class-id order.
    """
    path = Path(data_dir) / CLASSES_FILE
    if not path.is_file():
        return ClassSet(tuple(CLASS_NAMES), tuple(CLASS_COLORS))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if isinstance(raw, list):
        if not all(isinstance(c, dict) for c in raw):
            raise DataError(f'{path}: expected a list of {{"name": ..., "color": ...}} objects')
        names = [c.get("name") for c in raw]
        colors = [c.get("color") for c in raw]
        colors = None if all(c is None for c in colors) else colors
    elif isinstance(raw, dict):
        names, colors = raw.get("class_names"), raw.get("class_colors")
    else:
        raise DataError(f'{path}: expected {{"class_names": [...], "class_colors": [...]}}')
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{path}: class names must be a non-empty list of non-empty strings, got {names!r}")
    if len(names) >= LABEL_NODATA:
        raise DataError(f"{path}: at most {LABEL_NODATA} classes ({LABEL_NODATA} is the label nodata value)")
    if colors is None:
        colors = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
    if not isinstance(colors, list) or len(colors) != len(names):
        raise DataError(f"{path}: one colour per class expected ({len(names)}), got {colors!r}")
    bad = [c for c in colors if not isinstance(c, str) or not _COLOUR.match(c)]
    if bad:
        raise DataError(f"{path}: colours must be '#rrggbb' strings, got {bad[0]!r}")
    return ClassSet(tuple(names), tuple(colors))


def named_bands(descriptions: Sequence[str]) -> tuple[str, ...]:
    """Band names from band descriptions: the descriptions when every band has one; VV, VH for 2 undescribed
    bands (the synthetic and Sentinel-1 order), else B1, B2, ..."""
    names = tuple(d.strip() for d in descriptions)
    if all(names):
        return names
    if len(names) == len(BAND_NAMES):
        return tuple(BAND_NAMES)
    return tuple(f"B{b + 1}" for b in range(len(names)))


def band_names(scene: Scene) -> tuple[str, ...]:
    """The SAR raster's band names (:func:`named_bands` of its band descriptions)."""
    ds = gdal.Open(str(scene.image))
    return named_bands([ds.GetRasterBand(b + 1).GetDescription() for b in range(ds.RasterCount)])


def pixel_size_of(geotransform: Sequence[float] | None, crs_wkt: str) -> float | None:
    """Pixel width in metres from a geotransform; None when ungeoreferenced or in a geographic CRS."""
    if geotransform is None or not crs_wkt:
        return None
    srs = osr.SpatialReference()
    if srs.ImportFromWkt(crs_wkt) != 0 or not srs.IsProjected():
        return None
    return float(math.hypot(geotransform[1], geotransform[4]) * srs.GetLinearUnits())


def pixel_size_m(scene: Scene) -> float | None:
    """Pixel width in metres of a scene (:func:`pixel_size_of`)."""
    return pixel_size_of(scene.geotransform, scene.crs_wkt)


def read_class_ids(band: gdal.Band, col: int, row: int, width: int, height: int, classes: ClassSet) -> np.ndarray:
    """A window of a label band as int64 class ids, LABEL_NODATA where nodata; DataError for undeclared values."""
    raw = np.asarray(band.ReadAsArray(col, row, width, height))
    missing = raw == LABEL_NODATA
    nodata = band.GetNoDataValue()
    if nodata is not None:
        missing |= raw == nodata
    if np.issubdtype(raw.dtype, np.floating):
        missing |= ~np.isfinite(raw)
    values = raw[~missing]
    bad = (values < 0) | (values >= len(classes.names)) | (values != np.round(values))
    if bad.any():
        declared = ", ".join(f"{i} {name}" for i, name in enumerate(classes.names))
        name = Path(band.GetDataset().GetDescription()).name
        raise DataError(
            f"{name} holds label value {values[bad][0]:g}, which is not a declared class "
            f"({declared}; {LABEL_NODATA} = nodata). Declare the classes in {CLASSES_FILE} beside the data"
        )
    out = np.full(raw.shape, LABEL_NODATA, dtype=np.int64)
    out[~missing] = values.astype(np.int64)
    return out


def check_labels(scenes: Sequence[Scene], classes: ClassSet, rows_per_read: int = 256) -> np.ndarray:
    """Pixel count per class over every label raster, read in strips; DataError for an undeclared class id.

    Done before training so a bad value stops the run at once (and on every DDP rank alike) rather than in
    the middle of an epoch.
    """
    n = len(classes.names)
    counts = np.zeros(n, dtype=np.int64)
    for scene in scenes:
        ds = gdal.Open(str(scene.label))
        band = ds.GetRasterBand(1)
        for row in range(0, scene.height, rows_per_read):
            ids = read_class_ids(band, 0, row, scene.width, min(rows_per_read, scene.height - row), classes)
            counts += np.bincount(ids[ids != LABEL_NODATA], minlength=n)
    return counts


def relative_name(scene: Scene, root: Path) -> str:
    """The SAR raster's path relative to the data folder (how scenes are named in metadata and reports)."""
    try:
        return scene.image.relative_to(root).as_posix()
    except ValueError:
        return str(scene.image)


# --------------------------------------------------------------------------------------------
# Split and datasets
# --------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """Scenes (or patches), split, datasets and what the model metadata says about the input.

    ``train_sources`` / ``val_sources``: the scenes (or patch files) of each split, relative to ``root``;
    ``patch_size``: the side of the training patches; ``notes``: what the data preparation decided (printed).
    """

    root: Path
    scenes: list[Scene]
    train_scenes: list[Scene]
    val_scenes: list[Scene]
    split: dict
    train: Dataset
    val: Dataset
    stats: NormStats
    classes: ClassSet
    bands: tuple[str, ...]
    pixel_size_m: float | None
    class_pixels: np.ndarray
    train_sources: list[str] = field(default_factory=list)
    val_sources: list[str] = field(default_factory=list)
    patch_size: int = 0
    notes: list[str] = field(default_factory=list)


def _block_size(height: int, width: int, patch: int) -> int:
    """The largest of 4, 2, 1 patches per block side that still leaves at least 4 blocks."""
    for k in (4, 2, 1):
        if -(-height // (k * patch)) * -(-width // (k * patch)) >= 4:
            return k * patch
    return patch


MIN_BASE_LOOKS = 30.0


def base_looks(scenes: Sequence[Scene]) -> float:
    """The smallest ``LOOKS`` metadata item of the scenes' images; DataError when missing or below
    :data:`MIN_BASE_LOOKS` (domain randomisation draws each patch's ENL by adding speckle to nearly clean scenes)."""
    looks = []
    for scene in scenes:
        ds = gdal.Open(str(scene.image))
        value = ds.GetMetadataItem("LOOKS") if ds is not None else None
        ds = None
        try:
            looks.append(float(value))
        except (TypeError, ValueError):
            raise DataError(
                f"{scene.image} has no LOOKS metadata: domain randomisation needs scenes written nearly "
                "speckle-free (training.data.make_synthetic_dataset(..., looks=100, random_worlds=True))"
            ) from None
    if min(looks) < MIN_BASE_LOOKS:
        raise DataError(
            f"the scenes have {min(looks):g} looks: domain randomisation adds each patch's speckle itself and "
            f"needs scenes of at least {MIN_BASE_LOOKS:g} looks"
        )
    return min(looks)


def prepare_data(
    data_dir: str | Path,
    patch_size: int,
    val_fraction: float,
    seed: int,
    stats: NormStats | None = None,
    domain: bool = False,
) -> PreparedData:
    """Find and check the scenes, split them without leakage and build the train / validation patch datasets.

    ``domain=True``: domain-randomised patches (:mod:`training.domains`); the scenes must be written nearly
    speckle-free (``LOOKS`` metadata of at least :data:`MIN_BASE_LOOKS`). An extract_patches output folder
    (:func:`training.patch_folders.is_patch_folder`) is read by :func:`prepare_patch_folder` instead.
    ``stats`` (e.g. a checkpoint's) replaces the band statistics computed from the training data."""
    root = Path(data_dir)
    if is_patch_folder(root):
        if domain:
            raise DataError(
                f"{root} holds patches cut by sarseg:extract_patches, which carry their sensor's speckle; "
                "--domain-randomisation senses nearly speckle-free scenes anew (sar_*.tif with LOOKS >= "
                f"{MIN_BASE_LOOKS:g}). Leave --domain-randomisation out to train on the patches as they are"
            )
        return prepare_patch_folder(root, seed, stats)
    scenes = find_scenes(root)
    sensing = {"domain": True, "base_looks": base_looks(scenes), "domain_seed": seed} if domain else {}
    classes = load_classes(root)
    class_pixels = check_labels(scenes, classes)
    groups = scene_groups(scenes)
    n = len(classes.names)
    if len(groups) >= 2:
        train_scenes, val_scenes = split_scenes(scenes, val_fraction, seed)
        stats = stats or compute_band_stats(train_scenes, seed=seed)
        common = {"patch_size": patch_size, "stats": stats, "n_classes": n, **sensing}
        train = SegmentationPatches(train_scenes, augment=True, **common)
        val = SegmentationPatches(val_scenes, augment=False, **common)
        split = {"kind": "scenes", "groups": len(groups)}
    else:
        sizes = {(s.height, s.width) for s in scenes}
        if len(sizes) != 1:
            raise DataError("the scenes cover one area but lie on different grids; a block split needs one grid")
        height, width = sizes.pop()
        block = _block_size(height, width, patch_size)
        blocks = spatial_block_split(height, width, block, val_fraction, seed)
        train_scenes = val_scenes = list(scenes)
        # Statistics from the whole area: they use no label, so validation blocks leak nothing about classes.
        stats = stats or compute_band_stats(scenes, seed=seed)
        common = {"patch_size": patch_size, "stats": stats, "n_classes": n, "split": blocks, **sensing}
        train = SegmentationPatches(scenes, augment=True, role="train", **common)
        val = SegmentationPatches(scenes, augment=False, role="val", **common)
        split = {"kind": "blocks", "block": block, "val_blocks": int(blocks.val_blocks.sum())}
    return PreparedData(
        root=root,
        scenes=scenes,
        train_scenes=train_scenes,
        val_scenes=val_scenes,
        split=split,
        train=train,
        val=val,
        stats=stats,
        classes=classes,
        bands=band_names(scenes[0]),
        pixel_size_m=pixel_size_m(scenes[0]),
        class_pixels=class_pixels,
        train_sources=[relative_name(s, root) for s in train_scenes],
        val_sources=[relative_name(s, root) for s in val_scenes],
        patch_size=patch_size,
    )


def prepare_patch_folder(root: Path, seed: int, stats: NormStats | None = None) -> PreparedData:
    """The datasets of an extract_patches output folder: its own train/validation split, its patches whole,
    each band read as the plugin's unit rule decides (linear power or dB), labels checked against the classes
    (``classes.json`` beside ``index.csv``, else the synthetic ones)."""
    folder: PatchFolder = open_patch_folder(root)
    classes = load_classes(root)
    n = len(classes.names)
    listing = ", ".join(f"{i} {name}" for i, name in enumerate(classes.names))
    class_pixels = check_patch_labels(folder, n, listing, CLASSES_FILE)
    stats = stats or patch_band_stats(folder, seed=seed)
    common = {"stats": stats, "n_classes": n}
    counts = {split: len(folder.records[split]) for split in ("train", "val")}
    return PreparedData(
        root=root,
        scenes=[],
        train_scenes=[],
        val_scenes=[],
        split={"kind": "extract_patches", "layout": folder.layout, **counts},
        train=ExtractedPatches(folder, "train", augment=True, **common),
        val=ExtractedPatches(folder, "val", augment=False, **common),
        stats=stats,
        classes=classes,
        bands=named_bands(folder.descriptions),
        pixel_size_m=pixel_size_of(folder.geotransform, folder.crs_wkt),
        class_pixels=class_pixels,
        train_sources=folder.sources("train"),
        val_sources=folder.sources("val"),
        patch_size=folder.size,
        notes=[
            f"{root}: patches of sarseg:extract_patches ({folder.layout}), {counts['train']} training and "
            f"{counts['val']} validation patches of {folder.size} px, split as extracted",
            *(s.note for s in folder.scales),
        ],
    )


# --------------------------------------------------------------------------------------------
# Device and distributed set-up
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world`` processes and its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether several processes train together (torchrun)."""
        return self.world > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (this process's GPU) when present, else CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def start_runtime(device: str) -> Runtime:
    """Join the process group when started by torchrun (WORLD_SIZE > 1), with gloo on CPU and nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Runtime(rank, world, local_rank, dev)


def all_reduce_sum(value: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """The sum of ``value`` over every process (``value`` itself when training alone)."""
    if not runtime.distributed:
        return value
    tensor = value.to(runtime.device if runtime.device.type == "cuda" else "cpu").clone()
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor.cpu()


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (and ask cuDNN for deterministic kernels)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


# --------------------------------------------------------------------------------------------
# Schedule, validation and reporting
# --------------------------------------------------------------------------------------------


class WarmupCosine:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine down to ``min_factor`` at ``total`` steps.

    A class (not a lambda) so ``LambdaLR.state_dict`` keeps it and a resumed run follows the same curve.
    """

    def __init__(self, total: int, warmup: int, min_factor: float = MIN_LR_FACTOR) -> None:
        self.total = max(total, 1)
        self.warmup = max(min(warmup, self.total - 1), 0)
        self.min_factor = min_factor

    def __call__(self, step: int) -> float:
        """Multiplier of the base learning rate after ``step`` optimiser steps."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def validate(
    model: nn.Module, loader: DataLoader, loss_fn: nn.Module, n_classes: int, runtime: Runtime, amp: bool
) -> tuple[np.ndarray, float]:
    """Confusion matrix and mean batch loss over the validation set, summed over every process."""
    model.eval()
    cm = ConfusionMatrix(n_classes)
    loss_sum = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(runtime.device), labels.to(runtime.device)
            with torch.autocast(runtime.device.type, enabled=amp):
                logits = model(images)
            loss_sum += torch.tensor([float(loss_fn(logits.float(), labels)), 1.0], dtype=torch.float64)
            cm.update(logits.argmax(1).cpu().numpy(), labels.cpu().numpy())
    matrix = all_reduce_sum(torch.from_numpy(cm.matrix), runtime).numpy()
    loss_sum = all_reduce_sum(loss_sum, runtime)
    return matrix, float(loss_sum[0] / loss_sum[1]) if loss_sum[1] > 0 else math.nan


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def metrics_table(metrics: dict) -> str:
    """Per-class IoU, Dice, precision, recall and pixels, then OA / mIoU / macro Dice, as a Markdown table."""
    lines = ["| class | IoU | Dice | precision | recall | pixels |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in metrics["per_class"].items():
        cells = [_fmt(m[k]) for k in ("iou", "dice", "precision", "recall")]
        lines.append(f"| {name} | {' | '.join(cells)} | {m['support']:,} |")
    lines.append("")
    lines.append(
        f"overall accuracy {_fmt(metrics['overall_accuracy'])}, mIoU {_fmt(metrics['miou'])}, "
        f"macro Dice {_fmt(metrics['macro_dice'])}, {metrics['pixels']:,} pixels"
    )
    return "\n".join(lines)


def json_ready(value: object) -> object:
    """``value`` with NaN / infinity as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a run produced (on every rank; only rank 0 wrote files)."""

    out_dir: Path
    best_epoch: int
    best_metric: float
    best_metrics: dict
    history: list[dict] = field(default_factory=list)
    seconds_per_epoch: float = math.nan
    parameters: int = 0


def build_metadata(data: PreparedData, args: argparse.Namespace, extra: dict) -> dict:
    """The checkpoint metadata: ONNX model metadata fields (see ``sar_seg_plugin.models.metadata``) + training."""
    description = f"{args.arch} land-cover segmentation of SAR backscatter ({', '.join(data.bands)}, dB)"
    if extra.get("init"):
        description += f", fine-tuned from {Path(extra['init']['path']).name}"
    return {
        "name": args.out.name,
        "description": description,
        "class_names": list(data.classes.names),
        "class_colors": list(data.classes.colors),
        "input_bands": list(data.bands),
        "input_units": ["dB"] * len(data.bands),
        "normalization": {"mean": list(data.stats.mean), "std": list(data.stats.std), "scale": None},
        "tile_size": args.tile_size,
        "tile_overlap": args.tile_overlap,
        "pixel_size_m": data.pixel_size_m,
        "output_kind": "classes",
        "training": {
            "data": str(data.root),
            "floor_db": FLOOR_DB,
            "split": data.split,
            "train_scenes": list(data.train_sources),
            "val_scenes": list(data.val_sources),
            "train_patches": len(data.train),
            "val_patches": len(data.val),
            "class_pixels": [int(c) for c in data.class_pixels],
            "patch_size": args.patch_size,
            "val_fraction": args.val_fraction,
            "loss": args.loss,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "domain_randomisation": bool(args.domain_randomisation),
            **extra,
        },
    }


def _wrap(model: nn.Module, runtime: Runtime) -> nn.Module:
    """The model for the forward pass: DDP over the currently trainable parameters when distributed."""
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _progress(total: int, desc: str, enabled: bool) -> object:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not (enabled and sys.stderr.isatty()))


def train(args: argparse.Namespace) -> TrainResult:
    """Run (or resume) one training; rank 0 writes ``best.pt``, ``last.pt`` and the TensorBoard logs."""
    runtime = start_runtime(args.device)
    try:
        result = _train(args, runtime)
        if runtime.distributed:
            # Every rank done (rank 0 still writes checkpoints and logs) before the group goes: a rank tearing
            # gloo down while its peer is still connected can abort ("terminate called without an active exception").
            torch.distributed.barrier()
        return result
    finally:
        if runtime.distributed:
            torch.distributed.destroy_process_group()


# --------------------------------------------------------------------------------------------
# Starting from trained weights (--init)
# --------------------------------------------------------------------------------------------


def checkpoint_stats(checkpoint: Checkpoint) -> NormStats:
    """The band statistics a checkpoint's first layer expects (its metadata ``normalization``)."""
    norm = checkpoint.metadata["normalization"]
    return NormStats(tuple(float(m) for m in norm["mean"]), tuple(float(s) for s in norm["std"]))


def load_init(value: str | Path) -> tuple[Checkpoint, dict[str, str]]:
    """The segmentation checkpoint ``--init`` names (``bundled``: :data:`BUNDLED_SEGMENTATION`), loaded, and
    what the training metadata records of it (``path``, ``sha256``)."""
    path = resolve_init(value)
    if not path.is_file():
        if str(value) == BUNDLED:
            raise DataError(
                f"--init bundled: {path} does not exist; `make models` writes it. Or give --init PATH to a "
                "checkpoint (.pt) written by training.train_segmentation"
            )
        raise DataError(f"--init: {path} does not exist; give a checkpoint (.pt) written by a training run")
    checkpoint = load_checkpoint(path, map_location="cpu")
    if checkpoint.task != TASK:
        raise DataError(f"--init: {path} is a {checkpoint.task} checkpoint, not a segmentation model")
    meta = checkpoint.metadata
    units = list(meta.get("input_units") or [])
    floor = float((meta.get("training") or {}).get("floor_db", FLOOR_DB))
    if any(u != "dB" for u in units) or floor != FLOOR_DB or (meta["normalization"].get("scale") is not None):
        raise DataError(
            f"--init: {path} takes {', '.join(units)} inputs (floor {floor:g} dB, normalisation "
            f"{meta['normalization']}); this trainer feeds dB with a {FLOOR_DB:g} dB floor and (dB - mean) / std"
        )
    return checkpoint, {"path": str(path.resolve()), "sha256": file_sha256(path)}


def check_init_args(args: argparse.Namespace, checkpoint: Checkpoint) -> None:
    """Refuse ``--arch`` / ``--arch-kwargs`` that disagree with the ``--init`` checkpoint's architecture."""
    path = checkpoint.path
    if args.arch is not None and args.arch != checkpoint.arch:
        raise DataError(
            f"--arch {args.arch} disagrees with --init {path}, a {checkpoint.arch} model: leave --arch out "
            "(the architecture is the checkpoint's)"
        )
    missing = object()
    differ = [k for k, v in args.arch_kwargs.items() if checkpoint.arch_kwargs.get(k, missing) != v]
    if differ:
        raise DataError(
            f"--arch-kwargs {json.dumps(args.arch_kwargs)} disagree with --init {path}, whose architecture "
            f"options are {json.dumps(checkpoint.arch_kwargs)} ({', '.join(differ)}): leave --arch-kwargs out"
        )


def check_init_classes(checkpoint: Checkpoint, data_dir: Path) -> None:
    """Refuse data whose classes (``classes.json``, else the default ones) are not the ``--init`` checkpoint's,
    in the same order; checked before the labels are read, so the message says how to make them match."""
    meta, path = checkpoint.metadata, checkpoint.path
    names = tuple(meta["class_names"])
    classes = load_classes(data_dir)
    if classes.names != names:
        classes_file = Path(data_dir) / CLASSES_FILE
        source = f"from {classes_file}" if classes_file.is_file() else f"the default ones: no {classes_file}"
        wanted = {"class_names": list(names), "class_colors": list(meta["class_colors"])}
        raise DataError(
            f"the data's classes are {', '.join(classes.names)} ({source}) but --init {path} was trained on "
            f"{', '.join(names)}: fine-tuning keeps the model's classes. Write {classes_file} as "
            f"{json.dumps(wanted)} and label the pixels with those ids (0 = {names[0]}, ...; 255 = no label)"
        )


def check_init_bands(checkpoint: Checkpoint, data: PreparedData) -> None:
    """Refuse data whose bands are not those of the ``--init`` checkpoint (same names, same order)."""
    bands = tuple(checkpoint.metadata["input_bands"])
    if data.bands != bands:
        raise DataError(
            f"the data's bands are {', '.join(data.bands)} but --init {checkpoint.path} takes {', '.join(bands)}: "
            f"fine-tuning keeps the model's inputs. Give rasters with the bands {', '.join(bands)} in this order, "
            "named so in their band descriptions (sarseg:extract_patches keeps the image's band names)"
        )


def check_resume_init(value: str | Path, recorded: dict | None, last_path: Path) -> None:
    """``--resume`` with ``--init``: the run in ``last_path`` must have started from that same checkpoint."""
    path = resolve_init(value)
    sha = file_sha256(path) if path.is_file() else None
    if recorded is None or recorded.get("sha256") != sha:
        started = f"from {recorded['path']}" if recorded else "from a random initialisation"
        raise DataError(
            f"--resume with --init {value}: {last_path} was started {started}, not from {path}. Leave --init out "
            "to resume that run, or give another --out to fine-tune anew"
        )


@dataclass
class _Start:
    """Where the weights come from: ``resumed`` (last.pt of this run), ``init`` (a checkpoint to fine-tune) or
    neither; ``stats``: the band statistics to keep (None: computed from the data)."""

    resumed: Checkpoint | None = None
    init: Checkpoint | None = None
    init_record: dict | None = None
    stats: NormStats | None = None


def _starting_point(args: argparse.Namespace, say: Callable[..., None]) -> _Start:
    """Resume (``--resume``: last.pt's architecture and split settings win), fine-tune (``--init``), or start fresh."""
    last_path = args.out / "last.pt"
    if args.resume:
        if not last_path.is_file():
            raise DataError(f"--resume: no {last_path} to resume from")
        resumed = load_checkpoint(last_path, map_location="cpu")
        if args.arch is not None and resumed.arch != args.arch:
            raise DataError(f"--resume: {last_path} is a {resumed.arch} model, not {args.arch}")
        args.arch = resumed.arch
        norm, used = resumed.metadata["normalization"], resumed.metadata["training"]
        for name in ("patch_size", "val_fraction", "seed"):
            if getattr(args, name) != used[name]:
                say(f"--resume: keeping the checkpoint's {name.replace('_', '-')} {used[name]}")
                setattr(args, name, used[name])
        init_record = used.get("init")
        if args.init is not None:  # resume wins: the weights are last.pt's, which started from that checkpoint
            check_resume_init(args.init, init_record, last_path)
        return _Start(
            resumed=resumed, init_record=init_record, stats=NormStats(tuple(norm["mean"]), tuple(norm["std"]))
        )
    if args.init is not None:
        init, init_record = load_init(args.init)
        check_init_args(args, init)
        check_init_classes(init, args.data)
        args.arch = init.arch
        # The first layer expects the checkpoint's band statistics: not recomputed from the new data.
        return _Start(init=init, init_record=init_record, stats=checkpoint_stats(init))
    return _Start()


def _training_data(args: argparse.Namespace, start: _Start, say: Callable[..., None]) -> PreparedData:
    """The patches, split and normalised; the patch size and pixel size checked against the architecture and the
    starting checkpoint."""
    data = prepare_data(
        args.data, args.patch_size, args.val_fraction, args.seed, start.stats, args.domain_randomisation
    )
    for note in data.notes:
        say(note)
    if data.patch_size != args.patch_size:
        say(f"training on the {data.patch_size} px patches as extracted (--patch-size {args.patch_size} not used)")
        args.patch_size = data.patch_size
    multiple = required_multiple(args.arch)
    for what, size in (("the training patches", args.patch_size), ("--tile-size", args.tile_size)):
        if size % multiple:
            raise DataError(f"{what}: {size} px, but {args.arch} needs a multiple of {multiple} pixels")
    init = start.init
    if init is not None:
        check_init_bands(init, data)
        was = init.metadata.get("pixel_size_m")
        if data.pixel_size_m is None:
            data.pixel_size_m = was
        elif was and abs(data.pixel_size_m - was) > 1e-6 * was:
            say(f"note: {init.path} was trained at {was:g} m pixels, the data has {data.pixel_size_m:g} m")
    return data


def _model(
    args: argparse.Namespace, start: _Start, data: PreparedData, say: Callable[..., None]
) -> tuple[nn.Module, dict]:
    """The network and its constructor arguments: the resumed or starting checkpoint's, or a new one."""
    if start.resumed is not None:
        return start.resumed.model, dict(start.resumed.arch_kwargs)
    if start.init is not None:
        init = start.init
        say(
            f"starting from {init.path} ({init.arch}, epoch {init.epoch}), keeping its band statistics "
            f"(dB mean {', '.join(f'{m:.2f}' for m in data.stats.mean)})"
        )
        return init.model, dict(init.arch_kwargs)
    arch_kwargs = {"in_channels": len(data.bands), "classes": len(data.classes.names), **args.arch_kwargs}
    return create_model(args.arch, **arch_kwargs), arch_kwargs


@dataclass
class _Loaders:
    sampler: DistributedSampler
    train: DataLoader
    val: DataLoader
    steps_per_epoch: int


def _loaders(args: argparse.Namespace, data: PreparedData, runtime: Runtime, amp: bool) -> _Loaders:
    """Training batches sharded over the ranks; validation shards without padding, so the summed confusion matrix
    counts every patch exactly once."""
    sampler = DistributedSampler(
        data.train, num_replicas=runtime.world, rank=runtime.rank, shuffle=True, seed=args.seed
    )
    per_rank = len(sampler)
    train = DataLoader(
        data.train,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=per_rank >= 2 * args.batch_size,  # no tiny last batch (BatchNorm on a 1x1 bottleneck)
        pin_memory=amp,
        persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(args.seed + runtime.rank),
    )
    val_shard = Subset(data.val, range(runtime.rank, len(data.val), runtime.world))
    val = DataLoader(val_shard, batch_size=args.batch_size, num_workers=args.workers, pin_memory=amp)
    steps = len(train)
    if args.max_steps_per_epoch:
        steps = min(steps, args.max_steps_per_epoch)
    return _Loaders(sampler, train, val, steps)


@dataclass
class _Optimisation:
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler


def _optimisation(args: argparse.Namespace, model: nn.Module, steps_per_epoch: int, runtime: Runtime) -> _Optimisation:
    loss_fn = create_loss(args.loss).to(runtime.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    total_steps = args.epochs * steps_per_epoch
    schedule = WarmupCosine(total_steps, round(WARMUP_FRACTION * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.device.type == "cuda")
    return _Optimisation(loss_fn, optimizer, schedule, scheduler, scaler)


def _train_epoch(
    net: nn.Module,
    loaders: _Loaders,
    opt: _Optimisation,
    runtime: Runtime,
    epoch: int,
    args: argparse.Namespace,
    writer: Any,
) -> float:
    """One pass over the training batches; returns the mean training loss over every rank."""
    amp = runtime.device.type == "cuda"
    # Reseeded per epoch, so a resumed run draws the same augmentations as an uninterrupted one.
    torch.manual_seed(args.seed + 1000 * epoch + runtime.rank)
    loaders.sampler.set_epoch(epoch)
    net.train()
    loss_sum = torch.zeros(2, dtype=torch.float64)
    bar = _progress(loaders.steps_per_epoch, f"epoch {epoch}/{args.epochs}", runtime.is_main)
    for step, (images, labels) in enumerate(loaders.train):
        if step >= loaders.steps_per_epoch:
            break
        images = images.to(runtime.device, non_blocking=True)
        labels = labels.to(runtime.device, non_blocking=True)
        with torch.autocast(runtime.device.type, enabled=amp):
            logits = net(images)
        loss = opt.loss_fn(logits.float(), labels)
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        opt.scheduler.step()
        loss_sum += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if writer is not None:
            writer.add_scalar("loss/train_step", loss.item(), (epoch - 1) * loaders.steps_per_epoch + step)
    bar.close()
    loss_sum = all_reduce_sum(loss_sum, runtime)
    return float(loss_sum[0] / loss_sum[1]) if loss_sum[1] > 0 else math.nan


def _log_epoch(writer: Any, epoch: int, record: dict, metrics: dict) -> None:
    """The epoch's figures to TensorBoard (when ``--logdir`` is given)."""
    if writer is None:
        return
    writer.add_scalar("loss/train", record["train_loss"], epoch)
    writer.add_scalar("loss/val", record["val_loss"], epoch)
    writer.add_scalar("miou/val", record["miou"], epoch)
    writer.add_scalar("accuracy/val", record["overall_accuracy"], epoch)
    writer.add_scalar("lr", record["lr"], epoch)
    for name, m in metrics["per_class"].items():
        writer.add_scalar(f"iou/{name}", m["iou"], epoch)
    writer.flush()


def _train(args: argparse.Namespace, runtime: Runtime) -> TrainResult:
    say = print if runtime.is_main else (lambda *a, **k: None)
    out: Path = args.out
    last_path, best_path = out / "last.pt", out / "best.pt"
    start = _starting_point(args, say)
    resumed = start.resumed
    data = _training_data(args, start, say)
    n_classes = len(data.classes.names)
    seed_everything(args.seed)
    model, arch_kwargs = _model(args, start, data, say)
    model.to(runtime.device)
    amp = runtime.device.type == "cuda"
    loaders = _loaders(args, data, runtime, amp)
    opt = _optimisation(args, model, loaders.steps_per_epoch, runtime)

    start_epoch, history, best_metric = 1, [], -math.inf
    best_epoch, best_metrics = 0, {}
    if resumed is not None:
        start_epoch = resumed.restore(opt.optimizer, opt.scheduler)
        # The restored schedule is the one of the earlier --epochs; follow the current one from here on.
        opt.scheduler.lr_lambdas[0] = opt.schedule
        history = list(resumed.history or [])
        best_metric = resumed.best_metric if resumed.best_metric is not None else -math.inf
        best_epoch = int(resumed.metadata["training"].get("best_epoch", 0))
        best_metrics = resumed.metadata["training"].get("val_metrics", {})
        if start_epoch > args.epochs:
            say(f"{last_path} has already trained {resumed.epoch} epochs (--epochs {args.epochs}): nothing to do")
        else:
            say(f"resuming from {last_path} at epoch {start_epoch} (best val mIoU {_fmt(best_metric)})")

    n_params = count_parameters(model)
    say(
        f"{args.arch}: {n_params:,} parameters on {runtime.device} x {runtime.world}; "
        f"{len(data.train)} training / {len(data.val)} validation patches of {args.patch_size} px "
        f"({data.split['kind']} split), {loaders.steps_per_epoch} steps per epoch"
    )
    writer = None
    if args.logdir is not None and runtime.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(args.logdir))
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)

    frozen: bool | None = None
    net = model
    epoch_seconds = []
    try:
        for epoch in range(start_epoch, args.epochs + 1):
            want_frozen = epoch <= args.freeze_encoder_epochs
            if want_frozen != frozen:
                if want_frozen or frozen:  # frozen is None before the first epoch: nothing to undo
                    freeze_encoder(model, want_frozen)
                    say(f"epoch {epoch}: encoder {'frozen' if want_frozen else 'unfrozen'}")
                # DDP only syncs the parameters trainable when it is built: rebuild it after (un)freezing.
                net = _wrap(model, runtime)
                frozen = want_frozen
            tic = time.perf_counter()
            train_loss = _train_epoch(net, loaders, opt, runtime, epoch, args, writer)
            cm, val_loss = validate(model, loaders.val, opt.loss_fn, n_classes, runtime, amp)
            metrics = segmentation_metrics(cm, data.classes.names)
            seconds = time.perf_counter() - tic
            epoch_seconds.append(seconds)
            lr = opt.optimizer.param_groups[0]["lr"]
            miou = metrics["miou"]
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "miou": miou,
                "overall_accuracy": metrics["overall_accuracy"],
                "iou": {k: v["iou"] for k, v in metrics["per_class"].items()},
                "lr": lr,
                "seconds": seconds,
            }
            history.append(record)
            score = miou if math.isfinite(miou) else -math.inf
            improved = best_epoch == 0 or score > best_metric
            if improved:
                best_metric, best_epoch, best_metrics = score, epoch, metrics
            say(
                f"epoch {epoch}/{args.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"val mIoU {_fmt(miou)}, OA {_fmt(metrics['overall_accuracy'])}, lr {lr:.2e}, {seconds:.1f} s"
                + (" (best)" if improved else "")
            )
            _log_epoch(writer, epoch, record, metrics)
            if runtime.is_main:
                extra = {"best_epoch": best_epoch, "val_metrics": best_metrics, "epochs": args.epochs}
                extra["init"] = start.init_record
                metadata = build_metadata(data, args, extra)
                common = {
                    "arch": args.arch,
                    "arch_kwargs": arch_kwargs,
                    "task": TASK,
                    "metadata": metadata,
                    "epoch": epoch,
                    "optimizer": opt.optimizer,
                    "scheduler": opt.scheduler,
                    "best_metric": best_metric,
                    "history": history,
                }
                if improved:
                    save_checkpoint(best_path, model, **common)
                save_checkpoint(last_path, model, **common)
            stale = epoch - best_epoch
            if args.patience and stale >= args.patience:
                say(f"early stop: val mIoU has not improved for {stale} epochs (best {_fmt(best_metric)})")
                break
    finally:
        if writer is not None:
            writer.close()

    if runtime.is_main:
        if best_metrics:
            print(f"best epoch {best_epoch}: validation metrics ({best_path})")
            print(metrics_table(best_metrics))
        print(f"checkpoints in {out}")
    return TrainResult(
        out_dir=out,
        best_epoch=best_epoch,
        best_metric=best_metric,
        best_metrics=best_metrics,
        history=history,
        seconds_per_epoch=float(np.mean(epoch_seconds)) if epoch_seconds else math.nan,
        parameters=n_params,
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (shared with ``training.compare``)."""
    p = argparse.ArgumentParser(prog="python -m training.train_segmentation", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder of sar_*.tif / labels_*.tif scenes, or the output folder of sarseg:extract_patches "
        "(index.csv with train/ and val/ GeoTIFF pairs or train.npz / val.npz: its split is used as it is)",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help=f"start from trained weights: '{BUNDLED}' (the bundled model's checkpoint, "
        f"training/pretrained/{BUNDLED_SEGMENTATION.name}) or a .pt written by this trainer. The architecture, "
        "its options and the band statistics are the checkpoint's; the data must have its bands and classes. "
        "--resume wins over it",
    )
    p.add_argument("--arch", choices=ARCHITECTURES, default=None, help=f"default {DEFAULT_ARCH}, or the --init one's")
    p.add_argument("--arch-kwargs", default="{}", help="architecture options as JSON, e.g. '{\"width\": 16}'")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=128, help="training patch side in pixels")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--loss", choices=LOSSES, default="dice_ce")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--patience", type=int, default=8, help="early stop after N epochs without better val mIoU (0: off)")
    p.add_argument("--out", type=Path, default=Path("runs/segmentation"), help="folder for best.pt and last.pt")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--logdir", type=Path, default=None, help="TensorBoard log folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--freeze-encoder-epochs",
        type=int,
        default=0,
        help="train the first N epochs with a frozen encoder (weights and BatchNorm statistics): with --init, a "
        "warm-up that fits the decoder to the new data before the pretrained encoder moves",
    )
    p.add_argument("--max-steps-per-epoch", type=int, default=0, help="cap on optimiser steps per epoch (0: none)")
    p.add_argument(
        "--domain-randomisation",
        action="store_true",
        help="sense each patch anew (pixel size 10-40 m, ENL 1-30, speckle filters, +-2 dB); needs nearly "
        "speckle-free scenes (training.domains)",
    )
    p.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE, help="inference tile size for the metadata")
    p.add_argument("--tile-overlap", type=int, default=DEFAULT_TILE_OVERLAP, help="inference tile overlap")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Validate option values and parse ``--arch-kwargs`` (``p.error`` exits with code 2)."""
    try:
        args.arch_kwargs = _json_object(args.arch_kwargs) if isinstance(args.arch_kwargs, str) else args.arch_kwargs
    except ValueError as exc:
        p.error(f"--arch-kwargs must be a JSON object ({exc})")
    for name in ("epochs", "batch_size", "patch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("workers", "patience", "freeze_encoder_epochs", "max_steps_per_epoch"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    if not 0.0 < args.val_fraction < 1.0:
        p.error("--val-fraction must be between 0 and 1")
    if args.lr <= 0 or args.weight_decay < 0:
        p.error("--lr must be positive and --weight-decay not negative")
    if args.arch is None and getattr(args, "init", None) is None and not args.resume:
        args.arch = DEFAULT_ARCH
    # With --init or --resume and no --arch, the checkpoint's architecture is checked once it is read.
    multiple = required_multiple(args.arch) if args.arch is not None else 1
    for name in ("patch_size", "tile_size"):
        if getattr(args, name) % multiple:
            p.error(f"--{name.replace('_', '-')} must be a multiple of {multiple} for {args.arch}")
    if not 0 <= args.tile_overlap < args.tile_size:
        p.error("--tile-overlap must be from 0 to less than --tile-size")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line."""
    p = build_parser()
    return check_args(p, p.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for unusable data)."""
    args = parse_args(argv)
    try:
        train(args)
    except (DataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
