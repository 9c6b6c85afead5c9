"""Sentinel-1 IW GRD products to analysis-ready backscatter: calibration, thermal noise removal, border noise,
geocoding from the geolocation grid, an optional area of interest. No qgis import.

GDAL's SAFE driver reads the product (a ``.SAFE`` folder, its ``manifest.safe`` or the downloaded ``.zip`` through
``/vsizip/``): measurement bands and the annotation's geolocation grid as GCPs. The calibration and noise look-up
tables are applied here, in one pass with the same interpolation, because GDAL 3.6 does not remove thermal noise
and the noise term must be divided by the same calibration values:

    sigma0 = (DN² - noise) / A²      A: sigmaNought (beta0: betaNought, gamma0: gamma) of the calibration LUT
    noise  = range noise LUT x azimuth noise LUT (per swath block, IPF 2.9 and later)

Both LUTs are interpolated bilinearly in (line, pixel): linearly along the pixels of each vector, then linearly
between the vectors. The product is processed in radar geometry, full-width strips (memory bounded by a strip),
then warped to the output grid with the GCPs (thin-plate spline, bilinear, in linear power): ellipsoid geocoding
from the product's own grid, not terrain correction.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from .errors import CancelledError, SarSegError
from .outputs import OutputSet, check_space, remove_folder, temporary_folder
from .raster_io import block_cache_limit

RADIOMETRY = ("sigma0", "gamma0", "beta0")
_LUT_TAG = {"sigma0": "sigmaNought", "gamma0": "gamma", "beta0": "betaNought"}
NEGATIVE = ("floor", "nodata")
SCALES = ("linear", "db")
DEFAULT_FLOOR_DB = -30.0  # what noise subtraction leaves below zero becomes this (or nodata)
DEFAULT_PIXEL_SIZE = 10.0
STRIP_LINES = 128  # a strip of a full-width measurement is 3.3 MP: its float64 work arrays are ~30 MB each
# Memory of the geocoding pass: GDAL's default block cache (5 % of RAM) and warp chunks would hold GBs of a
# full-size product; with these, the whole import stays under 1 GB (bench/import_s1.py) at little cost in speed.
WARP_CACHE_BYTES = 64 * 2**20
WARP_MEMORY_BYTES = 64 * 2**20
BORDER_WIDTH_M = 20_000.0  # border noise lies within this distance of the near and far range edges
BORDER_DN = 30  # ... at digital numbers below this (older products; newer ones already hold zeros there)

ProgressFn = Callable[[float], None]
LogFn = Callable[[str], None]


# --- the product --------------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    polarisation: str  # "VV", "VH", "HH", "HV"
    tiff: str  # GDAL paths
    annotation: str
    calibration: str | None
    noise: str | None


@dataclass
class Product:
    """What the manifest says of a product, and where its files are (GDAL paths, ``/vsizip/`` for a zip)."""

    name: str  # e.g. S1B_IW_GRDH_1SDV_20210401T052623_..._ECC8
    root: str
    mission: str  # "S1A", "S1B", ...
    mode: str  # "IW", "EW", "SM", "WV"
    product_type: str  # "GRD", "SLC", ...
    pass_direction: str  # "ASCENDING" / "DESCENDING"
    relative_orbit: int | None
    absolute_orbit: int | None
    start: dt.datetime
    stop: dt.datetime | None
    polarisations: list[str]
    measurements: dict[str, Measurement] = field(default_factory=dict)

    @property
    def manifest(self) -> str:
        return f"{self.root}/manifest.safe"

    def label(self) -> str:
        return f"{self.mission} {self.mode} {self.product_type} {self.start:%Y-%m-%d %H:%M:%S} UTC"


def _read_text(path: str) -> str:
    handle = gdal.VSIFOpenL(path, "rb")
    if handle is None:
        raise SarSegError(f"Cannot read '{path}'.")
    try:
        gdal.VSIFSeekL(handle, 0, 2)
        size = gdal.VSIFTellL(handle)
        gdal.VSIFSeekL(handle, 0, 0)
        return gdal.VSIFReadL(1, size, handle).decode("utf-8", errors="replace")
    finally:
        gdal.VSIFCloseL(handle)


def _exists(path: str) -> bool:
    return gdal.VSIStatL(path) is not None


def _root_of(path: str) -> str:
    """The GDAL path of the ``.SAFE`` folder of a folder, a ``manifest.safe`` or a ``.zip``."""
    p = str(path)
    if p.lower().endswith(".zip"):
        if not Path(p).is_file():
            raise SarSegError(f"The file '{p}' does not exist.")
        zip_root = f"/vsizip/{p}"
        entries = gdal.ReadDirRecursive(zip_root) or []
        manifests = [e for e in entries if e.lower().endswith("manifest.safe")]
        if not manifests:
            raise SarSegError(
                f"'{Path(p).name}' is not a Sentinel-1 product archive (no manifest.safe inside), or it is damaged. "
                "Download the product again."
            )
        folder = manifests[0][: -len("manifest.safe")].rstrip("/")
        return f"{zip_root}/{folder}" if folder else zip_root
    if Path(p).name.lower() == "manifest.safe":
        return str(Path(p).parent)
    if Path(p).is_dir():
        return p
    raise SarSegError(
        f"'{p}' is not a Sentinel-1 product: give its .SAFE folder, its manifest.safe or the .zip as downloaded."
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _first(root: ET.Element, name: str, attr: tuple[str, str] | None = None) -> str | None:
    for el in root.iter():
        if _local(el.tag) == name and (attr is None or el.get(attr[0]) == attr[1]):
            return (el.text or "").strip()
    return None


def _time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.strip().rstrip("Z")[:26])


def open_product(path: str) -> Product:
    """Read a product's manifest and find its files; refuses what this tool cannot import, saying why."""
    root = _root_of(path)
    manifest_path = f"{root}/manifest.safe"
    if not _exists(manifest_path):
        raise SarSegError(f"No manifest.safe in '{root}': give the .SAFE folder, its manifest.safe or the .zip.")
    try:
        manifest = ET.fromstring(_read_text(manifest_path))
    except ET.ParseError as err:
        raise SarSegError(f"The manifest of '{path}' is not valid XML ({err}): the product is damaged.") from None
    family = (_first(manifest, "familyName") or "").upper()
    if family and "SENTINEL-1" not in family:
        raise SarSegError(f"'{path}' is a {family.title()} product; this tool imports Sentinel-1 IW GRD products.")
    name = Path(root).name
    name = name[: -len(".SAFE")] if name.upper().endswith(".SAFE") else name
    mission = "S1" + (_first(manifest, "number") or "?")
    mode = _first(manifest, "mode") or "?"
    product_type = _first(manifest, "productType") or "?"
    if product_type != "GRD":
        raise SarSegError(
            f"'{name}' is a {product_type} product. This tool imports ground range detected (GRD) products: "
            + (
                "an SLC holds complex values in slant range, one image per burst and sub-swath. Download the GRD "
                "product of the same acquisition, or process the SLC with ESA SNAP."
                if product_type == "SLC"
                else "download the GRD product of the same acquisition."
            )
        )
    if mode != "IW":
        raise SarSegError(
            f"'{name}' was acquired in {mode} mode. This tool imports Interferometric Wide swath (IW) products, the "
            "mode over land; EW (extra wide, sea ice), SM (stripmap) and WV (wave) products are not supported."
        )
    polarisations = [
        (el.text or "").strip().upper() for el in manifest.iter() if _local(el.tag) == "transmitterReceiverPolarisation"
    ]
    start = _time(_first(manifest, "startTime"))
    if start is None:
        raise SarSegError(f"The manifest of '{name}' has no acquisition start time: the product is damaged.")
    rel = _first(manifest, "relativeOrbitNumber", ("type", "start"))
    absolute = _first(manifest, "orbitNumber", ("type", "start"))
    product = Product(
        name=name,
        root=root,
        mission=mission,
        mode=mode,
        product_type=product_type,
        pass_direction=(_first(manifest, "pass") or "?").upper(),
        relative_orbit=int(rel) if rel else None,
        absolute_orbit=int(absolute) if absolute else None,
        start=start,
        stop=_time(_first(manifest, "stopTime")),
        polarisations=polarisations,
    )
    hrefs = [
        el.get("href", "").lstrip("./") for el in manifest.iter() if _local(el.tag) == "fileLocation" and el.get("href")
    ]
    for pol in polarisations:
        key = f"-{pol.lower()}-"
        found = {
            kind: next((h for h in hrefs if h.startswith(prefix) and key in Path(h).name), None)
            for kind, prefix in (
                ("tiff", "measurement/"),
                ("annotation", "annotation/s1"),
                ("calibration", "annotation/calibration/calibration-"),
                ("noise", "annotation/calibration/noise-"),
            )
        }
        tiff, annotation = found["tiff"], found["annotation"]
        if tiff is None or annotation is None or not _exists(f"{root}/{tiff}"):
            continue  # listed in the manifest but not delivered (e.g. a product downloaded in part)
        cal, noise = found["calibration"], found["noise"]
        product.measurements[pol] = Measurement(
            pol,
            f"{root}/{tiff}",
            f"{root}/{annotation}",
            f"{root}/{cal}" if cal and _exists(f"{root}/{cal}") else None,
            f"{root}/{noise}" if noise and _exists(f"{root}/{noise}") else None,
        )
    if not product.measurements:
        raise SarSegError(f"'{name}' holds no measurement file: the product is incomplete. Download it again.")
    return product


