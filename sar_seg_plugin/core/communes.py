"""Commune clustering end to end on plain data: polygons (WKB in the raster's CRS) + raster -> per-polygon features,
clusters, silhouette values, nearest neighbours and report data. The Processing algorithm only converts QGIS
features to WKB and writes what this returns. No qgis import.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from osgeo import gdal, ogr

from . import clustering, raster_io, zonal
from .errors import CancelledError, SarSegError
from .outputs import remove_folder, temporary_folder
from .preprocess import check_has_data
from .timeseries import Grid, aligned, release, require_crs
from .units import AUTO, plan_model_input, tell_scales

#: Feature families, in the order the tool lists them.
STATISTICS, FRACTIONS, EMBEDDINGS = "statistics", "fractions", "embeddings"
FAMILIES = (STATISTICS, FRACTIONS, EMBEDDINGS)
FAMILY_LABELS = {
    STATISTICS: "backscatter statistics (mean, std, p10/p50/p90 of VV, VH and VH/VV in dB)",
    FRACTIONS: "land-cover fractions",
    EMBEDDINGS: "CNN embeddings (leading principal components)",
}
#: A polygon whose share inside the raster is below this is flagged as partly outside.
INSIDE_TOLERANCE = 0.999
ProgressFn = Callable[[float], None]
LogFn = Callable[[str], None]


@dataclass
class Options:
    families: Sequence[str] = (STATISTICS, FRACTIONS)
    k: int = 0  # 0: choose by silhouette in k_min..k_max
    k_min: int = clustering.K_MIN
    k_max: int = clustering.K_MAX
    seed: int = 0
    neighbours: int = 5
    field_name: str | None = None
    field_values: Sequence[float | None] | None = None  # one per polygon
    field_as_feature: bool = False
    block_size: int = zonal.DEFAULT_BLOCK


@dataclass
class CommuneResult:
    """Per polygon (length n): cluster number 1..k or 0, silhouette (NaN when not clustered), reason why it is not
    clustered ('' when it is), share of its area inside the raster (``partial`` below 99.9 %: the features are those
    of the inside part), pixel centres inside, share of those holding data; feature columns; neighbours."""

    cluster: np.ndarray
    silhouette: np.ndarray
    reason: list[str]
    inside: np.ndarray
    pixels: np.ndarray
    valid_share: np.ndarray
    columns: dict[str, np.ndarray]  # feature columns written to the layer (NaN where missing)
    family_columns: dict[str, list[str]]
    clustered: np.ndarray  # indices of clustered polygons
    clustering: clustering.Clustering
    neighbours: np.ndarray  # (clustered, m) polygon indices
    distances: np.ndarray  # (clustered, m)
    xy: np.ndarray  # (clustered, 2) PCA
    explained: np.ndarray
    class_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        return self.clustering.k

    @property
    def partial(self) -> np.ndarray:
        return (self.inside > 0) & (self.inside < INSIDE_TOLERANCE)


def class_names_of(ds: gdal.Dataset) -> list[str]:
    """Class names of a class raster: its category names (up to the last named one), else class_0..class_max."""
    band = ds.GetRasterBand(1)
    names = raster_io.category_names(band)
    while names and not names[-1]:
        names.pop()
    if names:
        return [n or f"class_{i}" for i, n in enumerate(names)]
    nodata = band.GetNoDataValue()
    lo, hi = band.ComputeRasterMinMax(False)
    if nodata is not None and hi == nodata:
        hi = max(lo, hi - 1)
    top = int(hi)
    if top > 254:
        raise SarSegError(
            f"the class raster has values up to {top}: give a class raster with classes 0..254 (such as the "
            "output of 'Segment raster')"
        )
    return [f"class_{i}" for i in range(top + 1)]


def _stop_if_cancelled(is_canceled: Callable[[], bool] | None) -> None:
    if is_canceled and is_canceled():
        raise CancelledError("Cancelled by the user.")


def _check_families(families: Sequence[str]) -> list[str]:
    fams = [f for f in FAMILIES if f in families]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise SarSegError(f"unknown feature families {sorted(unknown)}: expected some of {', '.join(FAMILIES)}")
    return fams


def _check_request(
    options: Options, n: int, class_path: str | None, segment: Callable | None, encoder: Any
) -> list[str]:
    """The feature families asked for, once the request is known to be possible (say what is missing first)."""
    families = _check_families(options.families)
    if not families and not (options.field_as_feature and options.field_name):
        raise SarSegError("no feature family was chosen: choose at least one")
    if FRACTIONS in families and class_path is None and segment is None:
        raise SarSegError("land-cover fractions need a class raster or a segmentation model")
    if EMBEDDINGS in families and encoder is None:
        raise SarSegError("embeddings need an encoder model")
    clustering.import_sklearn()  # say what to install before any work
    if n == 0:
        raise SarSegError("the polygon layer has no features")
    return families


def _inside_shares(geometries: Sequence[bytes | None], grid: Grid, reason: list[str]) -> np.ndarray:
    """Share of each polygon's area inside the raster; polygons wholly outside get their reason."""
    bounds = grid.bounds
    inside = np.array([zonal.inside_fraction(g, bounds) if g is not None else 0.0 for g in geometries])
    for i, g in enumerate(geometries):
        if g is not None and inside[i] == 0 and not reason[i]:
            reason[i] = "outside the raster"
    if not (inside > 0).any():
        raise SarSegError(
            "no polygon overlaps the raster: check that the polygon layer and the raster cover the same area "
            f"(raster extent {bounds[0]:.1f}, {bounds[1]:.1f}, {bounds[2]:.1f}, {bounds[3]:.1f} in its CRS)"
        )
    return inside


