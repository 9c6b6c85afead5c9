"""Classical baseline for the model card: Lee-filtered VV/VH in dB -> per-pixel random forest.

This is what an analyst would do without deep learning (speckle filter, then a per-pixel classifier on
the backscatter), so the default segmentation model is reported beside it on the same held-out scenes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np
from osgeo import gdal

from sar_seg_plugin.core.speckle import lee_filter
from training.data import Scene, find_scenes
from training.metrics import ConfusionMatrix, segmentation_metrics
from training.synthetic import CLASS_NAMES, LABEL_NODATA


def scene_features(scene: Scene, window: int = 7, looks: float = 4.4) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel features (Lee-filtered VV, VH and VV-VH in dB) and labels of one scene."""
    ds = gdal.Open(str(scene.image))
    bands = []
    valid = np.ones((ds.RasterYSize, ds.RasterXSize), bool)
    for b in range(ds.RasterCount):
        band = ds.GetRasterBand(b + 1)
        x = band.ReadAsArray().astype(np.float64)
        nodata = band.GetNoDataValue()
        ok = np.isfinite(x) & (x != (0.0 if nodata is None else nodata))
        valid &= ok
        bands.append(lee_filter(x, window, looks, ok))
    db = [10.0 * np.log10(np.maximum(np.nan_to_num(b, nan=1e-5), 1e-5)) for b in bands]
    features = np.stack([*db, db[0] - db[1]] if len(db) == 2 else db, axis=-1)
    label_ds = gdal.Open(str(scene.label))
    labels = label_ds.GetRasterBand(1).ReadAsArray().astype(np.int64)
    labels[~valid] = LABEL_NODATA
    return features.reshape(-1, features.shape[-1]), labels.ravel()


def random_forest_baseline(
    train: Sequence[Scene],
    test: Sequence[Scene],
    n_classes: int = len(CLASS_NAMES),
    sample: int = 60_000,
    seed: int = 0,
) -> dict:
    """Train a random forest on a pixel sample of ``train`` scenes and score it on whole ``test`` scenes."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    per_scene = max(1, sample // max(1, len(train)))
    for scene in train:
        x, y = scene_features(scene)
        keep = np.flatnonzero(y != LABEL_NODATA)
        pick = rng.choice(keep, size=min(per_scene, keep.size), replace=False)
        xs.append(x[pick])
        ys.append(y[pick])
    forest = RandomForestClassifier(n_estimators=100, max_depth=16, n_jobs=-1, random_state=seed)
    forest.fit(np.concatenate(xs), np.concatenate(ys))
    cm = ConfusionMatrix(n_classes)
    for scene in test:
        x, y = scene_features(scene)
        cm.update(forest.predict(x), y)
    return segmentation_metrics(cm.matrix, list(CLASS_NAMES[:n_classes]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", required=True, help="folder of training scenes (sar_*.tif + labels_*.tif)")
    parser.add_argument("--test", required=True, help="folder of held-out scenes")
    parser.add_argument("--json", help="write the metrics here")
    args = parser.parse_args(argv)
    metrics = random_forest_baseline(find_scenes(args.train), find_scenes(args.test))
    print(f"Lee 7x7 + random forest: OA {metrics['overall_accuracy']:.3f}, mIoU {metrics['miou']:.3f}")
    for name, m in metrics["per_class"].items():
        print(f"  {name:12s} IoU {m['iou']:.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(metrics, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
