"""How far any model could go on the evaluation-only generator: ceilings that know what no shipped model may know.

The bundled model's mIoU on :mod:`training.evalgen` scenes is far below the project's target. Part of that is the
model; part is the scenes themselves, whose classes overlap in backscatter (dry bare soil is as dark as calm water,
wet soil as bright as crops). To tell the two apart, two oracles are fitted on evaluation-only scenes (other seeds
than they are scored on), so they know the generator's own class levels, textures and class shares:

- **object oracle**: the true object outlines (fields, stands, town blocks, water bodies) are given; every object's
  mean VV and VH in dB, their difference, the coefficient of variation of each band (speckle and texture), its
  size and the scene's incidence are classified by gradient-boosted trees. What the radiometry of whole objects
  allows with perfect geometry: nothing that reads backscatter can do better than this on these scenes, short of
  the oracle's few features missing something.
- **local oracle**: per pixel, the mean dB and the coefficient of variation of each band in a window around it
  (:data:`LOCAL_WINDOW` px), classified the same way. What a reading of local radiometry allows without knowing
  the outlines, with the generator's own levels and priors.

Given a model, its mIoU on the same test scenes is printed beside them, and the mIoU of its classes voted by
majority inside each true object: how much perfect outlines would add to the model as it is.

These are ceilings, never model figures: the oracles are fitted to the generator they are scored on.

Usage: ``python -m training.ceiling [--model PATH] [--domains "ENL 4.4,ENL 1"]``. ``--write-scenes DIR`` instead
writes nearly speckle-free procedural evaluation-only scenes (``sar_*.tif`` / ``labels_*.tif``, 100 looks) that
``python -m training.train_segmentation --data DIR --domain-randomisation`` trains a U-Net on: the same network and
recipe as the bundled model, fitted to this generator's world (a third ceiling, minutes of training).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from sar_seg_plugin.core.evaluation import metrics_from_matrix
from training import evalgen
from training.metrics import confusion_matrix
from training.synthetic import CLASS_NAMES, LABEL_NODATA

N_CLASSES = len(CLASS_NAMES)
#: Side (px) of the window the local oracle reads around each pixel.
LOCAL_WINDOW = 11
#: Pixels the local oracle samples per scene (all of them would add little but time).
LOCAL_SAMPLES = 6000
#: Looks of the scenes written for a U-Net fitted to this generator (``--write-scenes``): the trainer's base looks.
WRITE_LOOKS = 100.0
#: Default seeds: fitted on 20000..20119, scored on 30000..30039 (none of them the card's grid or earlier choices).
FIT_SEEDS = range(20000, 20120)
TEST_SEEDS = range(30000, 30040)


@dataclass
class Samples:
    """Feature rows ``x`` (n, f), their true class ``y`` (n,) and weight ``w`` (n,): pixels each row stands for."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray

    @staticmethod
    def join(parts: Sequence[Samples]) -> Samples:
        return Samples(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.w for p in parts]),
        )


#: Feature columns of :func:`object_samples`; the object oracle is fitted on all of them or on the radiometric means.
OBJECT_FEATURES = ("VV dB", "VH dB", "VV-VH dB", "VV CV", "VH CV", "log pixels", "incidence")
MEANS_ONLY = (0, 1, 2, 6)


def object_samples(scene: evalgen.EvalScene) -> Samples:
    """One row per object of ``scene`` (:data:`OBJECT_FEATURES`), weighted by its valid pixels."""
    if scene.objects is None:
        raise ValueError("the scene has no object ids (make it with training.evalgen.make_scene)")
    inside = (scene.objects >= 0) & (scene.labels != LABEL_NODATA)
    ids = scene.objects[inside]
    k = int(ids.max()) + 1 if ids.size else 0
    count = np.bincount(ids, minlength=k).astype(np.float64)
    keep = count > 0
    columns = []
    for band in scene.sigma0:
        power = band[inside].astype(np.float64)
        mean = np.bincount(ids, power, k) / np.maximum(count, 1)
        square = np.bincount(ids, power * power, k) / np.maximum(count, 1)
        cv = np.sqrt(np.maximum(square - mean * mean, 0.0)) / np.maximum(mean, 1e-12)
        columns.append((10.0 * np.log10(np.maximum(mean, 1e-10)), cv))
    (vv, vv_cv), (vh, vh_cv) = columns
    labels = np.zeros(k, np.int64)
    labels[ids] = scene.labels[inside]
    incidence = np.full(k, scene.incidence_deg)
    x = np.stack([vv, vh, vv - vh, vv_cv, vh_cv, np.log(np.maximum(count, 1)), incidence], 1)
    return Samples(x[keep], labels[keep], count[keep])


