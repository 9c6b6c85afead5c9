"""Training, evaluation and comparison CLIs on tiny synthetic data: checkpoints, resume, DDP, metrics, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal
from rasters import GT, write_raster

from training import compare, evaluate, train_segmentation
from training.checkpoint import load_checkpoint
from training.data import make_synthetic_dataset
from training.export import metadata_from_checkpoint
from training.models import count_parameters, create_model
from training.synthetic import CLASS_NAMES

REPO = Path(__file__).resolve().parents[2]


def tiny(epochs: int = 1) -> list[str]:
    """Options of a tiny run: unet of width 4, 32 px patches, at most 3 steps per epoch, 32 px tiles."""
    return [
        "--arch", "unet", "--arch-kwargs", '{"width": 4}', "--epochs", str(epochs), "--batch-size", "4",
        "--patch-size", "32", "--max-steps-per-epoch", "3", "--workers", "0", "--tile-size", "32",
        "--tile-overlap", "8",
    ]  # fmt: skip


STEPS = 3  # 2 training areas x 2 dates x 4 patches = 16 patches, batch 4: capped at 3 steps


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Three separate 64 px areas, two dates each."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    make_synthetic_dataset(root, n_scenes=3, size=64, seed=1, days=2)
    return root


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """One tiny epoch: the run folder and the TensorBoard folder."""
    base = tmp_path_factory.mktemp("run")
    out, logdir = base / "run", base / "logs"
    code = train_segmentation.main(["--data", str(tiny_data), "--out", str(out), "--logdir", str(logdir), *tiny()])
    assert code == 0
    return out, logdir


def sar_db(path):
    """A whole small SAR raster in dB (float32, floor -50 dB) and its validity, read with plain GDAL."""
    data = gdal.Open(str(path)).ReadAsArray().astype(np.float32)
    valid = (data != 0).all(axis=0) & np.isfinite(data).all(axis=0)
    db = np.float32(10.0) * np.log10(np.maximum(data, np.float32(1e-5)))
    return db, valid


# --- One epoch, checkpoints, logs --------------------------------------------------------------------


def test_one_epoch_writes_checkpoints_metadata_and_tensorboard_scalars(trained, tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, logdir = trained
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt.arch, ckpt.task, ckpt.epoch, len(ckpt.history)) == ("unet", "segmentation", 1, 1)
    meta = ckpt.metadata
    assert meta["class_names"] == list(CLASS_NAMES)
    assert (meta["input_bands"], meta["input_units"]) == (["VV", "VH"], ["dB", "dB"])
    assert meta["pixel_size_m"] == pytest.approx(10.0)
    assert (meta["tile_size"], meta["tile_overlap"]) == (32, 8)

    # Scene split: whole areas (scene_NN folders) on one side only.
    train, val = meta["training"]["train_scenes"], meta["training"]["val_scenes"]
    assert train and val and not {Path(s).parent for s in train} & {Path(s).parent for s in val}

    # Normalisation = dB mean / std over the valid pixels of the training scenes only (whole 64 px scenes).
    dbs = [sar_db(tiny_data / s) for s in train]
    pixels = np.concatenate([db[:, valid] for db, valid in dbs], axis=1).astype(np.float64)
    assert meta["normalization"]["mean"] == pytest.approx(pixels.mean(axis=1), abs=1e-4)
    assert meta["normalization"]["std"] == pytest.approx(pixels.std(axis=1), abs=1e-4)
    assert metadata_from_checkpoint(ckpt).class_names == CLASS_NAMES  # enough for an ONNX export

    events = list(logdir.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/val", "miou/val", "lr", *(f"iou/{c}" for c in CLASS_NAMES)} <= tags
    assert acc.Scalars("miou/val")[0].value == pytest.approx(ckpt.history[0]["miou"], abs=1e-6)


def test_resume_continues_at_the_next_epoch_with_the_optimizer_state(trained, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    first = load_checkpoint(out / "last.pt")
    assert train_segmentation.main(["--data", str(tiny_data), "--out", str(out), "--resume", *tiny(epochs=2)]) == 0
    assert "at epoch 2" in capsys.readouterr().out
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.epoch == 2
    assert [h["epoch"] for h in ckpt.history] == [1, 2]
    assert ckpt.history[0] == first.history[0]
    # AdamW's step counters and the scheduler carry on from epoch 1's 3 steps (a fresh optimizer would say 3).
    steps = {float(s["step"]) for s in ckpt.optimizer_state["state"].values()}
    assert steps == {2.0 * STEPS}
    assert ckpt.scheduler_state["last_epoch"] == 2 * STEPS


# --- Evaluation -----------------------------------------------------------------------------------------


def independent_confusion(ckpt, scene_sar, tile, overlap):
    """Tiles over the whole scene, logits averaged where tiles overlap, arg-max vs labels: a numpy count."""
    model = ckpt.model.eval()
    norm = ckpt.metadata["normalization"]
    db, valid = sar_db(scene_sar)
    mean = np.asarray(norm["mean"], np.float32)[:, None, None]
    std = np.asarray(norm["std"], np.float32)[:, None, None]
    image = (db - mean) / std
    image[:, ~valid] = 0.0
    _, h, w = image.shape
    n = len(ckpt.metadata["class_names"])
    total = np.zeros((n, h, w), np.float32)
    count = np.zeros((h, w), np.float32)

    def starts(length):
        return sorted(set(range(0, length - tile + 1, tile - overlap)) | {length - tile})

    for r in starts(h):
        for c in starts(w):
            with torch.no_grad():
                x = torch.from_numpy(np.ascontiguousarray(image[None, :, r : r + tile, c : c + tile]))
                total[:, r : r + tile, c : c + tile] += model(x)[0].numpy()
            count[r : r + tile, c : c + tile] += 1
    pred = (total / count).argmax(axis=0)
    label_path = scene_sar.with_name(scene_sar.name.replace("sar_", "labels_"))
    truth = gdal.Open(str(label_path)).ReadAsArray().astype(np.int64)
    keep = valid & (truth != 255)
    return np.bincount(truth[keep] * n + pred[keep], minlength=n * n).reshape(n, n)


def test_evaluate_matches_an_independent_whole_scene_prediction(trained, tiny_data, tmp_path):
    """Evaluation runs the checkpoint through the plugin's segment_raster and evaluate_rasters; with one tile per
    64 px scene, that must be the checkpoint's own arg-max over the whole scene, counted here with numpy."""
    best = trained[0] / "best.pt"
    scenes = ["scene_00/sar_20260301.tif", "scene_02/sar_20260316.tif"]
    report_path, md_path = tmp_path / "report.json", tmp_path / "report.md"
    argv = ["--checkpoint", str(best), "--data", str(tiny_data), "--scenes", *scenes, "--tile-size", "64"]
    argv += ["--overlap", "8", "--batch-size", "1", "--json", str(report_path), "--markdown", str(md_path)]
    assert evaluate.main(argv) == 0
    report = json.loads(report_path.read_text())

    ckpt = load_checkpoint(best)
    expected = sum(independent_confusion(ckpt, tiny_data / s, 64, 8) for s in scenes)
    assert np.array_equal(np.asarray(report["confusion_matrix"]), expected)
    tp = np.diag(expected).astype(float)
    union = expected.sum(0) + expected.sum(1) - tp
    iou = np.divide(tp, union, out=np.full(len(tp), np.nan), where=union > 0)
    metrics = report["metrics"]
    assert metrics["miou"] == pytest.approx(np.nanmean(iou))
    assert metrics["overall_accuracy"] == pytest.approx(tp.sum() / expected.sum())
    for name, value in zip(CLASS_NAMES, iou):
        got = metrics["per_class"][name]["iou"]
        assert (got is None and np.isnan(value)) or got == pytest.approx(value)
    assert [s["scene"] for s in report["scenes"]] == scenes
    assert "| water |" in md_path.read_text()


