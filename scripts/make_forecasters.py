#!/usr/bin/env python3
"""Train, evaluate and export the bundled forecasters and write their model-card section (``make forecasters``).

``make models`` runs it after the segmentation models. Everything is seeded:

1. the class-map forecaster (ConvLSTM) on the dynamics family of ``training.forecast_family`` (floods spreading
   from rivers, lakes and rain-fed depressions at drawn speeds and turning days over drawn reliefs, crops
   harvested and replanted, areas where nothing changes; a share of the series fed as class maps with
   segmentation-like errors, a share of the windows with a missing day) and the series of ``training.synthetic``;
2. the backscatter forecaster (ConvLSTM, VV/VH in dB, masked MSE) on the speckled series of ``training.synthetic``;
3. held-out evaluation of the exported step graphs (onnxruntime): the model, persistence and the per-pixel trend
   (``sar_seg_plugin.core.forecast_methods``, the code of the plugin's hindcast), per horizon, on held-out seeds of
   every kind, on noisy inputs and on missing days, on ``training.synthetic`` series, and on the evaluation-only
   flood generator ``training.evalflood`` (code of its own, never used for training);
4. the section between the ``forecasters`` markers of ``sar_seg_plugin/models/MODEL_CARD.md``.

``--score-only`` skips 1 and 2: the forecasters already in ``--models-dir`` are scored as they are (their training
facts read from their metadata), and ``--previous DIR`` names older step graphs to score beside them.

Usage: ``.venv/bin/python scripts/make_forecasters.py [--models-dir DIR] [--quick] [--score-only [--previous DIR]]``.
About ten minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "scripts")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
from card_sections import update_section  # noqa: E402

MODELS_DIR = ROOT / "sar_seg_plugin" / "models"
FORECAST_DIR = MODELS_DIR / "forecast"
MODEL_CARD = "MODEL_CARD.md"
CLASSES_FILE = "sarseg_convlstm_classes.onnx"  # -> _encoder.onnx / _decoder.onnx
DB_FILE = "sarseg_convlstm_db.onnx"
CARD_BEGIN = "<!-- BEGIN forecasters: written by scripts/make_forecasters.py -->"
CARD_END = "<!-- END forecasters -->"
THREADS = 2
TRAIN_SEED = 0  # family / generator series seeds TRAIN_SEED + i
HELD_OUT_SEED = 10_000  # held-out series seeds HELD_OUT_SEED + i (evaluation-only floods: EVAL_FLOOD_SEED + i)
EVAL_FLOOD_SEED = 50_000
FLOOD_KINDS = ("flood_river", "flood_lake", "flood_rain")
FLOOD_T3_TARGET = 0.10


@dataclasses.dataclass(frozen=True)
class Budget:
    """Data sizes and training lengths."""

    size: int = 64
    days: int = 10
    sequence_length: int = 4
    family_seeds: int = 48  # per kind
    generator_seeds: int = 16
    hidden: int = 16
    layers: int = 1
    crop: int = 32  # training crops (px) of the 64 px series: cheaper steps, wider than the receptive field
    steps: int = 8000
    batch: int = 4
    lr: float = 1e-2
    noisy_fraction: float = 0.05
    gap_fraction: float = 0.15
    held_out_seeds: int = 24  # per kind (8 were too few to tell a skill of a few hundredths from zero)
    eval_flood_seeds: int = 24
    eval_flood_size: int = 96
    eval_flood_days: int = 15
    db_seeds: int = 32
    db_steps: int = 800
    db_held_out_seeds: int = 8


SCORING_FIELDS = ("held_out_seeds", "eval_flood_seeds", "eval_flood_size", "eval_flood_days", "db_held_out_seeds")


def recipe(budget: Budget) -> dict[str, Any]:
    """The fields of ``budget`` that make the forecasters (all but how many held-out series score them)."""
    return {k: v for k, v in dataclasses.asdict(budget).items() if k not in SCORING_FIELDS}


QUICK = Budget(family_seeds=2, generator_seeds=2, steps=20, held_out_seeds=1, eval_flood_seeds=1, db_seeds=2,
               db_steps=10, db_held_out_seeds=1)  # fmt: skip


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def seeds(base: int, n: int) -> list[int]:
    return [base + i for i in range(n)]


def concat(parts: Sequence[Any]) -> Any:
    """One ``Windows`` from several."""
    from training.forecasting import Windows

    return Windows(
        np.concatenate([p.inputs for p in parts]),
        np.concatenate([p.targets for p in parts]),
        np.concatenate([p.valid for p in parts]),
        parts[0].input_kind,
    )


def train_and_export(windows: Any, out: Path, input_kind: str, budget: Budget, steps: int, note: str) -> dict:
    """Train a ConvLSTM on ``windows`` and export its two step graphs; returns what the card says about it."""
    from training import forecasting as fc

    model = fc.build_forecaster("convlstm", windows.inputs.shape[2], input_kind, budget.hidden, budget.layers)
    tic = time.perf_counter()
    losses = fc.train_forecaster(model, windows, steps=steps, batch_size=budget.batch, lr=budget.lr, seed=0,
                                 crop=budget.crop, log_every=max(1, steps // 5))  # fmt: skip
    seconds = time.perf_counter() - tic
    params = sum(p.numel() for p in model.parameters())
    info = {"data": note, "steps": steps, "final_loss": float(np.mean(losses[-max(1, steps // 10) :])),
            "params": params, "windows": len(windows), "seconds": round(seconds, 1),
            "date": datetime.date.today().isoformat(), "recipe": recipe(budget)}  # fmt: skip
    enc, dec = fc.export_step_onnx(model, out, budget.sequence_length, pixel_size_m=10.0, training_info=info)
    for path in (enc, dec):
        path.chmod(0o644)
    log(f"{out.name}: {params:,} parameters, {len(windows)} windows, {steps} steps in {seconds:.0f} s")
    return {"encoder": enc, "decoder": dec, **info}


TRAINING_FACTS = ("data", "steps", "params", "windows", "seconds", "date", "recipe")


def read_entry(base: Path, budget: Budget | None = None) -> dict:
    """A forecaster already exported at ``base`` (its step graphs) and the facts its training recorded in their
    metadata; with ``budget``, refused unless it was made by that budget's recipe (the card describes it)."""
    from training import forecasting as fc

    enc, dec = fc.step_paths(base)
    if not (enc.is_file() and dec.is_file()):
        raise SystemExit(f"no forecaster at {enc} and {dec}: build one first (make forecasters)")
    info = json.loads(fc.StepSessions(enc, dec).metadata.get(fc.METADATA_PREFIX + "training", "{}"))
    missing = [k for k in TRAINING_FACTS if k not in info]
    if missing:
        raise SystemExit(f"{enc.name} does not record its training ({', '.join(missing)}): rebuild it")
    if budget is not None:
        wanted = recipe(budget)
        differ = [f"{k} {info['recipe'].get(k)} (now {v})" for k, v in wanted.items() if info["recipe"].get(k) != v]
        if differ:
            raise SystemExit(f"{enc.name} was made with another recipe: {', '.join(differ)}; rebuild it")
    return {"encoder": enc, "decoder": dec, **{k: info[k] for k in TRAINING_FACTS}}