def local_features(sigma0: np.ndarray, valid: np.ndarray, window: int = LOCAL_WINDOW) -> np.ndarray:
    """(H, W, 5): per pixel the mean dB of VV and VH over the ``window`` x ``window`` box around it, their
    difference, and each band's coefficient of variation in the box (invalid pixels count as zero power)."""
    out = []
    for band in sigma0:
        x = np.where(valid, band, 0.0).astype(np.float64)
        mean = ndimage.uniform_filter(x, window, mode="reflect")
        square = ndimage.uniform_filter(x * x, window, mode="reflect")
        cv = np.sqrt(np.maximum(square - mean * mean, 0.0)) / np.maximum(mean, 1e-12)
        out.append((10.0 * np.log10(np.maximum(mean, 1e-10)), cv))
    (vv, vv_cv), (vh, vh_cv) = out
    return np.stack([vv, vh, vv - vh, vv_cv, vh_cv], -1)


def local_samples(
    scene: evalgen.EvalScene, rng: np.random.Generator, n: int = LOCAL_SAMPLES, window: int = LOCAL_WINDOW
) -> Samples:
    """``n`` labelled pixels of ``scene`` drawn at random, at least a window from its edges, with
    :func:`local_features`; each weighs 1."""
    ok = scene.valid & (scene.labels != LABEL_NODATA)
    ok[:window] = ok[-window:] = False
    ok[:, :window] = ok[:, -window:] = False
    idx = np.flatnonzero(ok)
    idx = rng.choice(idx, min(n, idx.size), replace=False)
    features = local_features(scene.sigma0, scene.valid, window).reshape(-1, 5)
    return Samples(features[idx], scene.labels.ravel()[idx].astype(np.int64), np.ones(idx.size))


def fit(samples: Samples, columns: Sequence[int] | None = None, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A gradient-boosted classifier of ``samples`` (optionally on some columns); returns ``predict(x)``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    cols = list(range(samples.x.shape[1])) if columns is None else list(columns)
    clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=seed)
    clf.fit(samples.x[:, cols], samples.y, sample_weight=samples.w)
    return lambda x: clf.predict(x[:, cols])


def weighted_confusion(truth: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(classes, classes) confusion, rows truth, columns prediction, each row adding ``weight``."""
    cm = np.zeros((N_CLASSES, N_CLASSES))
    np.add.at(cm, (truth.astype(np.int64), pred.astype(np.int64)), weight)
    return cm


def scenes(seeds: Iterable[int], size: int, domain: evalgen.EvalDomain) -> Iterable[evalgen.EvalScene]:
    """The evaluation-only scenes of ``seeds``, as the model card's grid makes them (even seeds laid out from the
    real Sentinel-2 land cover where it is installed, odd seeds procedural)."""
    from training.domain_eval import evaluation_only_scene

    for seed in seeds:
        yield evaluation_only_scene(int(seed), size, domain)


def object_majority(pred: np.ndarray, scene: evalgen.EvalScene) -> Samples:
    """``pred`` (H, W; 255 = none) voted by majority inside each true object: one row per object (no features), its
    true class and voted class (``x[:, 0]``), weighted by its pixels that have a prediction."""
    inside = (scene.objects >= 0) & (scene.labels != LABEL_NODATA) & (pred < N_CLASSES)
    ids = scene.objects[inside]
    k = int(ids.max()) + 1 if ids.size else 0
    votes = np.zeros((k, N_CLASSES))
    np.add.at(votes, (ids, pred[inside].astype(np.int64)), 1.0)
    labels = np.zeros(k, np.int64)
    labels[ids] = scene.labels[inside]
    count = votes.sum(1)
    keep = count > 0
    return Samples(votes.argmax(1)[keep][:, None].astype(np.float64), labels[keep], count[keep])


@dataclass
class Ceiling:
    """Per-class IoU of each reading of one domain's test scenes."""

    domain: str
    iou: dict[str, np.ndarray]

    def miou(self, name: str) -> float:
        """Mean over the classes present in the truth or the prediction (NaN IoU otherwise), as the project's
        metrics average."""
        return float(np.nanmean(self.iou[name]))


