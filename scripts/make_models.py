#!/usr/bin/env python3
"""Train, evaluate and export the default models bundled with the plugin (``make models``).

Everything comes from the synthetic Sentinel-1-like generator (``training.synthetic``) with fixed seeds:

1. training scenes (``make_synthetic_dataset`` seed ``TRAIN_SEED``) and held-out scenes (seed ``HELD_OUT_SEED``);
   the per-scene generator seeds of the two sets are checked to be disjoint;
2. the segmentation U-Net (VV/VH dB -> 5 classes) with ``training.train_segmentation``, exported to
   ``sar_seg_plugin/models/sarseg_unet_vvvh.onnx``;
3. its encoder (deepest features, pooled, L2-normalised) exported as ``sarseg_encoder_vvvh.onnx`` (task encoder);
4. the ConvLSTM class-map forecaster with ``training.train_forecaster``, its two step graphs in
   ``sar_seg_plugin/models/forecast/`` (not top level: the plugin lists top-level files as single-file models);
5. held-out evaluation of the exported ONNX files: segmentation per-class metrics beside a classical baseline
   (Lee-filtered VV/VH -> per-pixel random forest), encoder k-NN patch classification, forecaster per horizon
   against persistence; onnxruntime speed (``bench/segment_model.py``);
6. ``sar_seg_plugin/models/MODEL_CARD.md``.

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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

MODELS_DIR = ROOT / "sar_seg_plugin" / "models"
FORECAST_DIR = MODELS_DIR / "forecast"
SEGMENTATION_FILE = "sarseg_unet_vvvh.onnx"
ENCODER_FILE = "sarseg_encoder_vvvh.onnx"
FORECAST_FILE = "sarseg_convlstm_classes.onnx"  # -> _encoder.onnx / _decoder.onnx
MODEL_CARD = "MODEL_CARD.md"

TRAIN_SEED = 100  # make_synthetic_dataset seed of the training scenes
HELD_OUT_SEED = 900  # make_synthetic_dataset seed of the held-out scenes
HELD_OUT_SIZE = 256
FORECAST_SEED = 0  # training series seeds FORECAST_SEED + i, held-out 10000 + FORECAST_SEED + i
THREADS = 2
ENCODER_PATCH = 64


@dataclasses.dataclass(frozen=True)
class Budget:
    """Data sizes and training lengths."""

    train_scenes: int = 24
    train_size: int = 384
    held_out_scenes: int = 8
    held_out_size: int = HELD_OUT_SIZE
    days: int = 2
    width: int = 16
    patch: int = 128
    batch: int = 16
    epochs: int = 90
    lr: float = 2e-3
    forecast_size: int = 64
    forecast_days: int = 10
    forecast_train_seeds: int = 32
    forecast_val_seeds: int = 8
    forecast_epochs: int = 20
    bench_repeats: int = 10


QUICK = Budget(
    train_scenes=4,
    train_size=256,
    held_out_scenes=2,
    epochs=2,
    forecast_train_seeds=4,
    forecast_val_seeds=2,
    forecast_epochs=1,
    bench_repeats=3,
)


def scene_seeds(seed: int, n: int) -> list[int]:
    """The per-scene generator seeds ``make_synthetic_dataset(seed=seed, n_scenes=n)`` uses."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n)]


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


def onnx_scene_confusion(loaded: Any, scene: Any, n_classes: int) -> np.ndarray:
    """Confusion matrix of the ONNX model's classes on a whole scene (one padded tile) against its labels."""
    from osgeo import gdal

    from training.evaluate import Preprocessing
    from training.metrics import confusion_matrix
    from training.synthetic import LABEL_NODATA

    meta = loaded.metadata
    pre = Preprocessing(
        np.asarray(meta.normalization.mean, np.float32)[:, None, None],
        np.asarray(meta.normalization.std, np.float32)[:, None, None],
        float(meta.training.get("floor_db", -50.0)),
    )
    ds = gdal.Open(str(scene.image))
    image, valid = pre.read(ds, 0, 0, ds.RasterXSize, ds.RasterYSize)
    h, w = valid.shape
    padded = np.pad(image, ((0, 0), (0, -h % 16), (0, -w % 16)))
    pred = loaded.run(padded[None])[0, :, :h, :w].argmax(axis=0)
    pred = np.where(valid, pred, LABEL_NODATA)
    label_ds = gdal.Open(str(scene.label))  # kept referenced while its band is read
    truth = label_ds.GetRasterBand(1).ReadAsArray().astype(np.int64)
    return confusion_matrix(pred, truth, n_classes)