def predict(entry: dict, windows: Any, batch: int = 16) -> np.ndarray:
    """The exported step graphs' forecasts (n, K, C, H, W) with onnxruntime."""
    from training import forecasting as fc

    sessions = fc.StepSessions(entry["encoder"], entry["decoder"], threads=THREADS)
    horizons = windows.targets.shape[1]
    return np.concatenate(
        [sessions.run(windows.inputs[i : i + batch], horizons) for i in range(0, len(windows), batch)]
    )


def scored(entry: dict, windows: Any) -> list[dict]:
    """Rows (method, horizon, accuracy, mIoU or RMSE, skill) of model, persistence and trend on ``windows``."""
    from training.forecasting import score_methods

    return [dataclasses.asdict(r) for r in score_methods(windows, predict(entry, windows))]  # -inf kept


def evaluate_classes(entry: dict, budget: Budget) -> dict[str, list[dict]]:
    """Scores of the class forecaster per data set: every family kind (clean), noisy inputs, missing days, the
    training generator's own series, and the evaluation-only floods (all windows, rising, receding)."""
    from training import forecast_family
    from training import forecasting as fc

    out: dict[str, list[dict]] = {}
    common = {"size": budget.size, "days": budget.days, "sequence_length": budget.sequence_length}
    held = seeds(HELD_OUT_SEED, budget.held_out_seeds)
    for kind in forecast_family.FAMILY_KINDS:
        windows, _ = forecast_family.make_family_windows(held, [kind], noisy_fraction=0.0, gap_fraction=0.0, **common)
        out[kind] = scored(entry, windows)
    kinds = forecast_family.FAMILY_KINDS
    noisy, _ = forecast_family.make_family_windows(held, kinds, noisy_fraction=1.0, gap_fraction=0.0, **common)
    out["noisy inputs (all kinds)"] = scored(entry, noisy)
    gaps, _ = forecast_family.make_family_windows(held, kinds, noisy_fraction=0.0, gap_fraction=1.0, **common)
    out["a missing day (all kinds)"] = scored(entry, gaps)
    generator = fc.make_windows(held, size=budget.size, days=budget.days, sequence_length=budget.sequence_length,
                                n_communes=4)  # fmt: skip
    out["training.synthetic series"] = scored(entry, generator)
    flood, phases, seen = eval_floods(budget)
    out["evaluation-only floods"] = scored(entry, flood)
    for phase in ("rising", "receding"):
        index = np.flatnonzero(np.asarray(phases) == phase)
        if index.size:
            out[f"evaluation-only floods, {phase}"] = scored(entry, flood.subset(index))
    for phase in ("rising", "receding"):
        index = np.flatnonzero(np.asarray(seen) == phase)
        if index.size:
            out[f"evaluation-only floods, {phase} in the input dates"] = scored(entry, flood.subset(index))
    return out


