#!/usr/bin/env python3
"""Train, evaluate and export the default models bundled with the plugin (``make models``).

Everything comes from the synthetic Sentinel-1-like generator (``training.synthetic``) with fixed seeds:

1. training scenes (``make_synthetic_dataset`` seed ``TRAIN_SEED``) and held-out scenes (seed ``HELD_OUT_SEED``);
   the per-scene generator seeds of the two sets are checked to be disjoint;
2. the segmentation U-Net (VV/VH dB -> 5 classes) with ``training.train_segmentation``, exported to
   ``sar_seg_plugin/models/sarseg_unet_vvvh.onnx``;
3. its encoder (deepest features, pooled, L2-normalised) exported as ``sarseg_encoder_vvvh.onnx`` (task encoder);
4. held-out evaluation of the exported ONNX files: segmentation per-class metrics beside a classical baseline
   (Lee-filtered VV/VH -> per-pixel random forest), encoder k-NN patch classification; onnxruntime speed
   (``bench/segment_model.py``);
5. ``sar_seg_plugin/models/MODEL_CARD.md``, keeping the sections other scripts own (between their markers: the
   forecasters of ``scripts/make_forecasters.py``, which ``make models`` runs next, and the ImageNet encoder).

Usage: ``.venv/bin/python scripts/make_models.py [--workdir build/models] [--quick]``. About 20 minutes on two
CPU cores; ``--quick`` runs the whole pipeline on a tiny budget (to check it, not to ship its models).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "scripts")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
from card_sections import marked_sections  # noqa: E402

from sar_seg_plugin.models.metadata import CONFIDENCE_REFERENCE_KEY  # noqa: E402

MODELS_DIR = ROOT / "sar_seg_plugin" / "models"
SEGMENTATION_FILE = "sarseg_unet_vvvh.onnx"
ENCODER_FILE = "sarseg_encoder_vvvh.onnx"
INT8_FILE = "sarseg_unet_vvvh_int8.onnx"
MODEL_CARD = "MODEL_CARD.md"
RELIABILITY_PNG = ROOT / "docs" / "segmentation_reliability.png"
# Inference tiles of the bundled model. 384 px with 32 px overlap: on a 4096² raster 1.26x the raster's pixels go
# through the model against 1.41x with 256 px tiles, sarseg:segment ran at 1.88 against 1.7-1.8 MP/s on 2 cores, and
# the classes agree with a single pass over a 1024 px scene on 99.62 % of the pixels (256 px: 99.19 %); 512 px tiles
# were no faster end to end (their blending outgrows the CPU caches).
TILE_SIZE = 384
TILE_OVERLAP = 32
# 64 of the ~112 validation tiles calibrate the int8 activation ranges, the other 48 check it. Against 32: pixel
# agreement with float32 on evaluation-only scenes (seeds 41000, 41007, ..., 41077) 99.54 % -> 99.62 %, the same on
# the held-back validation tiles (99.67 %); min-max ranges or 3 float32 convolutions at either end were no better.
QUANT_CALIBRATION_TILES = 64
GRID_SIZE = 256  # px of each domain-grid scene
CALIBRATION_STEP = 4  # every 4th pixel of each validation patch, both axes, for the temperature fit

TRAIN_SEED = 100  # make_synthetic_dataset seed of the training scenes
HELD_OUT_SEED = 900  # make_synthetic_dataset seed of the held-out scenes
HELD_OUT_SIZE = 256
THREADS = 2
ENCODER_PATCH = 64


@dataclasses.dataclass(frozen=True)
class Budget:
    """Data sizes and training lengths."""

    train_scenes: int = 32
    train_size: int = 512
    held_out_scenes: int = 8
    held_out_size: int = HELD_OUT_SIZE
    days: int = 2
    width: int = 16
    patch: int = 128
    batch: int = 16
    epochs: int = 36
    lr: float = 2e-3
    bench_repeats: int = 10
    grid_seeds: int = 3


QUICK = Budget(
    train_scenes=4,
    train_size=512,
    held_out_scenes=2,
    epochs=2,
    bench_repeats=3,
    grid_seeds=1,
)


def scene_seeds(seed: int, n: int) -> list[int]:
    """The per-scene generator seeds ``make_synthetic_dataset(seed=seed, n_scenes=n)`` uses."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n)]


