"""The models bundled by ``make models``: they load in the plugin, carry the right metadata, stay small, run, and the
segmentation model reproduces on a held-out synthetic scene the mIoU its model card states."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sar_seg_plugin.models.registry import MODELS_DIR, bundled_models, load_model  # noqa: E402
from training.synthetic import CLASS_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEGMENTATION = "sarseg_unet_vvvh"
INT8 = "sarseg_unet_vvvh_int8"
ENCODER = "sarseg_encoder_vvvh"
IMAGENET_ENCODER = "imagenet_effnetlite0_encoder_rgb"  # not trained here: tests/training/test_imagenet_encoder.py
FORECAST_DIR = MODELS_DIR / "forecast"
FORECAST_ENCODER = FORECAST_DIR / "sarseg_convlstm_classes_encoder.onnx"
FORECAST_DECODER = FORECAST_DIR / "sarseg_convlstm_classes_decoder.onnx"
DB_ENCODER = FORECAST_DIR / "sarseg_convlstm_db_encoder.onnx"
DB_DECODER = FORECAST_DIR / "sarseg_convlstm_db_decoder.onnx"
CARD = MODELS_DIR / "MODEL_CARD.md"
MB = 1_000_000

if not (MODELS_DIR / f"{SEGMENTATION}.onnx").is_file():
    pytest.skip("no bundled models: run `make models`", allow_module_level=True)


def _make_models_module() -> ModuleType:
    """``scripts/make_models.py`` (for its seed constants; importing it runs nothing)."""
    spec = importlib.util.spec_from_file_location("make_models", ROOT / "scripts" / "make_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _card_miou() -> float:
    """The held-out mIoU of the segmentation model stated in MODEL_CARD.md."""
    text = CARD.read_text(encoding="utf-8")
    match = re.search(r"### Held-out scenes.*?Overall accuracy [0-9.]+, mIoU ([0-9.]+)\.", text, re.DOTALL)
    assert match, "MODEL_CARD.md states no held-out mIoU for the segmentation model"
    return float(match.group(1))


def test_bundled_listing_is_single_file_models() -> None:
    int8 = {INT8} if (MODELS_DIR / f"{INT8}.onnx").is_file() else set()
    assert set(bundled_models()) - {IMAGENET_ENCODER} == {SEGMENTATION, ENCODER} | int8
    assert FORECAST_ENCODER.is_file() and FORECAST_DECODER.is_file()
    assert CARD.is_file()


def test_segmentation_metadata() -> None:
    model = load_model(SEGMENTATION, device="cpu")
    meta = model.metadata
    assert meta.task == "segmentation"
    assert meta.input_bands == ("VV", "VH")
    assert meta.input_units == ("dB", "dB")
    assert meta.class_names == tuple(CLASS_NAMES)
    assert meta.output_kind == "classes"
    assert len(meta.normalization.mean) == 2 and len(meta.normalization.std) == 2
    out = model.run(np.zeros((1, 2, 64, 64), np.float32))
    assert out.shape == (1, len(CLASS_NAMES), 64, 64)
    # what the input-domain check and the calibrated confidence rest on
    envelope = meta.training["input_domain"]
    assert envelope["pixel_size_m"] == [10.0, 40.0]
    assert envelope["enl"][0] <= 1.0 and envelope["enl"][1] >= 30.0
    assert set(envelope["db_percentiles"]["bands"]) == {"VV", "VH"}
    assert meta.training["temperature"] > 0
    assert meta.training["domain_randomisation"] is True


def test_the_temperature_is_built_into_the_graph() -> None:
    """The exported logits are the trained network's divided by the recorded temperature (the fine-tuning
    checkpoint holds the same weights, stored as float16)."""
    import torch

    from training.checkpoint import BUNDLED_SEGMENTATION, load_checkpoint

    if not BUNDLED_SEGMENTATION.is_file():
        pytest.skip("no fine-tuning checkpoint: run `make models`")
    model = load_model(SEGMENTATION, device="cpu")
    x = _make_models_module().evaluation_only_tiles(model.metadata, ("ENL 4.4",), (5,), 128)[0][0]
    ckpt = load_checkpoint(BUNDLED_SEGMENTATION)
    net = ckpt.model.float().eval()
    with torch.no_grad():
        raw = net(torch.from_numpy(x)).numpy()
    exported = model.run(x)
    temperature = model.metadata.training["temperature"]
    scale = float(np.abs(raw).max())
    assert np.abs(exported * temperature - raw).max() < 0.02 * scale
    assert (exported.argmax(1) == raw.argmax(1)).mean() > 0.995


def test_int8_variant_agrees_with_float32() -> None:
    path = MODELS_DIR / f"{INT8}.onnx"
    if not path.is_file():
        pytest.skip("make models did not ship an int8 variant (agreement below 99.5 %)")
    fp32, int8 = load_model(SEGMENTATION, device="cpu"), load_model(INT8, device="cpu")
    assert int8.metadata.input_bands == fp32.metadata.input_bands
    assert int8.metadata.training["input_domain"] == fp32.metadata.training["input_domain"]
    same = total = 0
    tiles, masks = _make_models_module().evaluation_only_tiles(fp32.metadata)  # the tiles make models scored it on
    for x, valid in zip(tiles, masks, strict=True):
        a, b = fp32.run(x).argmax(1), int8.run(x).argmax(1)
        same, total = same + int(((a == b) & valid).sum()), total + int(valid.sum())
    recorded = int8.metadata.training["int8_agreement"]
    assert recorded["validation"] >= 0.995
    assert same / total >= 0.995, f"int8 keeps {same / total:.4f} of the float32 classes"
    assert same / total == pytest.approx(recorded["evaluation-only"], abs=0.001)


def test_evaluation_only_tiles_are_what_the_tool_feeds_the_model() -> None:
    """Nodata (the scene's swath edge) at 0, the training mean, as ``tiling.read_batches`` sets it; elsewhere the
    normalised dB of the scene's linear power, computed here from the formula."""
    from training import evalgen

    meta = load_model(SEGMENTATION, device="cpu").metadata
    seeds = [s for s in range(1, 40) if not evalgen.make_scene(s, 64, evalgen.domain_by_name("ENL 4.4")).valid.all()]
    assert seeds, "no scene with a swath edge among 39 seeds"
    tiles, masks = _make_models_module().evaluation_only_tiles(meta, ("ENL 4.4",), (seeds[0],), 64)
    scene = evalgen.make_scene(seeds[0], 64, evalgen.domain_by_name("ENL 4.4"))
    x, valid = tiles[0][0], masks[0][0]
    assert tiles[0].shape == (1, 2, 64, 64) and tiles[0].dtype == np.float32
    np.testing.assert_array_equal(valid, scene.valid)
    assert (x[:, ~valid] == 0.0).all()
    mean = np.asarray(meta.normalization.mean)[:, None]
    std = np.asarray(meta.normalization.std)[:, None]
    expected = (10.0 * np.log10(scene.sigma0[:, valid].astype(np.float64)) - mean) / std
    np.testing.assert_allclose(x[:, valid], expected, atol=1e-4)


def test_evaluation_only_figure_in_the_metadata_reproduces() -> None:
    """The card's grid is generated: segmenting the same evaluation-only scenes again gives its mIoU."""
    from training import evalgen
    from training.domain_eval import EVALUATION_ONLY, FAMILIES, evaluate_grid

    model = load_model(SEGMENTATION, device="cpu")
    stated = model.metadata.training["evaluation"][EVALUATION_ONLY]["ENL 4.4"]["miou"]
    mm = _make_models_module()
    grid = evaluate_grid(
        {"this model": MODELS_DIR / f"{SEGMENTATION}.onnx"},
        domains=[evalgen.domain_by_name("ENL 4.4")],
        families={EVALUATION_ONLY: FAMILIES[EVALUATION_ONLY]},
        seeds=mm.Budget().grid_seeds,
        size=mm.GRID_SIZE,
    )
    assert grid[EVALUATION_ONLY]["ENL 4.4"]["this model"]["miou"] == pytest.approx(stated, abs=0.002)


def test_encoder_metadata_and_embedding() -> None:
    model = load_model(ENCODER, device="cpu")
    meta = model.metadata
    assert meta.task == "encoder"
    assert meta.input_bands == ("VV", "VH")
    assert meta.input_units == ("dB", "dB")
    assert meta.output_kind == "continuous"
    x = np.random.default_rng(0).standard_normal((2, 2, 64, 64)).astype(np.float32)
    emb = model.run(x)
    assert emb.shape == (2, meta.embedding_size)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("path", [FORECAST_ENCODER, FORECAST_DECODER], ids=["encoder_step", "decoder_step"])
def test_forecast_step_metadata(path: Path) -> None:
    meta = load_model(str(path), device="cpu").metadata
    assert meta.task == "forecast"
    assert meta.input_bands == tuple(CLASS_NAMES)
    assert meta.input_units == ("uint8",) * len(CLASS_NAMES)
    assert meta.class_names == tuple(CLASS_NAMES)
    assert meta.horizons == (1, 2, 3)
    assert meta.sequence_length and meta.sequence_length >= 1


def test_file_sizes() -> None:
    files = sorted(MODELS_DIR.rglob("*.onnx"))
    optional = (MODELS_DIR / f"{IMAGENET_ENCODER}.onnx").is_file() + (MODELS_DIR / f"{INT8}.onnx").is_file()
    assert len(files) - optional == 6  # U-Net, encoder, and two step graphs for each of the two forecasters
    for path in files:
        assert path.stat().st_size < 10 * MB, f"{path.name} is {path.stat().st_size / MB:.1f} MB"
    # The plugin zip must stay under 25 MB (plugins.qgis.org); the ONNX files barely compress.
    assert sum(p.stat().st_size for p in files) < 22 * MB


@pytest.mark.parametrize("path", [DB_ENCODER, DB_DECODER], ids=["encoder_step", "decoder_step"])
def test_backscatter_forecaster_metadata(path: Path) -> None:
    meta = load_model(str(path), device="cpu").metadata
    assert meta.task == "forecast" and meta.output_kind == "continuous"
    assert meta.input_bands == ("VV", "VH") and meta.input_units == ("dB", "dB")
    assert meta.horizons == (1, 2, 3) and meta.sequence_length == 4


def test_forecaster_runs_on_a_tiny_sequence() -> None:
    from training.forecasting import run_convlstm_onnx

    labels = np.random.default_rng(0).integers(0, len(CLASS_NAMES), (3, 32, 32))
    sequence = np.eye(len(CLASS_NAMES), dtype=np.float32)[labels].transpose(0, 3, 1, 2)  # (T, C, H, W) one-hot
    out = run_convlstm_onnx(FORECAST_ENCODER, FORECAST_DECODER, sequence)
    assert out.shape == (3, len(CLASS_NAMES), 32, 32)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-4)