def eval_flood_args(budget: Budget) -> dict[str, Any]:
    """The evaluation-only flood series the card scores (``evalflood.make_eval_flood_windows`` arguments)."""
    return {"seeds": seeds(EVAL_FLOOD_SEED, budget.eval_flood_seeds), "size": budget.eval_flood_size,
            "days": budget.eval_flood_days, "sequence_length": budget.sequence_length}  # fmt: skip


@functools.lru_cache(maxsize=2)
def eval_floods(budget: Budget) -> tuple[Any, np.ndarray, np.ndarray]:
    """The evaluation-only flood windows the card scores and each window's phase over its forecast days and over
    its input dates; made once per budget (every forecaster scored, and :func:`turning_share`, use them)."""
    from training import evalflood

    flood, after = evalflood.make_eval_flood_windows(**eval_flood_args(budget))
    _, before = evalflood.make_eval_flood_windows(**eval_flood_args(budget), period="input")
    return flood, np.asarray(after), np.asarray(before)


def turning_share(budget: Budget) -> float:
    """Of the evaluation-only flood windows rising over their input dates, the share receding over their forecast
    days (the flood turned)."""
    _, after, before = eval_floods(budget)
    rising = before == "rising"
    return float((after[rising] == "receding").mean()) if rising.any() else float("nan")


