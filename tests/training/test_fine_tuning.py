"""Fine-tuning: ``--init`` starts from a checkpoint's weights and statistics, ``--data`` reads the output folder of
the plugin's extract_patches as it is, and fine-tuning on a few labelled patches of an unfamiliar domain lifts
the mIoU on another scene of that domain."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal
from rasters import write_raster

from sar_seg_plugin.core.patches import extract_patches
from training import evaluate, synthetic, train_segmentation
from training.checkpoint import BUNDLED_SEGMENTATION, load_checkpoint, save_checkpoint
from training.data import PatchWindow, SegmentationPatches, find_scenes, make_synthetic_dataset
from training.domains import BASE_LOOKS
from training.models import create_model
from training.patch_folders import ExtractedPatches, open_patch_folder
from training.synthetic import BUILT_UP, CLASS_COLORS, CLASS_NAMES, CLASS_SIGMA0_DB, FOREST, World

START_MEAN, START_STD = (-3.0, -7.0), (2.0, 3.0)  # far from any synthetic scene's dB statistics


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_start_checkpoint(path, bands=("VV", "VH"), classes=CLASS_NAMES, seed=123, width=4):
    """A segmentation checkpoint as train_segmentation writes it, with random weights (of another seed than the
    trainer's --seed 0 gives a fresh model) and odd statistics."""
    torch.manual_seed(seed)
    kwargs = {"in_channels": len(bands), "classes": len(classes), "width": width}
    model = create_model("unet", **kwargs)
    metadata = {
        "name": "start",
        "description": "a starting point",
        "class_names": list(classes),
        "class_colors": list(CLASS_COLORS[: len(classes)]),
        "input_bands": list(bands),
        "input_units": ["dB"] * len(bands),
        "normalization": {"mean": list(START_MEAN), "std": list(START_STD), "scale": None},
        "tile_size": 32,
        "tile_overlap": 8,
        "pixel_size_m": 10.0,
        "output_kind": "classes",
        "training": {"floor_db": -50.0},
    }
    save_checkpoint(path, model, arch="unet", arch_kwargs=kwargs, task="segmentation", metadata=metadata, epoch=3)
    return Path(path)


def run_options(epochs=1, steps=2):
    return ["--epochs", str(epochs), "--batch-size", "4", "--max-steps-per-epoch", str(steps), "--workers", "0",
            "--tile-size", "32", "--tile-overlap", "8"]  # fmt: skip


def index_counts(folder):
    with open(Path(folder) / "index.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {split: sum(r["split"] == split for r in rows) for split in ("train", "val")}, rows


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """One 128 px synthetic scene (2 dates; the first is cut into patches)."""
    root = tmp_path_factory.mktemp("scene")
    synthetic.write_series(synthetic.generate_series(size=128, days=2, seed=3, n_communes=4), root)
    return root / "sar_20260301.tif", root / "labels_20260301.tif"


def extract(scene, out, fmt, image=None):
    sar, labels = scene
    return extract_patches(str(image or sar), str(out), size=32, stride=32, label_path=str(labels),
                           val_fraction=0.25, split_block=64, fmt=fmt, seed=1)  # fmt: skip


@pytest.fixture(scope="module")
def patch_folders(scene, tmp_path_factory):
    root = tmp_path_factory.mktemp("patches")
    for fmt in ("tif", "npz"):
        extract(scene, root / fmt, fmt)
    return root


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    return write_start_checkpoint(tmp_path_factory.mktemp("start") / "start.pt")


# --- --init --------------------------------------------------------------------------------------------------


def test_init_loads_exactly_the_checkpoint_weights_and_keeps_its_statistics(start, patch_folders, tmp_path):
    out = tmp_path / "run"
    argv = ["--data", str(patch_folders / "tif"), "--out", str(out), "--init", str(start), "--lr", "1e-9"]
    assert train_segmentation.main([*argv, *run_options(steps=1)]) == 0
    before, after = load_checkpoint(start), load_checkpoint(out / "last.pt")
    assert (after.arch, after.arch_kwargs) == ("unet", before.arch_kwargs)  # width 4 with no --arch-kwargs
    trained = {k: v.detach() for k, v in after.model.named_parameters()}
    params = {k: v.detach() for k, v in before.model.named_parameters()}
    assert params.keys() == trained.keys()
    # One optimiser step at lr 1e-9 moves no weight by 1e-6; any other initialisation would differ by far more.
    assert max(float((trained[k] - v).abs().max()) for k, v in params.items()) < 1e-6
    torch.manual_seed(0)  # what the trainer (--seed 0) would have started from without --init
    fresh = {k: v.detach() for k, v in create_model("unet", **before.arch_kwargs).named_parameters()}
    assert max(float((fresh[k] - v).abs().max()) for k, v in params.items()) > 1e-2
    meta = after.metadata
    assert meta["normalization"]["mean"] == list(START_MEAN) and meta["normalization"]["std"] == list(START_STD)
    digest = hashlib.sha256(start.read_bytes()).hexdigest()
    assert meta["training"]["init"] == {"path": str(start.resolve()), "sha256": digest}
    assert "fine-tuned from start.pt" in meta["description"]


def test_without_init_weights_are_fresh_and_statistics_come_from_the_patches(start, patch_folders, tmp_path):
    out = tmp_path / "run"
    argv = ["--data", str(patch_folders / "tif"), "--out", str(out), "--arch-kwargs", '{"width": 4}', "--lr", "1e-9"]
    assert train_segmentation.main([*argv, *run_options(steps=1)]) == 0
    after = load_checkpoint(out / "last.pt")
    assert after.metadata["training"]["init"] is None
    params = {k: v.detach() for k, v in load_checkpoint(start).model.named_parameters()}
    assert max(float((p.detach() - params[k]).abs().max()) for k, p in after.model.named_parameters()) > 1e-2
    # dB mean / std over every valid pixel of the training patches, computed here with plain GDAL and numpy.
    _, rows = index_counts(patch_folders / "tif")
    pixels = []
    for row in rows:
        if row["split"] == "train":
            data = gdal.Open(str(patch_folders / "tif" / row["image"])).ReadAsArray().astype(np.float64)
            valid = (data != 0).all(axis=0)
            pixels.append(10 * np.log10(np.maximum(data[:, valid], 1e-5)))
    pixels = np.concatenate(pixels, axis=1)
    norm = after.metadata["normalization"]
    assert norm["mean"] == pytest.approx(pixels.mean(axis=1), abs=1e-3)
    assert norm["std"] == pytest.approx(pixels.std(axis=1), abs=1e-3)


def _other_classes(data, tmp_path):
    (data / "classes.json").write_text(json.dumps({"class_names": ["water", "land"]}))
    return []


def _other_bands(data, tmp_path):
    return ["--init", str(write_start_checkpoint(tmp_path / "hh.pt", bands=("HH", "HV")))]


@pytest.mark.parametrize(
    ("make", "extra", "messages"),
    [
        (_other_classes, [], ["classes are water, land", "water, vegetation, forest, built-up, bare soil",
                              "classes.json as"]),
        (_other_bands, [], ["bands are VV, VH", "takes HH, HV"]),
        (None, ["--arch", "mobilenetv2_unet"], ["--arch mobilenetv2_unet disagrees", "a unet model"]),
        (None, ["--arch-kwargs", '{"width": 8}'], ['"width": 4', "leave --arch-kwargs out"]),
        (None, ["--domain-randomisation"], ["carry their sensor's speckle", "Leave --domain-randomisation out"]),
    ],
    ids=["classes", "bands", "arch", "arch-kwargs", "domain-randomisation-on-patches"],
)  # fmt: skip
def test_init_refuses_what_the_checkpoint_cannot_take_with_exit_code_2(
    make, extra, messages, start, patch_folders, tmp_path, capsys
):
    data = tmp_path / "data"
    shutil.copytree(patch_folders / "tif", data)
    init = make(data, tmp_path) if make else []
    argv = ["--data", str(data), "--out", str(tmp_path / "run"), "--init", str(start), *init, *extra]
    assert train_segmentation.main([*argv, *run_options()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for message in messages:
        assert message in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_init_bundled_names_the_bundled_checkpoint(patch_folders, tmp_path, capsys):
    argv = ["--data", str(patch_folders / "tif"), "--out", str(tmp_path / "run"), "--init", "bundled"]
    code = train_segmentation.main([*argv, *run_options(steps=1), "--lr", "1e-9"])
    if BUNDLED_SEGMENTATION.is_file():
        assert code == 0
        meta = load_checkpoint(tmp_path / "run" / "last.pt").metadata
        assert meta["training"]["init"]["path"] == str(BUNDLED_SEGMENTATION.resolve())
    else:
        assert code == 2
        assert f"--init bundled: {BUNDLED_SEGMENTATION} does not exist" in capsys.readouterr().err


def test_resume_wins_over_init_and_refuses_another_start(start, patch_folders, tmp_path, capsys):
    out = tmp_path / "run"
    data = ["--data", str(patch_folders / "npz"), "--out", str(out)]
    assert train_segmentation.main([*data, "--init", str(start), *run_options(epochs=1)]) == 0
    assert train_segmentation.main([*data, "--init", str(start), "--resume", *run_options(epochs=2)]) == 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.epoch == 2 and ckpt.metadata["training"]["init"]["path"] == str(start.resolve())
    assert ckpt.metadata["normalization"]["mean"] == list(START_MEAN)
    other = write_start_checkpoint(tmp_path / "other.pt", seed=7)
    capsys.readouterr()
    assert train_segmentation.main([*data, "--init", str(other), "--resume", *run_options(epochs=3)]) == 2
    assert f"was started from {start.resolve()}, not from {other}" in capsys.readouterr().err
    assert load_checkpoint(out / "last.pt").epoch == 2


def test_init_works_with_domain_randomisation_on_scenes(start, tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, n_scenes=2, size=64, seed=2, days=2, looks=BASE_LOOKS, random_worlds=True)
    out = tmp_path / "run"
    argv = ["--data", str(data), "--out", str(out), "--init", str(start), "--patch-size", "32"]
    assert train_segmentation.main([*argv, "--domain-randomisation", *run_options()]) == 0
    meta = load_checkpoint(out / "last.pt").metadata
    assert meta["training"]["domain_randomisation"] is True
    assert meta["normalization"]["mean"] == list(START_MEAN)


# --- extract_patches output folders ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tif", "npz"])
def test_an_extract_patches_folder_trains_on_its_own_split(fmt, patch_folders, tmp_path):
    folder = patch_folders / fmt
    counts, _ = index_counts(folder)
    out = tmp_path / "run"
    argv = ["--data", str(folder), "--out", str(out), "--arch-kwargs", '{"width": 4}', "--patch-size", "64"]
    assert train_segmentation.main([*argv, *run_options()]) == 0
    training = load_checkpoint(out / "last.pt").metadata["training"]
    assert (training["train_patches"], training["val_patches"]) == (counts["train"], counts["val"])
    assert training["split"] == {"kind": "extract_patches", "layout": fmt, **counts}
    assert training["patch_size"] == 32  # the patches as extracted, not --patch-size
    assert training["val_metrics"]["pixels"] > 0
    # Every validation pixel (labelled and with data) is scored once: the val split's own patches, counted here.
    assert training["val_metrics"]["pixels"] == labelled_pixels(folder, fmt, "val")


def labelled_pixels(folder, fmt, split):
    """Pixels with a label and data in every band in a split of an extract_patches folder (plain GDAL / numpy)."""
    if fmt == "npz":
        with np.load(folder / f"{split}.npz") as npz:
            images, labels = npz["images"], npz["labels"]
    else:
        _, rows = index_counts(folder)
        rows = [r for r in rows if r["split"] == split]
        images = np.stack([gdal.Open(str(folder / r["image"])).ReadAsArray() for r in rows])
        labels = np.stack([gdal.Open(str(folder / r["label"])).ReadAsArray() for r in rows])
    return int(((labels != 255) & (images != 0).all(axis=1)).sum())


def training_stats():
    from training.data import NormStats

    return NormStats((-10.0, -16.0), (4.0, 5.0))


@pytest.mark.parametrize("augment", [False, True])
def test_patch_items_equal_the_scene_items_of_the_same_windows(augment, scene, patch_folders):
    """Same dB conversion, nodata, normalisation and augmentation as SegmentationPatches over the source scene."""
    stats = training_stats()
    _, rows = index_counts(patch_folders / "tif")
    source = find_scenes(scene[0].parent)[0]
    assert source.image == scene[0]
    for fmt in ("tif", "npz"):
        folder = open_patch_folder(patch_folders / fmt)
        for split in ("train", "val"):
            patches = ExtractedPatches(folder, split, stats, 5, augment=augment)
            whole = SegmentationPatches([source], patch_size=32, stats=stats, augment=augment)
            whole.windows = [PatchWindow(0, int(r["row"]), int(r["col"])) for r in rows if r["split"] == split]
            assert len(patches) == len(whole.windows) > 0
            for i in range(len(patches)):
                torch.manual_seed(i)
                image, label = patches[i]
                torch.manual_seed(i)
                expected_image, expected_label = whole[i]
                assert torch.equal(image, expected_image) and torch.equal(label, expected_label)


@pytest.mark.parametrize("fmt", ["tif", "npz"])
@pytest.mark.parametrize("units", ["dB", ""], ids=["unit-dB", "no-unit"])
def test_patches_in_db_are_read_as_db_not_converted_twice(fmt, units, scene, patch_folders, tmp_path):
    linear = gdal.Open(str(scene[0]))
    data = linear.ReadAsArray().astype(np.float32)
    valid = (data != 0).all(axis=0)
    db = np.where(valid, 10 * np.log10(np.maximum(data, 1e-10)), -9999.0).astype(np.float32)
    image = write_raster(tmp_path / "sar_db.tif", db, nodata=-9999.0, geotransform=linear.GetGeoTransform(),
                         descriptions=["VV", "VH"], units=[units, units])  # fmt: skip
    extract(scene, tmp_path / "db", fmt, image=image)
    folder = open_patch_folder(tmp_path / "db")
    assert [s.scale for s in folder.scales] == ["dB", "dB"]
    assert all(s.source == ("unit" if units else "values") for s in folder.scales)
    reference = open_patch_folder(patch_folders / fmt)
    stats = training_stats()
    for split in ("train", "val"):
        from_db, from_linear = ExtractedPatches(folder, split, stats, 5), ExtractedPatches(reference, split, stats, 5)
        assert len(from_db) == len(from_linear)
        for i in range(len(from_db)):
            (a, la), (b, lb) = from_db[i], from_linear[i]
            assert torch.equal(la, lb)
            assert float((a - b).abs().max()) < 1e-4


def test_an_npz_without_band_metadata_is_read_by_its_values(patch_folders, tmp_path):
    """Archives of extract_patches before it stored band names and units: VV, VH in order, scale by the values."""
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(patch_folders / "npz" / "index.csv", folder)
    kept = {"images.npy", "labels.npy", "positions.npy", "label_nodata.npy"}
    for split in ("train", "val"):
        source, target = patch_folders / "npz" / f"{split}.npz", folder / f"{split}.npz"
        with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
            for name in kept:
                dst.writestr(name, src.read(name))
    old, new = open_patch_folder(folder), open_patch_folder(patch_folders / "npz")
    assert old.descriptions == ("", "") and new.descriptions == ("VV", "VH")
    assert [s.source for s in old.scales] == ["values", "values"] and [s.scale for s in old.scales] == ["linear"] * 2
    stats = training_stats()
    a, b = ExtractedPatches(old, "train", stats, 5), ExtractedPatches(new, "train", stats, 5)
    assert all(torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1]) for i in range(len(a)))


def _unlabelled(scene, out):
    extract_patches(str(scene[0]), str(out), size=32, stride=32, val_fraction=0.25, split_block=64, fmt="tif")


def _undeclared(scene, out):
    extract(scene, out, "tif")
    (out / "classes.json").write_text(json.dumps({"class_names": ["water", "vegetation", "forest"]}))


@pytest.mark.parametrize(
    ("make", "message"),
    [(_unlabelled, "were extracted without a label raster"), (_undeclared, "which is not a declared class")],
    ids=["no-labels", "undeclared-class"],
)
def test_bad_patch_folders_give_a_message_and_exit_code_2(make, message, scene, tmp_path, capsys):
    make(scene, tmp_path / "data")
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--arch-kwargs", '{"width": 4}']
    assert train_segmentation.main([*argv, *run_options()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


# --- Fine-tuning lifts the mIoU on an unfamiliar domain -------------------------------------------------------------

# Forest and built-up swap their backscatter and lose their texture: a default-world model calls towns forest and
# forests towns, and only the labels of the new domain can tell it otherwise.
_SIGMA0 = dict(CLASS_SIGMA0_DB)
_SIGMA0[FOREST], _SIGMA0[BUILT_UP] = CLASS_SIGMA0_DB[BUILT_UP], CLASS_SIGMA0_DB[FOREST]
ODD_WORLD = World(
    sigma0_db=tuple(_SIGMA0[c] for c in range(len(CLASS_NAMES))),
    forest_texture_nu=None,
    urban_texture_nu=None,
    urban_bright_fraction=0.0,
)
MIN_GAIN = 0.15  # measured: +0.23 from a quick default-world model, +0.37 from a 2-epoch domain-randomised one


def miou(checkpoint, data, tmp_path):
    report = tmp_path / f"report_{time.monotonic_ns()}.json"
    argv = ["--checkpoint", str(checkpoint), "--data", str(data), "--scenes", "sar_20260301.tif", "--json", str(report)]
    assert evaluate.main([*argv, "--tile-size", "128", "--overlap", "16", "--device", "cpu"]) == 0
    return json.loads(report.read_text())["metrics"]["miou"]


def quick_default_world_model(tmp_path):
    """A small U-Net trained briefly on three default-world areas (the stand-in for the bundled checkpoint)."""
    data, out = tmp_path / "default_world", tmp_path / "start"
    make_synthetic_dataset(data, n_scenes=3, size=256, seed=5, days=2)
    argv = ["--data", str(data), "--out", str(out), "--arch-kwargs", '{"width": 8}', "--epochs", "20"]
    argv += ["--batch-size", "8", "--patch-size", "64", "--max-steps-per-epoch", "10", "--workers", "0"]
    argv += ["--lr", "2e-3", "--patience", "0", "--tile-size", "128", "--tile-overlap", "16"]
    assert train_segmentation.main(argv) == 0
    return out / "best.pt"


@pytest.mark.slow
def test_fine_tuning_on_one_scene_of_an_unfamiliar_domain_lifts_miou_on_another(tmp_path):
    start = BUNDLED_SEGMENTATION if BUNDLED_SEGMENTATION.is_file() else quick_default_world_model(tmp_path)
    scene_a, scene_b = tmp_path / "odd_a", tmp_path / "odd_b"
    for folder, seed in ((scene_a, 101), (scene_b, 202)):
        series = synthetic.generate_series(size=256, days=2, seed=seed, n_communes=4, world=ODD_WORLD)
        synthetic.write_series(series, folder)
    before = miou(start, scene_b, tmp_path)

    # The analyst's loop: label patches of scene A (extract_patches), fine-tune from the start model on them only.
    patches = tmp_path / "patches"
    extract_patches(str(scene_a / "sar_20260301.tif"), str(patches), size=64, stride=48,
                    label_path=str(scene_a / "labels_20260301.tif"), val_fraction=0.2, seed=0)  # fmt: skip
    out = tmp_path / "fine_tuned"
    argv = ["--data", str(patches), "--out", str(out), "--init", str(start), "--freeze-encoder-epochs", "2"]
    argv += ["--epochs", "30", "--batch-size", "8", "--max-steps-per-epoch", "8", "--lr", "2e-3", "--workers", "0"]
    assert train_segmentation.main([*argv, "--patience", "0"]) == 0
    after = miou(out / "last.pt", scene_b, tmp_path)
    print(f"mIoU on scene B of the unfamiliar domain: {before:.3f} from {start.name}, {after:.3f} fine-tuned")
    assert after >= before + MIN_GAIN
