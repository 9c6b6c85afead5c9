"""scripts/forecast_height_probe.py: the height channel, its place in the windows, and the model that reads it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import forecast_height_probe as probe  # noqa: E402

from training import forecast_family  # noqa: E402
from training import forecasting as fc  # noqa: E402


def test_height_above_the_nearest_water_by_hand():
    elevation = np.tile(np.arange(6, dtype=np.float64), (4, 1)) + 10.0  # rises 1 m per column from 10 m
    permanent = np.zeros((4, 6), bool)
    permanent[:, 0] = True  # a river along the first column, at 10 m
    np.testing.assert_allclose(probe.height_above_water(elevation, permanent), elevation - 10.0)
    permanent[:, 0], permanent[:, 5] = False, True  # now along the last, at 15 m: everything lies below it
    np.testing.assert_allclose(probe.height_above_water(elevation, permanent), elevation - 15.0)
    np.testing.assert_allclose(probe.height_above_water(elevation, None), elevation - 10.0)
    assert probe.height_channel(np.array([-9.0, 1.0, 40.0])).tolist() == [-2.0, 0.5, 5.0]  # units of 2 m, clipped


def test_each_window_carries_the_height_of_its_own_series():
    seeds, kinds = [3, 4], ["flood_river", "crops"]
    windows = probe.family_windows(seeds, kinds, noisy=0.0, gaps=0.0)
    common = {"size": probe.SIZE, "days": probe.DAYS, "gap_fraction": 0.0, "noisy_fraction": 0.0}
    plain, _ = forecast_family.make_family_windows(seeds, kinds, **common)
    np.testing.assert_array_equal(windows.inputs[:, :, :5], plain.inputs)
    per_series = len(plain) // 4
    last = forecast_family.generate_family_series("crops", size=probe.SIZE, days=probe.DAYS, seed=4)
    expected = probe.height_channel(probe.height_above_water(last.elevation, last.permanent))
    for date in range(windows.inputs.shape[1]):  # the last series' windows, every date
        for window in windows.inputs[-per_series:, date, 5]:
            np.testing.assert_array_equal(window, expected)
    assert not np.array_equal(windows.inputs[0, 0, 5], expected)  # the first series has another terrain


def test_the_zeroed_model_ignores_height_and_an_untrained_one_is_persistence():
    torch.manual_seed(0)
    maps = fc.one_hot(np.random.default_rng(0).integers(0, 5, (4, 24, 24)).astype(np.uint8))
    low, high = (np.concatenate([maps, np.full((4, 1, 24, 24), v, np.float32)], axis=1)[None] for v in (0.0, 3.0))
    for use_height in (True, False):
        model = probe.HeightConvLSTM(use_height=use_height).eval()
        untrained = fc.predict(model, low)  # type: ignore[arg-type]
        np.testing.assert_array_equal(untrained.argmax(2)[0], np.repeat(maps[-1:].argmax(1), 3, axis=0))
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.add_(0.2 * torch.randn_like(p))
        a, b = (fc.predict(model, x) for x in (low, high))  # type: ignore[arg-type]
        assert np.array_equal(a, b) != use_height


def test_quick_run_prints_both_columns(capsys):
    assert probe.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| skill t+1 / t+2 / t+3 with height | with the height channel zeroed |" in out
    assert "| evaluation-only floods |" in out and "| crops |" in out