def calibrate(ckpt: Any, train_dir: Path, budget: Budget) -> dict:
    """Temperature, validation ECE before and after, input envelope and model-input tiles, all from the
    validation patches of the domain-randomised family (the split and sensor draws training validated on)."""
    from torch.utils.data import DataLoader

    from sar_seg_plugin.core.domain import envelope_from_stats, measure_domain
    from training.calibration import collect_logits, fit_temperature, reliability
    from training.data import NormStats
    from training.domains import ENL_RANGE, PIXEL_SIZE_RANGE_M
    from training.train_segmentation import prepare_data

    norm = ckpt.metadata["normalization"]
    stats = NormStats(tuple(norm["mean"]), tuple(norm["std"]))
    data = prepare_data(train_dir, budget.patch, 0.2, 0, stats, domain=True)
    val = data.val
    logits, labels = collect_logits(ckpt.model, DataLoader(val, batch_size=budget.batch), step=CALIBRATION_STEP)
    temperature = fit_temperature(logits, labels)

    def ece(t: float) -> float:
        z = logits / t
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return reliability(p.max(axis=1), p.argmax(axis=1) == labels).ece

    bands = list(data.bands)
    measured = []
    for i in range(len(val)):
        linear, ok, _, offsets = val.sense(i)
        linear = linear * (10.0 ** (np.asarray(offsets, np.float32) / 10.0))[:, None, None]
        measured.append(measure_domain(linear, bands, ["linear"] * len(bands), valid=ok))
    enls = [m.enl for m in measured if m.enl is not None]
    # Filtered patches measure up to the estimator's ceiling: the model has seen inputs that smooth.
    enl_high = max(ENL_RANGE[1], float(f"{max(enls):.3g}")) if enls else ENL_RANGE[1]
    envelope = envelope_from_stats(measured, bands, (ENL_RANGE[0], enl_high), PIXEL_SIZE_RANGE_M)
    step = max(1, len(val) // 96)
    tiles = [val[i][0].numpy()[None] for i in range(0, len(val), step)]
    return {
        "temperature": temperature,
        "ece_before": ece(1.0),
        "ece_after": ece(temperature),
        "pixels": int(labels.size),
        "envelope": envelope,
        "tiles": tiles,
        "tile_count": len(tiles),
    }


def save_pretrained(ckpt: Any, path: Path) -> None:
    """The segmentation weights fine-tuning starts from (``--init bundled``): float16 storage, no optimiser."""
    import copy

    from training.checkpoint import save_checkpoint

    metadata = dict(ckpt.metadata)
    metadata["training"] = {k: v for k, v in metadata["training"].items() if k not in ("train_scenes", "val_scenes")}
    save_checkpoint(path, copy.deepcopy(ckpt.model).half(), arch=ckpt.arch, arch_kwargs=dict(ckpt.arch_kwargs),
                    task=ckpt.task, metadata=metadata, epoch=ckpt.epoch, best_metric=ckpt.best_metric)  # fmt: skip
    path.chmod(0o644)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_bench() -> Any:
    """``bench/segment_model.py`` as a module."""
    path = ROOT / "bench" / "segment_model.py"
    spec = importlib.util.spec_from_file_location("bench_segment_model", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# Held-out evaluation of the exported files
# --------------------------------------------------------------------------------------------


def evaluate_segmentation(path: Path, scenes: Sequence[Any], root: Path) -> dict:
    """Per-class metrics of the exported segmentation model on ``scenes``, overall and per scene: each scene
    segmented by the plugin's ``segment_raster`` and compared by its ``evaluate_rasters``, as a user would."""
    from sar_seg_plugin.models.registry import load_model
    from training.evaluate import scene_confusion
    from training.metrics import segmentation_metrics

    loaded = load_model(str(path), device="cpu")
    names = list(loaded.metadata.class_names)
    total = np.zeros((len(names), len(names)), np.int64)
    per_scene = []
    for scene in scenes:
        cm = scene_confusion(loaded, scene.image, scene.label, len(names), root / "_segmented")
        total += cm
        m = segmentation_metrics(cm, names)
        per_scene.append({"scene": str(scene.image.relative_to(root)), "miou": m["miou"], "oa": m["overall_accuracy"]})
    return {"metrics": segmentation_metrics(total, names), "per_scene": per_scene, "confusion": total.tolist()}


def _patch_items(scenes: Sequence[Any], loaded: Any, patch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings, simple statistics (mean/std dB per band) and majority labels of pure patches of ``scenes``."""
    from osgeo import gdal

    from training.evaluate import Preprocessing
    from training.synthetic import LABEL_NODATA

    meta = loaded.metadata
    mean = np.asarray(meta.normalization.mean, np.float32)[:, None, None]
    std = np.asarray(meta.normalization.std, np.float32)[:, None, None]
    pre = Preprocessing(mean, std, float(meta.training.get("floor_db", -50.0)))
    embeddings, stats, labels = [], [], []
    for scene in scenes:
        ds = gdal.Open(str(scene.image))
        image, valid = pre.read(ds, 0, 0, ds.RasterXSize, ds.RasterYSize)
        label_ds = gdal.Open(str(scene.label))  # kept referenced while its band is read
        truth = label_ds.GetRasterBand(1).ReadAsArray()
        batch = []
        for r in range(0, valid.shape[0] - patch + 1, patch):
            for c in range(0, valid.shape[1] - patch + 1, patch):
                lab = truth[r : r + patch, c : c + patch]
                ok = valid[r : r + patch, c : c + patch] & (lab != LABEL_NODATA)
                if ok.mean() < 0.99:
                    continue
                counts = np.bincount(lab[ok].astype(np.int64), minlength=len(meta.class_names))
                if counts.max() < 0.6 * ok.sum():  # mixed patch: no single class to recover
                    continue
                tile = image[:, r : r + patch, c : c + patch]
                batch.append(tile)
                db = tile * std + mean
                stats.append(np.concatenate([db.mean(axis=(1, 2)), db.std(axis=(1, 2))]))
                labels.append(int(counts.argmax()))
        if batch:
            embeddings.append(loaded.run(np.stack(batch)))
    return np.concatenate(embeddings), np.asarray(stats), np.asarray(labels)


def evaluate_encoder(path: Path, train: Sequence[Any], held_out: Sequence[Any]) -> dict:
    """k-NN (k = 5) majority-class accuracy of patches: encoder embeddings vs mean/std dB, fitted on training."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sar_seg_plugin.models.registry import load_model

    loaded = load_model(str(path), device="cpu")
    e_train, s_train, y_train = _patch_items(train, loaded, ENCODER_PATCH)
    e_test, s_test, y_test = _patch_items(held_out, loaded, ENCODER_PATCH)
    result: dict[str, Any] = {
        "patch": ENCODER_PATCH,
        "train_patches": len(y_train),
        "test_patches": len(y_test),
        "embedding_size": int(e_train.shape[1]),
    }
    for key, (x_train, x_test, model) in {
        "encoder": (e_train, e_test, KNeighborsClassifier(5)),
        "mean_std_db": (s_train, s_test, make_pipeline(StandardScaler(), KNeighborsClassifier(5))),
    }.items():
        model.fit(x_train, y_train)
        pred = model.predict(x_test)
        result[key] = {
            "accuracy": float(np.mean(pred == y_test)),
            "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)),
        }
    return result


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def metrics_rows(metrics: dict) -> list[str]:
    rows = ["| class | IoU | Dice | precision | recall | pixels |", "|---|---|---|---|---|---|"]
    for name, m in metrics["per_class"].items():
        rows.append(
            f"| {name} | {_f(m['iou'])} | {_f(m['dice'])} | {_f(m['precision'])} | {_f(m['recall'])} | "
            f"{m['support']:,} |"
        )
    rows.append(
        f"| **mean** | **{_f(metrics['miou'])}** | {_f(metrics['macro_dice'])} | {_f(metrics['macro_precision'])} | "
        f"{_f(metrics['macro_recall'])} | {metrics['pixels']:,} |"
    )
    rows.append("")
    rows.append(f"Overall accuracy {_f(metrics['overall_accuracy'])}, mIoU {_f(metrics['miou'])}.")
    return rows


def mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


BASELINE_DOMAIN = "ENL 4.4"
EVALUATION_ONLY_NAME = "evaluation-only"
TRAINING_FAMILY_NAME = "training family"


def int8_rows(r: dict) -> list[str]:
    """What the card says about the int8 variant."""
    if r["int8_path"] is None:
        return [
            "### int8 variant",
            "",
            f"Not shipped: static int8 quantisation kept only {r['int8_agreement']:.2%} of the float32 model's "
            "pixel classes (the bar is 99.5 %).",
            "",
        ]
    return [
        "### int8 variant",
        "",
        f"`{INT8_FILE}` ({mb(r['int8_path'])}): the same model with static int8 quantisation "
        "(`training.quantize.quantize_int8`: QDQ, per-channel weights, activation ranges from the 0.001-99.999 "
        f"percentiles on {QUANT_CALIBRATION_TILES} validation tiles, the first two and last two convolutions kept "
        "float32). Pixel "
        "agreement with "
        f"float32 on the other {r['calibration']['tile_count'] - QUANT_CALIBRATION_TILES} validation tiles: "
        f"{r['int8_agreement']:.2%}; on evaluation-only scenes ({', '.join(INT8_CHECK_DOMAINS)}; seeds "
        f"{', '.join(map(str, INT8_CHECK_SEEDS))}; fed as `sarseg:segment` feeds them, nodata at the training mean, "
        f"and counted on pixels that hold data) {r['int8_agreement_eval']:.2%}. onnxruntime speed on 512 px tiles: "
        f"{r['int8_speed']['mps']:.2f} MP/s against {r['ort']['mps']:.2f} MP/s for float32. "
        + (
            "It keeps at least 99.5 % on both. "
            if r["int8_agreement_eval"] >= 0.995
            else "It keeps 99.5 % on data like the training family but not on the evaluation-only scenes, where "
            "the float32 model is less sure of itself (more near-ties between two classes). "
        )
        + "`sarseg:segment` runs it by default, for speed, on a CPU. onnxruntime runs int8 convolutions through "
        "other kernels on other CPUs (with or without VNNI, AVX-512, ARM), so every run checks it: before the raster "
        "is segmented, tiles holding data, spread over the raster and the most unlike first, run through both models, "
        "and the float32 model segments the raster where the two differ on more than 2 % of those pixels or 3 % of "
        "any one tile's (`sar_seg_plugin.core.model_check`). The other figures of this card are the float32 model's.",
        "",
    ]


#: Evaluation-only scenes on which the int8 variant is compared with float32 (model input as the tools give it).
INT8_CHECK_DOMAINS = ("ENL 4.4", "ENL 1", "20 m pixels")
INT8_CHECK_SEEDS = tuple(101 * k for k in range(1, 13))  # 36 tiles: 6 were too few to measure 0.5 %


def evaluation_only_tiles(
    meta: Any, domains: tuple[str, ...] = INT8_CHECK_DOMAINS, seeds: tuple[int, ...] = INT8_CHECK_SEEDS, size: int = 256
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The int8 agreement check's tiles: model input of evaluation-only scenes, one tile per seed and domain, as
    ``sarseg:segment`` gives it (dB by the plugin's ``to_db``, normalised, nodata at 0, the training mean), and each
    tile's valid pixels (the only ones the tool writes a class to)."""
    from sar_seg_plugin.core.radiometry import to_db
    from training import evalgen

    tiles, masks = [], []
    for seed in seeds:
        for name in domains:
            scene = evalgen.make_scene(seed, size, evalgen.domain_by_name(name))
            x = meta.normalization.apply(to_db(scene.sigma0))
            x[:, ~scene.valid] = 0.0
            tiles.append(x[None].astype(np.float32))
            masks.append(scene.valid[None])
    return tiles, masks


def describe_previous(path: Path) -> str:
    """What the model a run replaced was, from its own metadata (for the card)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    training = json.loads(props.get("sarseg.training", "{}") or "{}")
    if "input_domain" in training:
        return "an earlier domain-randomised build"
    return "trained on the training generator at 4.4 looks only, no calibration, no envelope"


def miou_target(domain: str) -> float | None:
    """The issue's mIoU target on the evaluation-only generator: 0.65 single look, 0.80 with ENL >= 4."""
    from training.evalgen import EVAL_DOMAINS

    found = [d for d in EVAL_DOMAINS if d.name == domain]
    if not found:
        return None
    return 0.65 if found[0].enl < 4 and not found[0].filter and found[0].pixel_size_m <= 10 else 0.80


def evaluation_summary(grid: dict, model: str) -> dict:
    """mIoU and ECE per family and domain of one model, rounded, for the model's metadata."""
    return {
        family: {
            domain: {"miou": round(cells[model]["miou"], 3), "ece": round(cells[model]["ece"], 3)}
            for domain, cells in domains.items()
        }
        for family, domains in grid.items()
    }


def confidence_reference(grid: dict, model: str) -> dict:
    """Mean confidence and pixel accuracy on the evaluation-only baseline domain, which the segmentation log quotes
    beside a run's own mean confidence (``ModelMetadata.confidence_reference``)."""
    from training.domain_eval import EVALUATION_ONLY

    cell = grid[EVALUATION_ONLY][BASELINE_DOMAIN][model]
    return {
        "where": f"the evaluation-only generator's {BASELINE_DOMAIN} scenes",
        "mean_confidence": round(cell["mean_confidence"], 3),
        "overall_accuracy": round(cell["overall_accuracy"], 3),
    }


def plot_grid_reliability(grid: dict, path: Path) -> None:
    """Reliability diagram of the new and the previous model on a few domains of the evaluation-only family."""
    from training.calibration import plot_reliability
    from training.domain_eval import EVALUATION_ONLY, TRAINING_FAMILY, reliability_of

    curves = {}
    for family, domain, model in (
        (TRAINING_FAMILY, BASELINE_DOMAIN, "this model"),
        (EVALUATION_ONLY, BASELINE_DOMAIN, "this model"),
        (EVALUATION_ONLY, "ENL 1", "this model"),
        (EVALUATION_ONLY, BASELINE_DOMAIN, "previous model"),
        (EVALUATION_ONLY, "ENL 1", "previous model"),
    ):
        cell = grid.get(family, {}).get(domain, {}).get(model)
        if cell:
            curves[f"{model}, {family} {domain}"] = reliability_of(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_reliability(curves, path, "Segmentation confidence vs accuracy (15 bins)")


def grid_rows(r: dict) -> list[str]:
    """The model card's domain grid: mIoU and ECE per domain, both families, the models side by side."""
    from training.domain_eval import EVALUATION_ONLY, TRAINING_FAMILY

    grid = r["grid"]
    models = list(next(iter(grid[EVALUATION_ONLY].values())).keys())
    head = ["domain"]
    for family in (EVALUATION_ONLY, TRAINING_FAMILY):
        head += [f"{family}: mIoU {m}" for m in models] + [f"{family}: ECE {m}" for m in models if m != "int8 variant"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for domain in grid[EVALUATION_ONLY]:
        cells = [domain]
        for family in (EVALUATION_ONLY, TRAINING_FAMILY):
            by_model = grid[family][domain]
            cells += [_f(by_model[m]["miou"]) for m in models]
            cells += [_f(by_model[m]["ece"]) for m in models if m != "int8 variant"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def class_rows(r: dict, family: str, model: str = "this model") -> list[str]:
    """Per-class IoU of ``model`` per domain of ``family``."""
    grid = r["grid"][family]
    names = r["class_names"]
    rows = ["| domain | " + " | ".join(names) + " | mIoU | domain warnings / scenes |", "|" + "---|" * (len(names) + 3)]
    for domain, by_model in grid.items():
        cell = by_model[model]
        rows.append(
            f"| {domain} | " + " | ".join(_f(cell["iou"][n]) for n in names) + f" | {_f(cell['miou'])} | "
            f"{cell['domain_warnings']} / {cell['scenes']} |"
        )
    return rows


def write_card(path: Path, r: dict) -> None:
    from training.domains import BASE_LOOKS, FILTER_PROBABILITY

    b: Budget = r["budget"]
    seg, base = r["segmentation"]["metrics"], r["baseline"]
    enc = r["encoder"]
    lines = [
        "# SAR Seg bundled models",
        "",
        f"Produced by `make models` (`scripts/make_models.py`) on {r['date']} in {r['total_minutes']:.1f} min on "
        f"{THREADS} CPU threads ({r['machine']}); torch {r['torch']}, onnxruntime {r['onnxruntime']}. All numbers "
        "below are measured on held-out synthetic data whose generator seeds were never used in training.",
        "",
        "| file | task | parameters | size |",
        "|---|---|---|---|",
        f"| `{SEGMENTATION_FILE}` | segmentation (VV/VH dB -> 5 classes) | {r['seg_params']:,} | {mb(r['seg_path'])} |",
        *(
            [f"| `{INT8_FILE}` | the same, int8 (faster, optional) | {r['seg_params']:,} | {mb(r['int8_path'])} |"]
            if r["int8_path"] is not None
            else []
        ),
        f"| `{ENCODER_FILE}` | encoder ({enc['embedding_size']}-d embedding) | {r['enc_params']:,} | "
        f"{mb(r['enc_path'])} |",
        "| `forecast/*` | forecasters (class maps, backscatter; t+1..t+3) | see *Forecasters* | |",
        "",
        f"Total size of the top-level model files: {r['total_mb']:.2f} MB.",
        "",
        "## Data",
        "",
        "Synthetic Sentinel-1-like scenes written as GeoTIFFs (linear power) by "
        "`training.data.make_synthetic_dataset`. "
        f"Classes: {', '.join(r['class_names'])}.",
        "",
        f"- Training (domain-randomised family): `make_synthetic_dataset(seed={TRAIN_SEED}, n_scenes={b.train_scenes}, "
        f"size={b.train_size}, days={b.days}, looks={BASE_LOOKS:g}, random_worlds=True)`: {b.train_scenes} areas "
        f"of {b.train_size} x {b.train_size} px, {b.days} dates each ({b.train_scenes * b.days} images). Each area "
        "draws its own world (`training.domains.draw_world`): class sigma0 around the literature values, drawn "
        "normal about the central value with a third of the half-range as standard deviation and clipped to the "
        "range (water VV -24..-16 dB, windy water VV -16..-12 dB with VH still dark, 20 % of areas; vegetation "
        "-13.5..-8.5; forest -8.7..-6.3; built-up -6.5..-1.5 before texture; bare soil -16..-10; plus +-0.8..3 dB "
        "per field of vegetation and bare soil), noise floor -30..-20 dB, incidence "
        "slope -0.2..-0.05 dB/degree, forest texture Gamma(5..15) or none, built-up texture Gamma(1..10) or none "
        "with 0-10 % bright points, a smooth brightness drift up to 1.5 dB, fields 0.5-2x the usual size and up to "
        "4x elongated, a coast in 30 % of areas and a ragged no-data border in 30 %. Written with "
        f"{BASE_LOOKS:g} looks (nearly speckle-free): every training patch is then sensed anew "
        "(`training.domains.SensorDraw`): pixel size 10, 20, 30 or 40 m by multilooking, ENL 1-30 by Gamma speckle, "
        f"in {FILTER_PROBABILITY:.0%} of patches one of the plugin's speckle filters (Lee, Refined Lee, Lee Sigma, "
        "Gamma-MAP, Frost, Kuan, boxcar, median), and a calibration offset of up to +-2 dB for the patch (drawn "
        "like the class levels, centred on 0; plus +-0.5 dB per band). "
        f"Per-scene generator seeds: {', '.join(map(str, r['train_seeds']))}. Whole areas are split into training "
        f"and validation (model selection, temperature) by `train_segmentation` (validation fraction 0.2: "
        f"{r['val_scenes']} of {b.train_scenes * b.days} images; validation patches keep one fixed sensor draw each).",
        f"- Held-out, training generator at its central values: `make_synthetic_dataset(seed={HELD_OUT_SEED}, "
        f"n_scenes={b.held_out_scenes}, size={b.held_out_size}, days={b.days})`: {b.held_out_scenes * b.days} images "
        f"of {b.held_out_size} px, 4.4 looks. Per-scene seeds: {', '.join(map(str, r['held_out_seeds']))} (disjoint "
        "from the training seeds).",
        f"- Domain grid: {b.grid_seeds} scenes of {GRID_SIZE} px per domain and family, from the evaluation-only "
        "generator `training.evalgen` (code, class layouts and radiometry of its own; never used for training or "
        "for choosing the checkpoint, but two design choices looked at it: see *Domain grid*) and from "
        "`training.synthetic` at its central values (seeds from "
        "`training.domain_eval.TRAINING_FAMILY_SEED`), each segmented by the plugin's own `segment_raster` "
        "(unit handling, resampling and input-domain check included).",
        "- Forecasters: see *Forecasters* below (`scripts/make_forecasters.py`).",
        "",
        "## Segmentation model",
        "",
        f"U-Net (4 poolings, base width {b.width}, BatchNorm, ReLU), input VV and VH in dB (floor -50 dB) "
        f"standardised with the training mean {_f(r['norm_mean'][0], 2)} / {_f(r['norm_mean'][1], 2)} dB and std "
        f"{_f(r['norm_std'][0], 2)} / {_f(r['norm_std'][1], 2)} dB, output logits of 5 classes divided by the "
        f"fitted temperature {_f(r['calibration']['temperature'])}. Trained {b.epochs} epochs on {b.patch} px "
        "domain-randomised patches (plus flips / rotations), "
        f"batch {b.batch}, AdamW with peak learning rate {b.lr:g} (warm-up then cosine), Dice + cross-entropy loss, "
        f"seed 0; best validation epoch {r['best_epoch']} (validation mIoU {_f(r['best_val'])}, on randomised "
        f"validation patches). Training time {r['seg_seconds'] / 60:.1f} min (median epoch {r['epoch_seconds']:.0f} s, "
        f"{r['epoch_seconds'] * b.epochs / 60:.1f} min for the epochs alone). Tiles of {TILE_SIZE} px with "
        f"{TILE_OVERLAP} px overlap in the plugin; height and width must be multiples of 16 (the plugin pads).",
        "",
        "### Calibrated confidence",
        "",
        f"Temperature scaling: one temperature T = {_f(r['calibration']['temperature'])} fitted on the validation "
        f"patches (every {CALIBRATION_STEP}th pixel in both axes, {r['calibration']['pixels']:,} pixels) by minimising "
        "the negative log-likelihood (`training.calibration.fit_temperature`), built into the exported graph "
        "(logits / T), so the probability and confidence rasters of `sarseg:segment` are the calibrated ones; the "
        "class map is unchanged. Expected calibration error (15 bins) on those validation pixels: "
        f"{_f(r['calibration']['ece_before'])} before, {_f(r['calibration']['ece_after'])} after. ECE per domain is "
        "in the grid below.",
        "",
        f"![reliability diagram](../../docs/{RELIABILITY_PNG.name})",
        "",
        "### Input envelope",
        "",
        "The model's metadata (`training.input_domain`) records what it was trained on, measured on the sensed "
        "validation patches by the plugin's own `sar_seg_plugin.core.domain.measure_domain`: ENL "
        f"{_f(r['calibration']['envelope']['enl'][0], 1)}-{_f(r['calibration']['envelope']['enl'][1], 0)}, pixel "
        f"size {r['calibration']['envelope']['pixel_size_m'][0]:g}-{r['calibration']['envelope']['pixel_size_m'][1]:g}"
        " m, and per band the range of the 2nd, 50th and 98th percentile in dB (widened by 1 dB): "
        + "; ".join(
            f"{band} "
            + ", ".join(
                f"p{lvl} {lo:g}..{hi:g}"
                for lvl, (lo, hi) in zip(r["calibration"]["envelope"]["db_percentiles"]["levels"], ranges)
            )
            for band, ranges in r["calibration"]["envelope"]["db_percentiles"]["bands"].items()
        )
        + ". `sarseg:segment` measures the same on a sample of the input and warns (log and output metadata) "
        "when it falls outside; rasters with pixels inside the trained pixel-size range are not resampled.",
        "",
        "### Domain grid (generated by `make models`, not typed)",
        "",
        "mIoU and expected calibration error per input domain and scene family, through `segment_raster`. "
        "*This model* is the file above; *int8 variant* its quantised copy; *previous model* the bundled model this "
        f"run replaced ({r['previous_note']}). "
        "Targets on the evaluation-only generator: mIoU >= 0.80 for every domain with ENL >= 4, >= 0.65 single look."
        " Two choices were made by looking at evaluation-only scores, so these figures are not entirely blind:"
        " the training family draws ENL 4.4 and 10 m pixels more often than its first version did, picked between"
        " two full builds on this grid (ENL 4.4: 0.567 and 0.601); and its class levels and calibration offset are"
        " drawn centre-weighted rather than uniform over the same ranges, kept after one full build on other"
        " evaluation-only seeds than this grid's (seeds 5000, 5007, ..., 5077, 12 scenes per domain, 256 px): mIoU"
        " 0.550 -> 0.646 at ENL 4.4, 0.486 -> 0.599 single look, 0.574 -> 0.636 Refined Lee, 0.584 -> 0.670 at"
        " 20 m, 0.564 -> 0.584 at -2 dB; higher on 17 of the 18 domains, level with a median filter (0.482 and"
        " 0.483) (`python -m training.domain_eval` with its default seeds).",
        "",
        *grid_rows(r),
        "",
        "Per-class IoU of this model on the evaluation-only generator (and how many of the scenes drew an "
        "input-domain warning):",
        "",
        *class_rows(r, EVALUATION_ONLY_NAME),
        "",
        "The same on the training family:",
        "",
        *class_rows(r, TRAINING_FAMILY_NAME),
        "",
        *int8_rows(r),
        f"### Held-out scenes: exported ONNX model ({b.held_out_scenes * b.days} images)",
        "",
        "Each image segmented by `sarseg:segment`'s own code (`segment_raster`, default settings) and scored by "
        "`sarseg:evaluate_segmentation`'s (`evaluate_rasters`): the figures a user gets.",
        "",
        *metrics_rows(seg),
        "",
        "Per held-out image: "
        + ", ".join(f"{s['scene']} {_f(s['miou'])}" for s in r["segmentation"]["per_scene"])
        + ".",
        "",
        "### Classical baseline on the same held-out scenes",
        "",
        "Lee 7x7 filter (4.4 looks) on linear VV and VH, then VV, VH and VV-VH in dB as per-pixel features of a "
        "random forest (100 trees, depth 16, 60,000 pixels sampled from all training images; "
        "`training.baseline.random_forest_baseline`).",
        "",
        *metrics_rows(base),
        "",
        f"The U-Net's mIoU is {_f(seg['miou'] - base['miou'])} above the baseline's "
        f"({_f(seg['miou'])} vs {_f(base['miou'])}).",
        "",
        "### Inference speed",
        "",
        f"onnxruntime CPU, full graph optimisation, {THREADS} threads, batch 1, 512 x 512 tiles "
        f"(`bench/segment_model.py`): **{r['ort']['mps']:.2f} MP/s** (median; best {r['ort']['best_mps']:.2f}); "
        f"torch eager for comparison: {r['torch_speed']['mps']:.2f} MP/s.",
        "",
        "## Encoder",
        "",
        f"`{ENCODER_FILE}`: the encoder of the segmentation U-Net above (its five convolution stages, no decoder), "
        f"the deepest feature map (stride 16) globally averaged and L2-normalised: {enc['embedding_size']}-d "
        "embeddings, compared by cosine similarity (used for clustering and similarity search). Same input "
        f"bands and normalisation as the segmentation model; any tile size (metadata tile {ENCODER_PATCH} px).",
        "",
        f"Held-out check: {ENCODER_PATCH} px patches whose pixels are at least 60 % one class, labelled by that "
        f"class; a 5-nearest-neighbour classifier fitted on {enc['train_patches']} training patches, scored on "
        f"{enc['test_patches']} held-out patches.",
        "",
        "| features | accuracy | balanced accuracy |",
        "|---|---|---|",
        f"| encoder embedding ({enc['embedding_size']}-d) | {_f(enc['encoder']['accuracy'])} | "
        f"{_f(enc['encoder']['balanced_accuracy'])} |",
        f"| mean and std of VV/VH dB (standardised) | {_f(enc['mean_std_db']['accuracy'])} | "
        f"{_f(enc['mean_std_db']['balanced_accuracy'])} |",
        "",
        "## Limitations",
        "",
        "- Trained and evaluated on synthetic data only. Real Sentinel-1 scenes differ (terrain and incidence "
        "effects, wind over water, crop phenology, calibration, border noise, class definitions): expect lower "
        "accuracy and fine-tune on labelled local scenes before relying on these models.",
        "- Input must be calibrated sigma0 VV and VH (linear power, converted to dB by the plugin) at about 10 m, "
        "like Sentinel-1 IW GRD; other bands, units or resolutions are out of distribution.",
        "- Vegetation / cropland and bare soil overlap in backscatter and are the most confused pair.",
        *(
            [
                "- The encoder is a by-product of segmentation training, not trained for embeddings: on the patch "
                "check above its k-NN accuracy is below that of plain mean/std backscatter statistics, so use it "
                "for clustering texture and context rather than as a class detector."
            ]
            if enc["encoder"]["accuracy"] < enc["mean_std_db"]["accuracy"]
            else []
        ),
        "- Speed figures are for this machine's 2-core CPU; they scale with cores and SIMD width.",
        "",
        *(f"{section}\n" for section in marked_sections(path)),  # the forecasters' and the ImageNet encoder's
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=ROOT / "build" / "models", help="scenes, checkpoints, reports")
    p.add_argument("--quick", action="store_true", help="tiny budget: check the pipeline, do not ship the result")
    p.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where the ONNX files and the card go")
    p.add_argument(
        "--reuse-training",
        action="store_true",
        help="keep the workdir's scenes and segmentation checkpoint when they were made with this budget "
        "(re-runs evaluation, calibration, export and the card)",
    )
    p.add_argument("--stop-after-training", action="store_true", help="stop once the segmentation model is trained")
    return p.parse_args(argv)


SEGMENTATION_BUDGET = (
    "train_scenes",
    "train_size",
    "held_out_scenes",
    "held_out_size",
    "days",
    "width",
    "patch",
    "batch",
    "epochs",
    "lr",
)


def training_done(work: Path, budget: Budget) -> bool:
    """Whether ``work`` holds a finished segmentation training of ``budget`` (same data and epochs)."""
    stamp = work / "budget.json"
    last = work / "segmentation" / "last.pt"
    if not (stamp.is_file() and last.is_file() and (work / "segmentation" / "best.pt").is_file()):
        return False
    used, wanted = json.loads(stamp.read_text()), dataclasses.asdict(budget)
    if any(used.get(k) != wanted[k] for k in SEGMENTATION_BUDGET):
        return False
    from training.checkpoint import load_checkpoint

    return load_checkpoint(last, map_location="cpu").epoch >= budget.epochs


def prepare_workdir(args: argparse.Namespace, budget: Budget) -> tuple[bool, Path]:
    """Empty the work folder unless its training is reused; keep the model this run replaces beside it (scored
    with the new one). Returns (reuse, path of that previous model)."""
    work: Path = args.workdir
    reuse = args.reuse_training and training_done(work, budget)
    if args.reuse_training and not reuse:
        log(f"nothing to reuse in {work}: training from scratch")
    previous = work / f"previous_{SEGMENTATION_FILE}"
    kept = previous.read_bytes() if previous.is_file() else None  # a previous model put there survives a rebuild
    if not reuse:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
    if kept is not None:
        previous.write_bytes(kept)
    elif (args.models_dir / SEGMENTATION_FILE).is_file():
        shutil.copy2(args.models_dir / SEGMENTATION_FILE, previous)  # the model this run replaces, scored beside it
    return reuse, previous


@dataclasses.dataclass
class Trained:
    """Steps 1 and 2: the scenes and the trained segmentation checkpoint."""

    train_scenes: list
    held_scenes: list
    train_seeds: list[int]
    held_out_seeds: list[int]
    ckpt: Any
    seg_seconds: float
    reused_seconds: float  # time spent by an earlier run whose training this one reuses


def make_data_and_train(work: Path, budget: Budget, reuse: bool) -> Trained:
    """1. the domain-randomised training scenes and the held-out scenes; 2. the U-Net trained on them (or both
    found in ``work`` when reused)."""
    from training import train_segmentation
    from training.checkpoint import load_checkpoint
    from training.data import find_scenes, make_synthetic_dataset
    from training.domains import BASE_LOOKS

    start = time.perf_counter()
    train_seeds = scene_seeds(TRAIN_SEED, budget.train_scenes)
    held_out_seeds = scene_seeds(HELD_OUT_SEED, budget.held_out_scenes)
    if set(held_out_seeds) & set(train_seeds):
        raise SystemExit("held-out generator seeds overlap training seeds")
    train_dir, held_dir = work / "train", work / "held_out"
    common = {"days": budget.days, "n_communes": 4}
    if reuse:
        train_scenes, held_scenes = find_scenes(train_dir), find_scenes(held_dir)
    else:
        # The domain-randomised family: a world per area, written nearly speckle-free (each patch is sensed anew).
        train_scenes = make_synthetic_dataset(
            train_dir, budget.train_scenes, budget.train_size, TRAIN_SEED, looks=BASE_LOOKS, random_worlds=True,
            **common,
        )  # fmt: skip
        held_scenes = make_synthetic_dataset(
            held_dir, budget.held_out_scenes, budget.held_out_size, HELD_OUT_SEED, **common
        )
    data_seconds = time.perf_counter() - start
    log(f"data: {len(train_scenes)} training and {len(held_scenes)} held-out images")

    run_dir = work / "segmentation"
    tic = time.perf_counter()
    code = 0 if reuse else train_segmentation.main(
        [
            "--data", str(train_dir),
            "--arch", "unet",
            "--arch-kwargs", json.dumps({"width": budget.width}),
            "--epochs", str(budget.epochs),
            "--batch-size", str(budget.batch),
            "--patch-size", str(budget.patch),
            "--lr", str(budget.lr),
            "--loss", "dice_ce",
            "--val-fraction", "0.2",
            "--patience", "0",
            "--out", str(run_dir),
            "--seed", "0",
            "--workers", "0",
            "--device", "cpu",
            "--tile-size", str(TILE_SIZE),
            "--tile-overlap", str(TILE_OVERLAP),
            "--domain-randomisation",
        ]
    )  # fmt: skip
    seg_seconds = time.perf_counter() - tic
    if not reuse:
        (work / "budget.json").write_text(json.dumps(dataclasses.asdict(budget)), encoding="utf-8")
        stamp = {"segmentation": seg_seconds, "data": data_seconds}
        (work / "train_seconds.json").write_text(json.dumps(stamp), encoding="utf-8")
        reused_seconds = 0.0
    else:
        stamp = json.loads((work / "train_seconds.json").read_text())
        seg_seconds = stamp["segmentation"]
        reused_seconds = seg_seconds + stamp.get("data", 0.0)  # done by the run that trained the model
    if code:
        raise SystemExit(f"segmentation training failed (exit {code})")
    ckpt = load_checkpoint(run_dir / "best.pt", map_location="cpu")
    log(f"segmentation trained in {seg_seconds / 60:.1f} min, best epoch {ckpt.metadata['training']['best_epoch']}")
    return Trained(train_scenes, held_scenes, train_seeds, held_out_seeds, ckpt, seg_seconds, reused_seconds)


@dataclasses.dataclass
class Exported:
    """Step 2b-2c: the calibrated segmentation model, its int8 variant and what they were checked with."""

    meta: Any  # ModelMetadata of the segmentation model
    training: dict  # its metadata's training record
    path: Path
    int8_path: Path  # absent when the int8 variant was dropped
    int8_agreement: float
    int8_agreement_eval: float
    calibration: dict
    reliability_png: Path


def export_segmentation(ckpt: Any, work: Path, models_dir: Path, budget: Budget, data_note: str) -> Exported:
    """Fit the temperature and the input envelope on the randomised family's validation patches, export the
    calibrated model (and the fine-tuning start beside the project), then the int8 variant where it agrees."""
    from sar_seg_plugin.models.registry import load_model
    from training.calibration import TemperatureScaled
    from training.checkpoint import BUNDLED_SEGMENTATION
    from training.export import export_model, metadata_from_checkpoint
    from training.quantize import MIN_AGREEMENT, agreement, quantize_int8

    seg_meta = metadata_from_checkpoint(
        ckpt,
        name="SAR Seg U-Net VV/VH land cover (synthetic)",
        description=(
            "U-Net land-cover segmentation of Sentinel-1-like VV/VH backscatter (dB) into water, vegetation, "
            "forest, built-up and bare soil; trained on synthetic scenes only (see MODEL_CARD.md)"
        ),
    )
    seg_training = {k: v for k, v in seg_meta.training.items() if k not in ("train_scenes", "val_scenes")}
    seg_training["data"] = data_note

    calibration = calibrate(ckpt, work / "train", budget)
    log(
        f"temperature {calibration['temperature']:.3f}: validation ECE {calibration['ece_before']:.3f} -> "
        f"{calibration['ece_after']:.3f}"
    )
    seg_training["temperature"] = calibration["temperature"]
    seg_training["input_domain"] = calibration["envelope"]
    seg_meta = dataclasses.replace(seg_meta, training=seg_training, tile_size=TILE_SIZE, tile_overlap=TILE_OVERLAP)
    seg_path = export_model(TemperatureScaled(ckpt.model, calibration["temperature"]), models_dir / SEGMENTATION_FILE,
                            seg_meta)  # fmt: skip
    seg_meta = load_model(str(seg_path), device="cpu").metadata  # with what the export adds (size_multiple)
    seg_training = dict(seg_meta.training)
    # The fine-tuning start and the card's picture go beside the project only with the project's own models.
    shipping = models_dir.resolve() == MODELS_DIR.resolve()
    pretrained = BUNDLED_SEGMENTATION if shipping else work / BUNDLED_SEGMENTATION.name
    reliability_png = RELIABILITY_PNG if shipping else work / RELIABILITY_PNG.name
    save_pretrained(ckpt, pretrained)
    log(f"wrote {seg_path} and {pretrained}")

    # int8, calibrated on training-family tiles, checked against float32 on other tiles
    int8_path = models_dir / INT8_FILE
    quantize_int8(seg_path, int8_path, calibration["tiles"][:QUANT_CALIBRATION_TILES])
    int8_agreement = agreement(seg_path, int8_path, calibration["tiles"][QUANT_CALIBRATION_TILES:], threads=THREADS)
    int8_agreement_eval = agreement(seg_path, int8_path, *evaluation_only_tiles(seg_meta), threads=THREADS)
    log(
        f"int8 variant: {int8_agreement:.2%} pixel agreement with float32 on held-back validation tiles, "
        f"{int8_agreement_eval:.2%} on evaluation-only scenes"
    )
    if int8_agreement < MIN_AGREEMENT:
        int8_path.unlink()
        log(f"int8 variant dropped: agreement below {MIN_AGREEMENT:.1%}")
    log(f"wrote {seg_path}")
    return Exported(
        seg_meta, seg_training, seg_path, int8_path, int8_agreement, int8_agreement_eval, calibration, reliability_png
    )


def export_encoder(ckpt: Any, seg: Exported, models_dir: Path, data_note: str) -> tuple[Any, Path]:
    """3. the U-Net's encoder as the clustering model; returns it and its file."""
    from training.export import export_model
    from training.models.encoder import encoder_from_segmentation

    encoder = encoder_from_segmentation(ckpt.model)
    enc_meta = dataclasses.replace(
        seg.meta,
        task="encoder",
        name="SAR Seg U-Net encoder VV/VH (synthetic)",
        description=(
            "Encoder of the bundled U-Net (sarseg_unet_vvvh): deepest features globally averaged and "
            "L2-normalised, for clustering and similarity of Sentinel-1-like VV/VH patches"
        ),
        tile_size=ENCODER_PATCH,
        tile_overlap=0,
        output_kind="continuous",
        class_names=(),
        class_colors=(),
        embedding_size=int(encoder.embedding_size),
        training={
            "data": data_note,
            "source": SEGMENTATION_FILE,
            "segmentation_arch": ckpt.arch,
            "arch_kwargs": ckpt.arch_kwargs,
            "floor_db": ckpt.metadata["training"].get("floor_db", -50.0),
        },
    )
    enc_path = export_model(encoder, models_dir / ENCODER_FILE, enc_meta, tile=ENCODER_PATCH)
    log(f"wrote {enc_path}")
    return encoder, enc_path


def score_grid(seg: Exported, previous: Path, budget: Budget, work: Path) -> tuple[dict, float]:
    """5. the domain grid, through the plugin's inference, on both scene families, with the int8 variant and the
    previous model beside; the figures go into the models' metadata (the demo and the segment log quote them).
    Returns the grid and its seconds."""
    from training.domain_eval import evaluate_grid
    from training.export import set_metadata_props

    grid_models = {"this model": seg.path}
    if seg.int8_path.exists():
        grid_models["int8 variant"] = seg.int8_path
    if previous.exists():
        grid_models["previous model"] = previous
    tic = time.perf_counter()
    grid = evaluate_grid(grid_models, seeds=budget.grid_seeds, size=GRID_SIZE, workdir=work, log=log)
    grid_seconds = time.perf_counter() - tic
    plot_grid_reliability(grid, seg.reliability_png)
    for path, model_name in ((seg.path, "this model"), (seg.int8_path, "int8 variant")):
        if path.exists():
            scored = {
                **seg.training,
                "evaluation": evaluation_summary(grid, model_name),
                CONFIDENCE_REFERENCE_KEY: confidence_reference(grid, model_name),
            }
            if model_name == "int8 variant":
                scored["int8_agreement"] = {
                    "validation": round(seg.int8_agreement, 4),
                    "evaluation-only": round(seg.int8_agreement_eval, 4),
                }
            set_metadata_props(path, dataclasses.replace(seg.meta, training=scored))
    return grid, grid_seconds


def target_checks(results: dict) -> dict[str, bool]:
    """The targets of the card, each met or not."""
    from training.domain_eval import EVALUATION_ONLY, TRAINING_FAMILY

    grid, calibration = results["grid"], results["calibration"]
    seg_miou, base_miou = results["segmentation"]["metrics"]["miou"], results["baseline"]["miou"]
    return {
        **{
            f"evaluation-only {name}: mIoU >= {target}": cells["this model"]["miou"] >= target
            for name, cells in grid[EVALUATION_ONLY].items()
            for target in [miou_target(name)]
            if target is not None
        },
        "validation ECE after calibration <= 0.05": calibration["ece_after"] <= 0.05,
        "training family ENL 4.4: ECE <= 0.05": grid[TRAINING_FAMILY][BASELINE_DOMAIN]["this model"]["ece"] <= 0.05,
        "segmentation mIoU >= 0.85": seg_miou >= 0.85,
        "segmentation above the baseline": seg_miou > base_miou,
        "onnxruntime >= 1 MP/s": results["ort"]["mps"] >= 1.0,
        "total time <= 40 min": results["total_minutes"] <= 40,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime
    import torch

    torch.set_num_threads(THREADS)
    from training.baseline import random_forest_baseline
    from training.models import count_parameters

    budget = QUICK if args.quick else Budget()
    start = time.perf_counter()
    work: Path = args.workdir
    models_dir: Path = args.models_dir
    reuse, previous = prepare_workdir(args, budget)
    trained = make_data_and_train(work, budget, reuse)
    if args.stop_after_training:
        return 0
    ckpt = trained.ckpt
    tr = ckpt.metadata["training"]
    data_note = (
        f"synthetic (training.data.make_synthetic_dataset seed {TRAIN_SEED}, {budget.train_scenes} areas of "
        f"{budget.train_size} px, {budget.days} dates); held-out seed {HELD_OUT_SEED}"
    )
    seg = export_segmentation(ckpt, work, models_dir, budget, data_note)
    encoder, enc_path = export_encoder(ckpt, seg, models_dir, data_note)
    grid, grid_seconds = score_grid(seg, previous, budget, work)

    segmentation = evaluate_segmentation(seg.path, trained.held_scenes, work / "held_out")
    log(f"held-out mIoU (ONNX): {segmentation['metrics']['miou']:.3f}")
    baseline = random_forest_baseline(trained.train_scenes, trained.held_scenes, seed=0)
    log(f"baseline mIoU: {baseline['miou']:.3f}")
    encoder_eval = evaluate_encoder(enc_path, trained.train_scenes, trained.held_scenes)
    log(f"encoder k-NN accuracy {encoder_eval['encoder']['accuracy']:.3f}")
    bench = load_bench()
    ort_speed = bench.onnx_speed(seg.path, 512, budget.bench_repeats, THREADS)
    torch_speed = bench.torch_speed(seg.path, 512, max(3, budget.bench_repeats // 2), THREADS)
    log(f"onnxruntime {ort_speed['mps']:.2f} MP/s, torch eager {torch_speed['mps']:.2f} MP/s")

    files = list(models_dir.glob("*.onnx"))
    for path in files:
        path.chmod(0o644)  # readable like the rest of the plugin, whatever the umask
    int8_exists = seg.int8_path.exists()
    results = {
        "budget": budget,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "seg_path": seg.path,
        "enc_path": enc_path,
        "seg_params": count_parameters(ckpt.model),
        "enc_params": count_parameters(encoder),
        "total_mb": sum(p.stat().st_size for p in files) / 1e6,
        "class_names": list(seg.meta.class_names),
        "train_seeds": trained.train_seeds,
        "held_out_seeds": trained.held_out_seeds,
        "val_scenes": len(tr["val_scenes"]),
        "norm_mean": list(seg.meta.normalization.mean),
        "norm_std": list(seg.meta.normalization.std),
        "best_epoch": tr["best_epoch"],
        "epoch_seconds": float(np.median([h["seconds"] for h in ckpt.history])) if ckpt.history else float("nan"),
        "best_val": ckpt.best_metric,
        "seg_seconds": trained.seg_seconds,
        "segmentation": segmentation,
        "baseline": baseline,
        "encoder": encoder_eval,
        "grid": grid,
        "grid_seconds": grid_seconds,
        "calibration": {k: v for k, v in seg.calibration.items() if k != "tiles"},
        "int8_agreement": seg.int8_agreement,
        "int8_agreement_eval": seg.int8_agreement_eval,
        "int8_path": seg.int8_path if int8_exists else None,
        "int8_speed": bench.onnx_speed(seg.int8_path, 512, budget.bench_repeats, THREADS) if int8_exists else None,
        "previous": previous.exists(),
        "previous_note": describe_previous(previous) if previous.exists() else "none",
        "ort": ort_speed,
        "torch_speed": torch_speed,
    }
    results["total_minutes"] = (time.perf_counter() - start + trained.reused_seconds) / 60
    card = models_dir / MODEL_CARD
    write_card(card, results)
    serialisable = {k: (str(v) if isinstance(v, Path) else v) for k, v in results.items() if k != "budget"}
    serialisable["budget"] = dataclasses.asdict(budget)
    (work / "results.json").write_text(json.dumps(serialisable, indent=1, default=float), encoding="utf-8")

    seg_miou, base_miou = segmentation["metrics"]["miou"], baseline["miou"]
    log(f"wrote {card}; mIoU {seg_miou:.3f} (baseline {base_miou:.3f}), {results['total_minutes']:.1f} min")
    for name, ok in target_checks(results).items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
