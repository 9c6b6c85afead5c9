#!/usr/bin/env python3
"""Does the relief help the class forecaster? Two ConvLSTMs trained alike, one given the height above water.

The bundled class forecaster sees class maps only, so where water goes next is known to it only through the past
edges of the water. This probe measures what a height raster would add, before any plugin input is built for one:

1. training windows of ``training.forecast_family`` (every kind, a share of noisy series and of missing days, as
   ``make forecasters`` makes them) with a sixth input channel: the height above the nearest permanent water of the
   series' own terrain (above its lowest point where it has no permanent water), in units of 2 m, clipped to
   -2..5;
2. the same ConvLSTM recipe trained twice on the same windows and seeds: once with that channel, once with it set
   to zero;
3. both scored (accuracy skill against persistence, the plugin's scoring code) on held-out series of every kind and
   on the evaluation-only floods of ``training.evalflood``, whose height channel is their own height above drainage.

Usage: ``.venv/bin/python scripts/forecast_height_probe.py [--series 240] [--steps 8000] [--quick]``; about 8 minutes
on 2 cores with the defaults. Prints one table; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402
from torch import nn  # noqa: E402

from training import evalflood, forecast_family  # noqa: E402
from training import forecasting as fc  # noqa: E402

HEIGHT_UNIT_M = 2.0
HEIGHT_CLIP = (-2.0, 5.0)
HELD_OUT_SEED = 10_000
EVAL_FLOOD_SEED = 50_000
SIZE, DAYS, EVAL_SIZE, EVAL_DAYS = 64, 10, 96, 15


def height_above_water(elevation: np.ndarray, permanent: np.ndarray | None) -> np.ndarray:
    """Height (m) of each pixel above the nearest permanent-water pixel, or above the lowest point without water."""
    if permanent is None or not permanent.any():
        return elevation - elevation.min()
    _, (rows, cols) = ndimage.distance_transform_edt(~permanent, return_indices=True)
    return elevation - elevation[rows, cols]


def height_channel(height_m: np.ndarray) -> np.ndarray:
    """Height in metres -> the model's input channel."""
    return np.clip(np.asarray(height_m, np.float32) / HEIGHT_UNIT_M, *HEIGHT_CLIP)