def evaluate_segmentation(path: Path, scenes: Sequence[Any], root: Path) -> dict:
    """Per-class metrics of the exported segmentation model on ``scenes``, overall and per scene."""
    from sar_seg_plugin.models.registry import load_model
    from training.metrics import segmentation_metrics

    loaded = load_model(str(path), device="cpu")
    names = list(loaded.metadata.class_names)
    total = np.zeros((len(names), len(names)), np.int64)
    per_scene = []
    for scene in scenes:
        cm = onnx_scene_confusion(loaded, scene, len(names))
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


def evaluate_forecaster(encoder: Path, decoder: Path, val_seeds: Sequence[int], budget: Budget) -> list[dict]:
    """Per-horizon accuracy / mIoU of the exported step graphs vs persistence on the held-out series."""
    from training import forecasting as fc

    seq = fc.default_sequence_length(budget.forecast_days)
    val = fc.make_windows(
        val_seeds, size=budget.forecast_size, days=budget.forecast_days, sequence_length=seq, input_kind="classes"
    )
    pred = fc.StepSessions(encoder, decoder, threads=THREADS).run(val.inputs)
    return fc.evaluate(pred, fc.persistence_forecast(val.inputs), val.targets, val.valid, "classes")


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


def write_card(path: Path, r: dict) -> None:
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
        f"| `{ENCODER_FILE}` | encoder ({enc['embedding_size']}-d embedding) | {r['enc_params']:,} | "
        f"{mb(r['enc_path'])} |",
        f"| `forecast/{r['fc_enc'].name}` + `forecast/{r['fc_dec'].name}` | forecast (class maps, t+1..t+3) | "
        f"{r['fc_params']:,} | {mb(r['fc_enc'])} + {mb(r['fc_dec'])} |",
        "",
        f"Total size of the plugin's model files: {r['total_mb']:.2f} MB.",
        "",
        "## Data",
        "",
        "Synthetic Sentinel-1-like scenes from `training.synthetic` (C-band sigma0 per class, VV and VH, "
        "Gamma speckle with 4.4 looks, per-field and per-date offsets, a noise floor, a nodata corner; 10 m pixels), "
        "written as GeoTIFFs (linear power) by `training.data.make_synthetic_dataset`. Classes: "
        f"{', '.join(r['class_names'])}.",
        "",
        f"- Training: `make_synthetic_dataset(seed={TRAIN_SEED}, n_scenes={b.train_scenes}, size={b.train_size}, "
        f"days={b.days})`: {b.train_scenes} areas of {b.train_size} x {b.train_size} px, {b.days} dates each "
        f"({b.train_scenes * b.days} images). Per-scene generator seeds: {', '.join(map(str, r['train_seeds']))}. "
        "Whole areas are split into training and validation (model selection) by `train_segmentation` "
        f"(validation fraction 0.2: {r['val_scenes']} of {b.train_scenes * b.days} images).",
        f"- Held-out: `make_synthetic_dataset(seed={HELD_OUT_SEED}, n_scenes={b.held_out_scenes}, "
        f"size={b.held_out_size}, days={b.days})`: {b.held_out_scenes * b.days} images of {b.held_out_size} px. "
        f"Per-scene seeds: {', '.join(map(str, r['held_out_seeds']))} (disjoint from the training seeds).",
        f"- Forecaster: daily series of {b.forecast_days} days, {b.forecast_size} x {b.forecast_size} px, "
        f"`training.synthetic.generate_series` seeds {r['fc_train_seeds'][0]}..{r['fc_train_seeds'][-1]} for "
        f"training and {r['fc_val_seeds'][0]}..{r['fc_val_seeds'][-1]} held out.",
        "",
        "## Segmentation model",
        "",
        f"U-Net (4 poolings, base width {b.width}, BatchNorm, ReLU), input VV and VH in dB (floor -50 dB) "
        f"standardised with the training mean {_f(r['norm_mean'][0], 2)} / {_f(r['norm_mean'][1], 2)} dB and std "
        f"{_f(r['norm_std'][0], 2)} / {_f(r['norm_std'][1], 2)} dB, output logits of 5 classes. Trained "
        f"{b.epochs} epochs on {b.patch} px patches (augmented: flips / rotations, extra speckle, +-1 dB gain), "
        f"batch {b.batch}, AdamW with peak learning rate {b.lr:g} (warm-up then cosine), Dice + cross-entropy loss, "
        f"seed 0; best validation epoch {r['best_epoch']} (validation mIoU {_f(r['best_val'])}). Training time "
        f"{r['seg_seconds'] / 60:.1f} min. Tiles of 256 px with 32 px overlap in the plugin; height and width must "
        "be multiples of 16 (the plugin pads).",
        "",
        f"### Held-out scenes: exported ONNX model ({b.held_out_scenes * b.days} images)",
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
        "## Forecaster",
        "",
        f"ConvLSTM (1 layer, hidden {r['fc_config'].get('hidden', 16)}) on one-hot class maps: "
        f"{r['fc_seq']} input dates -> class probabilities at t+1, t+2, t+3. Exported as two step graphs (the "
        "encoder step once per input date, the decoder step once per horizon; the time loop runs outside ONNX, "
        "`training.forecasting.run_convlstm_onnx`). Trained "
        f"{r['fc_steps']} steps (batch 4, {b.forecast_train_seeds} series) in {r['fc_seconds']:.0f} s. Held-out: "
        f"{b.forecast_val_seeds} series, every window, evaluated with the exported step graphs (onnxruntime). "
        "Persistence = the last input map repeated; skill = 1 - error(model) / error(persistence), "
        "error = 1 - score.",
        "",
        "| horizon | accuracy | persistence accuracy | skill (accuracy) | mIoU | persistence mIoU | skill (mIoU) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| t+{int(row['horizon'])} | {_f(row['model_accuracy'])} | {_f(row['persistence_accuracy'])} | "
            f"{_f(row['skill_accuracy'])} | {_f(row['model_miou'])} | {_f(row['persistence_miou'])} | "
            f"{_f(row['skill_miou'])} |"
            for row in r["forecast"]
        ),
        "",
        "## Limitations",
        "",
        "- Trained and evaluated on synthetic data only. Real Sentinel-1 scenes differ (terrain and incidence "
        "effects, wind over water, crop phenology, calibration, border noise, class definitions): expect lower "
        "accuracy and fine-tune on labelled local scenes before relying on these models.",
        "- Input must be calibrated sigma0 VV and VH (linear power, converted to dB by the plugin) at about 10 m, "
        "like Sentinel-1 IW GRD; other bands, units or resolutions are out of distribution.",
        "- Vegetation / cropland and bare soil overlap in backscatter and are the most confused pair; the forecaster "
        "only learns the generator's dynamics (e.g. flooding and its retreat) and is no weather model.",
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime
    import torch

    torch.set_num_threads(THREADS)
    from training import train_forecaster, train_segmentation
    from training.baseline import random_forest_baseline
    from training.checkpoint import load_checkpoint
    from training.data import make_synthetic_dataset
    from training.export import export_model, metadata_from_checkpoint
    from training.models import count_parameters
    from training.models.encoder import encoder_from_segmentation

    budget = QUICK if args.quick else Budget()
    start = time.perf_counter()
    work: Path = args.workdir
    models_dir: Path = args.models_dir
    forecast_dir = models_dir / FORECAST_DIR.relative_to(MODELS_DIR)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    # 1. data
    train_seeds = scene_seeds(TRAIN_SEED, budget.train_scenes)
    held_out_seeds = scene_seeds(HELD_OUT_SEED, budget.held_out_scenes)
    fc_train_seeds = [FORECAST_SEED + i for i in range(budget.forecast_train_seeds)]
    fc_val_seeds = [10_000 + FORECAST_SEED + i for i in range(budget.forecast_val_seeds)]
    if set(held_out_seeds) & set(train_seeds + fc_train_seeds) or set(fc_val_seeds) & set(train_seeds):
        raise SystemExit("held-out generator seeds overlap training seeds")
    train_dir, held_dir = work / "train", work / "held_out"
    common = {"days": budget.days, "n_communes": 4}
    train_scenes = make_synthetic_dataset(train_dir, budget.train_scenes, budget.train_size, TRAIN_SEED, **common)
    held_scenes = make_synthetic_dataset(
        held_dir, budget.held_out_scenes, budget.held_out_size, HELD_OUT_SEED, **common
    )
    log(f"data: {len(train_scenes)} training and {len(held_scenes)} held-out images")

    # 2. segmentation
    run_dir = work / "segmentation"
    tic = time.perf_counter()
    code = train_segmentation.main(
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
            "--tile-size", "256",
            "--tile-overlap", "32",
        ]
    )  # fmt: skip
    seg_seconds = time.perf_counter() - tic
    if code:
        raise SystemExit(f"segmentation training failed (exit {code})")
    ckpt = load_checkpoint(run_dir / "best.pt", map_location="cpu")
    tr = ckpt.metadata["training"]
    log(f"segmentation trained in {seg_seconds / 60:.1f} min, best epoch {tr['best_epoch']}")

    data_note = (
        f"synthetic (training.data.make_synthetic_dataset seed {TRAIN_SEED}, {budget.train_scenes} areas of "
        f"{budget.train_size} px, {budget.days} dates); held-out seed {HELD_OUT_SEED}"
    )
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
    seg_meta = dataclasses.replace(seg_meta, training=seg_training)
    seg_path = export_model(ckpt, models_dir / SEGMENTATION_FILE, seg_meta)
    log(f"wrote {seg_path}")

    # 3. encoder
    encoder = encoder_from_segmentation(ckpt.model)
    enc_meta = dataclasses.replace(
        seg_meta,
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
            "floor_db": tr.get("floor_db", -50.0),
        },
    )
    enc_path = export_model(encoder, models_dir / ENCODER_FILE, enc_meta, tile=ENCODER_PATCH)
    log(f"wrote {enc_path}")

    # 4. forecaster
    forecast_dir.mkdir(parents=True, exist_ok=True)
    for old in forecast_dir.glob("*.onnx"):
        old.unlink()
    fc_out = forecast_dir / FORECAST_FILE
    tic = time.perf_counter()
    code = train_forecaster.main(
        [
            "--kind", "convlstm",
            "--input", "classes",
            "--days", str(budget.forecast_days),
            "--size", str(budget.forecast_size),
            "--epochs", str(budget.forecast_epochs),
            "--train-seeds", str(budget.forecast_train_seeds),
            "--val-seeds", str(budget.forecast_val_seeds),
            "--seed", str(FORECAST_SEED),
            "--threads", str(THREADS),
            "--out", str(fc_out),
        ]
    )  # fmt: skip
    fc_seconds = time.perf_counter() - tic
    if code:
        raise SystemExit(f"forecaster training failed (exit {code})")
    fc_enc = forecast_dir / FORECAST_FILE.replace(".onnx", "_encoder.onnx")
    fc_dec = forecast_dir / FORECAST_FILE.replace(".onnx", "_decoder.onnx")
    report_path = forecast_dir / FORECAST_FILE.replace(".onnx", "_report.json")
    fc_report = json.loads(report_path.read_text())
    shutil.move(str(report_path), work / report_path.name)  # only the step graphs ship
    log(f"forecaster trained in {fc_seconds:.0f} s")

    # 5. held-out evaluation
    segmentation = evaluate_segmentation(seg_path, held_scenes, held_dir)
    log(f"held-out mIoU (ONNX): {segmentation['metrics']['miou']:.3f}")
    baseline = random_forest_baseline(train_scenes, held_scenes, seed=0)
    log(f"baseline mIoU: {baseline['miou']:.3f}")
    encoder_eval = evaluate_encoder(enc_path, train_scenes, held_scenes)
    log(f"encoder k-NN accuracy {encoder_eval['encoder']['accuracy']:.3f}")
    forecast = evaluate_forecaster(fc_enc, fc_dec, fc_val_seeds, budget)
    bench = load_bench()
    ort_speed = bench.onnx_speed(seg_path, 512, budget.bench_repeats, THREADS)
    torch_speed = bench.torch_speed(seg_path, 512, max(3, budget.bench_repeats // 2), THREADS)
    log(f"onnxruntime {ort_speed['mps']:.2f} MP/s, torch eager {torch_speed['mps']:.2f} MP/s")

    from training import forecasting as fc

    cfg = fc_report["config"]
    fc_model = fc.build_forecaster("convlstm", cfg["in_channels"], cfg["input_kind"], cfg["hidden"], cfg["layers"])
    files = [*models_dir.glob("*.onnx"), *forecast_dir.glob("*.onnx")]
    for path in files:
        path.chmod(0o644)  # written through mkstemp (0600): readable like the rest of the plugin
    results = {
        "budget": budget,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "seg_path": seg_path,
        "enc_path": enc_path,
        "fc_enc": fc_enc,
        "fc_dec": fc_dec,
        "seg_params": count_parameters(ckpt.model),
        "enc_params": count_parameters(encoder),
        "fc_params": count_parameters(fc_model),
        "fc_config": fc_report["config"],
        "fc_seq": fc.default_sequence_length(budget.forecast_days),
        "fc_steps": fc_report["steps"],
        "fc_seconds": fc_seconds,
        "fc_train_seeds": fc_train_seeds,
        "fc_val_seeds": fc_val_seeds,
        "total_mb": sum(p.stat().st_size for p in files) / 1e6,
        "class_names": list(seg_meta.class_names),
        "train_seeds": train_seeds,
        "held_out_seeds": held_out_seeds,
        "val_scenes": len(tr["val_scenes"]),
        "norm_mean": list(seg_meta.normalization.mean),
        "norm_std": list(seg_meta.normalization.std),
        "best_epoch": tr["best_epoch"],
        "best_val": ckpt.best_metric,
        "seg_seconds": seg_seconds,
        "segmentation": segmentation,
        "baseline": baseline,
        "encoder": encoder_eval,
        "forecast": forecast,
        "ort": ort_speed,
        "torch_speed": torch_speed,
    }
    results["total_minutes"] = (time.perf_counter() - start) / 60
    card = models_dir / MODEL_CARD
    write_card(card, results)
    serialisable = {k: (str(v) if isinstance(v, Path) else v) for k, v in results.items() if k != "budget"}
    serialisable["budget"] = dataclasses.asdict(budget)
    (work / "results.json").write_text(json.dumps(serialisable, indent=1, default=float), encoding="utf-8")

    seg_miou, base_miou = segmentation["metrics"]["miou"], baseline["miou"]
    checks = {
        "segmentation mIoU >= 0.85": seg_miou >= 0.85,
        "segmentation above the baseline": seg_miou > base_miou,
        "onnxruntime >= 1 MP/s": ort_speed["mps"] >= 1.0,
        "forecaster beats persistence at every horizon": all(
            r["skill_miou"] > 0 and r["skill_accuracy"] > 0 for r in forecast
        ),
        "total time <= 30 min": results["total_minutes"] <= 30,
    }
    log(f"wrote {card}; mIoU {seg_miou:.3f} (baseline {base_miou:.3f}), {results['total_minutes']:.1f} min")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