# --- look-up tables -----------------------------------------------------------------------------------------------


def _floats(text: str | None) -> np.ndarray:
    return np.array((text or "").split(), dtype=np.float64)


@dataclass
class Vectors:
    """LUT vectors: each at a line, with its own pixel positions and values."""

    lines: np.ndarray  # (n,)
    pixels: list[np.ndarray]
    values: list[np.ndarray]

    def rows(self, cols: np.ndarray) -> np.ndarray:
        """Each vector interpolated (linearly, clamped at the ends) at the columns ``cols``: (n, len(cols))."""
        return np.stack([np.interp(cols, p, v) for p, v in zip(self.pixels, self.values)])

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Bilinear value at every (row, col) of a strip: (len(rows), len(cols))."""
        per_vector = self.rows(cols)
        return _between_lines(self.lines, per_vector, rows)


def _between_lines(lines: np.ndarray, per_vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
    if len(lines) == 1:
        return np.repeat(per_vector, len(rows), axis=0)
    k = np.clip(np.searchsorted(lines, rows, side="right") - 1, 0, len(lines) - 2)
    t = np.clip((rows - lines[k]) / (lines[k + 1] - lines[k]), 0.0, 1.0)[:, None]
    return per_vector[k] * (1.0 - t) + per_vector[k + 1] * t


def calibration_vectors(xml_text: str, radiometry: str) -> Vectors:
    tag = _LUT_TAG[radiometry]
    root = ET.fromstring(xml_text)
    lines, pixels, values = [], [], []
    for vec in root.iter("calibrationVector"):
        lines.append(float(vec.findtext("line")))
        pixels.append(_floats(vec.findtext("pixel")))
        values.append(_floats(vec.findtext(tag)))
    if not lines or any(len(p) != len(v) or len(p) == 0 for p, v in zip(pixels, values)):
        raise SarSegError(f"The calibration file has no usable {tag} vectors: the product is damaged.")
    order = np.argsort(lines)
    return Vectors(np.asarray(lines)[order], [pixels[i] for i in order], [values[i] for i in order])


@dataclass
class AzimuthBlock:
    first_line: int
    last_line: int
    first_sample: int
    last_sample: int
    lines: np.ndarray
    values: np.ndarray


@dataclass
class Noise:
    range: Vectors
    azimuth: list[AzimuthBlock]

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = self.range.at(rows, cols)
        for b in self.azimuth:
            r = (rows >= b.first_line) & (rows <= b.last_line)
            c = (cols >= b.first_sample) & (cols <= b.last_sample)
            if r.any() and c.any():
                factor = np.interp(rows[r], b.lines, b.values)
                out[np.ix_(r, c)] *= factor[:, None]
        return out


def noise_vectors(xml_text: str) -> Noise:
    root = ET.fromstring(xml_text)
    lines, pixels, values = [], [], []
    # Products before IPF 2.9 call the range vectors noiseVector / noiseLut.
    for vec in [*root.iter("noiseRangeVector"), *root.iter("noiseVector")]:
        lut = vec.findtext("noiseRangeLut") or vec.findtext("noiseLut")
        lines.append(float(vec.findtext("line")))
        pixels.append(_floats(vec.findtext("pixel")))
        values.append(_floats(lut))
    if not lines:
        raise SarSegError("The noise file has no range noise vectors: the product is damaged.")
    order = np.argsort(lines)
    blocks = []
    for vec in root.iter("noiseAzimuthVector"):
        az_lines = _floats(vec.findtext("line"))
        lut = _floats(vec.findtext("noiseAzimuthLut"))
        if len(az_lines) == 0 or len(az_lines) != len(lut):
            continue
        blocks.append(
            AzimuthBlock(
                int(vec.findtext("firstAzimuthLine") or 0),
                int(vec.findtext("lastAzimuthLine") or 0),
                int(vec.findtext("firstRangeSample") or 0),
                int(vec.findtext("lastRangeSample") or 0),
                az_lines,
                lut,
            )
        )
    return Noise(Vectors(np.asarray(lines)[order], [pixels[i] for i in order], [values[i] for i in order]), blocks)


# --- calibration of a strip ---------------------------------------------------------------------------------------


@dataclass
class Calibrator:
    """Turns digital numbers into calibrated backscatter (linear power), strip by strip."""

    calibration: Vectors
    noise: Noise | None
    negative: str = "floor"
    floor: float = 10.0 ** (DEFAULT_FLOOR_DB / 10.0)

    def __call__(self, dn: np.ndarray, row0: int, col0: int) -> tuple[np.ndarray, int]:
        """Calibrated strip (NaN where there is no data) and the count of pixels that noise removal took below 0."""
        rows = np.arange(row0, row0 + dn.shape[0], dtype=np.float64)
        cols = np.arange(col0, col0 + dn.shape[1], dtype=np.float64)
        a = self.calibration.at(rows, cols)
        out = dn.astype(np.float64)
        out *= out
        if self.noise is not None:
            out -= self.noise.at(rows, cols)
        a *= a
        out /= a
        nodata = dn == 0
        negative = (out <= 0) & ~nodata
        out[negative] = self.floor if self.negative == "floor" else np.nan
        out[nodata] = np.nan
        return out.astype(np.float32), int(negative.sum())


def border_noise(dn: np.ndarray, width_px: int, threshold: int = BORDER_DN) -> np.ndarray:
    """Mask of border noise in a full-width strip: pixels within ``width_px`` of each row's first and last non-zero
    sample whose DN is below ``threshold`` (low-level noise that older products carry at the swath edges)."""
    mask = np.zeros(dn.shape, bool)
    if width_px <= 0:
        return mask
    cols = np.arange(dn.shape[1])
    data = dn > 0
    has = data.any(axis=1)
    first = np.where(has, np.argmax(data, axis=1), 0)
    last = np.where(has, dn.shape[1] - 1 - np.argmax(data[:, ::-1], axis=1), -1)
    near = cols[None, :] < (first[:, None] + width_px)
    far = cols[None, :] > (last[:, None] - width_px)
    mask = (near | far) & (dn < threshold) & data
    return mask


# --- geometry -----------------------------------------------------------------------------------------------------


def utm_epsg(lon: float, lat: float) -> int:
    zone = int(math.floor(((lon + 180.0) % 360.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def _gcp_transformer(gcps: Sequence[gdal.GCP], projection: str) -> gdal.Transformer:
    mem = gdal.GetDriverByName("MEM").Create("", 1, 1, 1, gdal.GDT_Byte)
    mem.SetGCPs(gcps, projection)
    return gdal.Transformer(mem, None, ["METHOD=GCP_TPS"])


def footprint_centre(gcps: Sequence[gdal.GCP]) -> tuple[float, float]:
    return float(np.mean([g.GCPX for g in gcps])), float(np.mean([g.GCPY for g in gcps]))


def aoi_window(
    aoi_wkt: str, aoi_srs: osr.SpatialReference, gcps: Sequence[gdal.GCP], gcp_wkt: str, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """The pixel window (x, y, w, h) of the product that covers the area of interest, with a margin; None when the
    area lies outside the footprint."""
    geom = ogr.CreateGeometryFromWkt(aoi_wkt)
    gcp_srs = osr.SpatialReference()
    gcp_srs.ImportFromWkt(gcp_wkt)
    for s in (aoi_srs, gcp_srs):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    geom.Transform(osr.CoordinateTransformation(aoi_srs, gcp_srs))
    geom = geom.GetBoundary() if geom.GetDimension() == 2 else geom
    geom.Segmentize(0.005)  # degrees: the footprint is curved in lon/lat
    points = geom.GetPoints() if geom.GetGeometryCount() == 0 else [p for g in geom for p in g.GetPoints()]
    transformer = _gcp_transformer(gcps, gcp_wkt)
    xs, ys = [], []
    for p in points:
        ok, (x, y, _z) = transformer.TransformPoint(1, p[0], p[1], 0.0)
        if ok:
            xs.append(x)
            ys.append(y)
    if not xs:
        return None
    margin = 4
    x0, x1 = max(0, int(math.floor(min(xs))) - margin), min(width, int(math.ceil(max(xs))) + margin)
    y0, y1 = max(0, int(math.floor(min(ys))) - margin), min(height, int(math.ceil(max(ys))) + margin)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


# --- the import ---------------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    path: str
    polarisations: list[str]
    width: int
    height: int
    epsg: int | None
    window: tuple[int, int, int, int]
    negatives: dict[str, int]
    notes: list[str] = field(default_factory=list)


def output_name(product: Product, polarisations: Sequence[str], radiometry: str, scale: str) -> str:
    """A file name carrying the acquisition date (so stacking and forecasting read it)."""
    pols = "".join(polarisations)
    suffix = "_db" if scale == "db" else ""
    return f"{product.mission}_{product.mode}_{product.start:%Y%m%dT%H%M%S}_{pols}_{radiometry}{suffix}.tif"


def import_product(
    product: Product,
    destination: str,
    *,
    polarisations: Sequence[str] | None = None,
    radiometry: str = "sigma0",
    remove_noise: bool = True,
    negative: str = "floor",
    floor_db: float = DEFAULT_FLOOR_DB,
    border: bool = True,
    scale: str = "linear",
    epsg: int | None = None,
    pixel_size: float = DEFAULT_PIXEL_SIZE,
    aoi: tuple[str, osr.SpatialReference] | None = None,
    progress: ProgressFn | None = None,
    is_canceled: Callable[[], bool] | None = None,
    log: LogFn | None = None,
    outputs: OutputSet | None = None,
) -> ImportResult:
    """Calibrate, denoise and geocode ``product`` into the GeoTIFF ``destination`` (see the module docstring).

    ``aoi``: (WKT, its spatial reference): only the part of the product covering it is processed, and the output
    is clipped to its extent. ``epsg`` None: the UTM zone of the scene (or area) centre.
    """
    from .resampling import warp

    if radiometry not in RADIOMETRY:
        raise SarSegError(f"Unknown radiometry '{radiometry}': expected one of {', '.join(RADIOMETRY)}.")
    if pixel_size <= 0:
        raise SarSegError(f"The pixel size must be positive; {pixel_size:g} given.")
    pols = [p.upper() for p in (polarisations or product.polarisations) if p]
    missing = [p for p in pols if p not in product.measurements]
    if missing:
        have = ", ".join(product.measurements) or "none"
        raise SarSegError(
            f"'{product.name}' has no {', '.join(missing)} measurement (it holds {have}). Choose among those."
        )
    for pol in pols:
        m = product.measurements[pol]
        if m.calibration is None:
            raise SarSegError(
                f"'{product.name}' has no calibration file for {pol} (annotation/calibration/calibration-*.xml): "
                "it cannot be calibrated. Download the complete product again."
            )
        if remove_noise and m.noise is None:
            raise SarSegError(
                f"'{product.name}' has no noise file for {pol}: turn thermal noise removal off, or download the "
                "complete product again."
            )
    report = progress or (lambda _p: None)
    say = log or (lambda _m: None)
    notes: list[str] = []

    src = gdal.Open(product.manifest)
    if src is None:
        raise SarSegError(f"GDAL cannot open '{product.manifest}': {gdal.GetLastErrorMsg()}")
    gcps, gcp_wkt = src.GetGCPs(), src.GetGCPProjection()
    width, height = src.RasterXSize, src.RasterYSize
    src = None
    if not gcps:
        raise SarSegError(f"'{product.name}' has no geolocation grid in its annotation: it cannot be geocoded.")
    window = (0, 0, width, height)
    centre = footprint_centre(gcps)
    if aoi is not None:
        found = aoi_window(aoi[0], aoi[1], gcps, gcp_wkt, width, height)
        if found is None:
            raise SarSegError(
                f"The area of interest lies outside the footprint of '{product.name}'. Choose an area inside it, or "
                "another product."
            )
        window = found
        geom = ogr.CreateGeometryFromWkt(aoi[0])
        to_geo = osr.SpatialReference()
        to_geo.ImportFromEPSG(4326)
        to_geo.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        aoi[1].SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        geom.Transform(osr.CoordinateTransformation(aoi[1], to_geo))
        c = geom.Centroid()
        centre = (c.GetX(), c.GetY())
    x0, y0, w, h = window
    epsg = epsg or utm_epsg(*centre)
    say(
        f"{product.label()}, {', '.join(pols)}: {radiometry}"
        + (", thermal noise removed" if remove_noise else ", thermal noise kept")
        + f"; {w} x {h} of {width} x {height} radar pixels"
        + (" (the area of interest)" if aoi is not None else "")
        + f"; geocoded to EPSG:{epsg} at {pixel_size:g} m (ellipsoid, from the product's geolocation grid)"
    )
    spacing = _pixel_spacing(product, pols[0])
    incidence = incidence_angle(_read_text(product.measurements[pols[0]].annotation), x0, w)
    border_px = int(round(BORDER_WIDTH_M / spacing)) if border and spacing else 0

    # Room for the radar-geometry temporary and the output (both uncompressed at worst), before any work: a whole
    # product at 10 m is several GB.
    radar_bytes = float(w) * h * len(pols) * 4
    out_bytes = radar_bytes * ((spacing or pixel_size) / pixel_size) ** 2 * 1.5  # the rotated footprint's box
    check_space(Path(destination).parent, radar_bytes + out_bytes)
    own = outputs is None
    run = OutputSet() if own else outputs
    work = temporary_folder(Path(destination).parent)
    negatives: dict[str, int] = {}
    try:
        radar = str(work / "radar.tif")
        drv = gdal.GetDriverByName("GTiff")
        ds = drv.Create(radar, w, h, len(pols), gdal.GDT_Float32, ["TILED=YES", "BIGTIFF=IF_SAFER"])
        shifted = [gdal.GCP(g.GCPX, g.GCPY, g.GCPZ, g.GCPPixel - x0, g.GCPLine - y0) for g in gcps]
        ds.SetGCPs(shifted, gcp_wkt)
        floor = 10.0 ** (floor_db / 10.0)
        for b, pol in enumerate(pols, start=1):
            m = product.measurements[pol]
            cal = Calibrator(
                calibration_vectors(_read_text(m.calibration), radiometry),
                noise_vectors(_read_text(m.noise)) if remove_noise else None,
                negative,
                floor,
            )
            dn_ds = gdal.Open(m.tiff)
            if dn_ds is None:
                raise SarSegError(f"Cannot read the {pol} measurement of '{product.name}': the product is damaged.")
            band = ds.GetRasterBand(b)
            band.SetNoDataValue(float("nan"))
            count = 0
            for r0 in range(0, h, STRIP_LINES):
                if is_canceled and is_canceled():
                    raise CancelledError("Cancelled by the user.")
                rh = min(STRIP_LINES, h - r0)
                full = dn_ds.GetRasterBand(1).ReadAsArray(0, y0 + r0, width, rh)
                if full is None:
                    raise SarSegError(f"Reading the {pol} measurement of '{product.name}' failed: it is damaged.")
                if border_px:
                    full = np.where(border_noise(full, border_px), 0, full)
                dn = full[:, x0 : x0 + w]
                strip, neg = cal(dn, y0 + r0, x0)
                count += neg
                band.WriteArray(strip, 0, r0)
                ds.FlushCache()  # write and drop the strip's blocks: memory stays one strip
                dn_ds.FlushCache()
                report(60.0 * ((b - 1) + (r0 + rh) / h) / len(pols))
            negatives[pol] = count
            dn_ds = None
        ds = None
        if any(negatives.values()):
            shares = ", ".join(f"{p} {n / max(w * h, 1):.2%}" for p, n in negatives.items())
            notes.append(
                f"Noise removal left pixels at or below zero ({shares}): set to {floor_db:g} dB"
                if negative == "floor"
                else f"Noise removal left pixels at or below zero ({shares}): set to nodata"
            )

        dst_srs = osr.SpatialReference()
        dst_srs.ImportFromEPSG(epsg)
        bounds = None
        if aoi is not None:
            geom = ogr.CreateGeometryFromWkt(aoi[0])
            dst_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            aoi[1].SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            geom.Transform(osr.CoordinateTransformation(aoi[1], dst_srs))
            minx, maxx, miny, maxy = geom.GetEnvelope()
            bounds = (
                math.floor(minx / pixel_size) * pixel_size,
                math.floor(miny / pixel_size) * pixel_size,
                math.ceil(maxx / pixel_size) * pixel_size,
                math.ceil(maxy / pixel_size) * pixel_size,
            )
        temporary = run.add(destination)
        with block_cache_limit(WARP_CACHE_BYTES):
            warp(
                str(temporary),
                radar,
                "the product to the output grid",
                is_canceled,
                format="GTiff",
                dstSRS=dst_srs.ExportToWkt(),
                xRes=pixel_size,
                yRes=pixel_size,
                targetAlignedPixels=True,
                outputBounds=bounds,
                resampleAlg="bilinear",
                tps=True,
                srcNodata=float("nan"),
                dstNodata=float("nan"),
                outputType=gdal.GDT_Float32,
                multithread=True,
                warpMemoryLimit=WARP_MEMORY_BYTES,
                creationOptions=["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=3", "BIGTIFF=IF_SAFER"],
            )
        report(90)
        out = gdal.Open(str(temporary), gdal.GA_Update)
        for b, pol in enumerate(pols, start=1):
            band = out.GetRasterBand(b)
            band.SetDescription(pol)
            band.SetUnitType("dB" if scale == "db" else "linear")
            if scale == "db":
                bw, bh = band.GetBlockSize()
                for r0 in range(0, out.RasterYSize, max(bh, 256)):
                    rh = min(max(bh, 256), out.RasterYSize - r0)
                    data = band.ReadAsArray(0, r0, out.RasterXSize, rh)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        band.WriteArray((10.0 * np.log10(data)).astype(np.float32), 0, r0)
                    out.FlushCache()
        out.SetMetadata(
            {
                "PRODUCT": product.name,
                "PLATFORM": product.mission,
                "MODE": product.mode,
                "PRODUCT_TYPE": product.product_type,
                "PASS": product.pass_direction,
                "RELATIVE_ORBIT": str(product.relative_orbit or ""),
                "ABSOLUTE_ORBIT": str(product.absolute_orbit or ""),
                "POLARISATIONS": ",".join(pols),
                "ACQUISITION_START": product.start.isoformat(),
                "ACQUISITION_STOP": product.stop.isoformat() if product.stop else "",
                "ACQUISITION_DATE": product.start.date().isoformat(),
                "RADIOMETRY": radiometry,
                # at the middle of the imported columns: what brings gamma0 / beta0 back to sigma0 for the models
                "INCIDENCE_ANGLE": "" if incidence is None else f"{incidence:.2f}",
                "THERMAL_NOISE_REMOVED": "yes" if remove_noise else "no",
                "GEOCODING": "ellipsoid, from the annotation's geolocation grid (no terrain correction)",
            }
        )
        result = ImportResult(str(destination), pols, out.RasterXSize, out.RasterYSize, epsg, window, negatives, notes)
        out = None
        if own:
            run.commit()
    except BaseException:
        if own:
            run.abort()
        raise
    finally:
        remove_folder(work)
    report(100)
    for note in notes:
        say(note)
    return result


def _pixel_spacing(product: Product, pol: str) -> float | None:
    """Range pixel spacing (m) of a measurement, from its annotation."""
    text = _read_text(product.measurements[pol].annotation)
    match = re.search(r"<rangePixelSpacing>([0-9.eE+-]+)</rangePixelSpacing>", text)
    return float(match.group(1)) if match else None


def incidence_angle(annotation_xml: str, x0: float, width: float) -> float | None:
    """The ellipsoid incidence angle (degrees) at the middle of radar columns ``x0`` .. ``x0 + width``, from the
    annotation's geolocation grid (its lines averaged, interpolated between its columns); None without a grid."""
    pixels, angles = [], []
    for point in re.finditer(r"<geolocationGridPoint>(.*?)</geolocationGridPoint>", annotation_xml, re.S):
        pixel = re.search(r"<pixel>([0-9.eE+-]+)</pixel>", point.group(1))
        angle = re.search(r"<incidenceAngle>([0-9.eE+-]+)</incidenceAngle>", point.group(1))
        if pixel and angle:
            pixels.append(float(pixel.group(1)))
            angles.append(float(angle.group(1)))
    if not pixels:
        return None
    columns, where = np.unique(np.asarray(pixels), return_inverse=True)
    per_column = np.bincount(where, weights=np.asarray(angles)) / np.bincount(where)  # mean over the grid's lines
    return float(np.interp(x0 + width / 2.0, columns, per_column))