def evaluate_db(entry: dict, budget: Budget) -> dict[str, list[dict]]:
    """RMSE (dB) of the backscatter forecaster, persistence and trend on held-out speckled series of its training
    generator (ENL 4.4), and on scenes of the evaluation-only generator (`training.evalgen`: its own layouts and
    radiometry; land cover unchanged, speckle drawn anew each day) at ENL 4.4, 1 and 10."""
    from training import evalgen
    from training import forecasting as fc

    windows = fc.make_windows(
        seeds(HELD_OUT_SEED, budget.db_held_out_seeds), size=budget.size, days=budget.days,
        sequence_length=budget.sequence_length, input_kind="continuous", n_communes=4,
    )  # fmt: skip
    out = {"training.synthetic series, ENL 4.4": scored(entry, windows)}
    for enl in (4.4, 1.0, 10.0):
        parts = []
        for seed in seeds(EVAL_FLOOD_SEED, budget.db_held_out_seeds):
            sigma0, valid = evalgen.backscatter_series(seed, budget.size, budget.days, enl)
            parts.append(fc.value_windows(fc.db_maps(sigma0, valid), valid, budget.sequence_length))
        out[f"evaluation-only scenes (no change), ENL {enl:g}"] = scored(entry, concat(parts))
    return out


# --------------------------------------------------------------------------------------------
# Card
# --------------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "-inf" if value < 0 else "+inf"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _cell(rows: list[dict], method: str, horizon: int) -> dict:
    return next(r for r in rows if r["method"] == method and r["horizon"] == horizon)


def class_table(results: dict[str, list[dict]], previous: dict[str, list[dict]] | None = None) -> list[str]:
    """Accuracy and skill per data set and horizon; with ``previous``, the replaced model's skill beside."""
    extra = " skill of the previous model |" if previous else ""
    lines = [
        "| data | horizon | model | persistence | trend | skill of the model | skill of the trend |" + extra,
        "|---|---|---|---|---|---|---|" + ("---|" if previous else ""),
    ]
    for name, rows in results.items():
        for h in sorted({r["horizon"] for r in rows}):
            m, p, t = (_cell(rows, k, h) for k in ("model", "persistence", "trend"))
            line = (
                f"| {name if h == 1 else ''} | t+{h} | {_f(m['accuracy'])} | {_f(p['accuracy'])} | "
                f"{_f(t['accuracy'])} | {_f(m['skill'], 2, True)} | {_f(t['skill'], 2, True)} |"
            )
            if previous:
                line += f" {_f(_cell(previous[name], 'model', h)['skill'], 2, True)} |"
            lines.append(line)
    return lines


