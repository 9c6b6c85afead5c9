"""Train a map forecaster (ConvLSTM or LSTM over CNN features) on synthetic series and export its ONNX step graphs.

Training and validation use disjoint generator seeds; the report is computed on the validation (held-out) seeds
only, for the model and for persistence (tomorrow = today), per horizon, with skill = 1 - error / persistence error.

Usage::

    python -m training.train_forecaster --kind convlstm --days 10 --size 64 --epochs 5 --out forecast.onnx

writes ``forecast_encoder.onnx``, ``forecast_decoder.onnx`` (run them with
``training.forecasting.run_forecast_onnx``) and ``forecast_report.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from training import forecasting as fc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m training.train_forecaster", description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=fc.KINDS, default="convlstm", help="architecture")
    p.add_argument("--input", choices=fc.INPUT_KINDS, default="classes", help="class maps or backscatter (dB)")
    p.add_argument("--days", type=int, default=10, help="days per synthetic series")
    p.add_argument("--size", type=int, default=64, help="scene size in pixels (multiple of 4 for --kind lstm)")
    p.add_argument("--seq-len", type=int, default=None, help="input dates per example (default min(4, days - 3))")
    p.add_argument("--epochs", type=int, default=5, help="passes over the training windows")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--hidden", type=int, default=None, help="hidden channels (default 16 convlstm, 512 lstm)")
    p.add_argument("--layers", type=int, default=None, help="recurrent layers (default 1 convlstm, 2 lstm)")
    p.add_argument("--train-seeds", type=int, default=16, help="number of training series")
    p.add_argument("--val-seeds", type=int, default=4, help="number of held-out validation series")
    p.add_argument("--seed", type=int, default=0, help="base seed (training: seed.., held-out: 10000+seed..)")
    p.add_argument("--out", type=Path, required=True, help="output name; writes <stem>_encoder/_decoder.onnx")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args(argv)
    if args.size < 32:
        p.error("--size must be at least 32")
    if args.kind == "lstm" and args.size % 4:
        p.error("--size must be a multiple of 4 for --kind lstm")
    seq = args.seq_len or fc.default_sequence_length(args.days)
    if seq < 1 or args.days < seq + len(fc.HORIZONS):
        p.error(f"--days {args.days} must hold --seq-len {seq} input dates plus {len(fc.HORIZONS)} forecast dates")
    args.seq_len = seq
    if args.epochs < 1 or args.train_seeds < 1 or args.val_seeds < 1:
        p.error("--epochs, --train-seeds and --val-seeds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate against persistence on held-out seeds, export; returns the exit code."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    communes = 4
    train_seeds = [args.seed + i for i in range(args.train_seeds)]
    val_seeds = [10_000 + args.seed + i for i in range(args.val_seeds)]
    if set(train_seeds) & set(val_seeds):
        raise SystemExit("training and validation seeds overlap: use fewer --train-seeds")
    common = {"size": args.size, "days": args.days, "sequence_length": args.seq_len, "input_kind": args.input}
    train = fc.make_windows(train_seeds, n_communes=communes, **common)
    val = fc.make_windows(val_seeds, n_communes=communes, **common)
    model = fc.build_forecaster(args.kind, train.inputs.shape[2], args.input, args.hidden, args.layers)
    steps = args.epochs * math.ceil(len(train) / args.batch_size)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.kind} ({args.input}): {n_params:,} parameters, {len(train)} training windows from "
        f"{len(train_seeds)} seeds, {len(val)} held-out windows from {len(val_seeds)} other seeds, "
        f"{args.seq_len} input dates, {steps} steps",
        flush=True,
    )
    start = time.perf_counter()
    losses = fc.train_forecaster(
        model, train, steps=steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, log_every=max(1, steps // 5)
    )
    seconds = time.perf_counter() - start
    rows = fc.evaluate(
        fc.predict(model, val.inputs), fc.persistence_forecast(val.inputs), val.targets, val.valid, args.input
    )
    print(f"held-out seeds {val_seeds[0]}..{val_seeds[-1]}, model vs persistence (tomorrow = today):")
    print(fc.format_table(rows))
    info = {
        "data": f"synthetic series (training.synthetic), size {args.size}, {args.days} days, {communes} communes",
        "train_seeds": train_seeds,
        "val_seeds": val_seeds,
        "steps": steps,
        "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "val_metrics": rows,
    }
    enc, dec = fc.export_step_onnx(model, args.out, args.seq_len, pixel_size_m=10.0, training_info=info)
    report = dict(info, kind=args.kind, input_kind=args.input, config=model.config(), train_seconds=seconds)
    report_path = enc.with_name(enc.name.replace("_encoder.onnx", "_report.json"))
    report_path.write_text(json.dumps(report, indent=2))
    print(f"wrote {enc}, {dec} and {report_path} (trained in {seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