@dataclass
class _Measured:
    """What the pass over the raster found per polygon: zonal statistics and class fractions, embeddings."""

    zonal: zonal.ZonalResult
    embeddings: np.ndarray | None
    class_names: list[str]
    notes: list[str]


def _measure(
    geometries: Sequence[bytes | None],
    inside: np.ndarray,
    raster_path: str,
    families: Sequence[str],
    options: Options,
    *,
    class_path: str | None,
    segment: Callable[[str, str], list[str]] | None,
    encoder: Any,
    report: ProgressFn,
    is_canceled: Callable[[], bool] | None,
    log: LogFn | None,
    input_scale: str,
) -> _Measured:
    """Burn the polygons into a zone raster, get the class raster (given, or segmented), and read the raster block
    by block for the zonal features and, when asked, the encoder's embeddings. Intermediate files are removed."""
    n = len(geometries)
    src = raster_io.open_raster(raster_path)
    info = raster_io.read_info(src)
    grid = Grid.of(info)
    notes: list[str] = []
    if np.issubdtype(info.dtype, np.floating):  # backscatter; in 8-bit imagery 0 is black, not fill
        src, info, fill = raster_io.declare_fill(src, info, range(1, info.band_count + 1))
        if fill is not None:
            notes.append(raster_io.fill_note(fill))
    work = temporary_folder(tempfile.gettempdir())
    classes_ds = zones_ds = None
    try:
        zones_path = str(work / "zones.tif")
        zonal.rasterize_zones([g if inside[i] > 0 else None for i, g in enumerate(geometries)], grid, zones_path)
        zones_ds = gdal.Open(zones_path)
        report(5)
        class_names: list[str] = []
        if FRACTIONS in families:
            if class_path:
                classes_ds = aligned(class_path, grid, resampling="nearest", role="raster")
                class_names = class_names_of(classes_ds)
            else:
                seg_path = str(work / "classes.tif")
                if log:
                    log("No class raster given: segmenting the raster with the segmentation model")
                class_names = segment(raster_path, seg_path)
                classes_ds = gdal.Open(seg_path)
        start = float(45 if FRACTIONS in families and not class_path else 10)
        report(start)
        plan = zonal.plan_bands(src, info, input_scale) if STATISTICS in families else None
        if plan is not None:
            notes.extend(plan.notes)
            tell_scales(plan.scales, log, notes.append)
        span = 40.0 if EMBEDDINGS in families else 80.0
        res = zonal.zonal_features(
            src,
            zones_ds,
            n,
            plan=plan,
            classes=classes_ds,
            class_names=class_names,
            block_size=options.block_size,
            progress=lambda p: report(start + span * p / 100.0),
            is_canceled=is_canceled,
        )
        emb = None
        if EMBEDDINGS in families:
            model_input = plan_model_input(encoder.metadata, info, check_has_data(src, info), input_scale)
            model_input.tell(log, notes.append)
            windows = [
                zonal.pixel_window(ogr.CreateGeometryFromWkb(bytes(g)).GetEnvelope(), info.geotransform, *size)
                if g is not None and res.valid_pixels[i] > 0
                else None
                for i, g in enumerate(geometries)
                for size in [(info.width, info.height)]
            ]
            emb, tiles = zonal.zone_embeddings(
                src,
                zones_ds,
                windows,
                encoder,
                model_input,
                progress=lambda p: report(start + span + 40.0 * p / 100.0),
                is_canceled=is_canceled,
            )
            if log:
                log(f"Embeddings: {tiles} encoder tiles of {encoder.metadata.tile_size} px over the polygons")
    finally:
        zones_ds = None
        release(classes_ds)
        classes_ds = None
        src = None
        remove_folder(work)
    return _Measured(res, emb, class_names, notes)


