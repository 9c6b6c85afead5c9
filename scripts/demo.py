"""make demo: generate the sample SAR series and run the preprocessing chain through qgis_process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from qgisproc import ROOT, qgis_process_env, run_algorithm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_output", help="folder for the sample data and the outputs")
    parser.add_argument("--size", type=int, default=512, help="sample scene size in pixels")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    data = out / "data"
    results = out / "preprocessing"
    results.mkdir(parents=True, exist_ok=True)

    print(f"1/8 Generating the synthetic Sentinel-1-like series in {data}")
    subprocess.run(
        [sys.executable, "-m", "training.synthetic", "--out", str(data), "--size", str(args.size), "--days", "10"],
        cwd=ROOT,
        check=True,
    )
    manifest = json.loads((data / "manifest.json").read_text())
    scenes = [data / f["sar"] for f in manifest["files"]]
    env = qgis_process_env(out / ".qgis-profile")

    def step(label: str, algorithm: str, params: dict[str, object]) -> dict[str, object]:
        t0 = time.perf_counter()
        result = run_algorithm(algorithm, params, env)
        print(f"{label}: {algorithm} in {time.perf_counter() - t0:.1f} s")
        return result["results"]

    filtered = results / "sar_lee_refined.tif"
    r = step("2/8 Speckle filter", "sarseg:speckle_filter",
             {"INPUT": scenes[0], "FILTER": 1, "WINDOW": 7, "ESTIMATE_LOOKS": "true", "OUTPUT": filtered})  # fmt: skip
    print(
        f"    estimated number of looks (VV): {r['LOOKS_USED']:.2f}; the generator's speckle has {manifest['looks']} "
        "looks, forest/urban texture and field edges lower the image's effective ENL"
    )
    db = results / "sar_lee_refined_db.tif"
    step("3/8 Convert to dB", "sarseg:convert_db", {"INPUT": filtered, "DIRECTION": 0, "OUTPUT": db})
    normalized = results / "sar_lee_refined_db_zscore.tif"
    step("4/8 Normalize", "sarseg:normalize",
         {"INPUT": db, "METHOD": 0, "OUTPUT": normalized, "OUTPUT_STATS": results / "normalization.json"})  # fmt: skip
    stack = results / "sar_stack.tif"
    r = step("5/8 Stack time series", "sarseg:stack_time_series",
             {"INPUTS": [str(s) for s in scenes], "OUTPUT": stack})  # fmt: skip
    print(f"    dates: {r['DATES_OUT']}")
    patches = results / "patches"
    r = step("6/8 Extract patches", "sarseg:extract_patches",
             {"INPUT": db, "LABELS": data / manifest["files"][0]["labels"], "PATCH_SIZE": 64, "STRIDE": 64,
              "VAL_FRACTION": 0.25, "SPLIT_BLOCK": 128, "OUTPUT": patches})  # fmt: skip
    print(f"    {r['TRAIN_COUNT']} training / {r['VAL_COUNT']} validation patches")

    segmentation = out / "segmentation"
    segmentation.mkdir(parents=True, exist_ok=True)
    classes = segmentation / "classes.tif"
    confidence = segmentation / "confidence.tif"
    step(
        "7/8 Segment",
        "sarseg:segment",
        {"INPUT": scenes[0], "MODEL": 0, "OUTPUT": classes, "OUTPUT_CONFIDENCE": confidence},
    )
    report = segmentation / "evaluation.html"
    r = step("8/8 Evaluate against the generator's truth", "sarseg:evaluate_segmentation",
             {"PREDICTED": classes, "REFERENCE": data / manifest["files"][0]["labels"], "OUTPUT_HTML": report,
              "OUTPUT_TABLE": segmentation / "evaluation.csv"})  # fmt: skip
    print(f"    mIoU {r['MIOU']:.3f}, overall accuracy {r['OVERALL_ACCURACY']:.3f} (default model, sample scene)")

    print("\nOutputs:")
    print(f"  sample data (SAR, labels, communes): {data}")
    for path in (filtered, db, normalized, stack, patches / "index.csv", classes, report):
        print(f"  {path}")
    print("Open them in QGIS, or run any step yourself, e.g.:")
    print(f"  qgis_process run sarseg:speckle_filter -- INPUT={scenes[0]} FILTER=0 OUTPUT=/tmp/lee.tif")
    return 0


if __name__ == "__main__":
    sys.exit(main())