class HeightConvLSTM(nn.Module):
    """The bundled ConvLSTM's recipe (encoder and decoder cells, residual over persistence) taking the class maps
    plus one static height channel, stored as channel 5 of every input date; ``use_height=False`` zeroes it."""

    input_kind = "classes"

    def __init__(self, hidden: int = 16, use_height: bool = True) -> None:
        super().__init__()
        n = fc.N_CLASSES
        self.use_height, self.hidden = use_height, hidden
        self.encoder = fc.ConvLSTMCell(n + 1, hidden, 3)
        self.decoder = fc.ConvLSTMCell(n + 1, hidden, 3)
        self.head = nn.Conv2d(hidden, n, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.persist_scale = nn.Parameter(torch.tensor(2.0))

    def to_output(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.softmax(raw, dim=1)

    def forward(self, sequence: torch.Tensor, horizons: int = len(fc.HORIZONS)) -> torch.Tensor:
        """(n, T, 6, H, W) -> class logits (n, horizons, 5, H, W)."""
        n_classes = fc.N_CLASSES
        height = sequence[:, 0, n_classes:]
        if not self.use_height:
            height = torch.zeros_like(height)
        n, _, _, rows, cols = sequence.shape
        h = sequence.new_zeros(n, self.hidden, rows, cols)
        c = torch.zeros_like(h)
        for t in range(sequence.shape[1]):
            h, c = self.encoder(torch.cat([sequence[:, t, :n_classes], height], 1), h, c)
        y = sequence[:, -1, :n_classes]
        outputs = []
        for _ in range(horizons):
            h, c = self.decoder(torch.cat([y, height], 1), h, c)
            raw = self.head(h) + self.persist_scale * y
            outputs.append(raw)
            y = torch.softmax(raw, 1)
        return torch.stack(outputs, 1)


def with_height(windows: fc.Windows, heights: np.ndarray) -> fc.Windows:
    """``windows`` whose every input date carries ``heights`` (n, H, W) as a sixth channel (float32)."""
    n, steps = windows.inputs.shape[:2]
    channel = np.broadcast_to(heights[:, None, None], (n, steps, 1, *heights.shape[1:]))
    inputs = np.concatenate([windows.inputs.astype(np.float32), channel], axis=2)
    return fc.Windows(inputs, windows.targets, windows.valid, "classes")


def family_windows(seeds: Sequence[int], kinds: Sequence[str], noisy: float, gaps: float) -> fc.Windows:
    """``make_family_windows`` plus the height channel of each window's series."""
    windows, _ = forecast_family.make_family_windows(
        seeds, kinds, size=SIZE, days=DAYS, noisy_fraction=noisy, gap_fraction=gaps
    )
    per_series = len(windows) // (len(seeds) * len(kinds))
    heights = []
    for seed in seeds:  # the windows' order: seed, then kind, then start day
        for kind in kinds:
            s = forecast_family.generate_family_series(kind, size=SIZE, days=DAYS, seed=int(seed))
            heights += [height_channel(height_above_water(s.elevation, s.permanent))] * per_series
    return with_height(windows, np.stack(heights))


def eval_flood_windows(seeds: Sequence[int]) -> tuple[fc.Windows, np.ndarray]:
    """The evaluation-only flood windows with their height above drainage, and each window's phase."""
    windows, phases = evalflood.make_eval_flood_windows(seeds, size=EVAL_SIZE, days=EVAL_DAYS)
    per_series = len(windows) // len(seeds)
    heights = []
    for seed in seeds:
        series = evalflood.generate_eval_flood(int(seed), size=EVAL_SIZE, days=EVAL_DAYS)
        heights += [height_channel(series.hand)] * per_series
    return with_height(windows, np.stack(heights)), np.asarray(phases)


def skills(model: HeightConvLSTM, windows: fc.Windows) -> list[float]:
    """Accuracy skill against persistence at t+1..t+3 (the class channels scored, as in the model card)."""
    pred = fc.predict(model, windows.inputs)  # type: ignore[arg-type]
    classes_only = fc.Windows(windows.inputs[:, :, : fc.N_CLASSES], windows.targets, windows.valid, "classes")
    return [row.skill for row in fc.score_methods(classes_only, pred) if row.method == "model"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=240, help="training series per kind (default 240)")
    parser.add_argument("--steps", type=int, default=8000, help="training steps (default 8000)")
    parser.add_argument("--held-out", type=int, default=24, help="held-out series per kind and flood series (24)")
    parser.add_argument("--quick", action="store_true", help="a few series and steps: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.series, args.steps, args.held_out = 2, 4, 1
    torch.set_num_threads(2)
    start = time.perf_counter()
    train = family_windows(range(args.series), forecast_family.FAMILY_KINDS, noisy=0.05, gaps=0.15)
    held = range(HELD_OUT_SEED, HELD_OUT_SEED + args.held_out)
    sets = {kind: family_windows(held, [kind], noisy=0.0, gaps=0.0) for kind in forecast_family.FAMILY_KINDS[:4]}
    floods, phases = eval_flood_windows(range(EVAL_FLOOD_SEED, EVAL_FLOOD_SEED + args.held_out))
    sets["evaluation-only floods"] = floods
    for phase in ("rising", "receding"):
        index = np.flatnonzero(phases == phase)
        if index.size:
            sets[f"evaluation-only floods, {phase}"] = floods.subset(index)
    print(f"{len(train)} training windows; scoring on {', '.join(f'{k} ({len(w)})' for k, w in sets.items())}")
    results = {}
    for use_height in (True, False):
        torch.manual_seed(0)
        model = HeightConvLSTM(use_height=use_height)
        fc.train_forecaster(model, train, steps=args.steps, batch_size=4, lr=1e-2, seed=0, crop=32)  # type: ignore[arg-type]
        results[use_height] = {name: skills(model, w) for name, w in sets.items()}

    def cell(values: list[float]) -> str:
        return " / ".join(f"{v:+.2f}" for v in values)

    print("\n| held-out data | skill t+1 / t+2 / t+3 with height | with the height channel zeroed |\n|---|---|---|")
    for name in sets:
        print(f"| {name} | {cell(results[True][name])} | {cell(results[False][name])} |")
    print(f"\n{args.series} series per kind, {args.steps} steps each; {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
