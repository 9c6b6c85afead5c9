"""Sentinel-1 IW GRDH products with known pixel values, built on a real product's metadata.

The real part: the manifest and the two annotation files (with the real geolocation grid) of
``S1B_IW_GRDH_1SDV_20210401T052623_...`` from the source distribution of the PyPI package ``xarray-sentinel``
0.9.6 (``make setup`` puts them in ``build/s1data``). That distribution has no calibration or noise files and its
measurement holds ones, so this module writes them: calibration and noise XML in the products' own format, whose
look-up tables sample the known functions below, and digital numbers from a known backscatter pattern.

``scale`` shrinks the product (``scale`` = 20: 1289 x 834 px) by dividing every pixel and line number of the
annotation (image size, geolocation grid) by it: the same footprint with coarser pixels. Exact values for tests:
:func:`sigma_lut`, :func:`noise_range`, :func:`noise_azimuth` and :func:`digital_numbers`.
"""

from __future__ import annotations

import math
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "build" / "s1data" / "S1B_IW_GRDH_1SDV_20210401T052623_20210401T052648_026269_032297_ECC8.SAFE"
FULL_SAMPLES, FULL_LINES = 25788, 16685
SWATH_EDGES = (0.0, 0.36, 0.68, 1.0)  # IW1 | IW2 | IW3 as shares of the range samples (azimuth noise blocks)
BORDER = 6  # full-size pixels of zero DN at the near and far range edges (as in real GRD products)


def available(source: Path = SOURCE) -> bool:
    return (source / "manifest.safe").is_file() and any((source / "annotation").glob("*.xml"))


# --- the known functions (of fixture pixel p and line l) ----------------------------------------------------------


def sigma_lut(line: np.ndarray, pixel: np.ndarray, samples: int, lines: int) -> np.ndarray:
    """sigmaNought calibration value: bilinear in (line, pixel), so any bilinear interpolation of it is exact."""
    u, v = pixel / max(samples - 1, 1), line / max(lines - 1, 1)
    return 320.0 + 60.0 * u + 12.0 * v - 8.0 * u * v


def beta_lut(line: np.ndarray, pixel: np.ndarray, samples: int, lines: int) -> np.ndarray:
    return np.full(np.broadcast(line, pixel).shape, 237.0)


def gamma_lut(line: np.ndarray, pixel: np.ndarray, samples: int, lines: int) -> np.ndarray:
    return 0.9 * sigma_lut(line, pixel, samples, lines)


def noise_range(line: np.ndarray, pixel: np.ndarray, samples: int, lines: int) -> np.ndarray:
    """Range noise LUT value (DN² units): bilinear in (line, pixel)."""
    u, v = pixel / max(samples - 1, 1), line / max(lines - 1, 1)
    return 900.0 + 500.0 * u + 200.0 * v


def noise_azimuth(line: np.ndarray, swath: int, lines: int) -> np.ndarray:
    """Azimuth noise LUT value of swath block ``swath`` (0..2): linear in the line."""
    v = line / max(lines - 1, 1)
    return (0.9 + 0.1 * swath) + 0.2 * v


def swath_of(pixel: np.ndarray, samples: int) -> np.ndarray:
    """Azimuth noise block (0..2) of each range sample."""
    bounds = [round(e * samples) for e in SWATH_EDGES]
    return np.searchsorted(np.asarray(bounds[1:-1]), pixel, side="right")


def true_sigma0_db(line: np.ndarray, pixel: np.ndarray, band: int) -> np.ndarray:
    """The backscatter the digital numbers encode: fields of -22..-2 dB (VV), 6 dB darker in VH."""
    cell = (np.floor(pixel / 37.0) * 7 + np.floor(line / 23.0) * 13) % 11
    return -22.0 + 2.0 * cell - (6.0 if band else 0.0)


