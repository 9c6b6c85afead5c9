"""make demo: generate the sample SAR series and run every SAR Seg tool on it through qgis_process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import s1_product
from qgisproc import ROOT, qgis_process_env, run_algorithm


def print_forecast_scores(maps: list[str], truth: list[Path]) -> None:
    """Pixel accuracy of each horizon against the generator's true map, and of persistence (t0 repeated)."""
    import numpy as np
    from osgeo import gdal

    def read(path: str | Path) -> np.ndarray:
        ds = gdal.Open(str(path))
        return ds.GetRasterBand(1).ReadAsArray()

    t0 = read(truth[0])
    for k, (predicted, true) in enumerate(zip(maps[1:], truth[1:]), start=1):
        target = read(true)
        valid = target != 255
        model = float((read(predicted)[valid] == target[valid]).mean())
        persistence = float((t0[valid] == target[valid]).mean())
        skill = 1 - (1 - model) / (1 - persistence) if persistence < 1 else 0.0
        print(f"    t+{k}: accuracy {model:.3f} vs persistence {persistence:.3f} (skill {skill:+.2f})")


def print_hindcast(table: Path) -> None:
    """The hindcast table: how the model, persistence and trend did on the series' own last days."""
    import csv

    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print("    no hindcast")
        return
    print(f"    hindcast on this area (forecasts replayed from {rows[0]['origins']}, scored on the observed days):")
    for h in sorted({int(r["horizon"]) for r in rows}):
        cells = {r["method"]: r for r in rows if int(r["horizon"]) == h}
        m, p, t = cells["model"], cells["persistence"], cells["trend"]
        print(
            f"    t+{h}: model {float(m['accuracy']):.3f} (skill {float(m['skill'] or '-inf'):+.2f}), persistence "
            f"{float(p['accuracy']):.3f}, trend {float(t['accuracy']):.3f} (skill {float(t['skill'] or '-inf'):+.2f})"
        )
    losing = [f"t+{r['horizon']}" for r in rows if r["method"] == "model" and not float(r["skill"] or "-inf") > 0]
    if losing:
        print(f"    the tool warned: on this area the model does not beat persistence at {', '.join(losing)}")


def print_cluster_agreement(result: dict[str, object], manifest: dict) -> None:
    """k, silhouette and the agreement of the clusters with the generator's commune archetypes."""
    from osgeo import ogr
    from sklearn.metrics import adjusted_rand_score

    ds = ogr.Open(str(result["OUTPUT"]))
    layer = ds.GetLayer(0)
    pairs = [(f.GetField("archetype"), f.GetField("cluster")) for f in layer]
    ds = None
    truth, found = zip(*[(a, c) for a, c in pairs if c is not None])
    print(
        f"    k = {result['CLUSTERS']} (chosen by silhouette; the generator used {len(manifest['archetype_names'])} "
        f"archetypes), mean silhouette {result['SILHOUETTE']:.3f}, {len(found)} of {len(pairs)} communes clustered"
    )
    print(f"    agreement with the true archetypes: adjusted Rand index {adjusted_rand_score(truth, found):.3f}")


def water_pixels(label_path: Path) -> int:
    from osgeo import gdal

    return int((gdal.Open(str(label_path)).ReadAsArray() == 0).sum())


