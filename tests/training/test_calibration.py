"""Temperature scaling and calibration error against independent numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.calibration import (
    TemperatureScaled,
    collect_logits,
    fit_temperature,
    nll,
    plot_reliability,
    reliability,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_t", [0.7, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_labels_were_drawn_with(true_t: float) -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 3.0, (40_000, 5))
    p = _softmax(logits / true_t)
    labels = (p.cumsum(axis=1) > rng.random((p.shape[0], 1))).argmax(axis=1)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    # the fitted temperature is a minimum of the NLL
    assert nll(logits, labels, fitted) <= min(nll(logits, labels, fitted * 0.8), nll(logits, labels, fitted * 1.25))


def test_ece_matches_a_loop_over_bins() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 5000)
    correct = rng.random(5000) < conf**2  # over-confident
    edges = np.linspace(0, 1, 16)
    expected = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf >= lo) & (conf < hi)
        if inside.any():
            expected += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    rel = reliability(conf, correct)
    assert rel.ece == pytest.approx(expected, rel=1e-9)
    assert rel.count.sum() == 5000
    assert rel.ece > 0.1


def test_ece_of_calibrated_and_overconfident_predictions() -> None:
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.2, 1.0, 200_000)
    assert reliability(conf, rng.random(conf.size) < conf).ece < 0.01
    assert reliability(np.full(10_000, 0.95), rng.random(10_000) < 0.6).ece == pytest.approx(0.35, abs=0.02)


def test_temperature_scaled_model_keeps_argmax_and_divides_logits() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 5, 3, padding=1)
    scaled = TemperatureScaled(net, 2.0)
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        raw, out = net(x), scaled(x)
    assert torch.allclose(out, raw / 2.0, atol=1e-6)
    assert torch.equal(out.argmax(1), raw.argmax(1))
    with pytest.raises(ValueError, match="positive"):
        TemperatureScaled(net, 0.0)


def test_collect_logits_takes_every_step_th_labelled_pixel() -> None:
    net = torch.nn.Conv2d(2, 5, 1)
    images = torch.randn(3, 2, 8, 8)
    labels = torch.randint(0, 5, (3, 8, 8))
    labels[0, 0, 0] = 255
    logits, got = collect_logits(net, [(images, labels)], step=2)
    assert logits.shape == (3 * 16 - 1, 5)
    assert np.array_equal(np.sort(got), np.sort(labels[:, ::2, ::2][labels[:, ::2, ::2] != 255].numpy()))


def test_plot_reliability_writes_a_png(tmp_path) -> None:
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.2, 1, 1000)
    path = plot_reliability({"a": reliability(conf, rng.random(1000) < conf)}, tmp_path / "r.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