def digital_numbers(line: np.ndarray, pixel: np.ndarray, band: int, samples: int, lines: int, scale: int) -> np.ndarray:
    """uint16 DN with DN² = sigma0 · A² + noise (rounded), zero in the border columns."""
    a = sigma_lut(line, pixel, samples, lines)
    n = noise_range(line, pixel, samples, lines) * noise_azimuth(line, swath_of(pixel, samples), lines)
    s0 = 10.0 ** (true_sigma0_db(line, pixel, band) / 10.0)
    dn = np.sqrt(s0 * a * a + n)
    border = max(1, BORDER // scale)
    dn = np.where((pixel < border) | (pixel >= samples - border), 0.0, dn)
    return np.clip(np.rint(dn), 0, 65535).astype(np.uint16)


# --- the files ----------------------------------------------------------------------------------------------------


def _numbers(values: np.ndarray, fmt: str = "{:.6e}") -> str:
    return " ".join(fmt.format(v) for v in values)


def _header(annotation: str, kind: str) -> str:
    match = re.search(r"<adsHeader>.*?</adsHeader>", annotation, re.S)
    assert match is not None
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{kind}>\n  {match.group(0)}\n'


def _line_time(annotation: str) -> Callable[[float], str]:
    """Azimuth time of a line (ISO text), from the annotation's first line time and line interval."""
    import datetime as dt

    first = dt.datetime.fromisoformat(re.search(r"<productFirstLineUtcTime>([^<]+)<", annotation).group(1))
    interval = float(re.search(r"<azimuthTimeInterval>([^<]+)<", annotation).group(1))
    return lambda line: (first + dt.timedelta(seconds=line * interval)).isoformat(timespec="microseconds")


def _vector_lines(lines: int, step: int) -> list[int]:
    return list(range(0, lines, step)) + ([lines - 1] if (lines - 1) % step else [])


def calibration_xml(annotation: str, samples: int, lines: int, line_step: int, pixel_step: int) -> str:
    """calibration-*.xml: one vector every ``line_step`` lines, values every ``pixel_step`` px (last px included)."""
    pixels = np.array(_vector_lines(samples, pixel_step), float)
    out = [_header(annotation, "calibration")]
    constant = "<absoluteCalibrationConstant>1.000000e+00</absoluteCalibrationConstant>"
    out.append(f"  <calibrationInformation>\n    {constant}\n  </calibrationInformation>\n")
    vec_lines = _vector_lines(lines, line_step)
    when = _line_time(annotation)
    out.append(f'  <calibrationVectorList count="{len(vec_lines)}">\n')
    for line in vec_lines:
        ln = np.full(pixels.shape, float(line))
        sigma, beta, gamma = (f(ln, pixels, samples, lines) for f in (sigma_lut, beta_lut, gamma_lut))
        out.append(
            "    <calibrationVector>\n"
            f"      <azimuthTime>{when(line)}</azimuthTime>\n      <line>{line}</line>\n"
            f'      <pixel count="{len(pixels)}">{_numbers(pixels, "{:.0f}")}</pixel>\n'
            f'      <sigmaNought count="{len(pixels)}">{_numbers(sigma)}</sigmaNought>\n'
            f'      <betaNought count="{len(pixels)}">{_numbers(beta)}</betaNought>\n'
            f'      <gamma count="{len(pixels)}">{_numbers(gamma)}</gamma>\n'
            f'      <dn count="{len(pixels)}">{_numbers(np.full(pixels.shape, 200.0))}</dn>\n'
            "    </calibrationVector>\n"
        )
    out.append("  </calibrationVectorList>\n</calibration>\n")
    return "".join(out)


def noise_xml(annotation: str, samples: int, lines: int, line_step: int, pixel_step: int) -> str:
    """noise-*.xml: range vectors (each with its own pixel list, as in GRD products) and one azimuth vector per
    swath block."""
    out = [_header(annotation, "noise")]
    vec_lines = _vector_lines(lines, line_step)
    when = _line_time(annotation)
    out.append(f'  <noiseRangeVectorList count="{len(vec_lines)}">\n')
    for k, line in enumerate(vec_lines):
        offset = (k * 3) % pixel_step  # pixel lists differ from vector to vector
        pixels = np.array(sorted({0, *range(offset, samples, pixel_step), samples - 1}), float)
        values = noise_range(np.full(pixels.shape, float(line)), pixels, samples, lines)
        out.append(
            "    <noiseRangeVector>\n"
            f"      <azimuthTime>{when(line)}</azimuthTime>\n      <line>{line}</line>\n"
            f'      <pixel count="{len(pixels)}">{_numbers(pixels, "{:.0f}")}</pixel>\n'
            f'      <noiseRangeLut count="{len(pixels)}">{_numbers(values)}</noiseRangeLut>\n'
            "    </noiseRangeVector>\n"
        )
    out.append("  </noiseRangeVectorList>\n")
    bounds = [round(e * samples) for e in SWATH_EDGES]
    out.append('  <noiseAzimuthVectorList count="3">\n')
    az_lines = np.array(_vector_lines(lines, max(1, line_step // 4)), float)
    for s in range(3):
        out.append(
            "    <noiseAzimuthVector>\n"
            f"      <swath>IW{s + 1}</swath>\n      <firstAzimuthLine>0</firstAzimuthLine>\n"
            f"      <firstRangeSample>{bounds[s]}</firstRangeSample>\n"
            f"      <lastAzimuthLine>{lines - 1}</lastAzimuthLine>\n"
            f"      <lastRangeSample>{bounds[s + 1] - 1}</lastRangeSample>\n"
            f'      <line count="{len(az_lines)}">{_numbers(az_lines, "{:.0f}")}</line>\n'
            f'      <noiseAzimuthLut count="{len(az_lines)}">{_numbers(noise_azimuth(az_lines, s, lines))}'
            "</noiseAzimuthLut>\n"
            "    </noiseAzimuthVector>\n"
        )
    out.append("  </noiseAzimuthVectorList>\n</noise>\n")
    return "".join(out)


def _scaled_annotation(text: str, scale: int) -> tuple[str, int, int]:
    """The annotation with image size, pixel spacing and geolocation grid divided by ``scale``."""
    samples, lines = math.ceil(FULL_SAMPLES / scale), math.ceil(FULL_LINES / scale)
    text = re.sub(r"<numberOfSamples>\d+</numberOfSamples>", f"<numberOfSamples>{samples}</numberOfSamples>", text)
    text = re.sub(r"<numberOfLines>\d+</numberOfLines>", f"<numberOfLines>{lines}</numberOfLines>", text)
    for tag in ("rangePixelSpacing", "azimuthPixelSpacing", "azimuthTimeInterval"):
        text = re.sub(
            rf"<{tag}>([0-9.eE+-]+)</{tag}>", lambda m, t=tag: f"<{t}>{float(m.group(1)) * scale:.6e}</{t}>", text
        )

    def grid_point(m: re.Match) -> str:
        block = m.group(0)
        block = re.sub(
            r"<line>(\d+)</line>", lambda n: f"<line>{min(round(int(n.group(1)) / scale), lines - 1)}</line>", block
        )
        return re.sub(
            r"<pixel>(\d+)</pixel>",
            lambda n: f"<pixel>{min(round(int(n.group(1)) / scale), samples - 1)}</pixel>",
            block,
        )

    text = re.sub(r"<geolocationGridPoint>.*?</geolocationGridPoint>", grid_point, text, flags=re.S)
    return text, samples, lines


_WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
    'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]'
)


def _gcps(annotation: str) -> list:
    from osgeo import gdal

    out = []
    for block in re.findall(r"<geolocationGridPoint>.*?</geolocationGridPoint>", annotation, re.S):
        value = {
            k: float(re.search(rf"<{k}>([^<]+)</{k}>", block).group(1))
            for k in ("line", "pixel", "latitude", "longitude", "height")
        }
        out.append(gdal.GCP(value["longitude"], value["latitude"], value["height"], value["pixel"], value["line"]))
    return out


def write_product(
    out_dir: Path,
    scale: int = 20,
    *,
    source: Path = SOURCE,
    zip_it: bool = False,
    dn: Callable[..., np.ndarray] = digital_numbers,
    block_lines: int = 512,
    calibration: bool = True,
    window: tuple[int, int, int, int] | None = None,
) -> Path:
    """Write the product into ``out_dir`` (the ``.SAFE`` folder, or its ``.zip`` with ``zip_it``); returns its path.
    ``calibration`` False leaves the calibration files out (a broken product). ``window`` (x, y, width, height):
    only that part of the measurements holds digital numbers, the rest reads as zero (no data) and takes no space."""
    from osgeo import gdal

    out_dir.mkdir(parents=True, exist_ok=True)
    safe = out_dir / source.name
    if safe.exists():
        shutil.rmtree(safe)
    (safe / "annotation" / "calibration").mkdir(parents=True)
    (safe / "measurement").mkdir()
    shutil.copy2(source / "manifest.safe", safe / "manifest.safe")
    for ann_path in sorted((source / "annotation").glob("*.xml")):
        text, samples, lines = _scaled_annotation(ann_path.read_text(encoding="utf-8"), scale)
        (safe / "annotation" / ann_path.name).write_text(text, encoding="utf-8")
        band = 0 if "-vv-" in ann_path.name else 1
        line_step, pixel_step = max(8, 1000 // scale), max(4, 400 // scale)
        if calibration:
            cal = calibration_xml(text, samples, lines, line_step, pixel_step)
            (safe / "annotation" / "calibration" / f"calibration-{ann_path.name}").write_text(cal, encoding="utf-8")
        noise = noise_xml(text, samples, lines, line_step, pixel_step)
        (safe / "annotation" / "calibration" / f"noise-{ann_path.name}").write_text(noise, encoding="utf-8")
        tiff = safe / "measurement" / (ann_path.stem + ".tiff")
        opts = ["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "BIGTIFF=IF_SAFER", "SPARSE_OK=TRUE"]
        ds = gdal.GetDriverByName("GTiff").Create(str(tiff), samples, lines, 1, gdal.GDT_UInt16, options=opts)
        # As in delivered products: the TIFF tags readers identify the product by, and the geolocation grid as GCPs.
        ds.SetMetadata(
            {
                "TIFFTAG_IMAGEDESCRIPTION": "Sentinel-1B IW GRD HR L1",
                "TIFFTAG_SOFTWARE": "Sentinel-1 IPF 003.31",
                "TIFFTAG_DATETIME": "2021:04:01 05:26:23",
            }
        )
        ds.SetGCPs(_gcps(text), _WGS84_WKT)
        wx, wy, ww, wh = window or (0, 0, samples, lines)
        pixel = np.arange(wx, wx + ww, dtype=float)[None, :]
        for y0 in range(wy, wy + wh, block_lines):
            rows = np.arange(y0, min(wy + wh, y0 + block_lines), dtype=float)[:, None]
            ds.GetRasterBand(1).WriteArray(dn(rows, pixel, band, samples, lines, scale), wx, y0)
        ds = None
    if not zip_it:
        return safe
    archive = out_dir / (safe.stem + ".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(safe.rglob("*")):
            zf.write(path, path.relative_to(out_dir).as_posix())
    shutil.rmtree(safe)
    return archive


# --- a product that holds a given scene -------------------------------------------------------------------------


def encode(sigma0: np.ndarray, line: np.ndarray, pixel: np.ndarray, samples: int, lines: int) -> np.ndarray:
    """uint16 DN with DN² = sigma0 · A² + noise (rounded); 0 (no data) where sigma0 is not positive."""
    a = sigma_lut(line, pixel, samples, lines)
    noise = noise_range(line, pixel, samples, lines) * noise_azimuth(line, swath_of(pixel, samples), lines)
    out = np.where(sigma0 > 0, np.sqrt(np.maximum(sigma0, 0.0) * a * a + noise), 0.0)
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16)


@dataclass
class Placement:
    """Where :func:`scene_product` set the scene down: its grid in the UTM zone of the footprint centre."""

    epsg: int
    geotransform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """xmin, ymin, xmax, ymax."""
        x0, px, _, y0, _, py = self.geotransform
        return x0, y0 + py * self.height, x0 + px * self.width, y0


def _centre_utm(gcps: list) -> tuple[float, float, int]:
    """Mean longitude and latitude of the geolocation grid, and the EPSG code of the UTM zone there."""
    lon = float(np.mean([g.GCPX for g in gcps]))
    lat = float(np.mean([g.GCPY for g in gcps]))
    return lon, lat, (32600 if lat >= 0 else 32700) + int((lon + 180.0) // 6.0) % 60 + 1


def scene_product(out_dir: Path, sar: Path, *, source: Path = SOURCE, zip_it: bool = False) -> tuple[Path, Placement]:
    """A full-resolution product whose digital numbers encode the backscatter of ``sar`` (VV and VH in linear power,
    nodata 0, any pixel size) set down at the centre of the footprint, north up, in the UTM zone there: DN² =
    sigma0 · A² + noise at each radar pixel from the scene pixel under its centre (the geolocation grid, thin-plate
    spline, as GDAL does it for GCPs). Only the window covering the scene holds data. Returns the product and the
    scene's placed grid."""
    from osgeo import gdal, osr

    scene = gdal.Open(str(sar))
    values = scene.ReadAsArray().astype(np.float64)  # (2, h, w)
    height, width = values.shape[1:]
    size = abs(scene.GetGeoTransform()[1])
    annotation = next((source / "annotation").glob("*-vv-*.xml")).read_text(encoding="utf-8")
    gcps = _gcps(annotation)
    samples, lines = FULL_SAMPLES, FULL_LINES
    lon, lat, epsg = _centre_utm(gcps)
    wgs84, utm = osr.SpatialReference(), osr.SpatialReference()
    wgs84.ImportFromWkt(_WGS84_WKT)
    utm.ImportFromEPSG(epsg)
    for srs in (wgs84, utm):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_utm, to_lonlat = osr.CoordinateTransformation(wgs84, utm), osr.CoordinateTransformation(utm, wgs84)
    e, n, _ = to_utm.TransformPoint(lon, lat)
    x0, y0 = round((e - width * size / 2) / size) * size, round((n + height * size / 2) / size) * size
    placed = Placement(epsg, (x0, size, 0.0, y0, 0.0, -size), width, height)
    mem = gdal.GetDriverByName("MEM").Create("", 1, 1, 1, gdal.GDT_Byte)
    mem.SetGCPs(gcps, _WGS84_WKT)
    tps = gdal.Transformer(mem, None, ["METHOD=GCP_TPS"])
    # The radar window under the scene: its outline, back through the spline, plus a margin.
    t = np.linspace(0.0, 1.0, 33)
    outline = [(x0 + f * width * size, y0 - g * height * size) for f in t for g in (0.0, 1.0)]
    outline += [(x0 + f * width * size, y0 - g * height * size) for g in t for f in (0.0, 1.0)]
    radar = np.array(tps.TransformPoints(1, [p[:2] for p in to_lonlat.TransformPoints(outline)])[0])[:, :2]
    wx, wy = (max(0, int(v) - 8) for v in radar.min(axis=0))
    wx1, wy1 = (int(v) + 9 for v in radar.max(axis=0))
    window = (wx, wy, min(samples, wx1) - wx, min(lines, wy1) - wy)

    def dn(rows: np.ndarray, pixel: np.ndarray, band: int, samples: int, lines: int, scale: int) -> np.ndarray:
        grid_r, grid_p = np.broadcast_arrays(rows, pixel)
        centres = np.column_stack([grid_p.ravel() + 0.5, grid_r.ravel() + 0.5])
        lonlat = np.array(tps.TransformPoints(0, centres.tolist())[0])[:, :2]
        xy = np.array(to_utm.TransformPoints(lonlat.tolist()))[:, :2]
        col = np.floor((xy[:, 0] - x0) / size).astype(int).reshape(grid_r.shape)
        row = np.floor((y0 - xy[:, 1]) / size).astype(int).reshape(grid_r.shape)
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        s0 = np.where(inside, values[band][np.clip(row, 0, height - 1), np.clip(col, 0, width - 1)], 0.0)
        return encode(s0, grid_r, grid_p, samples, lines)

    product = write_product(out_dir, 1, source=source, zip_it=zip_it, dn=dn, window=window)
    return product, placed


def radar_scene_product(
    out_dir: Path, sar: Path, labels: Path, *, source: Path = SOURCE, zip_it: bool = False
) -> tuple[Path, Path]:
    """A full-resolution product whose measurements hold the scene ``sar`` (VV and VH in linear power, nodata 0) pixel
    for pixel in radar geometry, at the centre of the swath: speckle and edges as the sensor recorded them, so the
    import's geocoding is the only resampling, as with a real product. The scene's ``labels`` (class raster on the
    same grid) are geocoded to the import's default grid (UTM of the footprint centre, 10 m) with the geolocation grid
    (thin-plate spline, nearest neighbour): the truth for what the import and segmentation make of the product.
    Returns the product and that truth (``<out_dir>/labels_geocoded.tif``, classes, 255 outside)."""
    from osgeo import gdal

    values = gdal.Open(str(sar)).ReadAsArray().astype(np.float64)  # (2, h, w)
    height, width = values.shape[1:]
    x0, y0 = (FULL_SAMPLES - width) // 2, (FULL_LINES - height) // 2

    def dn(rows: np.ndarray, pixel: np.ndarray, band: int, samples: int, lines: int, scale: int) -> np.ndarray:
        r, c = np.broadcast_arrays(rows, pixel)
        return encode(values[band][r.astype(int) - y0, c.astype(int) - x0], r, c, samples, lines)

    product = write_product(out_dir, 1, source=source, zip_it=zip_it, dn=dn, window=(x0, y0, width, height))
    annotation = next((source / "annotation").glob("*-vv-*.xml")).read_text(encoding="utf-8")
    gcps = [gdal.GCP(g.GCPX, g.GCPY, g.GCPZ, g.GCPPixel - x0, g.GCPLine - y0) for g in _gcps(annotation)]
    *_, epsg = _centre_utm(gcps)
    classes = gdal.Open(str(labels)).ReadAsArray()
    radar = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GDT_Byte)
    radar.GetRasterBand(1).WriteArray(classes)
    radar.SetGCPs(gcps, _WGS84_WKT)
    truth = out_dir / "labels_geocoded.tif"
    gdal.Warp(
        str(truth), radar, dstSRS=f"EPSG:{epsg}", xRes=10.0, yRes=10.0, targetAlignedPixels=True, tps=True,
        resampleAlg="near", srcNodata=255, dstNodata=255, creationOptions=["COMPRESS=DEFLATE"],
    )  # fmt: skip
    return product, truth


def area_of_interest(path: Path, bounds: tuple[float, float, float, float], epsg: int = 4326) -> Path:
    """A GeoPackage with one rectangle (xmin, ymin, xmax, ymax in EPSG:``epsg``): the area of interest an analyst
    would draw."""
    from osgeo import ogr, osr

    xmin, ymin, xmax, ymax = bounds
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("area_of_interest", srs, ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    ring = f"{xmin} {ymin}, {xmax} {ymin}, {xmax} {ymax}, {xmin} {ymax}, {xmin} {ymin}"
    feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({ring}))"))
    layer.CreateFeature(feature)
    ds = None
    return path