def _usable_rows(
    geometries: Sequence[bytes | None], reason: list[str], m: _Measured, families: Sequence[str], options: Options
) -> np.ndarray:
    """Indices of the polygons that can be clustered; every other one gets the reason why not."""
    res, emb = m.zonal, m.embeddings
    usable = np.array([g is not None and not reason[i] for i, g in enumerate(geometries)])
    for i in range(len(geometries)):
        if not usable[i]:
            continue
        if res.zone_pixels[i] == 0:
            reason[i] = "no pixel centre inside the polygon (smaller than a pixel or a sliver)"
        elif res.valid_pixels[i] == 0:
            reason[i] = "no valid raster pixel (only nodata)"
        elif FRACTIONS in families and res.classified_pixels[i] == 0:
            reason[i] = "no classified pixel"
        elif emb is not None and not np.isfinite(emb[i]).all():
            reason[i] = "no embedding (no valid pixel for the encoder)"
        elif options.field_as_feature and options.field_values is not None:
            v = options.field_values[i]
            if v is None or not np.isfinite(v):
                reason[i] = f"no value in field '{options.field_name}'"
        usable[i] = not reason[i]
    return np.flatnonzero(usable)


def _feature_columns(
    m: _Measured, families: Sequence[str], options: Options, rows: np.ndarray, n: int
) -> tuple[dict[str, np.ndarray], dict[str, list[str]], list[clustering.Family]]:
    """The feature columns of the layer (per polygon, NaN where missing), their names per family, and the families
    of the clustered rows as the clustering weighs them (embeddings reduced by PCA, isotropic)."""
    res = m.zonal
    columns: dict[str, np.ndarray] = {}
    fam_cols: dict[str, list[str]] = {}
    fam_list: list[clustering.Family] = []
    if STATISTICS in families:
        columns.update(res.statistics)
        fam_cols[STATISTICS] = list(res.statistics)
    if FRACTIONS in families and res.fractions is not None:
        names = [f"frac_{zonal.column_name(c)}" for c in m.class_names]
        for j, name in enumerate(names):
            columns[name] = res.fractions[:, j]
        fam_cols[FRACTIONS] = names
    for fam in (STATISTICS, FRACTIONS):
        if fam in fam_cols:
            fam_list.append(
                clustering.Family(fam, fam_cols[fam], np.column_stack([columns[c][rows] for c in fam_cols[fam]]))
            )
    if m.embeddings is not None:
        emb = m.embeddings
        comps = clustering.reduce_embeddings(emb[rows], options.seed) if len(rows) >= 2 else np.zeros((len(rows), 1))
        names = [f"emb_pc{j + 1}" for j in range(comps.shape[1])]
        for j, name in enumerate(names):
            col = np.full(n, np.nan)
            col[rows] = comps[:, j]
            columns[name] = col
        fam_cols[EMBEDDINGS] = names
        fam_list.append(clustering.Family(EMBEDDINGS, names, comps, isotropic=True))
    if options.field_as_feature and options.field_name and options.field_values is not None:
        values = np.array([np.nan if v is None else float(v) for v in options.field_values])
        fam_list.append(clustering.Family(options.field_name, [options.field_name], values[rows][:, None]))
        fam_cols[options.field_name] = [options.field_name]
    return columns, fam_cols, fam_list