# --- Bad input: a message and exit code 2, no traceback, no checkpoint -----------------------------------


def _no_labels(folder):
    write_raster(folder / "sar_a.tif", np.ones((2, 32, 32)), geotransform=GT)


def _undeclared_class(folder):
    write_raster(folder / "sar_a.tif", np.ones((2, 32, 32)), geotransform=GT)
    labels = np.zeros((32, 32), np.uint8)
    labels[5, 7] = 9
    write_raster(folder / "labels_a.tif", labels, geotransform=GT)


def _mismatched_grid(folder):
    write_raster(folder / "sar_a.tif", np.ones((2, 32, 32)), geotransform=GT)
    write_raster(folder / "labels_a.tif", np.zeros((40, 32), np.uint8), geotransform=GT)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_no_labels, "no label raster for sar_a.tif"),
        (_undeclared_class, "label value 9, which is not a declared class"),
        (_mismatched_grid, "must be on the grid of its SAR raster"),
        (lambda folder: None, "no SAR rasters in"),
    ],
    ids=["no-labels", "undeclared-class", "mismatched-grid", "empty-folder"],
)
def test_bad_data_gives_a_message_and_exit_code_2(make, message, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    assert train_segmentation.main(["--data", str(data), "--out", str(tmp_path / "run"), *tiny()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# --- DistributedDataParallel under torchrun ----------------------------------------------------------------


def test_torchrun_two_processes_train_one_epoch(trained, tiny_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd += ["-m", "training.train_segmentation", "--data", str(tiny_data), "--out", str(out), *tiny()]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch 1") == 1  # only rank 0 reports
    assert "cpu x 2" in proc.stdout
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt.epoch == 1
    # The validation confusion matrix is summed over both ranks' shards: every validation pixel, once.
    single = load_checkpoint(trained[0] / "best.pt").metadata["training"]["val_metrics"]
    assert ckpt.metadata["training"]["val_metrics"]["pixels"] == single["pixels"] > 0


# --- Comparison ------------------------------------------------------------------------------------------


def test_compare_prints_one_table_with_both_architectures(tiny_data, tmp_path, capsys):
    kwargs = {"unet": {"width": 4}, "mobilenetv2_unet": {"width_mult": 0.35, "decoder_channels": [16, 16, 8, 8, 8]}}
    argv = ["--data", str(tiny_data), "--archs", "unet,mobilenetv2_unet", "--arch-kwargs", json.dumps(kwargs)]
    argv += ["--epochs", "1", "--batch-size", "4", "--patch-size", "32", "--max-steps-per-epoch", "2"]
    argv += ["--workers", "0", "--bench-runs", "1", "--out", str(tmp_path / "cmp")]
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    table = out[out.index("| model | accuracy |") :].splitlines()
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[2:4])}
    assert set(rows) == {"unet", "mobilenetv2_unet"}
    for arch, cells in rows.items():
        expected = count_parameters(create_model(arch, 2, len(CLASS_NAMES), **kwargs[arch]))
        assert int(cells[3].replace(",", "")) == expected
        assert 0.0 <= float(cells[1]) <= 1.0 and 0.0 <= float(cells[2]) <= 1.0
        assert float(cells[4]) > 0 and float(cells[5]) > 0
        assert (tmp_path / "cmp" / arch / "model.onnx").is_file()


def test_frozen_encoder_epoch_leaves_the_seeded_encoder_untouched(tiny_data, tmp_path):
    out = tmp_path / "frozen"
    argv = ["--data", str(tiny_data), "--out", str(out), "--freeze-encoder-epochs", "1", "--seed", "3", *tiny()]
    assert train_segmentation.main(argv) == 0
    trained_state = load_checkpoint(out / "last.pt").model.state_dict()
    torch.manual_seed(3)  # the same seed gives the same initial weights
    initial = create_model("unet", 2, len(CLASS_NAMES), width=4).state_dict()
    encoder = [k for k in initial if k.startswith("encoder.")]
    decoder = [k for k in initial if k.startswith("decoder.") and k.endswith("weight")]
    assert encoder and decoder
    assert all(torch.equal(trained_state[k], initial[k]) for k in encoder)  # weights and BatchNorm statistics
    assert not all(torch.equal(trained_state[k], initial[k]) for k in decoder)
