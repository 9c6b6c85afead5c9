"""core.forecast with the bundled ConvLSTM forecaster: skill on held-out series, block streaming, alignment, outputs."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from rasters import read_raster, write_raster

from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.forecast import FORECAST_KEY, change_codes, forecast_rasters, plan_hindcast, select_sequence
from sar_seg_plugin.core.timeseries import DatedRaster
from training import synthetic

pytest.importorskip("onnxruntime")

DAY0 = dt.date(2026, 3, 1)
EVAL_FLOOD_SEEDS = range(60000, 60003)  # training.evalflood: a generator the forecaster never saw


@pytest.fixture(scope="module")
def forecaster():
    from sar_seg_plugin.models.registry import load_forecaster

    return load_forecaster("sarseg_convlstm_classes", "cpu")


def write_labels(folder, labels: np.ndarray, start: int = 0, **kwargs) -> list[DatedRaster]:
    """Daily label rasters (nodata 255) from ``start``; one DatedRaster per day."""
    items = []
    for t, day in enumerate(labels):
        date = DAY0 + dt.timedelta(days=start + t)
        path = write_raster(folder / f"labels_{date:%Y%m%d}.tif", day.astype(np.uint8), nodata=255, **kwargs)
        items.append(DatedRaster(path, date))
    return items


def test_bundled_forecaster_beats_persistence_on_evaluation_only_floods(forecaster, tmp_path):
    """Every 4-day window of flood series from the evaluation-only generator (its own code, never used for
    training), forecast through the plugin's forecast_rasters and scored here against the true maps of the next 3
    days (pixel accuracy over valid pixels), with persistence scored alike."""
    from training import evalflood

    correct = {h: [0, 0] for h in (1, 2, 3)}  # model, persistence
    total = {h: 0 for h in (1, 2, 3)}
    for seed in EVAL_FLOOD_SEEDS:
        series = evalflood.generate_eval_flood(seed, size=96, days=12)
        folder = tmp_path / str(seed)
        folder.mkdir()
        items = write_labels(folder, series.labels)
        for start in range(12 - 4 - 3 + 1):
            out = folder / f"w{start}"
            out.mkdir()
            result = forecast_rasters(items[start : start + 4], forecaster, str(out))
            t0 = series.labels[start + 3]
            for step in result.steps[1:]:
                truth = series.labels[start + 3 + step.step]
                valid = truth != synthetic.LABEL_NODATA
                predicted = read_raster(step.path)[0]
                correct[step.step][0] += int((predicted[valid] == truth[valid]).sum())
                correct[step.step][1] += int((t0[valid] == truth[valid]).sum())
                total[step.step] += int(valid.sum())
    skills = []
    for h in (1, 2, 3):
        model, persistence = (c / total[h] for c in correct[h])
        skills.append(1 - (1 - model) / (1 - persistence))
        print(f"t+{h}: accuracy {model:.4f} vs persistence {persistence:.4f}, skill {skills[-1]:+.3f}")
    # measured on these seeds: +0.165 / +0.097 / +0.079 (the card, 12 other 15-day seeds: +0.21 / +0.18 / +0.13)
    assert all(s > 0 for s in skills), f"the forecaster does not beat persistence at every horizon: {skills}"
    assert skills[2] > 0.05


def test_blocks_with_halo_equal_the_whole_raster(forecaster, tmp_path, sample_series):
    items = write_labels(tmp_path, sample_series.labels)
    whole, blocks = tmp_path / "whole", tmp_path / "blocks"
    whole.mkdir()
    blocks.mkdir()
    a = forecast_rasters(items, forecaster, str(whole), probabilities=True, block_size=1024)
    b = forecast_rasters(items, forecaster, str(blocks), probabilities=True, block_size=37)  # 37: odd, many seams
    assert forecaster.halo == (4 + 3) * 1 * 1  # (dates + horizons) x layers x kernel radius
    for sa, sb in zip(a.steps[1:], b.steps[1:]):
        pa, pb = (
            read_raster(sa.probabilities_path, dtype=np.float64),
            read_raster(sb.probabilities_path, dtype=np.float64),
        )
        np.testing.assert_allclose(pb, pa, atol=1e-6, equal_nan=True)
        assert (read_raster(sa.path) == read_raster(sb.path)).all()


def test_outputs_dates_areas_and_change_map(forecaster, tmp_path, sample_series):
    items = write_labels(tmp_path, sample_series.labels)
    out = tmp_path / "out"
    out.mkdir()
    change = tmp_path / "change.tif"
    result = forecast_rasters(items, forecaster, str(out), prefix="run", change_path=str(change))
    t0 = DAY0 + dt.timedelta(days=3)
    assert [s.date for s in result.steps] == [t0 + dt.timedelta(days=k) for k in range(4)]
    assert [s.label for s in result.steps] == ["t0", "t+1", "t+2", "t+3"]
    assert [p.split("/")[-1] for p in (s.path for s in result.steps)][1] == "run_t+1_2026-03-05.tif"
    # t0 is the last input, unchanged
    assert (read_raster(result.steps[0].path) == sample_series.labels[3]).all()
    maps = [read_raster(s.path)[0] for s in result.steps]
    input_nodata = sample_series.labels[3] == 255
    for m in maps:
        assert (m[input_nodata] == 255).all() and (m[~input_nodata] < 5).all()
    # areas: 10 m pixels -> 1e-4 km² each, counts from the written maps
    rows = result.areas()
    for s, m in zip(result.steps, maps):
        counts = np.bincount(m[m != 255], minlength=5)
        got = {r["class"]: r for r in rows if r["step"] == s.step}
        for c, name in enumerate(synthetic.CLASS_NAMES):
            assert got[name]["pixels"] == counts[c]
            assert got[name]["area_km2"] == pytest.approx(counts[c] * 1e-4)
        assert sum(r["fraction"] for r in got.values()) == pytest.approx(1.0)
    # change map: t0 -> t+3 codes, checked against the written maps
    codes = read_raster(change)[0]
    expected = np.where(maps[0] == maps[3], 0, 1 + maps[0].astype(int) * 5 + maps[3])
    expected[(maps[0] == 255) | (maps[3] == 255)] = 255
    assert (codes == expected).all()


def test_change_codes_by_hand():
    before = np.array([[0, 1, 4], [255, 2, 3]], np.uint8)
    after = np.array([[0, 2, 0], [1, 2, 255]], np.uint8)
    assert change_codes(before, after, 5).tolist() == [[0, 1 + 1 * 5 + 2, 1 + 4 * 5 + 0], [255, 0, 255]]


def test_probability_rasters_give_the_same_forecast_as_class_maps(forecaster, tmp_path, sample_series):
    labels = sample_series.labels
    classes_dir, probs_dir = tmp_path / "c", tmp_path / "p"
    classes_dir.mkdir()
    probs_dir.mkdir()
    a = forecast_rasters(write_labels(tmp_path, labels), forecaster, str(classes_dir), probabilities=True)
    items = []
    for t, day in enumerate(labels):
        onehot = np.stack([(day == c) for c in range(5)]).astype(np.float32)
        onehot[:, day == 255] = np.nan
        date = DAY0 + dt.timedelta(days=t)
        items.append(DatedRaster(write_raster(tmp_path / f"probs_{date:%Y%m%d}.tif", onehot), date))
    b = forecast_rasters(items, forecaster, str(probs_dir), probabilities=True)
    for sa, sb in zip(a.steps, b.steps):
        assert (read_raster(sa.path) == read_raster(sb.path)).all()


def test_misaligned_input_is_aligned_to_the_first_raster(forecaster, tmp_path, sample_series):
    labels = sample_series.labels
    items = write_labels(tmp_path, labels[:3])
    # the last date on a grid shifted by 3 pixels east and cropped: aligned back by nearest neighbour
    date = DAY0 + dt.timedelta(days=3)
    shifted = labels[3][:, 3:]
    path = write_raster(tmp_path / "shifted_20260304.tif", shifted, nodata=255, origin=(500030.0, 4800000.0))
    items.append(DatedRaster(path, date))
    out = tmp_path / "out"
    out.mkdir()
    result = forecast_rasters(items, forecaster, str(out))
    assert any("resampled" in n for n in result.notes)
    t0 = read_raster(result.steps[0].path)[0]
    assert t0.shape == labels[3].shape
    assert (t0[:, 3:] == labels[3][:, 3:]).all()  # values land back on their own pixels
    assert (t0[:, :3] == 255).all()  # outside the shifted raster: nodata


def test_sequence_selection():
    def items(days):
        return [DatedRaster(f"r{d}.tif", DAY0 + dt.timedelta(days=d)) for d in days]

    with pytest.raises(SarSegError, match="needs a sequence of 4 daily rasters; 3 given"):
        select_sequence(items([0, 1, 2]), 4)
    with pytest.raises(SarSegError, match="same date 2026-03-02"):
        select_sequence(items([0, 1, 1, 2]), 4)
    chosen, notes = select_sequence(items([5, 3, 4, 0, 2, 1]), 4)
    assert [i.path for i in chosen] == ["r2.tif", "r3.tif", "r4.tif", "r5.tif"]
    assert any("sorted" in n for n in notes) and any("last 4 dates" in n for n in notes)
    _, notes = select_sequence(items([0, 1, 3, 4]), 4)
    assert any("not consecutive days" in n and "2026-03-02 -> 2026-03-04" in n for n in notes)


def test_nothing_written_when_cancelled(forecaster, tmp_path, sample_series):
    from sar_seg_plugin.core.errors import CancelledError

    items = write_labels(tmp_path, sample_series.labels)
    out = tmp_path / "out"
    out.mkdir()
    calls = []

    def cancel_on_third_block() -> bool:
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(CancelledError):
        forecast_rasters(items, forecaster, str(out), block_size=64, is_canceled=cancel_on_third_block)
    assert list(out.iterdir()) == []


def test_plan_hindcast_origins_and_targets():
    def items(days):
        return [DatedRaster(f"r{d}.tif", DAY0 + dt.timedelta(days=d)) for d in days]

    assert plan_hindcast(items(range(4)), 4, [1, 2, 3]) == []  # no date after a full window
    one = plan_hindcast(items(range(5)), 4, [1, 2, 3])
    assert [(o.index, o.window, o.targets) for o in one] == [(3, [0, 1, 2, 3], [(1, 4)])]
    three = plan_hindcast(items(range(9)), 4, [1, 2, 3])  # the 3 latest origins: 5, 6, 7
    assert [o.index for o in three] == [5, 6, 7]
    assert [o.targets for o in three] == [[(1, 6), (2, 7), (3, 8)], [(1, 7), (2, 8)], [(1, 8)]]
    # a missing day: targets are matched by date, so the origin before the gap has no t+1
    gap = plan_hindcast(items([0, 1, 2, 3, 5, 6]), 4, [1, 2, 3])
    assert [(o.index, o.targets) for o in gap] == [(3, [(2, 4), (3, 5)]), (4, [(1, 5)])]


def box_mean(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1)² window of the last two axes, borders extended by edge values (by shifted sums)."""
    padded = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(r, r), (r, r)], mode="edge")
    h, w = a.shape[-2:]
    return (
        sum(padded[..., dy : dy + h, dx : dx + w] for dy in range(2 * r + 1) for dx in range(2 * r + 1))
        / (2 * r + 1) ** 2
    )


