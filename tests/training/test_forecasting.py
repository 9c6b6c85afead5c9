"""Forecasters: shapes, gradients, persistence metrics, skill, ONNX step-graph parity, CLI, a training sanity check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from training import forecasting as fc  # noqa: E402
from training import train_forecaster  # noqa: E402


def _small(kind: str, channels: int = 5, input_kind: str = "classes") -> fc.StepForecaster:
    torch.manual_seed(0)
    hidden = 16 if kind == "convlstm" else 32
    model = fc.build_forecaster(kind, channels, input_kind, hidden=hidden, layers=2)
    # Non-zero heads so the parity check exercises every weight (heads start at zero = persistence).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("kind", fc.KINDS)
@pytest.mark.parametrize("input_kind,channels", [("classes", 5), ("continuous", 2), ("continuous", 1)])
def test_forward_shapes(kind, input_kind, channels):
    model = _small(kind, channels, input_kind)
    x = torch.rand(2, 4, channels, 32, 32)
    assert model(x).shape == (2, 3, channels, 32, 32)
    assert model(x, horizons=5).shape == (2, 5, channels, 32, 32)


@pytest.mark.parametrize("kind", fc.KINDS)
def test_backward_finite_grads(kind):
    model = _small(kind).train()
    data = fc.make_windows([1], size=32, days=7, sequence_length=4)
    raw = model(torch.from_numpy(data.inputs))
    loss = fc.forecast_loss(model, raw, torch.from_numpy(data.targets), torch.from_numpy(data.valid))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_untrained_model_is_persistence():
    data = fc.make_windows([3], size=32, days=7)
    model = fc.build_forecaster("convlstm", 5)
    pred = fc.predict(model, data.inputs)
    np.testing.assert_array_equal(pred.argmax(2), fc.persistence_forecast(data.inputs).argmax(2))


def test_windows_from_generator():
    data = fc.make_windows([0, 1], size=32, days=10, sequence_length=4)
    assert data.inputs.shape == (2 * 4, 4, 5, 32, 32)
    assert data.targets.shape == (8, 3, 32, 32)
    assert data.targets.dtype == np.uint8
    # Input one-hot sums to 1 on valid pixels, 0 on nodata.
    sums = data.inputs.sum(2)
    assert set(np.unique(sums)) <= {0.0, 1.0}
    cont = fc.make_windows([0], size=32, days=7, input_kind="continuous")
    assert cont.inputs.shape == (1, 4, 2, 32, 32)
    assert cont.targets.shape == (1, 3, 2, 32, 32)
    assert np.isfinite(cont.inputs).all()


def test_persistence_metrics_hand_example():
    # Two input dates of a 2x2 map, then three true future maps; persistence repeats the last input map.
    last = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    seq = fc.one_hot(np.stack([np.zeros((2, 2), np.uint8), last]))[None]  # (1, T=2, C=5, 2, 2)
    future = np.array(
        [
            [[0, 1], [2, 3]],  # t+1: all four right -> accuracy 1
            [[0, 1], [2, 0]],  # t+2: three of four right -> 0.75
            [[1, 1], [255, 0]],  # t+3: nodata ignored; one of three right -> 1/3
        ],
        dtype=np.uint8,
    )[None]
    persist = fc.persistence_forecast(seq)
    assert persist.shape == (1, 3, 5, 2, 2)
    rows = fc.evaluate(persist, persist, future, future != fc.IGNORE, "classes")
    assert [r["persistence_accuracy"] for r in rows] == pytest.approx([1.0, 0.75, 1 / 3])
    # t+2 IoU: class 0 tp 1 / union 2, class 1 1/1, class 2 1/1, class 3 0/1 -> mean 2.5 / 4.
    assert rows[1]["persistence_miou"] == pytest.approx(0.625)
    assert rows[0]["persistence_miou"] == pytest.approx(1.0)
    # A model that gets t+2 fully right has skill 1 there; equal to persistence -> 0 (and 0/0 -> 0 at t+1).
    better = persist.copy()
    better[0, 1] = fc.one_hot(future[0, 1])
    rows = fc.evaluate(better, persist, future, future != fc.IGNORE, "classes")
    assert rows[1]["skill_accuracy"] == pytest.approx(1.0)
    assert rows[0]["skill_accuracy"] == 0.0
    assert rows[2]["skill_accuracy"] == pytest.approx(0.0)


def test_continuous_errors_and_skill():
    target = np.zeros((1, 1, 2, 2))
    pred = np.array([[[[1.0, -1.0], [3.0, 0.0]]]])
    valid = np.array([[[True, True], [False, True]]])
    errs = fc.continuous_errors(pred, target, valid)
    assert errs["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert errs["mae"] == pytest.approx(2 / 3)
    assert fc.skill(1.0, 2.0) == pytest.approx(0.5)
    assert fc.skill(2.0, 2.0) == 0.0
    assert fc.skill(3.0, 2.0) == pytest.approx(-0.5)
    assert fc.skill(0.0, 0.0) == 0.0


@pytest.mark.parametrize("kind,sizes", [("convlstm", (32, 40)), ("lstm", (32, 48))])
def test_onnx_step_parity_several_lengths(tmp_path, kind, sizes):
    model = _small(kind)
    enc, dec = fc.export_step_onnx(model, tmp_path / f"{kind}.onnx", sequence_length=4)
    sessions = fc.StepSessions(enc, dec)
    rng = np.random.default_rng(0)
    for length in (4, 6, 10):
        for size in sizes:
            seq = fc.one_hot(rng.integers(0, 5, size=(length, size, size)).astype(np.uint8))
            ref = fc.predict(model, seq[None])[0]
            out = sessions.run(seq)
            assert out.shape == (3, 5, size, size)
            assert np.abs(out - ref).max() < 1e-4, (kind, length, size)
    np.testing.assert_allclose(fc.run_convlstm_onnx(enc, dec, seq), out, atol=1e-6)


def test_onnx_parity_continuous_and_metadata(tmp_path):
    import onnxruntime as ort

    model = _small("convlstm", 2, "continuous")
    enc, dec = fc.export_step_onnx(model, tmp_path / "c.onnx", sequence_length=6)
    seq = np.random.default_rng(1).normal(-14.0, 5.0, size=(6, 2, 24, 24)).astype(np.float32)
    ref = fc.predict(model, seq[None])[0]
    assert np.abs(fc.run_convlstm_onnx(enc, dec, seq) - ref).max() < 1e-4
    for path, role in ((enc, "encoder"), (dec, "decoder")):
        props = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
        assert json.loads(props["sarseg.task"]) == "forecast"
        assert json.loads(props["sarseg.sequence_length"]) == 6
        assert json.loads(props["sarseg.horizons"]) == [1, 2, 3]
        assert json.loads(props["sarseg.output_kind"]) == "continuous"
        assert json.loads(props["sarseg.class_names"]) == list(fc.CLASS_NAMES)
        forecast = json.loads(props["sarseg.training"])["forecast"]
        assert forecast["input_kind"] == "continuous"
        assert forecast["role"] == role


def test_metadata_readable_by_plugin(tmp_path):
    md = pytest.importorskip("sar_seg_plugin.models.metadata")
    import onnxruntime as ort

    enc, _ = fc.export_step_onnx(_small("convlstm"), tmp_path / "m.onnx", sequence_length=4)
    meta = md.metadata_from_props(ort.InferenceSession(str(enc)).get_modelmeta().custom_metadata_map)
    assert meta.task == "forecast" and meta.sequence_length == 4 and meta.horizons == (1, 2, 3)
    assert meta.output_kind == "classes" and meta.training["forecast"]["input_kind"] == "classes"


def test_cli_tiny_run(tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    argv = ["--kind", "convlstm", "--epochs", "1", "--size", "32", "--days", "6", "--train-seeds", "4"]
    assert train_forecaster.main([*argv, "--val-seeds", "2", "--out", str(out)]) == 0
    enc, dec = fc.step_paths(out)
    assert enc.exists() and dec.exists()
    text = capsys.readouterr().out
    assert "persist" in text and all(f"t+{k}" in text for k in (1, 2, 3))
    report = json.loads((tmp_path / "tiny_report.json").read_text())
    assert not set(report["train_seeds"]) & set(report["val_seeds"])
    assert len(report["val_metrics"]) == 3
    seq = fc.make_windows([5], size=32, days=6).inputs[0]
    probs = fc.run_convlstm_onnx(enc, dec, seq)
    assert probs.shape == (3, 5, 32, 32)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_cli_lstm_continuous(tmp_path, capsys):
    out = tmp_path / "lstm.onnx"
    argv = ["--kind", "lstm", "--input", "continuous", "--hidden", "32", "--epochs", "1", "--size", "32", "--days", "6"]
    assert train_forecaster.main([*argv, "--train-seeds", "2", "--val-seeds", "1", "--out", str(out)]) == 0
    assert "rmse" in capsys.readouterr().out
    assert all(p.exists() for p in fc.step_paths(out))


def test_convlstm_beats_persistence_after_100_steps():
    """Backscatter (dB) forecasting, RMSE at t+1 on held-out seeds.

    On class maps 100-300 steps do not beat persistence at t+1 (no pixel flips; t+2 and t+3 do gain).
    """
    train = fc.make_windows(range(100, 116), size=32, days=10, input_kind="continuous")
    val = fc.make_windows(range(900, 904), size=32, days=10, input_kind="continuous")
    torch.manual_seed(0)
    model = fc.build_forecaster("convlstm", 2, "continuous", hidden=16)
    fc.train_forecaster(model, train, steps=100, batch_size=4, lr=1e-2)
    rows = fc.evaluate(
        fc.predict(model, val.inputs), fc.persistence_forecast(val.inputs), val.targets, val.valid, "continuous"
    )
    assert rows[0]["model_rmse"] < rows[0]["persistence_rmse"]
    assert rows[0]["skill_rmse"] > 0.05


@pytest.mark.slow
def test_convlstm_class_maps_beat_persistence_at_t1():
    """Class maps need more training than 100 steps to beat persistence at t+1 (about 45 s on 2 cores)."""
    train = fc.make_windows(range(16), size=64, days=10)
    val = fc.make_windows(range(10_000, 10_004), size=64, days=10)
    torch.manual_seed(0)
    model = fc.build_forecaster("convlstm", 5, "classes", hidden=16)
    fc.train_forecaster(model, train, steps=320, batch_size=4, lr=1e-2)
    pred, persist = fc.predict(model, val.inputs), fc.persistence_forecast(val.inputs)
    rows = fc.evaluate(pred, persist, val.targets, val.valid, "classes")
    assert rows[0]["skill_accuracy"] > 0
    assert rows[2]["skill_accuracy"] > rows[0]["skill_accuracy"]
