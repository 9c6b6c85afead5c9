#!/usr/bin/env python3
"""Segmentation model inference speed: onnxruntime (the plugin's path) and torch eager, in megapixels per second.

Runs the default bundled model (``sar_seg_plugin/models/sarseg_unet_vvvh.onnx``, or ``--model PATH``) on random
512 x 512 tiles, batch 1, with full graph optimisation and 2 intra-op threads, after warm-up; then the same
architecture in torch eager mode (built from the model's ``training.arch`` / ``arch_kwargs`` metadata with
random weights: the speed does not depend on the weights) with ``torch.set_num_threads(2)``.

Usage: ``.venv/bin/python bench/segment_model.py [--model PATH] [--tile 512] [--repeats 10] [--threads 2]
[--skip-torch]``. Exit status 0 whatever the figures: it measures, it does not test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DEFAULT_MODEL = ROOT / "sar_seg_plugin" / "models" / "sarseg_unet_vvvh.onnx"
TARGET_MPS = 1.0


def _timed(run: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        run()
        times.append(time.perf_counter() - tic)
    return times


def _mps(tile: int, times: list[float]) -> dict[str, float]:
    pixels = tile * tile
    median = statistics.median(times)
    return {
        "median_seconds": median,
        "mps": pixels / median / 1e6,
        "best_mps": pixels / min(times) / 1e6,
    }


def onnx_speed(model: Path, tile: int = 512, repeats: int = 10, threads: int = 2, warmup: int = 2) -> dict[str, float]:
    """Median MP/s of onnxruntime (CPU, ORT_ENABLE_ALL, ``threads`` intra-op threads) on one tile per run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    bands = int(session.get_inputs()[0].shape[1])
    x = np.random.default_rng(0).standard_normal((1, bands, tile, tile)).astype(np.float32)
    return _mps(tile, _timed(lambda: session.run(None, {name: x}), warmup, repeats))


def torch_speed(model: Path, tile: int = 512, repeats: int = 5, threads: int = 2, warmup: int = 1) -> dict[str, float]:
    """Median MP/s of the same architecture in torch eager mode (no_grad, eval, random weights)."""
    import onnx
    import torch

    from training.models import create_model

    props = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    training = json.loads(props.get("sarseg.training", "{}"))
    arch, kwargs = training.get("arch"), dict(training.get("arch_kwargs") or {})
    if not arch:
        raise ValueError(f"{model} does not name its architecture in sarseg.training")
    torch.set_num_threads(threads)
    net = create_model(arch, **kwargs).eval()
    x = torch.randn(1, int(kwargs.get("in_channels", 2)), tile, tile)

    def run() -> None:
        with torch.no_grad():
            net(x)

    return _mps(tile, _timed(run, warmup, repeats))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX segmentation model")
    p.add_argument("--tile", type=int, default=512, help="tile side in pixels (a multiple of 16)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads")
    p.add_argument("--skip-torch", action="store_true", help="onnxruntime only")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if not args.model.is_file():
        print(f"no model at {args.model}: run `make models` first", file=sys.stderr)
        return 1
    size_mb = args.model.stat().st_size / 1e6
    print(f"{args.model.name} ({size_mb:.1f} MB), {args.tile} x {args.tile} tiles, batch 1, {args.threads} threads")
    ort_result = onnx_speed(args.model, args.tile, args.repeats, args.threads)
    verdict = "PASS" if ort_result["mps"] >= TARGET_MPS else "FAIL"
    print(
        f"  onnxruntime (ORT_ENABLE_ALL): {ort_result['mps']:.2f} MP/s median, {ort_result['best_mps']:.2f} best "
        f"({ort_result['median_seconds'] * 1000:.0f} ms per tile)  [{verdict}: target >= {TARGET_MPS} MP/s]"
    )
    if not args.skip_torch:
        torch_result = torch_speed(args.model, args.tile, max(3, args.repeats // 2), args.threads)
        print(
            f"  torch eager (no_grad):        {torch_result['mps']:.2f} MP/s median, {torch_result['best_mps']:.2f} "
            f"best ({torch_result['median_seconds'] * 1000:.0f} ms per tile)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