def _numbered_by_size(result: clustering.Clustering) -> np.ndarray:
    """Cluster numbers 1..k by decreasing size (ties by first member), so numbers are stable and readable."""
    order = sorted(range(result.k), key=lambda c: (-(result.labels == c).sum(), np.argmax(result.labels == c)))
    renumber = np.empty(result.k, np.int64)
    renumber[order] = np.arange(1, result.k + 1)
    return renumber[result.labels]


def cluster_communes(
    geometries: Sequence[bytes | None],
    raster_path: str,
    options: Options,
    *,
    reasons: Sequence[str] | None = None,
    class_path: str | None = None,
    segment: Callable[[str, str], list[str]] | None = None,
    encoder: Any = None,
    progress: ProgressFn | None = None,
    is_canceled: Callable[[], bool] | None = None,
    log: LogFn | None = None,
    input_scale: str = AUTO,
) -> CommuneResult:
    """Cluster polygons (WKB in the raster's CRS; None where unusable, with ``reasons[i]`` saying why).

    Land-cover fractions come from ``class_path`` (aligned to the raster, nearest neighbour) or, without one, from
    ``segment(raster_path, out_path) -> class names``. Embeddings need ``encoder`` (a loaded encoder model).
    The scale of SAR bands (dB or linear power) follows :mod:`.units`; ``input_scale`` overrides it.
    """
    n = len(geometries)
    families = _check_request(options, n, class_path, segment, encoder)
    reason = list(reasons) if reasons is not None else [""] * n
    src = raster_io.open_raster(raster_path)
    info = raster_io.read_info(src)
    src = None
    require_crs(info)
    inside = _inside_shares(geometries, Grid.of(info), reason)
    measured = _measure(
        geometries,
        inside,
        raster_path,
        families,
        options,
        class_path=class_path,
        segment=segment,
        encoder=encoder,
        report=progress or (lambda _p: None),
        is_canceled=is_canceled,
        log=log,
        input_scale=input_scale,
    )
    _stop_if_cancelled(is_canceled)
    rows = _usable_rows(geometries, reason, measured, families, options)
    columns, fam_cols, fam_list = _feature_columns(measured, families, options, rows, n)
    if log:
        log(
            f"{len(rows)} of {n} polygons have usable data; features: "
            + ", ".join(f"{k} ({len(v)})" for k, v in fam_cols.items())
        )
    x = clustering.weighted_matrix(fam_list)
    result = clustering.cluster(x, options.k, options.seed, options.k_min, options.k_max, n_total=n, log=log)
    _stop_if_cancelled(is_canceled)
    notes = measured.notes + list(result.notes)
    result.labels = _numbered_by_size(result)
    cluster_col = np.zeros(n, np.int64)
    cluster_col[rows] = result.labels
    sil = np.full(n, np.nan)
    sil[rows] = result.silhouette_samples
    nb_idx, nb_dist = clustering.nearest_neighbours(x, options.neighbours)
    xy, explained = clustering.pca_2d(x, options.seed)
    res = measured.zonal
    with np.errstate(invalid="ignore", divide="ignore"):
        valid_share = np.where(res.zone_pixels > 0, res.valid_pixels / np.maximum(res.zone_pixels, 1), np.nan)
    return CommuneResult(
        cluster=cluster_col,
        silhouette=sil,
        reason=reason,
        inside=inside,
        pixels=res.zone_pixels,
        valid_share=valid_share,
        columns=columns,
        family_columns=fam_cols,
        clustered=rows,
        clustering=result,
        neighbours=rows[nb_idx] if nb_idx.size else nb_idx,
        distances=nb_dist,
        xy=xy,
        explained=explained,
        class_names=measured.class_names,
        notes=notes,
    )