def test_segmentation_miou_on_a_held_out_scene_matches_the_card(tmp_path: Path) -> None:
    """Held-out scene 0, segmented as make_models scores it (segment_raster, then evaluate_rasters), against the
    card's figure; the per-class IoU is recounted here with numpy from the written class raster."""
    from training.data import make_synthetic_dataset
    from training.evaluate import scene_confusion
    from training.metrics import segmentation_metrics

    mm = _make_models_module()
    # Scene 0 of the held-out set: its generator seed is disjoint from every training seed.
    scenes = make_synthetic_dataset(tmp_path, n_scenes=1, size=mm.HELD_OUT_SIZE, seed=mm.HELD_OUT_SEED, n_communes=4)
    assert not set(mm.scene_seeds(mm.HELD_OUT_SEED, 1)) & set(mm.scene_seeds(mm.TRAIN_SEED, 64))
    model = load_model(SEGMENTATION, device="cpu")
    n = len(model.metadata.class_names)
    cm = sum(scene_confusion(model, s.image, s.label, n, tmp_path / "work") for s in scenes)
    miou = segmentation_metrics(cm, list(model.metadata.class_names))["miou"]
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    assert miou == pytest.approx(np.mean(tp[union > 0] / union[union > 0]))
    stated = _card_miou()
    assert abs(miou - stated) <= 0.05, f"held-out scene mIoU {miou:.3f}, model card {stated:.3f}"