def hindcast_series(tmp_path):
    series = synthetic.generate_series(size=64, days=8, seed=20011, n_communes=4)
    return series, write_labels(tmp_path, series.labels)


def test_hindcast_scores_equal_independent_forecasts(forecaster, tmp_path):
    """The hindcast of an 8-day series replays origins 4, 5, 6 (days, 0-based); each score is recomputed here:
    the model's from separate forecast runs on the earlier dates, persistence and trend from the true maps with
    numpy's own least-squares fit of the 5 x 5 neighbourhood means."""
    series, items = hindcast_series(tmp_path)
    labels = series.labels
    out = tmp_path / "out"
    out.mkdir()
    lines: list[str] = []
    result = forecast_rasters(items, forecaster, str(out), log=lines.append)
    hc = result.hindcast
    assert hc is not None and hc.origins == [DAY0 + dt.timedelta(days=d) for d in (4, 5, 6)]
    assert hc.observed == [DAY0 + dt.timedelta(days=d) for d in (5, 6, 7)]
    valid = labels[0] != synthetic.LABEL_NODATA
    pairs = {1: [(4, 5), (5, 6), (6, 7)], 2: [(4, 6), (5, 7)], 3: [(4, 7)]}
    model_maps = {}
    for origin in (4, 5, 6):
        folder = tmp_path / f"o{origin}"
        folder.mkdir()
        run = forecast_rasters(items[origin - 3 : origin + 1], forecaster, str(folder), hindcast=False)
        assert run.hindcast is None
        model_maps[origin] = [read_raster(s.path)[0] for s in run.steps[1:]]
    t = np.arange(4)
    for k, ks in pairs.items():
        right = {"model": 0, "persistence": 0, "trend": 0}
        total = 0
        for o, target in ks:
            truth = labels[target][valid]
            right["model"] += int((model_maps[o][k - 1][valid] == truth).sum())
            right["persistence"] += int((labels[o][valid] == truth).sum())
            window = np.stack([(labels[o - 3 : o + 1] == c) for c in range(5)], axis=1).astype(float)  # (T, C, h, w)
            local = box_mean(window, 2)
            slope = np.polyfit(t, local.reshape(4, -1), 1)[0].reshape(window.shape[1:])
            moving = (np.abs(slope) > 1e-6).any(axis=0)
            extrapolated = (
                np.where(moving, np.round(np.clip(local[-1] + k * slope, 0, 1), 5), window[-1]) + 1e-4 * window[-1]
            )
            right["trend"] += int((extrapolated.argmax(axis=0)[valid] == truth).sum())
            total += int(valid.sum())
        for method, count in right.items():
            row = hc.row(method, k)
            assert row.pairs == len(ks) and row.pixels == total
            assert row.accuracy == pytest.approx(count / total), (method, k)
        expected_skill = 1 - (1 - right["model"] / total) / (1 - right["persistence"] / total)
        assert hc.row("model", k).skill == pytest.approx(expected_skill)
    assert any(line.startswith("Hindcast on this area") for line in lines)
    assert any(line.startswith("  t+3 (1 forecast(s) scored): model") for line in lines)
    # the description in every map carries the hindcast (the dock reads it)
    from osgeo import gdal

    info = json.loads(gdal.Open(result.steps[1].path).GetMetadataItem(FORECAST_KEY))
    assert info["hindcast"]["rows"] == [r.as_dict() for r in hc.rows] and info["method"] == "model"


