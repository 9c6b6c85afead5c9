"""Checkpoints (round trip, resume state, atomic writes, errors), encoders, and ONNX export checked by the plugin."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from sar_seg_plugin.models.metadata import PREFIX, ModelMetadata, Normalization
from sar_seg_plugin.models.registry import load_model
from training import checkpoint as checkpoint_module
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.export import (
    ExportError,
    export_imagenet_encoder,
    export_model,
    imagenet_encoder_metadata,
    main,
)
from training.models import create_model
from training.models.encoder import SarEncoder, create_encoder, efficientnet_lite0_encoder, encoder_from_segmentation

ARCH_KWARGS = {"in_channels": 2, "classes": 3, "width": 4}
CLASSES = ("water", "forest", "urban")
COLOURS = ("#1f78b4", "#33a02c", "#e31a1c")
STORED_METADATA = {
    "name": "tiny unet",
    "description": "test model",
    "input_bands": ["VV", "VH"],
    "input_units": ["dB", "dB"],
    "normalization": {"mean": [-12.0, -19.0], "std": [5.0, 4.0], "scale": None},
    "tile_size": 64,
    "tile_overlap": 16,
    "output_kind": "classes",
    "class_names": list(CLASSES),
    "class_colors": list(COLOURS),
    "pixel_size_m": 10.0,
    "training": {"data": "synthetic", "seed": 3},
}


def segmentation_metadata(**changes: object) -> ModelMetadata:
    values = {
        "task": "segmentation",
        "name": "tiny unet",
        "description": "2 SAR bands to 3 classes",
        "input_bands": ("VV", "VH"),
        "input_units": ("dB", "dB"),
        "normalization": Normalization(mean=(-12.0, -19.0), std=(5.0, 4.0)),
        "tile_size": 64,
        "tile_overlap": 16,
        "output_kind": "classes",
        "class_names": CLASSES,
        "class_colors": COLOURS,
        "pixel_size_m": 10.0,
        "training": {"data": "synthetic", "metrics": {"miou": 0.42}, "arch": "unet"},
    }
    values.update(changes)
    return ModelMetadata(**values)


def encoder_metadata(embedding_size: int, bands: int = 2) -> ModelMetadata:
    return ModelMetadata(
        task="encoder",
        name="tiny sar encoder",
        input_bands=("VV", "VH", "ratio")[:bands],
        input_units=("dB",) * bands,
        normalization=Normalization(),
        tile_size=64,
        tile_overlap=0,
        output_kind="continuous",
        embedding_size=embedding_size,
    )


def warmed(model: nn.Module, in_channels: int = 2) -> nn.Module:
    """Non-trivial BatchNorm statistics, then eval mode."""
    model.train()
    with torch.no_grad():
        model(torch.randn(2, in_channels, 32, 32) * 2 + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def trained_unet() -> nn.Module:
    torch.manual_seed(0)
    return warmed(create_model("unet", **ARCH_KWARGS))


@pytest.fixture()
def unet(trained_unet: nn.Module) -> nn.Module:
    """A fresh copy per test (some tests take optimizer steps)."""
    return copy.deepcopy(trained_unet)


def save_unet(path, model: nn.Module, **extra: object) -> None:
    save_checkpoint(
        path,
        model,
        arch="unet",
        arch_kwargs=ARCH_KWARGS,
        task="segmentation",
        metadata=STORED_METADATA,
        epoch=extra.pop("epoch", 4),
        **extra,
    )


def ort_run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def torch_run(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


# --- checkpoints --------------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_outputs_and_resume_state(tmp_path, unet):
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    unet.train()
    loss = unet(torch.randn(2, 2, 16, 16)).square().mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    unet.eval()
    history = [{"epoch": 0, "loss": np.float64(0.7), "miou": np.float32(0.31)}, {"epoch": 1, "loss": 0.5}]
    path = tmp_path / "run" / "ckpt.pt"
    save_unet(
        path, unet, epoch=1, optimizer=optimizer, scheduler=scheduler, best_metric=np.float64(0.31), history=history
    )

    ckpt = load_checkpoint(path)
    x = torch.randn(2, 2, 64, 96)
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), unet(x))
    assert not ckpt.model.training
    assert (ckpt.arch, ckpt.arch_kwargs, ckpt.task, ckpt.epoch) == ("unet", ARCH_KWARGS, "segmentation", 1)
    assert ckpt.metadata == STORED_METADATA
    assert ckpt.best_metric == pytest.approx(0.31)
    assert ckpt.history[0]["loss"] == pytest.approx(0.7) and type(ckpt.history[0]["miou"]) is float
    assert ckpt.optimizer_state is not None and ckpt.scheduler_state is not None

    fresh_optimizer = torch.optim.AdamW(ckpt.model.parameters(), lr=1e-3)
    fresh_scheduler = torch.optim.lr_scheduler.StepLR(fresh_optimizer, step_size=2, gamma=0.5)
    assert ckpt.restore(fresh_optimizer, fresh_scheduler) == 2
    assert fresh_scheduler.last_epoch == scheduler.last_epoch == 1
    saved, restored = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k]["exp_avg"], restored[k]["exp_avg"]) for k in saved)


def test_checkpoint_without_resume_state(tmp_path, unet):
    save_unet(tmp_path / "c.pt", unet)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt.optimizer_state is None and ckpt.scheduler_state is None and ckpt.history == []
    with pytest.raises(CheckpointError, match="no optimizer state"):
        ckpt.restore(torch.optim.SGD(ckpt.model.parameters(), lr=0.1))


def test_checkpoint_write_is_atomic(tmp_path, unet, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_unet(path, unet, epoch=1)
    before = path.read_bytes()

    def failing_save(obj: object, handle) -> None:
        handle.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_unet(path, unet, epoch=2)
    with pytest.raises(OSError, match="disk full"):
        save_unet(tmp_path / "new.pt", unet, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert load_checkpoint(path).epoch == 1


def test_checkpoint_refuses_values_it_cannot_store(tmp_path, unet):
    with pytest.raises(CheckpointError, match="history"):
        save_unet(tmp_path / "c.pt", unet, history=[{"fn": lambda: 0}])
    with pytest.raises(CheckpointError, match="unknown architecture"):
        save_checkpoint(tmp_path / "c.pt", unet, arch="nope", arch_kwargs={}, task="segmentation", metadata={}, epoch=0)
    with pytest.raises(CheckpointError, match="unknown metadata field"):
        save_checkpoint(
            tmp_path / "c.pt",
            unet,
            arch="unet",
            arch_kwargs=ARCH_KWARGS,
            task="segmentation",
            metadata={"x": 1},
            epoch=0,
        )
    assert list(tmp_path.iterdir()) == []


def test_load_checkpoint_errors(tmp_path, unet):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(garbage)
    good = tmp_path / "good.pt"
    save_unet(good, unet)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    plain = tmp_path / "plain.pt"
    torch.save(unet.state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a SAR Seg checkpoint"):
        load_checkpoint(plain)
    payload = torch.load(good, weights_only=True)
    payload["arch"] = "resnet9000"
    torch.save(payload, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet9000'"):
        load_checkpoint(tmp_path / "unknown.pt")
    payload["arch"], payload["arch_kwargs"] = "unet", {**ARCH_KWARGS, "width": 8}
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit architecture 'unet'"):
        load_checkpoint(tmp_path / "mismatch.pt")


# --- segmentation export ----------------------------------------------------------------------------------------


def test_export_unet_round_trip_through_the_plugin(tmp_path, unet):
    ckpt_path = tmp_path / "ckpt.pt"
    save_unet(ckpt_path, unet)
    meta = segmentation_metadata()
    out = export_model(ckpt_path, tmp_path / "models" / "tiny.onnx", meta)
    assert out == tmp_path / "models" / "tiny.onnx"
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.onnx"]

    loaded = load_model(str(out), device="cpu")
    # recorded: the graph takes any multiple of the U-Net's 16 (the plugin cuts the last tiles to what is left)
    assert loaded.metadata == replace(meta, training={**meta.training, "size_multiple": 16})
    assert loaded.metadata.size_multiple == 16
    assert (loaded.input_names, loaded.output_names) == (["input"], ["logits"])
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props[PREFIX + "task"] == '"segmentation"'
    assert props[PREFIX + "input_bands"] == '["VV", "VH"]'
    assert props[PREFIX + "class_names"] == '["water", "forest", "urban"]'

    rng = np.random.default_rng(1)
    for shape in ((1, 2, 64, 64), (2, 2, 96, 128), (1, 2, 48, 16)):
        x = rng.standard_normal(shape).astype(np.float32)
        got, ref = ort_run(out, x), torch_run(unet, x)
        assert got.shape == (shape[0], 3, *shape[2:])
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (
            {"input_bands": ("VV", "VH", "ratio"), "input_units": ("dB",) * 3, "normalization": Normalization()},
            "input_bands",
        ),
        ({"class_names": ("water", "forest"), "class_colors": COLOURS[:2]}, "class_names"),
        ({"tile_size": 48, "tile_overlap": 0}, "tile_size"),
    ],
)
def test_export_refuses_metadata_inconsistent_with_the_graph(tmp_path, unet, changes, field):
    meta = segmentation_metadata(**changes)
    if field == "tile_size":  # a 32-multiple architecture cannot run 48 px tiles
        torch.manual_seed(0)
        unet = warmed(create_model("vgg16_unet", 2, 3, width=4))
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=f"refusing to write .*{field}"):
        export_model(unet, out, meta)
    assert list(tmp_path.iterdir()) == []


def test_export_refusal_keeps_an_older_file(tmp_path, unet):
    out = export_model(unet, tmp_path / "model.onnx", segmentation_metadata())
    before = out.read_bytes()
    bad = segmentation_metadata(input_bands=("HH",), input_units=("dB",), normalization=Normalization())
    with pytest.raises(ExportError, match="input_bands"):
        export_model(unet, out, bad)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


# --- encoders ---------------------------------------------------------------------------------------------------


def test_sar_encoder_embeddings_are_unit_length_for_any_size():
    torch.manual_seed(0)
    model = warmed(SarEncoder(2, embedding_size=24, width=4))
    for h, w in ((64, 64), (37, 50), (8, 8)):
        z = model(torch.randn(3, 2, h, w))
        assert z.shape == (3, 24)
        torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    assert create_encoder("sar_encoder", in_channels=2, embedding_size=8).embedding_size == 8


def test_sar_encoder_onnx_parity_at_two_sizes(tmp_path):
    torch.manual_seed(0)
    model = warmed(SarEncoder(2, embedding_size=24, width=4))
    meta = encoder_metadata(24)
    out = export_model(model, tmp_path / "enc.onnx", meta)
    loaded = load_model(str(out), device="cpu")
    assert loaded.metadata == meta and loaded.output_names == ["embedding"]
    rng = np.random.default_rng(2)
    for shape in ((1, 2, 64, 64), (3, 2, 48, 80)):
        x = rng.standard_normal(shape).astype(np.float32)
        got = loaded.run(x)
        assert got.shape == (shape[0], 24)
        np.testing.assert_allclose(got, torch_run(model, x), atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_encoder_export_refuses_wrong_embedding_size(tmp_path):
    model = warmed(SarEncoder(2, embedding_size=24, width=4))
    with pytest.raises(ExportError, match="embedding_size"):
        export_model(model, tmp_path / "enc.onnx", encoder_metadata(32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("arch", "kwargs", "size"), [("unet", {"width": 4}, 64), ("deeplabv3plus", {"width": 4}, 32)])
def test_encoder_from_segmentation(arch, kwargs, size):
    torch.manual_seed(0)
    seg = warmed(create_model(arch, 2, 3, **kwargs))
    embedder = encoder_from_segmentation(seg)
    z = embedder(torch.randn(2, 2, 64, 96))
    assert z.shape == (2, size) and embedder.embedding_size == size
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    # A copy: the segmentation network is untouched and still works.
    assert seg(torch.randn(1, 2, 64, 64)).shape == (1, 3, 64, 64)
    assert embedder.encoder is not seg.encoder


@pytest.mark.slow
def test_imagenet_encoder_export_round_trip(tmp_path):
    out = export_imagenet_encoder(tmp_path / "effnet_lite0_encoder.onnx")
    loaded = load_model(str(out), device="cpu")
    assert loaded.metadata == imagenet_encoder_metadata()
    meta = loaded.metadata
    assert (meta.task, meta.input_bands, meta.input_units, meta.embedding_size) == (
        "encoder",
        ("R", "G", "B"),
        ("uint8",) * 3,
        1280,
    )
    reference = efficientnet_lite0_encoder(3)
    rng = np.random.default_rng(3)
    for shape in ((1, 3, 224, 224), (2, 3, 96, 128)):
        rgb = rng.integers(0, 256, size=shape).astype(np.float32)
        x = meta.normalization.apply(rgb)
        got = loaded.run(x)
        assert got.shape == (shape[0], 1280)
        np.testing.assert_allclose(got, torch_run(reference, x), atol=1e-4, rtol=0)


# --- CLI ----------------------------------------------------------------------------------------------------------


def test_cli_exports_a_saved_checkpoint(tmp_path, unet, capsys):
    ckpt_path = tmp_path / "ckpt.pt"
    save_unet(ckpt_path, unet, best_metric=0.5)
    out = tmp_path / "model.onnx"
    args = ["--checkpoint", str(ckpt_path), "--out", str(out), "--name", "cli model", "--tile", "128"]
    assert main([*args, "--overlap", "32"]) == 0
    assert "wrote" in capsys.readouterr().out
    meta = load_model(str(out), device="cpu").metadata
    assert (meta.name, meta.tile_size, meta.tile_overlap, meta.task) == ("cli model", 128, 32, "segmentation")
    assert meta.input_bands == ("VV", "VH") and meta.class_names == CLASSES
    assert meta.training == {
        "data": "synthetic",
        "seed": 3,
        "arch": "unet",
        "arch_kwargs": ARCH_KWARGS,
        "epoch": 4,
        "best_metric": 0.5,
        "size_multiple": 16,
    }


def test_cli_exports_an_encoder_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = warmed(SarEncoder(2, embedding_size=16, width=4))
    metadata = {k: v for k, v in STORED_METADATA.items() if k not in ("class_names", "class_colors")}
    metadata["output_kind"] = "continuous"
    save_checkpoint(
        tmp_path / "enc.pt",
        model,
        arch="sar_encoder",
        arch_kwargs={"in_channels": 2, "embedding_size": 16, "width": 4},
        task="encoder",
        metadata=metadata,
        epoch=0,
    )
    assert main(["--checkpoint", str(tmp_path / "enc.pt"), "--out", str(tmp_path / "enc.onnx")]) == 0
    assert load_model(str(tmp_path / "enc.onnx"), device="cpu").metadata.embedding_size == 16


def test_cli_reports_errors(tmp_path, unet, capsys):
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "does not exist" in capsys.readouterr().err
    save_unet(tmp_path / "c.pt", unet)
    assert main(["--checkpoint", str(tmp_path / "c.pt"), "--out", str(tmp_path / "m.onnx"), "--tile", "50"]) == 1
    assert "tile_size" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "c.pt"), "--out", str(tmp_path / "c.pt")]) == 1
    assert "is the checkpoint itself" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
