"""Calibrated confidence: temperature scaling (Guo et al. 2017), expected calibration error, reliability diagrams.

A network trained with cross-entropy is usually over-confident off its training data. Dividing its logits by one
temperature T > 1, fitted on validation data by minimising the negative log-likelihood, keeps every argmax (the
class map does not change) and makes the softmax probabilities honest on data like the validation data.
:class:`TemperatureScaled` puts T inside the exported graph, so the plugin's probability and confidence rasters
are the calibrated ones without any change on the plugin side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ECE_BINS = 15
IGNORE_INDEX = 255


class TemperatureScaled(nn.Module):
    """``model(x) / temperature``: the logits of ``model`` at a fitted temperature."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model = model
        self.register_buffer("inv_temperature", torch.tensor(1.0 / float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.inv_temperature


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` (N,) under softmax(``logits`` (N, C) / T)."""
    logp = _log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-logp[np.arange(labels.size), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.25, hi: float = 8.0) -> float:
    """The temperature in [lo, hi] minimising :func:`nll` (golden-section search on log T; the NLL is convex in
    1/T). ``logits`` (N, C) and ``labels`` (N,) of valid pixels only."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or labels.size == 0:
        raise ValueError("fit_temperature needs logits (N, C) and labels (N,) with N > 0")
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, labels, np.exp(c)), nll(logits, labels, np.exp(d))
    for _ in range(40):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, labels, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, labels, np.exp(d))
    return float(np.exp(0.5 * (a + b)))


@dataclass
class Reliability:
    """Per confidence bin: pixel count, mean confidence and accuracy; and the expected calibration error."""

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of (bin share) x |accuracy - confidence|."""
        total = self.count.sum()
        if total == 0:
            return float("nan")
        gap = np.abs(np.nan_to_num(self.accuracy) - np.nan_to_num(self.confidence))
        return float((self.count / total * gap).sum())


class ReliabilityCounter:
    """Accumulates (confidence, correct) pairs into :data:`ECE_BINS` equal-width bins, block by block."""

    def __init__(self, bins: int = ECE_BINS) -> None:
        self.edges = np.linspace(0.0, 1.0, bins + 1)
        self.count = np.zeros(bins, np.int64)
        self.conf_sum = np.zeros(bins)
        self.correct_sum = np.zeros(bins)

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        conf = np.asarray(confidence, np.float64).ravel()
        ok = np.asarray(correct, bool).ravel()
        idx = np.clip(np.searchsorted(self.edges, conf, side="right") - 1, 0, self.count.size - 1)
        self.count += np.bincount(idx, minlength=self.count.size)
        self.conf_sum += np.bincount(idx, weights=conf, minlength=self.count.size)
        self.correct_sum += np.bincount(idx, weights=ok.astype(np.float64), minlength=self.count.size)

    def result(self) -> Reliability:
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = np.where(self.count > 0, self.conf_sum / np.maximum(self.count, 1), np.nan)
            acc = np.where(self.count > 0, self.correct_sum / np.maximum(self.count, 1), np.nan)
        return Reliability(self.edges, self.count.copy(), conf, acc)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Reliability of one set of (confidence, correct) pairs."""
    counter = ReliabilityCounter(bins)
    counter.add(confidence, correct)
    return counter.result()


def collect_logits(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], step: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and labels (N,) of every ``step``-th pixel (both axes) with a label, over ``batches``."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        with torch.no_grad():
            for images, target in batches:
                out = model(images)[:, :, ::step, ::step]
                lab = target[:, ::step, ::step]
                keep = lab != IGNORE_INDEX
                logits.append(out.permute(0, 2, 3, 1)[keep].numpy())
                labels.append(lab[keep].numpy())
    finally:
        model.train(was_training)
    return np.concatenate(logits).astype(np.float32), np.concatenate(labels).astype(np.int64)


def plot_reliability(curves: Mapping[str, Reliability], path: str | Path, title: str = "") -> Path:
    """A reliability diagram (accuracy against confidence per bin, one line per curve, ECE in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    for name, rel in curves.items():
        ok = rel.count > 0
        ax.plot(rel.confidence[ok], rel.accuracy[ok], marker="o", ms=3, lw=1.4, label=f"{name} (ECE {rel.ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (probability of the chosen class)")
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