def print_flood_scores(result: dict, folder: Path, before: Path, after: Path, communes: Path) -> None:
    """Flood IoU and per-commune flooded area against the generator's maps (flooded: water after, not before)."""
    import numpy as np
    from osgeo import gdal, ogr

    from sar_seg_plugin.core import flood

    pre, post = (gdal.Open(str(p)).ReadAsArray() for p in (before, after))
    truth = np.where((post == 0) & (pre != 0), flood.FLOODED, np.where((post == 0) & (pre == 0), 2, flood.DRY))
    truth = np.where((pre == 255) | (post == 255), 255, truth).astype(np.uint8)
    got_ds = gdal.Open(str(result["OUTPUT"]))
    got = got_ds.ReadAsArray()
    a, b = got == flood.FLOODED, truth == flood.FLOODED
    print(f"    flooded {result['FLOODED_KM2']:.3f} km² (true {b.sum() * 100 / 1e6:.3f}); water threshold "
          f"{result['WATER_THRESHOLD_OUT']:.2f} dB, change {result['CHANGE_THRESHOLD_OUT']:.2f} dB; flood IoU "
          f"against the generator's maps {(a & b).sum() / max((a | b).sum(), 1):.3f}")  # fmt: skip
    truth_path = folder / "truth.tif"
    copy = gdal.GetDriverByName("GTiff").CreateCopy(str(truth_path), got_ds)
    copy.GetRasterBand(1).WriteArray(truth)
    copy = None
    ds = ogr.Open(str(communes))
    wkbs = [bytes(f.GetGeometryRef().ExportToWkb()) for f in ds.GetLayer(0)]
    want = flood.flood_per_commune(str(truth_path), wkbs).flooded_km2
    have = flood.flood_per_commune(str(result["OUTPUT"]), wkbs).flooded_km2
    truth_path.unlink()
    big = want > 0.05
    errors = np.abs(have[big] / want[big] - 1)
    print(
        f"    flooded area per commune against the truth ({big.sum()} communes with > 0.05 km² flooded): "
        f"error median {100 * np.median(errors):.1f} %, largest {100 * errors.max():.1f} %"
    )


def print_model_card_figures(classes: Path) -> None:
    """What the default model scores on scenes its training generator did not make (figures of ``make models``,
    stored in the model's metadata), and what the input-domain check said about this run's input."""
    from osgeo import gdal

    sys.path.insert(0, str(ROOT))
    from sar_seg_plugin.models.registry import default_segmentation_model, load_model

    default = default_segmentation_model()
    meta = load_model(default, "cpu").metadata
    scored = meta.training.get("evaluation", {}).get("evaluation-only", {})
    if scored:
        picks = [d for d in ("ENL 4.4", "ENL 1", "20 m pixels", "ENL 4.4 + Refined Lee", "windy water") if d in scored]
        figures = ", ".join(f"{d} {scored[d]['miou']:.3f}" for d in picks)
        print(f"    {default} on the evaluation-only generator (never trained on): mIoU {figures} (MODEL_CARD.md)")
    ds = gdal.Open(str(classes))
    verdict, warnings = ds.GetMetadataItem("SARSEG_INPUT_DOMAIN"), ds.GetMetadataItem("SARSEG_DOMAIN_WARNINGS")
    check = ds.GetMetadataItem("SARSEG_MODEL_CHECK")
    ds = None
    print(f"    input-domain check of this scene: {verdict}" + (f" ({warnings})" if warnings else ""))
    if check:
        print(f"    int8 check: {check}")


