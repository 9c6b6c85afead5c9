"""Map forecasting (t+1, t+2, t+3) from a sequence of daily maps: models, synthetic data, baseline, metrics, ONNX.

Two architectures share one step interface, so one export layout and one onnxruntime runner serve both:

* ``ConvLSTMForecaster``: a ConvLSTM encoder over the input dates, then a ConvLSTM forecast cell that rolls out
  the horizons, each step fed with its previous output (the last input date for t+1).
* ``LSTMFeatureForecaster``: a small CNN encoder per date (features at 1/4 resolution) -> a 2-layer LSTM
  (hidden 512 by default) shared by every feature-grid cell (1x1 gates, so height and width stay free) -> a
  decoder back to full resolution with a skip from the previous map.

Both predict a residual over persistence: class logits are ``head + a * previous probabilities`` and continuous
values are ``previous + head``, so an untrained model starts close to "tomorrow = today".

Inputs are either class maps (one-hot of the class ids of ``training.synthetic.CLASS_NAMES``; nodata = all
zeros) or a continuous variable (backscatter in dB; normalised inside the model, so the graphs take and return dB).

ONNX: the time loop is never exported (a traced loop is fixed to its traced length). Each model is exported as two
step graphs with dynamic batch/height/width, and ``run_forecast_onnx`` runs the loop with onnxruntime:

* encoder step ``(x, h, c) -> (h_out, c_out)``, called once per input date;
* decoder step ``(y_prev, h, c) -> (y, h_out, c_out)``, called once per horizon; ``y`` is class probabilities
  (softmax) or dB values, and is fed back as the next ``y_prev``.

``h`` and ``c`` stack all layers on the channel axis: ``(n, layers * hidden, H / stride, W / stride)``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sar_seg_plugin.core.forecast_methods import class_scores, confusion, persistence, skill  # the plugin's
from training import synthetic

CLASS_NAMES: tuple[str, ...] = synthetic.CLASS_NAMES
CLASS_COLORS: tuple[str, ...] = synthetic.CLASS_COLORS
N_CLASSES = len(CLASS_NAMES)
IGNORE = synthetic.LABEL_NODATA
HORIZONS: tuple[int, ...] = (1, 2, 3)
INPUT_KINDS = ("classes", "continuous")
KINDS = ("convlstm", "lstm")
BANDS: tuple[str, ...] = synthetic.BAND_NAMES
# Fixed normalisation of backscatter in dB (VV, VH), applied inside the models.
DB_MEAN: tuple[float, ...] = (-11.0, -18.0)
DB_STD: tuple[float, ...] = (6.0, 5.0)
DB_FLOOR = -35.0
METADATA_PREFIX = "sarseg."


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell: gates from a convolution of [x, h] (kernel 1 makes it a per-pixel LSTM)."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            self.conv.bias.zero_()
            self.conv.bias[hidden : 2 * hidden].fill_(1.0)  # forget-gate bias 1: remember by default

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step; returns the new (h, c)."""
        i, f, o, g = torch.chunk(self.conv(torch.cat([x, h], dim=1)), 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def _run_stack(
    cells: nn.ModuleList, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run stacked cells one step; h and c hold every layer on the channel axis."""
    hs = torch.chunk(h, len(cells), dim=1)
    cs = torch.chunk(c, len(cells), dim=1)
    new_h, new_c = [], []
    inp = x
    for cell, hi, ci in zip(cells, hs, cs):
        hi, ci = cell(inp, hi, ci)
        new_h.append(hi)
        new_c.append(ci)
        inp = hi
    return torch.cat(new_h, dim=1), torch.cat(new_c, dim=1)


class StepForecaster(nn.Module):
    """Base class: input normalisation, residual output, and the step loop used by training and export."""

    state_stride: int = 1

    def __init__(self, in_channels: int, input_kind: str, layers: int, hidden: int) -> None:
        super().__init__()
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
        if layers < 1 or hidden < 1:
            raise ValueError(f"layers and hidden must be >= 1, got {layers} and {hidden}")
        self.in_channels = in_channels
        self.input_kind = input_kind
        self.layers = layers
        self.hidden = hidden
        if input_kind == "continuous":
            if in_channels > len(DB_MEAN):
                raise ValueError(f"continuous input has at most {len(DB_MEAN)} bands, got {in_channels}")
            mean = torch.tensor(DB_MEAN[:in_channels]).view(1, -1, 1, 1)
            std = torch.tensor(DB_STD[:in_channels]).view(1, -1, 1, 1)
        else:
            mean = torch.zeros(1, in_channels, 1, 1)
            std = torch.ones(1, in_channels, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        # Weight of the previous map in the class logits (starts near persistence).
        self.persist_scale = nn.Parameter(torch.tensor(2.0))

    @property
    def state_channels(self) -> int:
        """Channels of h (and c): every layer stacked."""
        return self.layers * self.hidden

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (h, c) for a batch shaped like x (n, C, H, W)."""
        n, _, height, width = x.shape
        s = self.state_stride
        z = x.new_zeros(n, self.state_channels, height // s, width // s)
        return z, z.clone()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Input units -> model units (identity for class probabilities)."""
        return (x - self.mean) / self.std

    def encode_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Absorb one input date x (n, C, H, W); returns the new (h, c)."""
        raise NotImplementedError

    def decode_raw(
        self, y_prev: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forecast step in model units: (delta, previous map in model units, h, c)."""
        raise NotImplementedError

    def decode_step(
        self, y_prev: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One horizon: (class logits or dB values, h, c) from the previous map (probabilities or dB)."""
        delta, prev, h, c = self.decode_raw(y_prev, h, c)
        if self.input_kind == "classes":
            return delta + self.persist_scale * prev, h, c
        return (prev + delta) * self.std + self.mean, h, c

    def to_output(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw step output -> what is fed back and exported (probabilities or dB)."""
        return torch.softmax(raw, dim=1) if self.input_kind == "classes" else raw

    def forward(self, sequence: torch.Tensor, horizons: int = len(HORIZONS)) -> torch.Tensor:
        """(n, T, C, H, W) -> raw forecasts (n, horizons, C, H, W): class logits or dB values."""
        if sequence.ndim != 5:
            raise ValueError(f"expected (n, T, C, H, W), got shape {tuple(sequence.shape)}")
        h, c = self.init_state(sequence[:, 0])
        for t in range(sequence.shape[1]):
            h, c = self.encode_step(sequence[:, t], h, c)
        y_prev = sequence[:, -1]
        outputs = []
        for _ in range(horizons):
            raw, h, c = self.decode_step(y_prev, h, c)
            outputs.append(raw)
            y_prev = self.to_output(raw)
        return torch.stack(outputs, dim=1)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (to rebuild the model)."""
        raise NotImplementedError


class ConvLSTMForecaster(StepForecaster):
    """ConvLSTM encoder over the dates + ConvLSTM forecast cell rolled over the horizons."""

    kind = "convlstm"

    def __init__(
        self, in_channels: int, input_kind: str = "classes", hidden: int = 16, layers: int = 1, kernel_size: int = 3
    ) -> None:
        super().__init__(in_channels, input_kind, layers, hidden)
        self.kernel_size = kernel_size
        self.encoder = nn.ModuleList(
            ConvLSTMCell(in_channels if i == 0 else hidden, hidden, kernel_size) for i in range(layers)
        )
        self.decoder = nn.ModuleList(
            ConvLSTMCell(in_channels if i == 0 else hidden, hidden, kernel_size) for i in range(layers)
        )
        self.head = nn.Conv2d(hidden, in_channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def encode_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Absorb one input date."""
        return _run_stack(self.encoder, self.normalise(x), h, c)

    def decode_raw(
        self, y_prev: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forecast step in model units."""
        prev = self.normalise(y_prev)
        h, c = _run_stack(self.decoder, prev, h, c)
        return self.head(h[:, -self.hidden :]), prev, h, c

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            "in_channels": self.in_channels,
            "input_kind": self.input_kind,
            "hidden": self.hidden,
            "layers": self.layers,
            "kernel_size": self.kernel_size,
        }


class LSTMFeatureForecaster(StepForecaster):
    """CNN encoder per date -> LSTM over the (1/4 resolution) feature grid -> decoder to full-resolution maps.

    The LSTM (``layers`` x ``hidden``) uses 1x1 gates, i.e. the same LSTM runs on every feature-grid cell, so the
    graph accepts any height and width divisible by 4.
    """

    kind = "lstm"
    state_stride = 4

    def __init__(
        self,
        in_channels: int,
        input_kind: str = "classes",
        hidden: int = 512,
        layers: int = 2,
        features: int = 64,
        width: int = 32,
    ) -> None:
        super().__init__(in_channels, input_kind, layers, hidden)
        self.features = features
        self.width = width
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, features, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.lstm = nn.ModuleList(ConvLSTMCell(features if i == 0 else hidden, hidden, 1) for i in range(layers))
        self.reduce = nn.Sequential(nn.Conv2d(hidden, 2 * width, 1), nn.ReLU(inplace=True))
        self.skip = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(3 * width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(width, in_channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _lstm_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _run_stack(self.lstm, self.encoder(x), h, c)

    def encode_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode one date and advance the LSTM."""
        return self._lstm_step(self.normalise(x), h, c)

    def decode_raw(
        self, y_prev: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the previous map, advance the LSTM, decode the top hidden state to full resolution."""
        prev = self.normalise(y_prev)
        h, c = self._lstm_step(prev, h, c)
        up = F.interpolate(self.reduce(h[:, -self.hidden :]), scale_factor=4.0, mode="bilinear", align_corners=False)
        delta = self.head(self.fuse(torch.cat([up, self.skip(prev)], dim=1)))
        return delta, prev, h, c

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            "in_channels": self.in_channels,
            "input_kind": self.input_kind,
            "hidden": self.hidden,
            "layers": self.layers,
            "features": self.features,
            "width": self.width,
        }


def build_forecaster(
    kind: str, in_channels: int, input_kind: str = "classes", hidden: int | None = None, layers: int | None = None
) -> StepForecaster:
    """A forecaster by name ("convlstm" or "lstm"); hidden/layers default to 16/1 and 512/2."""
    if kind == "convlstm":
        return ConvLSTMForecaster(in_channels, input_kind, hidden=hidden or 16, layers=layers or 1)
    if kind == "lstm":
        return LSTMFeatureForecaster(in_channels, input_kind, hidden=hidden or 512, layers=layers or 2)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


# --------------------------------------------------------------------------------------------
# Sequence data from the synthetic generator
# --------------------------------------------------------------------------------------------


def one_hot(labels: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """Class ids (..., H, W) -> one-hot float32 (..., n_classes, H, W); nodata (>= n_classes) is all zeros."""
    labels = np.asarray(labels)
    out = labels[..., None, :, :] == np.arange(n_classes, dtype=labels.dtype).reshape(-1, 1, 1)
    return out.astype(np.float32)


def series_maps(series: synthetic.SyntheticSeries, input_kind: str) -> np.ndarray:
    """A series as model input maps (T, C, H, W): one-hot classes, or VV/VH backscatter in dB (nodata = mean)."""
    if input_kind == "classes":
        return one_hot(series.labels)
    if input_kind == "continuous":
        return db_maps(series.sigma0, series.valid)
    raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")


def db_maps(sigma0: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear sigma0 (T, C, H, W) -> dB (floor ``DB_FLOOR``), float32, pixels outside ``valid`` at the band mean."""
    db = (10.0 * np.log10(np.maximum(sigma0, 10.0 ** (DB_FLOOR / 10.0)))).astype(np.float32)
    for b, mean in enumerate(DB_MEAN[: db.shape[1]]):
        db[:, b, ~valid] = mean
    return db


def value_windows(maps: np.ndarray, valid: np.ndarray, sequence_length: int, horizons: int = len(HORIZONS)) -> Windows:
    """Every (T input dates -> next ``horizons`` dates) window of one series of continuous maps (T, C, H, W)."""
    starts = range(maps.shape[0] - sequence_length - horizons + 1)
    return Windows(
        np.stack([maps[s : s + sequence_length] for s in starts]),
        np.stack([maps[s + sequence_length : s + sequence_length + horizons] for s in starts]),
        np.stack([np.broadcast_to(valid, (horizons, *valid.shape)) for _ in starts]),
        "continuous",
    )


@dataclass
class Windows:
    """Forecast examples: inputs (n, T, C, H, W), targets (n, K, H, W) class ids or (n, K, C, H, W) dB, valid."""

    inputs: np.ndarray
    targets: np.ndarray
    valid: np.ndarray
    input_kind: str

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def subset(self, index: np.ndarray | Sequence[int]) -> Windows:
        """The examples at the given indices."""
        idx = np.asarray(index)
        return Windows(self.inputs[idx], self.targets[idx], self.valid[idx], self.input_kind)


def default_sequence_length(days: int, horizons: int = len(HORIZONS)) -> int:
    """Input dates used when none is given: 4, or fewer when the series is short."""
    return max(1, min(4, days - horizons))


def make_windows(
    seeds: Sequence[int],
    size: int = 64,
    days: int = 10,
    sequence_length: int | None = None,
    input_kind: str = "classes",
    horizons: int = len(HORIZONS),
    n_communes: int = 4,
) -> Windows:
    """Every (T input dates -> next ``horizons`` dates) window of the synthetic series of each seed."""
    seq = sequence_length or default_sequence_length(days, horizons)
    if days < seq + horizons:
        raise ValueError(f"{days} days cannot hold {seq} input dates plus {horizons} forecast dates")
    xs, ys, vs = [], [], []
    for seed in seeds:
        series = synthetic.generate_series(size=size, days=days, seed=int(seed), n_communes=n_communes)
        maps = series_maps(series, input_kind)
        for start in range(days - seq - horizons + 1):
            end = start + seq
            xs.append(maps[start:end])
            lab = series.labels[end : end + horizons]
            ys.append(lab if input_kind == "classes" else maps[end : end + horizons])
            vs.append(lab != IGNORE)
    return Windows(np.stack(xs), np.stack(ys), np.stack(vs), input_kind)


def persistence_forecast(sequence: np.ndarray, horizons: int = len(HORIZONS)) -> np.ndarray:
    """Tomorrow = today: the last map repeated; (..., T, C, H, W) -> (..., horizons, C, H, W) (the plugin's)."""
    seq = np.asarray(sequence)
    flat = persistence(seq.reshape(-1, *seq.shape[-4:]), horizons)
    return flat.reshape(*seq.shape[:-4], *flat.shape[1:]).astype(seq.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """Confusion counts [target, pred] over pixels whose target is a class id (others ignored)."""
    return confusion(np.asarray(pred), np.asarray(target), np.ones(np.shape(target), bool), n_classes)


def continuous_errors(pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """RMSE and MAE over valid pixels; pred/target (..., C, H, W), valid (..., H, W)."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    if valid is not None:
        diff = np.moveaxis(diff, -3, -1)[np.asarray(valid, dtype=bool)]
    if diff.size == 0:
        return {"rmse": math.nan, "mae": math.nan}
    return {"rmse": float(np.sqrt(np.mean(diff**2))), "mae": float(np.mean(np.abs(diff)))}


def evaluate(
    model_pred: np.ndarray, persistence_pred: np.ndarray, targets: np.ndarray, valid: np.ndarray, input_kind: str
) -> list[dict[str, float]]:
    """Per-horizon scores of a model and of persistence, with skill (error = 1 - score, or RMSE / MAE).

    Predictions are (n, K, C, H, W) probabilities / dB; targets (n, K, H, W) class ids or (n, K, C, H, W) dB.
    """
    rows = []
    for k in range(targets.shape[1]):
        row: dict[str, float] = {"horizon": k + 1}
        if input_kind == "classes":
            tgt = np.where(valid[:, k], targets[:, k], IGNORE)
            m = class_scores(confusion_matrix(model_pred[:, k].argmax(1), tgt))
            p = class_scores(confusion_matrix(persistence_pred[:, k].argmax(1), tgt))
            for name in ("accuracy", "miou"):
                row[f"model_{name}"] = m[name]
                row[f"persistence_{name}"] = p[name]
                row[f"skill_{name}"] = skill(1.0 - m[name], 1.0 - p[name])
        else:
            m = continuous_errors(model_pred[:, k], targets[:, k], valid[:, k])
            p = continuous_errors(persistence_pred[:, k], targets[:, k], valid[:, k])
            for name in ("rmse", "mae"):
                row[f"model_{name}"] = m[name]
                row[f"persistence_{name}"] = p[name]
                row[f"skill_{name}"] = skill(m[name], p[name])
        rows.append(row)
    return rows


def score_methods(windows: Windows, model_pred: np.ndarray | None = None) -> list[Any]:
    """The model (when its forecasts ``model_pred`` (n, K, C, H, W) are given), persistence and trend on every
    window, per horizon, scored by the plugin's own code (``core.forecast_methods.ScoreBoard``, as the hindcast of
    ``sarseg:forecast``): accuracy and mIoU, or RMSE, and the skill against persistence. Returns ``ScoreRow``s."""
    from sar_seg_plugin.core.forecast_methods import BASELINES, MODEL, ScoreBoard, baseline

    classes = windows.input_kind == "classes"
    horizons = int(windows.targets.shape[1])
    methods = ((MODEL,) if model_pred is not None else ()) + BASELINES
    board = ScoreBoard(methods, list(range(1, horizons + 1)), N_CLASSES, "classes" if classes else "continuous")
    for i in range(len(windows)):
        seq = windows.inputs[i : i + 1]
        forecasts = {m: baseline(m, seq, horizons, classes)[0] for m in BASELINES}
        if model_pred is not None:
            forecasts[MODEL] = model_pred[i]
        for k in range(horizons):
            observed, valid = windows.targets[i, k], windows.valid[i, k]
            for name, values in forecasts.items():
                board.add(name, k + 1, i, values[k].argmax(0) if classes else values[k], observed, valid)
    return board.rows()


def format_table(rows: Sequence[dict[str, float]]) -> str:
    """A plain-text per-horizon table of model vs persistence scores and skill."""
    if not rows:
        return ""
    names = [k[len("model_") :] for k in rows[0] if k.startswith("model_")]
    header = ["horizon"]
    for name in names:
        header += [f"{name} model", f"{name} persist", f"{name} skill"]
    lines = ["  ".join(f"{h:>15}" for h in header)]
    for row in rows:
        cells = [f"t+{int(row['horizon'])}"]
        for name in names:
            cells += [
                f"{row[f'model_{name}']:.4f}",
                f"{row[f'persistence_{name}']:.4f}",
                f"{row[f'skill_{name}']:+.4f}",
            ]
        lines.append("  ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)


@torch.no_grad()
def predict(model: StepForecaster, inputs: np.ndarray, horizons: int = len(HORIZONS), batch: int = 8) -> np.ndarray:
    """Model forecasts (n, K, C, H, W) as probabilities or dB, in batches."""
    model.eval()
    outs = []
    for i in range(0, len(inputs), batch):
        raw = model(torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch])), horizons)
        outs.append(model.to_output(raw.flatten(0, 1)).view_as(raw).numpy())
    return np.concatenate(outs)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def forecast_loss(model: StepForecaster, raw: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (classes) or masked MSE in normalised units (continuous), averaged over horizons."""
    if model.input_kind == "classes":
        tgt = torch.where(valid, targets.long(), torch.full_like(targets.long(), -100))
        return F.cross_entropy(raw.flatten(0, 1), tgt.flatten(0, 1), ignore_index=-100)
    err = ((raw - targets) / model.std.unsqueeze(1)) ** 2
    mask = valid.unsqueeze(2).to(err.dtype)
    return (err * mask).sum() / (mask.sum() * err.shape[2]).clamp_min(1.0)


def train_forecaster(
    model: StepForecaster,
    data: Windows,
    steps: int = 100,
    batch_size: int = 4,
    lr: float = 3e-3,
    seed: int = 0,
    crop: int | None = None,
    log_every: int = 0,
) -> list[float]:
    """Adam on random batches (optionally random crops of side ``crop``); returns the loss per step."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    losses = []
    height, width = data.inputs.shape[-2:]
    torch.set_flush_denormal(True)  # fed-back softmax outputs underflow: denormals slow CPU training several times
    for step in range(steps):
        model.train()
        idx = torch.randint(len(data), (min(batch_size, len(data)),), generator=gen).numpy()
        x, y, v = data.inputs[idx], data.targets[idx], data.valid[idx]
        if crop and crop < min(height, width):
            r = int(rng.integers(0, height - crop + 1))
            c = int(rng.integers(0, width - crop + 1))
            x, y, v = (
                x[..., r : r + crop, c : c + crop],
                y[..., r : r + crop, c : c + crop],
                v[..., r : r + crop, c : c + crop],
            )
        raw = model(torch.from_numpy(np.ascontiguousarray(x)), y.shape[1])
        loss = forecast_loss(model, raw, torch.from_numpy(np.ascontiguousarray(y)), torch.from_numpy(v))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps}  loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    torch.set_flush_denormal(False)
    model.eval()
    return losses


# --------------------------------------------------------------------------------------------
# ONNX export of the step modules and the onnxruntime loop
# --------------------------------------------------------------------------------------------


class EncoderStep(nn.Module):
    """Export wrapper: (x, h, c) -> (h_out, c_out)."""

    def __init__(self, model: StepForecaster) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One input date."""
        return self.model.encode_step(x, h, c)


class DecoderStep(nn.Module):
    """Export wrapper: (y_prev, h, c) -> (y, h_out, c_out), y as probabilities or dB."""

    def __init__(self, model: StepForecaster) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, y_prev: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One horizon."""
        raw, h, c = self.model.decode_step(y_prev, h, c)
        return self.model.to_output(raw), h, c


def step_paths(out: str | Path) -> tuple[Path, Path]:
    """``model.onnx`` -> (``model_encoder.onnx``, ``model_decoder.onnx``)."""
    out = Path(out)
    stem = out.name[: -len(".onnx")] if out.name.endswith(".onnx") else out.name
    return out.with_name(f"{stem}_encoder.onnx"), out.with_name(f"{stem}_decoder.onnx")


def forecast_metadata(
    model: StepForecaster,
    role: str,
    sequence_length: int,
    pair: str,
    name: str = "",
    pixel_size_m: float | None = None,
    training_info: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` of one step graph, ``sarseg.``-prefixed JSON values.

    Uses ``sar_seg_plugin.models.metadata.metadata_to_props`` (validated). Its reader refuses unknown
    ``sarseg.*`` keys, so forecast-specific facts (input kind, step role, state layout, the paired file) live in
    ``sarseg.training["forecast"]``.
    """
    classes = model.input_kind == "classes"
    forecast = {
        "input_kind": model.input_kind,
        "architecture": model.kind,
        "role": role,
        "pair": pair,
        "state_channels": model.state_channels,
        "state_stride": model.state_stride,
        "size_multiple": model.state_stride,
        "config": model.config(),
        "inputs": ["x", "h", "c"] if role == "encoder" else ["y_prev", "h", "c"],
        "outputs": ["h_out", "c_out"] if role == "encoder" else ["y", "h_out", "c_out"],
    }
    training = dict(training_info or {})
    training["forecast"] = forecast
    fields: dict[str, Any] = {
        "task": "forecast",
        "name": name or f"{model.kind} forecast ({model.input_kind}) {role} step",
        "description": (
            f"{model.kind} forecast of t+1..t+{len(HORIZONS)} from a sequence of daily "
            f"{'class maps (one-hot)' if classes else 'backscatter maps in dB'}; {role} step graph, the time loop "
            "runs outside the graph (encoder once per input date, decoder once per horizon)"
        ),
        "input_bands": list(CLASS_NAMES) if classes else list(BANDS[: model.in_channels]),
        "input_units": ["uint8"] * N_CLASSES if classes else ["dB"] * model.in_channels,
        "normalization": {"mean": [], "std": [], "scale": None},
        "tile_size": 256,
        "tile_overlap": 32,
        "output_kind": "classes" if classes else "continuous",
        "class_names": list(CLASS_NAMES),
        "class_colors": list(CLASS_COLORS),
        "pixel_size_m": pixel_size_m,
        "sequence_length": int(sequence_length),
        "horizons": list(HORIZONS),
        "training": training,
    }
    try:
        from sar_seg_plugin.models import metadata as md
    except ImportError:  # plugin package not importable: plain props with the same key scheme
        return {METADATA_PREFIX + k: json.dumps(v) for k, v in fields.items()}
    norm = fields.pop("normalization")
    meta = md.ModelMetadata(normalization=md.Normalization(norm["mean"], norm["std"], norm["scale"]), **fields)
    return md.metadata_to_props(meta)


def _set_props(path: Path, props: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def export_step_onnx(
    model: StepForecaster,
    out: str | Path,
    sequence_length: int,
    opset: int = 17,
    pixel_size_m: float | None = None,
    training_info: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Export the encoder and decoder step graphs (dynamic batch/height/width) with metadata; returns their paths."""
    enc_path, dec_path = step_paths(out)
    enc_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    s = model.state_stride
    x = torch.zeros(1, model.in_channels, 8 * s, 8 * s)
    h, c = model.init_state(x)
    spatial = {0: "batch", 2: "height", 3: "width"}
    state = {0: "batch", 2: "state_height", 3: "state_width"}
    jobs = (
        (EncoderStep(model), ["x", "h", "c"], ["h_out", "c_out"], enc_path, "encoder", dec_path.name),
        (DecoderStep(model), ["y_prev", "h", "c"], ["y", "h_out", "c_out"], dec_path, "decoder", enc_path.name),
    )
    for module, inputs, outputs, path, role, pair in jobs:
        axes = {n: (spatial if n in ("x", "y_prev", "y") else state) for n in inputs + outputs}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: dynamic H/W, tested parity
            torch.onnx.export(
                module,
                (x, h, c),
                str(path),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
        props = forecast_metadata(
            model, role, sequence_length, pair, pixel_size_m=pixel_size_m, training_info=training_info
        )
        _set_props(path, props)
    return enc_path, dec_path


class StepSessions:
    """The two onnxruntime sessions of an exported forecaster and the loop that runs them."""

    def __init__(self, encoder_path: str | Path, decoder_path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(encoder_path), sess_options=options, providers=providers)
        self.decoder = ort.InferenceSession(str(decoder_path), sess_options=options, providers=providers)
        props = self.encoder.get_modelmeta().custom_metadata_map
        info = json.loads(props.get(METADATA_PREFIX + "training", "{}")).get("forecast", {})
        self.state_stride = int(info.get("state_stride", 1))
        self.state_channels = int(self.encoder.get_inputs()[1].shape[1])
        self.metadata = dict(props)

    def run(self, sequence: np.ndarray, horizons: int = len(HORIZONS)) -> np.ndarray:
        """(T, C, H, W) -> (horizons, C, H, W), or (n, T, C, H, W) -> (n, horizons, C, H, W)."""
        seq = np.asarray(sequence, dtype=np.float32)
        single = seq.ndim == 4
        if single:
            seq = seq[None]
        if seq.ndim != 5 or seq.shape[1] < 1:
            raise ValueError(f"expected a sequence (T, C, H, W) or (n, T, C, H, W), got shape {sequence.shape}")
        n, _, _, height, width = seq.shape
        s = self.state_stride
        if height % s or width % s:
            raise ValueError(f"height and width must be multiples of {s} for this model, got {height} x {width}")
        h = np.zeros((n, self.state_channels, height // s, width // s), dtype=np.float32)
        c = h.copy()
        for t in range(seq.shape[1]):
            h, c = self.encoder.run(None, {"x": np.ascontiguousarray(seq[:, t]), "h": h, "c": c})
        y = np.ascontiguousarray(seq[:, -1])
        outs = []
        for _ in range(horizons):
            y, h, c = self.decoder.run(None, {"y_prev": y, "h": h, "c": c})
            outs.append(y)
        out = np.stack(outs, axis=1)
        return out[0] if single else out


def run_forecast_onnx(
    encoder_path: str | Path, decoder_path: str | Path, sequence: np.ndarray, horizons: int = len(HORIZONS)
) -> np.ndarray:
    """Run exported step graphs over a sequence (T, C, H, W) -> (horizons, C, H, W) with onnxruntime."""
    return StepSessions(encoder_path, decoder_path).run(sequence, horizons)


def run_convlstm_onnx(
    encoder_path: str | Path, decoder_path: str | Path, sequence: np.ndarray, horizons: int = len(HORIZONS)
) -> np.ndarray:
    """ConvLSTM forecast with onnxruntime: (T, C, H, W) -> (horizons, C, H, W) probabilities or dB."""
    return run_forecast_onnx(encoder_path, decoder_path, sequence, horizons)