def measure(
    domain: evalgen.EvalDomain,
    model: str | Path | None = None,
    fit_seeds: Iterable[int] = FIT_SEEDS,
    test_seeds: Iterable[int] = TEST_SEEDS,
    size: int = 256,
    log: Callable[[str], None] | None = None,
) -> Ceiling:
    """The oracles' (and ``model``'s, when given) per-class IoU on ``test_seeds`` scenes of ``domain``."""
    rng = np.random.default_rng(0)
    objects, local = [], []
    for scene in scenes(fit_seeds, size, domain):
        objects.append(object_samples(scene))
        local.append(local_samples(scene, rng))
    fit_objects, fit_local = Samples.join(objects), Samples.join(local)
    readings = {
        "object oracle, means": fit(fit_objects, MEANS_ONLY),
        "object oracle, means and texture": fit(fit_objects),
    }
    local_oracle = fit(fit_local)
    cms = {name: np.zeros((N_CLASSES, N_CLASSES)) for name in (*readings, "local oracle")}
    with contextlib.ExitStack() as stack:
        segment = None
        if model is not None:
            cms["model"] = np.zeros((N_CLASSES, N_CLASSES))
            cms["model, voted per true object"] = np.zeros((N_CLASSES, N_CLASSES))
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sarseg_ceiling_"))
            segment = _segmenter(model, Path(tmp))
        for scene in scenes(test_seeds, size, domain):
            rows = object_samples(scene)
            for name, predict in readings.items():
                cms[name] += weighted_confusion(rows.y, predict(rows.x), rows.w)
            ok = scene.valid & (scene.labels != LABEL_NODATA)
            features = local_features(scene.sigma0, scene.valid)
            cms["local oracle"] += weighted_confusion(scene.labels[ok], local_oracle(features[ok]), np.ones(ok.sum()))
            if segment is not None:
                pred = segment(scene)
                cms["model"] += confusion_matrix(pred, scene.labels, N_CLASSES, ignore=LABEL_NODATA)
                voted = object_majority(pred, scene)
                cms["model, voted per true object"] += weighted_confusion(voted.y, voted.x[:, 0], voted.w)
    result = Ceiling(domain.name, {name: metrics_from_matrix(cm)["iou"] for name, cm in cms.items()})
    if log:
        for name in result.iou:
            log(f"{domain.name} / {name}: mIoU {result.miou(name):.3f}, IoU {np.round(result.iou[name], 3).tolist()}")
    return result


def _segmenter(model: str | Path, work: Path) -> Callable[[evalgen.EvalScene], np.ndarray]:
    """Classes of a scene through the plugin's own ``segment_raster`` (units, resampling and tiling included), as
    the model card's grid segments its scenes."""
    from sar_seg_plugin.models.registry import load_model
    from training.domain_eval import segment_scene

    loaded = load_model(str(model), device="cpu")

    def segment(scene: evalgen.EvalScene) -> np.ndarray:
        image, label = work / "image.tif", work / "label.tif"
        evalgen.write_scene(scene, image, label)
        return segment_scene(loaded, image, work)[0]

    return segment


def write_scenes(out: str | Path, count: int = 64, size: int = 512, first_seed: int = 60000) -> list[Path]:
    """``count`` procedural evaluation-only scenes of ``size`` px at 10 m with :data:`WRITE_LOOKS` looks, as
    ``sar_NNN.tif`` / ``labels_NNN.tif`` with the ``LOOKS`` metadata the trainer's domain randomisation needs.
    Procedural layouts only: the Sentinel-2 layouts come from one real scene, which a fitted U-Net would learn."""
    from osgeo import gdal

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    clean = evalgen.EvalDomain(name="nearly speckle-free", enl=WRITE_LOOKS)
    written = []
    for i in range(count):
        scene = evalgen.make_scene(first_seed + 13 * i, size, clean, layout="procedural")
        image = folder / f"sar_{i:03d}.tif"
        evalgen.write_scene(scene, image, folder / f"labels_{i:03d}.tif")
        ds = gdal.Open(str(image), gdal.GA_Update)
        ds.SetMetadataItem("LOOKS", f"{WRITE_LOOKS:g}")
        ds = None
        written.append(image)
    return written


def _seeds(text: str) -> range:
    first, count = (int(v) for v in text.split(":"))
    return range(first, first + count)


def main(argv: Sequence[str] | None = None) -> int:
    """Ceilings of the evaluation-only generator per domain (and a model's figures on the same scenes)."""
    parser = argparse.ArgumentParser(prog="python -m training.ceiling", description=main.__doc__)
    parser.add_argument("--model", help="an .onnx segmentation model to score on the same test scenes")
    parser.add_argument("--domains", default="ENL 4.4,ENL 1,20 m pixels", help="comma-separated domain names")
    parser.add_argument("--fit-seeds", default="20000:120", help="FIRST:COUNT of the scenes the oracles are fitted on")
    parser.add_argument("--test-seeds", default="30000:40", help="FIRST:COUNT of the scenes they are scored on")
    parser.add_argument("--size", type=int, default=256, help="scene size in px (default 256)")
    parser.add_argument("--write-scenes", metavar="DIR", help="write scenes to train a U-Net on, and stop")
    args = parser.parse_args(argv)
    if args.write_scenes:
        paths = write_scenes(args.write_scenes)
        print(f"wrote {len(paths)} scenes to {args.write_scenes}")
        return 0
    fit_seeds, test_seeds = _seeds(args.fit_seeds), _seeds(args.test_seeds)
    if set(fit_seeds) & set(test_seeds):
        parser.error("the fit and test seeds overlap")
    rows = []
    for name in args.domains.split(","):
        result = measure(evalgen.domain_by_name(name.strip()), args.model, fit_seeds, test_seeds, args.size, print)
        rows.append(result)
    names = list(rows[0].iou)
    print("\n| domain | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r.domain} | " + " | ".join(f"{r.miou(n):.3f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
