"""Evaluate a segmentation checkpoint on whole scenes, the way the plugin segments them, and report per-class metrics.

Usage::

    python -m training.evaluate --checkpoint runs/unet/best.pt --data DIR [--scenes sar_a.tif ...]
        [--tile-size 256] [--overlap 32] [--json report.json] [--markdown report.md]

The checkpoint's network is run through the plugin's own ``segment_raster`` (units read from the raster, tiles
spread over it with the checkpoint's tile size and overlap unless given, smooth blending, streamed block by
block), and its class raster is compared with the label raster by the plugin's ``evaluate_rasters`` (the
confusion matrix ``sarseg:evaluate_segmentation`` reports). The figures are the ones a user of the exported
model gets. Reports per-class IoU, Dice, precision and recall, overall accuracy and mIoU over every evaluated
pixel (label nodata and SAR nodata pixels left out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from osgeo import gdal
from torch import nn

from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.evaluation import evaluate_rasters
from sar_seg_plugin.core.inference import segment_raster
from sar_seg_plugin.core.radiometry import to_db
from training.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from training.data import FLOOR_DB, DataError, Scene, find_scenes
from training.export import metadata_from_checkpoint
from training.metrics import segmentation_metrics
from training.models import required_multiple
from training.synthetic import LABEL_NODATA, SAR_NODATA
from training.train_segmentation import (
    ClassSet,
    band_names,
    json_ready,
    metrics_table,
    relative_name,
    resolve_device,
)


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects: dB with a floor, then ``(dB - mean) / std`` per band; nodata pixels set to 0."""

    mean: np.ndarray
    std: np.ndarray
    floor_db: float = FLOOR_DB

    @classmethod
    def from_metadata(cls, metadata: dict) -> Preprocessing:
        """From a checkpoint's metadata (``normalization`` and ``training.floor_db``)."""
        norm = metadata["normalization"]
        floor = (metadata.get("training") or {}).get("floor_db", FLOOR_DB)
        mean = np.asarray(norm["mean"], dtype=np.float32)[:, None, None]
        std = np.asarray(norm["std"], dtype=np.float32)[:, None, None]
        return cls(mean, std, float(floor))

    def read(self, ds: gdal.Dataset, col: int, row: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """A window of a SAR raster as model input (bands, h, w) float32 and its validity (h, w)."""
        data = np.asarray(ds.ReadAsArray(col, row, width, height), dtype=np.float32)
        data = data.reshape(ds.RasterCount, height, width)
        valid = np.isfinite(data).all(axis=0)
        for b in range(ds.RasterCount):
            nodata = ds.GetRasterBand(b + 1).GetNoDataValue()
            valid &= data[b] != (SAR_NODATA if nodata is None else nodata)
        image = (to_db(data, self.floor_db) - self.mean) / self.std
        image[:, ~valid] = 0.0
        return image.astype(np.float32, copy=False), valid


def predict_tiles(model: nn.Module, tiles: np.ndarray, multiple: int, device: torch.device) -> np.ndarray:
    """Logits (n, classes, h, w) of tiles (n, bands, h, w), zero-padded bottom/right up to ``multiple``."""
    _, _, h, w = tiles.shape
    ph, pw = -h % multiple, -w % multiple
    x = torch.from_numpy(np.pad(tiles, ((0, 0), (0, 0), (0, ph), (0, pw))))
    with torch.no_grad():
        logits = model(x.to(device)).float().cpu().numpy()
    return logits[:, :, :h, :w]


class CheckpointModel:
    """A segmentation checkpoint's network with what the plugin's ``segment_raster`` asks of a model
    (``registry.LoadedModel``): ``metadata``, ``run(tiles) -> logits``, ``device_used`` and ``threads``."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: torch.device,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
    ) -> None:
        self.metadata = metadata_from_checkpoint(checkpoint, tile_size=tile_size, tile_overlap=tile_overlap)
        self.module = checkpoint.model.to(device).eval()
        self.multiple = required_multiple(checkpoint.arch)
        self.device = device
        self.device_used = "cuda" if device.type == "cuda" else "cpu"
        self.threads = torch.get_num_threads()

    def run(self, tiles: np.ndarray) -> np.ndarray:
        """Logits (n, classes, h, w) of normalised tiles (n, bands, h, w)."""
        return predict_tiles(self.module, tiles, self.multiple, self.device)


def scene_confusion(
    model: Any, image: Path, label: Path, n_classes: int, work: Path, batch_size: int = 1
) -> np.ndarray:
    """(n_classes, n_classes) counts [label, predicted] of ``model`` (an ONNX ``LoadedModel`` or a
    :class:`CheckpointModel`) on one scene: segmented by ``segment_raster`` into ``work``, compared with the label
    raster by ``evaluate_rasters``. A label value that is not a class id is refused (DataError)."""
    work.mkdir(parents=True, exist_ok=True)
    classes = work / f"classes_{image.stem}.tif"
    classes.unlink(missing_ok=True)
    try:
        segment_raster(str(image), str(classes), model, batch_size=batch_size)
        result = evaluate_rasters(str(classes), str(label), list(model.metadata.class_names))
    except SarSegError as err:
        raise DataError(f"{image.name}: {err}") from None
    finally:
        classes.unlink(missing_ok=True)
    if any(v >= n_classes for v in result.class_values):
        raise DataError(
            f"{label.name} holds label value {max(result.class_values)}, which is not a declared class "
            f"(0..{n_classes - 1}; {LABEL_NODATA} = nodata)"
        )
    matrix = np.zeros((n_classes, n_classes), np.int64)
    index = np.asarray(result.class_values, np.int64)
    matrix[np.ix_(index, index)] = result.matrix
    return matrix


def select_scenes(scenes: Sequence[Scene], root: Path, wanted: Sequence[str] | None) -> list[Scene]:
    """The scenes named in ``wanted`` (file name, stem or path relative to ``root``); all when None."""
    if not wanted:
        return list(scenes)
    keys = {}
    for scene in scenes:
        # A set: in a flat folder the file name and the relative path are the same key.
        for key in {scene.image.name, scene.image.stem, relative_name(scene, root), str(scene.image)}:
            keys.setdefault(key, []).append(scene)
    chosen: list[Scene] = []
    for name in wanted:
        matches = keys.get(name) or keys.get(Path(name).name)
        if not matches:
            known = ", ".join(relative_name(s, root) for s in scenes)
            raise DataError(f"--scenes: no scene {name!r} in {root}; scenes found: {known}")
        if len(matches) > 1:
            raise DataError(f"--scenes: {name!r} names several scenes; give the path relative to {root}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def evaluate(args: argparse.Namespace) -> dict:
    """Evaluate ``args.checkpoint`` on the scenes of ``args.data``; returns the report (also printed)."""
    ckpt = load_checkpoint(args.checkpoint, map_location="cpu")
    if ckpt.task != "segmentation":
        raise CheckpointError(f"{args.checkpoint} is a {ckpt.task} checkpoint, not a segmentation model")
    meta = ckpt.metadata
    classes = ClassSet(tuple(meta["class_names"]), tuple(meta["class_colors"]))
    root = Path(args.data)
    scenes = select_scenes(find_scenes(root), root, args.scenes)
    bands = tuple(meta["input_bands"])
    for scene in scenes:
        if scene.bands != len(bands):
            raise DataError(
                f"{scene.name} has {scene.bands} bands but the model takes {len(bands)} ({', '.join(bands)})"
            )
    names = band_names(scenes[0])
    if names != bands:
        print(f"note: the rasters' bands are {', '.join(names)}; the model was trained on {', '.join(bands)}")
    tile = args.tile_size or int(meta.get("tile_size") or 256)
    overlap = args.overlap if args.overlap is not None else int(meta.get("tile_overlap") or 0)
    if not 0 <= overlap < tile:
        raise DataError(f"the tile overlap ({overlap}) must be from 0 to less than the tile size ({tile})")
    training = meta.get("training") or {}
    if training.get("data") and Path(training["data"]).resolve() == root.resolve():
        seen = set(training.get("train_scenes") or [])
        used = [relative_name(s, root) for s in scenes if relative_name(s, root) in seen]
        if used:
            print(f"note: {len(used)} of the {len(scenes)} scenes were used for training: {', '.join(used)}")

    model = CheckpointModel(ckpt, resolve_device(args.device), tile, overlap)
    total = np.zeros((len(classes.names),) * 2, dtype=np.int64)
    per_scene = []
    with tempfile.TemporaryDirectory(prefix="sarseg-evaluate-") as work:
        for scene in scenes:
            cm = scene_confusion(model, scene.image, scene.label, len(classes.names), Path(work), args.batch_size)
            total += cm
            m = segmentation_metrics(cm, classes.names)
            name = relative_name(scene, root)
            per_scene.append(
                {"scene": name, "pixels": m["pixels"], "overall_accuracy": m["overall_accuracy"], "miou": m["miou"]}
            )
            print(f"{name}: {m['pixels']:,} pixels, OA {m['overall_accuracy']:.3f}, mIoU {m['miou']:.3f}")
    metrics = segmentation_metrics(total, classes.names)
    report = {
        "checkpoint": str(args.checkpoint),
        "arch": ckpt.arch,
        "epoch": ckpt.epoch,
        "data": str(root),
        "tile_size": tile,
        "tile_overlap": overlap,
        "scenes": per_scene,
        "metrics": metrics,
        "confusion_matrix": total.tolist(),
    }
    table = metrics_table(metrics)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(json_ready(report), indent=2), encoding="utf-8")
    if args.markdown:
        lines = [
            f"# Evaluation of {Path(args.checkpoint).name} ({ckpt.arch}, epoch {ckpt.epoch})",
            "",
            f"{len(scenes)} scene(s) of {root}, tiles of {tile} px with {overlap} px overlap.",
            "",
            table,
            "",
        ]
        Path(args.markdown).write_text("\n".join(lines), encoding="utf-8")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a .pt file written by train_segmentation")
    p.add_argument("--data", type=Path, required=True, help="folder of sar_*.tif / labels_*.tif scenes")
    p.add_argument("--scenes", nargs="+", default=None, help="only these scenes (file names or relative paths)")
    p.add_argument("--tile-size", type=int, default=None, help="tile size in pixels (default: the checkpoint's)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    p.add_argument("--markdown", type=Path, default=None, help="write the metrics table as Markdown")
    args = p.parse_args(argv)
    if args.tile_size is not None and args.tile_size < 1:
        p.error("--tile-size must be at least 1")
    if args.overlap is not None and args.overlap < 0:
        p.error("--overlap must not be negative")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for unusable data or checkpoint)."""
    args = parse_args(argv)
    try:
        evaluate(args)
    except (DataError, CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