class AlwaysWater:
    """A forecaster that always says water: certainly worse than persistence on a mostly dry area."""

    state_stride, halo, device_used, architecture, name, input_kind = 1, 0, "cpu", "test", "always water", "classes"

    def __init__(self, metadata) -> None:  # noqa: ANN001
        self.metadata = metadata

    def run(self, sequence: np.ndarray, horizons: int) -> np.ndarray:
        out = np.zeros((sequence.shape[0], horizons, *sequence.shape[2:]), np.float32)
        out[:, :, 0] = 1.0
        return out


def test_hindcast_says_plainly_when_the_model_loses(forecaster, tmp_path):
    _, items = hindcast_series(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = forecast_rasters(items, AlwaysWater(forecaster.metadata), str(out))
    assert all(result.hindcast.row("model", k).skill < 0 for k in (1, 2, 3))
    verdict = [note for note in result.notes if "does NOT beat persistence" in note]
    assert verdict and "t+1, t+2, t+3" in verdict[0]
    # the real model on this series: the verdict appears only for horizons where its hindcast skill is <= 0
    real = forecast_rasters(items, forecaster, str(tmp_path), prefix="real")
    losing = [f"t+{k}" for k in (1, 2, 3) if not real.hindcast.row("model", k).skill > 0]
    assert any("does NOT beat" in note for note in real.notes) == bool(losing)


def test_baseline_methods_and_confidence(forecaster, tmp_path):
    series, items = hindcast_series(tmp_path)
    labels = series.labels
    valid = labels[0] != synthetic.LABEL_NODATA
    for method in ("persistence", "trend", "model"):
        out = tmp_path / method
        out.mkdir()
        result = forecast_rasters(items, forecaster, str(out), method=method, probabilities=True, confidence=True)
        assert result.method == method
        t0 = read_raster(result.steps[0].path)[0]
        for step in result.steps[1:]:
            classes = read_raster(step.path)[0]
            probs = read_raster(step.probabilities_path, dtype=np.float64)
            conf = read_raster(step.confidence_path, dtype=np.float64)[0]
            np.testing.assert_allclose(conf[valid], probs[:, valid].max(axis=0), atol=1e-6)
            assert np.isnan(conf[~valid]).all()
            assert (classes[valid] == probs[:, valid].argmax(axis=0)).all()
            changed = int(((classes != t0) & valid & (conf >= 0.8)).sum())
            assert step.changed_confident == changed
            assert step.changed_confident_share == pytest.approx(changed / valid.sum())
            if method == "persistence":
                assert (classes == t0).all() and changed == 0
        if method == "trend":
            window = np.stack([(labels[4:8] == c) for c in range(5)], axis=1).astype(float)
            local = box_mean(window, 2)
            slope = np.polyfit(np.arange(4), local.reshape(4, -1), 1)[0].reshape(window.shape[1:])
            for k, step in enumerate(result.steps[1:], start=1):
                moving = (np.abs(slope) > 1e-6).any(axis=0)
                expected = (
                    np.where(moving, np.round(np.clip(local[-1] + k * slope, 0, 1), 5), window[-1]) + 1e-4 * window[-1]
                )
                expected = expected.argmax(axis=0)
                assert (read_raster(step.path)[0][valid] == expected[valid]).all()


def test_class_maps_that_name_their_classes_in_another_order_are_recoded_by_name(forecaster, tmp_path, sample_series):
    """A user's own maps: the same five classes, coded 4, 3, 2, 1, 0 and named so (category names)."""
    from osgeo import gdal

    labels = sample_series.labels
    right, recoded = tmp_path / "right", tmp_path / "recoded"
    right.mkdir()
    recoded.mkdir()
    a = forecast_rasters(write_labels(tmp_path, labels), forecaster, str(right))
    own = tmp_path / "own"
    own.mkdir()
    items = write_labels(own, np.where(labels == 255, 255, 4 - labels.astype(np.int64)).astype(np.uint8))
    names = ["Bare_Soil", "Built-up", "Forest", "Vegetation", "Water"]  # loose spelling on purpose
    for item in items:
        ds = gdal.Open(item.path, gdal.GA_Update)
        ds.GetRasterBand(1).SetCategoryNames(names)
        ds = None
    lines = []
    b = forecast_rasters(items, forecaster, str(recoded), log=lines.append)
    for sa, sb in zip(a.steps, b.steps):
        assert (read_raster(sa.path) == read_raster(sb.path)).all()
    assert any("recoded by name, 0 -> 4 (bare soil), 1 -> 3 (built-up)" in line for line in lines)


def test_best_on_the_hindcast_writes_the_method_that_scored_best(forecaster, tmp_path):
    """The model is written unless a baseline's mean hindcast accuracy is 0.02 above it (recomputed here from the
    hindcast's rows); the maps are those of a run with that method; a model that always says water is not written."""
    from osgeo import gdal

    from sar_seg_plugin.core.forecast_methods import BEST

    _, items = hindcast_series(tmp_path)
    for name, model in (("water", AlwaysWater(forecaster.metadata)), ("real", forecaster)):
        out = tmp_path / name
        out.mkdir()
        lines: list[str] = []
        result = forecast_rasters(items, model, str(out), method=BEST, log=lines.append)
        accuracy = {
            m: np.mean([result.hindcast.row(m, k).accuracy for k in (1, 2, 3)])
            for m in ("model", "persistence", "trend")
        }
        baseline = "trend" if accuracy["trend"] > accuracy["persistence"] + 0.02 else "persistence"
        expected = baseline if accuracy[baseline] > accuracy["model"] + 0.02 else "model"
        assert expected == ("persistence" if name == "water" else "model")  # always water: clearly worse
        assert result.method == expected and result.chosen_by == "hindcast"
        note = next(line for line in lines if line.startswith(f"Method '{BEST}'"))
        assert f"model {accuracy['model']:.3f}, persistence {accuracy['persistence']:.3f}" in note
        assert not any("does NOT beat" in n for n in result.notes) or expected == "model"
        alone = tmp_path / f"{name}_alone"
        alone.mkdir()
        same = forecast_rasters(items, model, str(alone), method=expected, hindcast=False)
        for a, b in zip(result.steps, same.steps):
            assert np.array_equal(read_raster(a.path), read_raster(b.path))
        ds = gdal.Open(result.steps[1].path)
        assert ds.GetMetadataItem("METHOD") == expected and ds.GetMetadataItem("METHOD_CHOSEN_BY") == "hindcast"
        info = json.loads(ds.GetMetadataItem(FORECAST_KEY))
        assert info["method"] == expected and info["method_chosen_by"] == "hindcast"
    # four dates: no hindcast to choose on, the model is used and the log says so
    short = tmp_path / "short"
    short.mkdir()
    result = forecast_rasters(items[-4:], forecaster, str(short), method=BEST)
    assert result.method == "model" and result.chosen_by == "" and result.hindcast is None
    assert any("too short for a hindcast" in n for n in result.notes)
