"""Train several architectures on the same data and split and compare accuracy, size and speed in one table.

Usage::

    python -m training.compare --data DIR --archs unet,mobilenetv2_unet --epochs 10 --out runs/compare
        [--pretrained-vs-scratch] [--arch-kwargs '{"unet": {"width": 16}}'] [training options ...]

Every run uses the same seed, so :func:`training.train_segmentation.prepare_data` gives the same split. Columns:
validation overall accuracy and mIoU at the best epoch, parameters, seconds per epoch (training + validation),
and CPU inference throughput in megapixels per second of onnxruntime on the exported model (256 x 256 tiles).
``--pretrained-vs-scratch`` adds efficientnet_lite0_unet twice: with the shipped ImageNet encoder weights (and
``--freeze-encoder-epochs`` applied) and from random initialisation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.checkpoint import CheckpointError, load_checkpoint
from training.data import DataError
from training.export import export_model, metadata_from_checkpoint
from training.models import ARCHITECTURES
from training.train_segmentation import build_parser, check_args, json_ready, train

PRETRAINED_ARCH = "efficientnet_lite0_unet"
BENCH_TILE = 256


@dataclass
class Row:
    """One line of the comparison table."""

    model: str
    arch: str
    parameters: int
    seconds_per_epoch: float
    overall_accuracy: float
    miou: float
    mp_per_s: float
    best_epoch: int


def onnx_throughput(path: Path, bands: int, tile: int = BENCH_TILE, runs: int = 5) -> float:
    """Megapixels per second of onnxruntime (CPU, full graph optimisation) on single ``tile`` x ``tile`` tiles."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, bands, tile, tile)).astype(np.float32)
    session.run(None, {name: x})  # warm-up: allocations and kernel selection
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, {name: x})
    return runs * tile * tile / (time.perf_counter() - start) / 1e6


def _runs(args: argparse.Namespace) -> list[tuple[str, str, dict, int]]:
    """(label, arch, arch kwargs, freeze-encoder epochs) of every training to do."""
    runs = [(arch, arch, dict(args.per_arch.get(arch, {})), args.freeze_encoder_epochs) for arch in args.archs]
    if args.pretrained_vs_scratch:
        base = dict(args.per_arch.get(PRETRAINED_ARCH, {}))
        runs = [r for r in runs if r[1] != PRETRAINED_ARCH]
        runs.append(
            (f"{PRETRAINED_ARCH} (ImageNet)", PRETRAINED_ARCH, {**base, "pretrained": True}, args.freeze_encoder_epochs)
        )
        runs.append((f"{PRETRAINED_ARCH} (scratch)", PRETRAINED_ARCH, {**base, "pretrained": False}, 0))
    return runs


def compare(args: argparse.Namespace) -> list[Row]:
    """Train, export and time every architecture; returns the table rows."""
    rows = []
    for label, arch, kwargs, freeze in _runs(args):
        folder = args.out / label.replace(" (", "_").replace(")", "").lower()
        train_args = argparse.Namespace(**vars(args.train))
        train_args.arch, train_args.arch_kwargs, train_args.out = arch, kwargs, folder
        train_args.freeze_encoder_epochs = freeze
        train_args.logdir = None if args.train.logdir is None else args.train.logdir / folder.name
        print(f"== {label}")
        result = train(train_args)
        ckpt = load_checkpoint(folder / "best.pt")
        onnx_path = export_model(ckpt, folder / "model.onnx", metadata_from_checkpoint(ckpt, tile_size=BENCH_TILE))
        bands = len(ckpt.metadata["input_bands"])
        metrics = result.best_metrics
        rows.append(
            Row(
                model=label,
                arch=arch,
                parameters=result.parameters,
                seconds_per_epoch=result.seconds_per_epoch,
                overall_accuracy=metrics.get("overall_accuracy", math.nan),
                miou=metrics.get("miou", math.nan),
                mp_per_s=onnx_throughput(onnx_path, bands, BENCH_TILE, args.bench_runs),
                best_epoch=result.best_epoch,
            )
        )
    return rows


def comparison_table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| model | accuracy | mIoU | parameters | s/epoch | CPU MP/s (ONNX, 256 px) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.overall_accuracy:.3f} | {r.miou:.3f} | {r.parameters:,} | "
            f"{r.seconds_per_epoch:.2f} | {r.mp_per_s:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Comparison options plus the training options of ``train_segmentation`` (shared by every run)."""
    p = build_parser()
    p.prog = "python -m training.compare"
    p.description = __doc__.splitlines()[0]
    p.set_defaults(out=Path("runs/compare"))
    p.add_argument("--archs", default="unet,mobilenetv2_unet", help="comma-separated architectures")
    p.add_argument("--pretrained-vs-scratch", action="store_true", help=f"add {PRETRAINED_ARCH} with/without ImageNet")
    p.add_argument("--bench-runs", type=int, default=5, help="timed onnxruntime runs per model")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in args.archs if a not in ARCHITECTURES]
    if unknown or not (args.archs or args.pretrained_vs_scratch):
        p.error(f"--archs: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(ARCHITECTURES)}")
    if args.bench_runs < 1:
        p.error("--bench-runs must be at least 1")
    if args.resume:
        p.error("--resume is not supported by compare: every architecture is trained from the start")
    if args.init:
        p.error("--init is not supported by compare: every architecture is trained from the start")
    try:
        per_arch = json.loads(args.arch_kwargs)
    except ValueError as exc:
        p.error(f"--arch-kwargs must be JSON ({exc})")
    if not isinstance(per_arch, dict) or not all(isinstance(v, dict) for v in per_arch.values()):
        p.error('--arch-kwargs for compare maps an architecture to its options, e.g. {"unet": {"width": 8}}')
    args.per_arch = per_arch
    # Checked per architecture: the patch and tile sizes must suit each one.
    args.train = argparse.Namespace(**vars(args))
    for arch in {*args.archs, *([PRETRAINED_ARCH] if args.pretrained_vs_scratch else [])}:
        check_args(p, argparse.Namespace(**{**vars(args.train), "arch": arch, "arch_kwargs": {}}))
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for unusable data)."""
    args = parse_args(argv)
    try:
        rows = compare(args)
    except (DataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = comparison_table(rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(json_ready([asdict(r) for r in rows]), indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