def _make_forecasters_module() -> ModuleType:
    """``scripts/make_forecasters.py`` (its budget and seeds; importing it runs nothing)."""
    spec = importlib.util.spec_from_file_location("make_forecasters", ROOT / "scripts" / "make_forecasters.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_forecaster_card_figures_reproduce() -> None:
    """The card's forecaster section is generated: its training facts are the step graphs' own, and scoring the
    bundled class forecaster again on the evaluation-only floods it names gives the card's accuracies, recounted
    here with numpy."""
    from training import evalflood

    mf = _make_forecasters_module()
    budget = mf.Budget()
    entry = mf.read_entry(FORECAST_DIR / mf.CLASSES_FILE, budget)  # made by the budget the card describes
    section = CARD.read_text(encoding="utf-8").split(mf.CARD_BEGIN)[1]
    assert f"| {entry['params']:,} | {entry['windows']} windows, {budget.steps} steps" in section
    windows, _ = evalflood.make_eval_flood_windows(**mf.eval_flood_args(budget))
    pred = mf.predict(entry, windows).argmax(axis=2)
    last = windows.inputs[:, -1].argmax(axis=1)  # persistence
    block = section.split("| evaluation-only floods | t+1 |")[1].split("\n")[:3]
    stated = [tuple(float(v) for v in re.findall(r"\| ([0-9.]+)", "|" + line)[:2]) for line in block]
    assert len(stated) == 3 and all(len(pair) == 2 for pair in stated), block
    for h in range(3):
        ok = windows.valid[:, h]
        got = tuple(float((p[ok] == windows.targets[:, h][ok]).mean()) for p in (pred[:, h], last))
        np.testing.assert_allclose(got, stated[h], atol=0.0005)