def sentinel1_to_land_cover(data: Path, manifest: dict, step: Callable[..., dict[str, object]]) -> list[Path]:
    """A Sentinel-1 GRD product (.zip) that holds the first sample scene, through the shipped model, scored."""
    from osgeo import gdal

    s1 = data / "sentinel1"
    if not s1_product.available():
        print("2/13 Sentinel-1 product: skipped (its metadata is missing: run make setup)")
        return []
    s1.mkdir(parents=True, exist_ok=True)
    first = manifest["files"][0]
    product, truth = s1_product.radar_scene_product(s1, data / first["sar"], data / first["labels"], zip_it=True)
    ds = gdal.Open(str(truth))
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    bounds = (x0, y0 + py * ds.RasterYSize, x0 + px * ds.RasterXSize, y0)
    epsg = int(ds.GetSpatialRef().GetAuthorityCode(None))
    aoi = s1_product.area_of_interest(s1 / "area_of_interest.gpkg", bounds, epsg)
    print(
        f"2/13 From a Sentinel-1 product: {product.name}\n    (a real Sentinel-1B IW GRDH product's metadata; its "
        "digital numbers hold the first sample scene in radar geometry at the swath centre)"
    )
    land_cover, backscatter = s1 / "land_cover.tif", s1 / "backscatter_lee_db.tif"
    params = {"product": product, "aoi": aoi, "land_cover": land_cover, "filtered_backscatter_db": backscatter}
    step("    import, Lee 7x7, dB, segment", "sarseg:Sentinel-1 product to land cover", params)
    r = step("    evaluate against the generator's truth", "sarseg:evaluate_segmentation",
             {"PREDICTED": land_cover, "REFERENCE": truth, "OUTPUT_HTML": s1 / "evaluation.html",
              "OUTPUT_TABLE": s1 / "evaluation.csv"})  # fmt: skip
    print(
        f"    mIoU {r['MIOU']:.3f}, overall accuracy {r['OVERALL_ACCURACY']:.3f} (from the product, in UTM; against "
        "step 9's, what the import costs: the scene is the training generator's, not a measure of the model)"
    )
    return [product, land_cover, backscatter]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_output", help="folder for the sample data and the outputs")
    parser.add_argument("--size", type=int, default=512, help="sample scene size in pixels")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    data = out / "data"
    results = out / "preprocessing"
    results.mkdir(parents=True, exist_ok=True)

    print(f"1/13 Generating the synthetic Sentinel-1-like series in {data}")
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

    from_product = sentinel1_to_land_cover(data, manifest, step)

    filtered = results / "sar_lee_refined.tif"
    r = step("3/13 Speckle filter", "sarseg:speckle_filter",
             {"INPUT": scenes[0], "FILTER": 1, "WINDOW": 7, "ESTIMATE_LOOKS": "true", "OUTPUT": filtered})  # fmt: skip
    print(
        f"    estimated number of looks (VV): {r['LOOKS_USED']:.2f}; the generator's speckle has {manifest['looks']} "
        "looks, forest/urban texture and field edges lower the image's effective ENL"
    )
    db = results / "sar_lee_refined_db.tif"
    step("4/13 Convert to dB", "sarseg:convert_db", {"INPUT": filtered, "DIRECTION": 0, "OUTPUT": db})
    normalized = results / "sar_lee_refined_db_zscore.tif"
    step("5/13 Normalize", "sarseg:normalize",
         {"INPUT": db, "METHOD": 0, "OUTPUT": normalized, "OUTPUT_STATS": results / "normalization.json"})  # fmt: skip
    stack = results / "sar_stack.tif"
    r = step("6/13 Stack time series", "sarseg:stack_time_series",
             {"INPUTS": [str(s) for s in scenes], "OUTPUT": stack})  # fmt: skip
    print(f"    dates: {r['DATES_OUT']}")
    patches = results / "patches"
    r = step("7/13 Extract patches", "sarseg:extract_patches",
             {"INPUT": db, "LABELS": data / manifest["files"][0]["labels"], "PATCH_SIZE": 64, "STRIDE": 64,
              "VAL_FRACTION": 0.25, "SPLIT_BLOCK": 128, "OUTPUT": patches})  # fmt: skip
    print(f"    {r['TRAIN_COUNT']} training / {r['VAL_COUNT']} validation patches")

    segmentation = out / "segmentation"
    segmentation.mkdir(parents=True, exist_ok=True)
    classes = segmentation / "classes.tif"
    confidence = segmentation / "confidence.tif"
    seg = step(
        "8/13 Segment",
        "sarseg:segment",
        {"INPUT": scenes[0], "OUTPUT": classes, "OUTPUT_CONFIDENCE": confidence},
    )
    report = segmentation / "evaluation.html"
    r = step("9/13 Evaluate against the generator's truth", "sarseg:evaluate_segmentation",
             {"PREDICTED": classes, "REFERENCE": data / manifest["files"][0]["labels"], "OUTPUT_HTML": report,
              "OUTPUT_TABLE": segmentation / "evaluation.csv"})  # fmt: skip
    print(f"    mIoU {r['MIOU']:.3f}, overall accuracy {r['OVERALL_ACCURACY']:.3f} (default model, sample scene)")
    print(f"    the model's own estimate (mean confidence): {seg['MEAN_CONFIDENCE']:.3f}; "
          f"{seg['UNSURE_SHARE']:.1%} of the pixels under 0.5")  # fmt: skip
    print_model_card_figures(classes)

    forecast = out / "forecast"
    forecast.mkdir(parents=True, exist_ok=True)
    first = 3  # days 0..6 in (the forecast starts from days 3..6, the hindcast replays days 3..5), 7..9 forecast
    labels = [data / f["labels"] for f in manifest["files"]]
    r = step("10/13 Forecast t+1..t+3", "sarseg:forecast",
             {"INPUTS": [str(p) for p in labels[: first + 4]], "OUTPUT_FOLDER": forecast,
              "OUTPUT_CHANGE": forecast / "change.tif", "OUTPUT_AREAS": forecast / "areas.csv",
              "OUTPUT_HINDCAST": forecast / "hindcast.csv"})  # fmt: skip
    print(f"    from the class maps of {', '.join(r['DATES_OUT'].split(',')[:1])} and the 3 days before: "
          f"maps for {', '.join(r['DATES_OUT'].split(',')[1:])}")  # fmt: skip
    print_hindcast(forecast / "hindcast.csv")
    print("    against the generator's true maps of the forecast days (unknown to the tool):")
    print_forecast_scores(r["OUTPUT_LAYERS"], labels[first + 3 : first + 7])
    clusters = out / "clustering"
    clusters.mkdir(parents=True, exist_ok=True)
    r = step("11/13 Cluster communes", "sarseg:cluster_communes",
             {"INPUT": data / manifest["communes_file"], "RASTER": scenes[0], "CLASS_RASTER": classes,
              "FIELD": "population", "NAME_FIELD": "name", "OUTPUT": clusters / "communes_clustered.gpkg",
              "OUTPUT_SIMILAR": clusters / "similar_communes.csv",
              "OUTPUT_REPORT": clusters / "report.html"})  # fmt: skip
    print_cluster_agreement(r, manifest)
    flood_dir = out / "flood"
    flood_dir.mkdir(parents=True, exist_ok=True)
    peak = max(range(len(labels)), key=lambda d: water_pixels(labels[d]))
    r = step(f"12/13 Flood map ({manifest['files'][peak]['date']} against {manifest['files'][0]['date']})",
             "sarseg:flood_map",
             {"POST": scenes[peak], "PRE": scenes[0], "COMMUNES": data / manifest["communes_file"],
              "NAME_FIELD": "name", "OUTPUT": flood_dir / "flood.tif", "OUTPUT_POLYGONS": flood_dir / "flood.gpkg",
              "OUTPUT_COMMUNES": flood_dir / "communes_flooded.gpkg",
              "OUTPUT_HTML": flood_dir / "report.html"})  # fmt: skip
    print_flood_scores(r, flood_dir, labels[0], labels[peak], data / manifest["communes_file"])
    print("13/13 QGIS project with the styled, dated outputs")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_project.py"), "--out", str(out)], check=True)

    print("\nOutputs:")
    print(f"  sample data (SAR, labels, communes): {data}")
    for path in (*from_product, filtered, db, normalized, stack, patches / "index.csv", classes, report, forecast,
                 clusters / "report.html", flood_dir / "report.html", out / "demo.qgz"):  # fmt: skip
        print(f"  {path}")
    print(f"Open the project with the forecast ready for the slider: qgis {out / 'demo.qgz'}")
    print("Open them in QGIS, or run any step yourself, e.g.:")
    print(f"  qgis_process run sarseg:speckle_filter -- INPUT={scenes[0]} FILTER=0 OUTPUT=/tmp/lee.tif")
    return 0


if __name__ == "__main__":
    sys.exit(main())