def db_table(results: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| data | horizon | RMSE model (dB) | persistence | trend | skill of the model | skill of the trend |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for h in sorted({r["horizon"] for r in rows}):
            m, p, t = (_cell(rows, k, h) for k in ("model", "persistence", "trend"))
            lines.append(
                f"| {name if h == 1 else ''} | t+{h} | {_f(m['rmse'], 2)} | {_f(p['rmse'], 2)} | {_f(t['rmse'], 2)} | "
                f"{_f(m['skill'], 2, True)} | {_f(t['skill'], 2, True)} |"
            )
    return lines


def checks(classes: dict[str, list[dict]], db: dict[str, list[dict]]) -> dict[str, bool]:
    """The targets: the class forecaster beats both baselines at every horizon on every kind (areas where
    nothing changes excepted: there persistence is exact, so the model can at best match it), by >= 0.10 accuracy
    skill at t+3 on floods; the backscatter forecaster beats persistence."""
    out = {}
    for name, rows in classes.items():
        if name == "static":
            worst = min(_cell(rows, "model", h)["accuracy"] for h in (1, 2, 3))
            out["no change: model accuracy >= 0.99 at every horizon"] = worst >= 0.99
            continue
        beats = all(_cell(rows, "model", h)["skill"] > max(0.0, _cell(rows, "trend", h)["skill"]) for h in (1, 2, 3))
        out[f"{name}: model beats persistence and trend at every horizon"] = beats
        if name.startswith("flood") or name.startswith("evaluation-only floods"):
            out[f"{name}: t+3 skill >= {FLOOD_T3_TARGET}"] = _cell(rows, "model", 3)["skill"] >= FLOOD_T3_TARGET
    for name, rows in db.items():
        out[f"backscatter, {name}: model beats persistence at every horizon"] = all(
            _cell(rows, "model", h)["skill"] > 0 for h in (1, 2, 3)
        )
    return out


def card_section(r: dict) -> str:
    b: Budget = r["budget"]
    c, d = r["classes_model"], r["db_model"]
    lines = [
        CARD_BEGIN,
        "## Forecasters",
        "",
        (
            f"Trained by `make forecasters` (`scripts/make_forecasters.py`, also run by `make models`) on {c['date']}; "
            f"the tables below scored on {r['date']} by `scripts/make_forecasters.py --score-only` (the same "
            f"forecasters, more held-out series) in {r['minutes']:.1f} min on {THREADS} CPU threads."
            if r["score_only"]
            else f"Produced by `make forecasters` (`scripts/make_forecasters.py`, also run by `make models`) on "
            f"{r['date']} in {r['minutes']:.1f} min on {THREADS} CPU threads."
        ),
        f"Both are ConvLSTMs ({b.layers} layer"
        f"{'s' if b.layers > 1 else ''}, hidden {b.hidden}, kernel 3, trained on random {b.crop} px crops): "
        f"{b.sequence_length} input dates -> t+1, t+2, t+3, exported as two step graphs (the encoder step once per "
        "input date, the decoder step once per horizon; the time loop runs outside ONNX).",
        "",
        "| file | input -> output | parameters | trained on |",
        "|---|---|---|---|",
        f"| `forecast/{c['encoder'].name}` + `_decoder` | one-hot class maps -> class probabilities | "
        f"{c['params']:,} | {c['windows']} windows, {b.steps} steps ({c['seconds']:.0f} s) |",
        f"| `forecast/{d['encoder'].name}` + `_decoder` | VV/VH backscatter (dB) -> VV/VH (dB) | "
        f"{d['params']:,} | {d['windows']} windows, {b.db_steps} steps ({d['seconds']:.0f} s) |",
        "",
        "**Training data of the class forecaster.** `training.forecast_family`: per series, a drawn story among "
        f"{', '.join(r['kinds'])} ({b.family_seeds} series of each, {b.size} x {b.size} px, {b.days} days, seeds "
        f"{TRAIN_SEED}..{TRAIN_SEED + b.family_seeds - 1}): floods rising and receding at drawn speeds, turning on "
        "drawn days, spreading from a river, from a lake, or filling rain-fed depressions, over drawn reliefs; crops "
        "harvested and replanted parcel by parcel; no change at all. "
        f"{b.noisy_fraction:.0%} of the series are fed as class maps with segmentation-like errors (bare soil <-> "
        "vegetation most often, bare soil -> water, forest <-> built-up) while the targets stay the true maps; "
        f"{b.gap_fraction:.0%} of the windows miss one input day. Plus {b.generator_seeds} series of "
        "`training.synthetic.generate_series`.",
        "",
        "**How it is scored.** Held-out seeds "
        f"{HELD_OUT_SEED}..{HELD_OUT_SEED + b.held_out_seeds - 1} of every kind (clean inputs; then all kinds with "
        "noisy inputs, and with a missing day), held-out `training.synthetic` series, and "
        f"{b.eval_flood_seeds} series of `training.evalflood` (seeds {EVAL_FLOOD_SEED}..), a flood generator written "
        "only for evaluation with code of its own (a terrain of random hills and valleys, a river carved into it, "
        "a water level driven by rain pulses through two linear reservoirs), never used for training; its windows are "
        "also split by whether the flood rises or recedes over the forecast days (what then happened, which no "
        "forecaster is told: of the windows whose flood rose over the input dates, "
        f"{r['turning']:.0%} receded over the forecast days: the water level turned) and by whether it rose or receded "
        "over the input dates (what a user sees when the forecast is made). Every window, exported graphs run "
        "with onnxruntime. Persistence = the last input map repeated; trend = the share of each class in the pixel's "
        "5 x 5 px neighbourhood fitted by a least-squares line over the input dates and extended, the pixel keeping "
        "its class where nothing around it changes (`sar_seg_plugin.core.forecast_methods`: the same code scores "
        "the hindcast of `sarseg:forecast`). Accuracy over valid pixels; skill = 1 - (1 - accuracy) / (1 - accuracy "
        "of persistence); -inf where persistence is exact and the model is not. *Previous model*: the skill of the "
        f"class forecaster before this one ({r['previous_note']}), on the same windows.",
        "",
        *class_table(r["classes"], r["previous"]),
        "",
        "**Backscatter forecaster.** Trained with a masked MSE on "
        f"{b.db_seeds} speckled (ENL 4.4) `training.synthetic` series; scored by RMSE in dB on held-out seeds of "
        "that generator and on scenes of the evaluation-only generator `training.evalgen` (its own layouts and "
        "radiometry, land cover unchanged, speckle drawn anew each day) at three ENLs; skill = 1 - RMSE / RMSE of "
        "persistence. Speckle is not predictable: most of the gain over persistence is the speckle-free mean the "
        "model forecasts, not the change.",
        "",
        *db_table(r["db"]),
        "",
        "**Targets** (the class forecaster beats both baselines at every horizon on every kind, by >= "
        f"{FLOOD_T3_TARGET:.2f} accuracy skill at t+3 on floods; where nothing changes persistence is exact and the "
        "model can at best equal it):",
        "",
        *(f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in r["checks"].items()),
        "",
        "The training choices (one layer rather than two, the share of noisy series, the number of steps) were "
        "made by comparing whole builds on these tables, the evaluation-only floods included: they are a coarse "
        "selection on that generator, not a blind test of it.",
        "",
        "A forecaster only learns the dynamics it was shown: these are stories, not weather or hydrology. On a "
        "user's own series `sarseg:forecast` replays its forecasts from the last dates (the hindcast) and says "
        "how it compares with persistence there: trust that figure over this table.",
        CARD_END,
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where the step graphs (forecast/) and card go")
    p.add_argument("--quick", action="store_true", help="tiny budget: check the pipeline, do not ship the result")
    p.add_argument("--results", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument(
        "--score-only",
        action="store_true",
        help="score the forecasters already in --models-dir as they are (no training) and rewrite the card",
    )
    p.add_argument("--previous", type=Path, default=None,
                   help="a folder with older class-forecaster step graphs to score beside (default when training: "
                        "the ones the build replaces)")  # fmt: skip
    return p.parse_args(argv)


def copy_previous(forecast_dir: Path, into: Path) -> dict | None:
    """A copy in ``into`` of the class forecaster in ``forecast_dir`` (the one a build replaces), or None."""
    from training import forecasting as fc

    old_enc, old_dec = fc.step_paths(forecast_dir / CLASSES_FILE)
    if not (old_enc.is_file() and old_dec.is_file()):
        return None
    entry = {"encoder": into / old_enc.name, "decoder": into / old_dec.name}
    shutil.copy2(old_enc, entry["encoder"])
    shutil.copy2(old_dec, entry["decoder"])
    return entry


def previous_entry(folder: Path) -> dict:
    """Older class-forecaster step graphs in ``folder`` (``--previous``), to score beside the current ones."""
    from training import forecasting as fc

    enc, dec = fc.step_paths(folder / CLASSES_FILE)
    if not (enc.is_file() and dec.is_file()):
        raise SystemExit(f"--previous: no {enc.name} and {dec.name} in {folder}")
    return {"encoder": enc, "decoder": dec}


def training_note(entry: dict) -> str:
    from training import forecasting as fc

    meta = fc.StepSessions(entry["encoder"], entry["decoder"]).metadata
    return json.loads(meta.get(fc.METADATA_PREFIX + "training", "{}")).get("data", "no training note")


def train_both(forecast_dir: Path, budget: Budget) -> tuple[dict, dict]:
    """Train and export the class and backscatter forecasters into ``forecast_dir``."""
    from training import forecast_family
    from training import forecasting as fc

    for name in (CLASSES_FILE, DB_FILE):
        for path in fc.step_paths(forecast_dir / name):
            path.unlink(missing_ok=True)
    common = {"size": budget.size, "days": budget.days, "sequence_length": budget.sequence_length}
    family, _ = forecast_family.make_family_windows(
        seeds(TRAIN_SEED, budget.family_seeds), forecast_family.FAMILY_KINDS, noisy_fraction=budget.noisy_fraction,
        gap_fraction=budget.gap_fraction, **common,
    )  # fmt: skip
    generator = fc.make_windows(seeds(TRAIN_SEED, budget.generator_seeds), n_communes=4, **common)
    log(f"class data: {len(family)} family windows, {len(generator)} generator windows")
    classes_model = train_and_export(concat([family, generator]), forecast_dir / CLASSES_FILE, "classes", budget,
                                     budget.steps, class_note(budget))  # fmt: skip
    db_windows = fc.make_windows(seeds(TRAIN_SEED, budget.db_seeds), input_kind="continuous", n_communes=4, **common)
    db_note = f"training.synthetic series (ENL 4.4), seeds {TRAIN_SEED}..; held out {HELD_OUT_SEED}.."
    db_model = train_and_export(db_windows, forecast_dir / DB_FILE, "continuous", budget, budget.db_steps, db_note)
    return classes_model, db_model


def class_note(budget: Budget) -> str:
    from training import forecast_family

    return (
        f"training.forecast_family ({', '.join(forecast_family.FAMILY_KINDS)}; {budget.family_seeds} series each, "
        f"seeds {TRAIN_SEED}..) + training.synthetic series; held out: seeds {HELD_OUT_SEED}.. and training.evalflood"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(THREADS)
    from training import forecast_family

    budget = QUICK if args.quick else Budget()
    if set(seeds(TRAIN_SEED, budget.family_seeds)) & set(seeds(HELD_OUT_SEED, budget.held_out_seeds)):
        raise SystemExit("training and held-out seeds overlap")
    start = time.perf_counter()
    forecast_dir = args.models_dir / FORECAST_DIR.relative_to(MODELS_DIR)
    forecast_dir.mkdir(parents=True, exist_ok=True)
    kept = tempfile.TemporaryDirectory()
    if args.score_only:
        classes_model = read_entry(forecast_dir / CLASSES_FILE, budget)
        db_model = read_entry(forecast_dir / DB_FILE, budget)
        if classes_model["data"] != class_note(budget):
            raise SystemExit(f"the class forecaster was trained on other data ({classes_model['data']}): rebuild it")
        previous = previous_entry(args.previous) if args.previous else None
    else:
        previous = previous_entry(args.previous) if args.previous else copy_previous(forecast_dir, Path(kept.name))
        classes_model, db_model = train_both(forecast_dir, budget)
    classes = evaluate_classes(classes_model, budget)
    db = evaluate_db(db_model, budget)
    previous_classes = evaluate_classes(previous, budget) if previous else None
    results = {
        "budget": budget,
        "date": datetime.date.today().isoformat(),
        "score_only": args.score_only,
        "kinds": list(forecast_family.FAMILY_KINDS),
        "classes_model": classes_model,
        "db_model": db_model,
        "classes": classes,
        "db": db,
        "checks": checks(classes, db),
        "turning": turning_share(budget),
        "previous": previous_classes,
        "previous_note": training_note(previous) if previous else "none",
        "minutes": (time.perf_counter() - start) / 60,
    }
    kept.cleanup()
    card = args.models_dir / MODEL_CARD
    update_section(card, CARD_BEGIN, CARD_END, card_section(results))
    log(f"updated {card} in {results['minutes']:.1f} min")
    print("\n".join(class_table(classes, previous_classes) + [""] + db_table(db)))
    for name, ok in results["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    if args.results:
        serialisable = {k: v for k, v in results.items() if k not in ("budget", "classes_model", "db_model")}
        serialisable["budget"] = dataclasses.asdict(budget)
        args.results.write_text(json.dumps(serialisable, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
