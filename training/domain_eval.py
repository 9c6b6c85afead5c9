"""Scores of an exported segmentation model on a grid of input domains, through the plugin's own inference.

Every scene is written as a GeoTIFF of linear-power VV/VH (band names and unit set, like a calibrated product)
and segmented with ``sar_seg_plugin.core.inference.segment_raster``, resampling and unit handling included, so
the figures are those an analyst gets from ``sarseg:segment``. Two scene families:

- ``evaluation-only``: :mod:`training.evalgen`, a generator with code and geometry of its own that no model is
  trained on;
- ``training family``: :mod:`training.synthetic` at its central values (the family the models were trained on,
  with seeds never used in training), sensed as each domain says.

Per (model, family, domain): the confusion matrix (mIoU, per-class IoU) and the reliability of the confidence
(probability of the chosen class; expected calibration error over :data:`training.calibration.ECE_BINS` bins).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training import evalgen
from training.calibration import ReliabilityCounter
from training.domains import multilook
from training.metrics import confusion_matrix, segmentation_metrics
from training.synthetic import CLASS_NAMES, CLASS_SIGMA0_DB, LABEL_NODATA, WATER, World, generate_series, speckle

EVALUATION_ONLY = "evaluation-only"
TRAINING_FAMILY = "training family"
#: Generator seeds of the training-family scenes (training draws its scene seeds from SeedSequence states).
TRAINING_FAMILY_SEED = 770_000

SceneMaker = Callable[[int, int, Any], Any]


def training_family_scene(seed: int, size: int, domain: Any) -> evalgen.EvalScene:
    """A :mod:`training.synthetic` scene at its central values, sensed as ``domain`` (an ``evalgen.EvalDomain``)
    says: ENL, speckle filter, calibration offset, pixel size (20 m: 10 m scene of twice the size multilooked
    2 x 2; 5 m: the scene's pixels declared 5 m), untextured towns, dark or windy water."""
    sigma0 = list(CLASS_SIGMA0_DB[c] for c in range(len(CLASS_NAMES)))
    windy = False
    if domain.water_vv_db is not None:
        windy = domain.water_vv_db > -16.0
        sigma0[WATER] = (float(domain.water_vv_db), -26.0 if windy else -28.0)
    world = World(
        sigma0_db=tuple(sigma0),
        urban_texture_nu=World().urban_texture_nu if domain.urban_texture else None,
        urban_bright_fraction=World().urban_bright_fraction if domain.urban_texture else 0.0,
        windy=windy,
    )
    factor = 2 if domain.pixel_size_m >= 20 else 1
    series = generate_series(size=size * factor, days=2, seed=seed, n_communes=4, world=world)
    rng = np.random.default_rng([seed, 7])
    clean, labels, valid = series.sigma0_clean[0], series.labels[0], series.valid
    linear = speckle(clean, domain.enl, rng).astype(np.float32)
    linear, valid, labels = multilook(linear, valid, labels, factor)
    linear = _filter_and_offset(linear, valid, domain)
    linear[:, ~valid] = 0.0
    labels = np.where(valid, labels, LABEL_NODATA).astype(np.uint8)
    return evalgen.EvalScene(
        sigma0=linear.astype(np.float32),
        labels=labels,
        pixel_size_m=float(domain.pixel_size_m),
        valid=valid,
        domain=domain,
    )


def _filter_and_offset(linear: np.ndarray, valid: np.ndarray, domain: Any) -> np.ndarray:
    """The domain's speckle filter (the plugin's, in its window, on linear power) and calibration offset."""
    from sar_seg_plugin.core.speckle import apply_filter

    if domain.filter:
        linear = np.stack(
            [apply_filter(domain.filter, b, valid, window=domain.filter_window, looks=domain.enl) for b in linear]
        )
        linear = np.nan_to_num(linear.astype(np.float32), nan=0.0)
    if domain.offset_db:
        linear = linear * np.float32(10.0 ** (domain.offset_db / 10.0))
    return linear


def evaluation_only_scene(seed: int, size: int, domain: Any) -> evalgen.EvalScene:
    """An :mod:`training.evalgen` scene: class layouts of the real Sentinel-2 scene for even seeds (when the
    package holding it is installed), procedural layouts for odd ones."""
    real = seed % 2 == 0 and evalgen.sentinel2_available()
    return evalgen.make_scene(seed, size, domain, layout="sentinel2" if real else "procedural")


FAMILIES: dict[str, SceneMaker] = {
    EVALUATION_ONLY: evaluation_only_scene,
    TRAINING_FAMILY: training_family_scene,
}


@dataclasses.dataclass
class Score:
    """Confusion matrix and reliability of one (model, family, domain) cell."""

    confusion: np.ndarray
    reliability: ReliabilityCounter
    seconds: float = 0.0
    warnings: int = 0
    scenes: int = 0

    def summary(self) -> dict[str, Any]:
        metrics = segmentation_metrics(self.confusion, CLASS_NAMES)
        rel = self.reliability.result()
        return {
            "miou": metrics["miou"],
            "overall_accuracy": metrics["overall_accuracy"],
            "iou": {k: v["iou"] for k, v in metrics["per_class"].items()},
            "ece": rel.ece,
            "mean_confidence": float(np.nansum(rel.confidence * rel.count) / max(rel.count.sum(), 1)),
            "pixels": int(self.confusion.sum()),
            "domain_warnings": self.warnings,
            "bins": {
                "count": rel.count.tolist(),
                "confidence": np.nan_to_num(rel.confidence).tolist(),
                "accuracy": np.nan_to_num(rel.accuracy).tolist(),
            },
            "scenes": self.scenes,
        }


def reliability_of(summary: Mapping[str, Any]) -> Any:
    """The :class:`training.calibration.Reliability` of a :meth:`Score.summary`."""
    from training.calibration import Reliability

    bins = summary["bins"]
    count = np.asarray(bins["count"], np.int64)
    return Reliability(
        np.linspace(0.0, 1.0, count.size + 1),
        count,
        np.asarray(bins["confidence"], np.float64),
        np.asarray(bins["accuracy"], np.float64),
    )


def segment_scene(model: Any, image: Path, work: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Classes and max probability of ``image`` through ``segment_raster``; the warnings it gave."""
    from osgeo import gdal

    from sar_seg_plugin.core.inference import segment_raster

    dst, prob = work / "classes.tif", work / "probabilities.tif"
    for p in (dst, prob):
        p.unlink(missing_ok=True)
    warnings: list[str] = []
    segment_raster(str(image), str(dst), model, probabilities_path=str(prob), warn=warnings.append)
    ds = gdal.Open(str(dst))
    classes = ds.GetRasterBand(1).ReadAsArray()
    ds = gdal.Open(str(prob))
    probabilities = ds.ReadAsArray()
    ds = None
    top = np.max(np.nan_to_num(probabilities, nan=-1.0), axis=0)
    return classes, np.where(top < 0, np.nan, top), warnings


def score_scenes(
    models: Mapping[str, Any],
    scenes: Sequence[tuple[Path, Path]],
    work: Path,
) -> dict[str, Score]:
    """Score every model on every (image, label) pair."""
    from osgeo import gdal

    n = len(CLASS_NAMES)
    scores = {name: Score(np.zeros((n, n), np.int64), ReliabilityCounter()) for name in models}
    for image, label in scenes:
        ds = gdal.Open(str(label))
        truth = ds.GetRasterBand(1).ReadAsArray().astype(np.int64)
        ds = None
        for name, model in models.items():
            tic = time.perf_counter()
            classes, confidence, warnings = segment_scene(model, image, work)
            score = scores[name]
            score.seconds += time.perf_counter() - tic
            score.warnings += len(warnings)
            score.scenes += 1
            pred = np.where(classes == 255, LABEL_NODATA, classes).astype(np.int64)
            score.confusion += confusion_matrix(pred, truth, n)
            ok = (truth != LABEL_NODATA) & (pred != LABEL_NODATA) & np.isfinite(confidence)
            score.reliability.add(confidence[ok], pred[ok] == truth[ok])
    return scores


def grid_seed(family: str, i: int) -> int:
    """Generator seed of the ``i``-th scene of the domain grid in ``family``."""
    return (TRAINING_FAMILY_SEED if family == TRAINING_FAMILY else 0) + 1001 * i + 16


def evaluate_grid(
    model_paths: Mapping[str, str | Path],
    domains: Sequence[Any] = evalgen.EVAL_DOMAINS,
    families: Mapping[str, SceneMaker] = FAMILIES,
    seeds: int = 3,
    size: int = 256,
    workdir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    scene_seeds: Sequence[int] | None = None,
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``result[family][domain name][model name]`` = :meth:`Score.summary` over ``seeds`` scenes of ``size`` px
    (the grid's seeds: :func:`grid_seed`), or over the scenes of ``scene_seeds`` when given (other scenes than the
    grid's, e.g. to compare two builds without looking at the grid)."""
    from sar_seg_plugin.models.registry import load_model

    models = {name: load_model(str(path), device="cpu") for name, path in model_paths.items()}
    result: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        work = Path(tmp)
        for family, make in families.items():
            result[family] = {}
            for domain in domains:
                pairs = []
                chosen = list(scene_seeds) if scene_seeds is not None else [grid_seed(family, i) for i in range(seeds)]
                for i, seed in enumerate(chosen):
                    scene = make(seed, size, domain)
                    image, label = work / f"image_{i}.tif", work / f"label_{i}.tif"
                    evalgen.write_scene(scene, image, label)
                    pairs.append((image, label))
                scores = score_scenes(models, pairs, work)
                result[family][domain.name] = {name: s.summary() for name, s in scores.items()}
                if log:
                    cells = ", ".join(
                        f"{m} {v['miou']:.3f} (ECE {v['ece']:.3f})" for m, v in result[family][domain.name].items()
                    )
                    log(f"{family} / {domain.name}: mIoU {cells}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Compare exported models on evaluation-only scenes: mIoU, ECE, mean confidence and per-class IoU per domain."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.domain_eval", description=main.__doc__)
    parser.add_argument("models", nargs="+", help="NAME=PATH of each .onnx model")
    parser.add_argument("--seeds", default="5000:12:7", help="FIRST:COUNT:STEP of the scene seeds (default 5000:12:7)")
    parser.add_argument("--size", type=int, default=256, help="scene size in px (default 256)")
    parser.add_argument("--domains", default="", help="comma-separated domain names (default: all)")
    parser.add_argument("--family", choices=list(FAMILIES), default=EVALUATION_ONLY)
    args = parser.parse_args(argv)
    paths = dict(m.split("=", 1) for m in args.models)
    first, count, step = (int(v) for v in args.seeds.split(":"))
    names = [d.strip() for d in args.domains.split(",") if d.strip()]
    domains = [evalgen.domain_by_name(n) for n in names] if names else list(evalgen.EVAL_DOMAINS)
    seeds = [first + step * i for i in range(count)]
    print(f"{args.family} scenes, seeds {seeds}, {args.size} px")
    grid = evaluate_grid(paths, domains, {args.family: FAMILIES[args.family]}, size=args.size, scene_seeds=seeds)
    for domain, cells in grid[args.family].items():
        print(f"{domain}: " + "; ".join(
            f"{m} mIoU {v['miou']:.3f} (ECE {v['ece']:.3f}, confidence {v['mean_confidence']:.2f}, accuracy "
            f"{v['overall_accuracy']:.2f}; " + " ".join(f"{c} {x:.2f}" for c, x in v["iou"].items()) + ")"
            for m, v in cells.items()
        ))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
