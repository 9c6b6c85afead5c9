"""Evaluate a segmentation checkpoint on whole scenes by tiled inference and report per-class metrics.

Usage::

    python -m training.evaluate --checkpoint runs/unet/best.pt --data DIR [--scenes sar_a.tif ...]
        [--tile-size 256] [--overlap 32] [--json report.json] [--markdown report.md]

Each scene is cut into overlapping tiles (the checkpoint's tile size and overlap unless given), the logits of
overlapping tiles are averaged, and the arg-max is compared with the label raster. Rasters are read one strip of
tiles at a time, so scenes of any size fit in memory. Reports per-class IoU, Dice, precision and recall, overall
accuracy and mIoU over every evaluated pixel (label nodata and SAR nodata pixels left out).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from osgeo import gdal
from torch import nn

from training.checkpoint import CheckpointError, load_checkpoint
from training.data import FLOOR_DB, DataError, Scene, find_scenes, patch_positions, to_db
from training.metrics import confusion_matrix, segmentation_metrics
from training.models import required_multiple
from training.synthetic import LABEL_NODATA, SAR_NODATA
from training.train_segmentation import (
    ClassSet,
    band_names,
    json_ready,
    metrics_table,
    read_class_ids,
    relative_name,
    resolve_device,
)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: every ``tile - overlap`` pixels plus one flush with the end; [0] if short."""
    if length <= tile:
        return [0]
    return patch_positions(length, tile, tile - overlap)


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


def predict_strips(
    model: nn.Module,
    ds: gdal.Dataset,
    pre: Preprocessing,
    tile: int,
    overlap: int,
    multiple: int,
    device: torch.device,
    batch_size: int = 8,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first row, class ids (h, W), valid (h, W))`` strips covering the raster top to bottom.

    Logits of overlapping tiles are averaged. Only the rows that tiles still to come may touch are held in
    memory (at most two tile heights by the raster width).
    """
    height, width = ds.RasterYSize, ds.RasterXSize
    th, tw = min(tile, height), min(tile, width)
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    top = 0  # first row held in the buffers
    total = count = valid = None
    for i, row in enumerate(rows):
        strip, strip_valid = pre.read(ds, 0, row, width, th)
        logits = np.concatenate(
            [
                predict_tiles(
                    model, np.stack([strip[:, :, c : c + tw] for c in cols[j : j + batch_size]]), multiple, device
                )
                for j in range(0, len(cols), batch_size)
            ]
        )
        if total is None:
            total = np.zeros((logits.shape[1], 0, width), dtype=np.float32)
            count = np.zeros((0, width), dtype=np.float32)
            valid = np.zeros((0, width), dtype=bool)
        grow = row + th - top - total.shape[1]
        if grow > 0:
            total = np.concatenate([total, np.zeros((total.shape[0], grow, width), np.float32)], axis=1)
            count = np.concatenate([count, np.zeros((grow, width), np.float32)])
            valid = np.concatenate([valid, np.zeros((grow, width), bool)])
        r = row - top
        valid[r : r + th] = strip_valid
        for c, tile_logits in zip(cols, logits):
            total[:, r : r + th, c : c + tw] += tile_logits
            count[r : r + th, c : c + tw] += 1.0
        done = (rows[i + 1] if i + 1 < len(rows) else height) - top
        classes = (total[:, :done] / count[:done]).argmax(axis=0)
        yield top, classes, valid[:done].copy()
        total, count, valid = total[:, done:], count[done:], valid[done:]
        top += done


def evaluate_scene(
    model: nn.Module,
    scene: Scene,
    classes: ClassSet,
    pre: Preprocessing,
    tile: int,
    overlap: int,
    multiple: int,
    device: torch.device,
    batch_size: int = 8,
) -> np.ndarray:
    """Confusion matrix of the tiled prediction of one scene against its labels."""
    n = len(classes.names)
    ds, lds = gdal.Open(str(scene.image)), gdal.Open(str(scene.label))
    band = lds.GetRasterBand(1)
    matrix = np.zeros((n, n), dtype=np.int64)
    for top, pred, valid in predict_strips(model, ds, pre, tile, overlap, multiple, device, batch_size):
        truth = read_class_ids(band, 0, top, scene.width, pred.shape[0], classes)
        pred = np.where(valid, pred, LABEL_NODATA)  # no prediction on SAR nodata
        matrix += confusion_matrix(pred, truth, n)
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

    device = resolve_device(args.device)
    model = ckpt.model.to(device).eval()
    pre = Preprocessing.from_metadata(meta)
    multiple = required_multiple(ckpt.arch)
    total = np.zeros((len(classes.names),) * 2, dtype=np.int64)
    per_scene = []
    for scene in scenes:
        cm = evaluate_scene(model, scene, classes, pre, tile, overlap, multiple, device, args.batch_size)
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
