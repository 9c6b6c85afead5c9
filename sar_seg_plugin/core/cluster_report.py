"""HTML report of a commune clustering: k and silhouette, cluster sizes and mean features, a PCA scatter (inline
SVG, no plotting library needed) and, when given, a summary of a numeric field (e.g. population) per cluster."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models.metadata import DEFAULT_PALETTE
from .communes import FAMILY_LABELS, CommuneResult, Options
from .html_report import fmt, page, table, write_page
from .outputs import OutputSet

#: Colours of clusters 1..12 (the palette given to unnamed classes, plus two), cycled beyond.
CLUSTER_COLORS = (*DEFAULT_PALETTE, "#393b79", "#ad494a")


def cluster_color(cluster: int) -> str:
    """Colour of cluster number ``cluster`` (1-based)."""
    return CLUSTER_COLORS[(cluster - 1) % len(CLUSTER_COLORS)]


@dataclass
class ReportData:
    title: str
    k: int
    silhouette: float
    scores: dict[int, float]  # k -> silhouette tried
    auto_k: bool
    labels: np.ndarray  # (rows,) cluster numbers 1..k of the clustered rows
    names: Sequence[str]  # (rows,)
    columns: Sequence[str]  # feature column names
    features: np.ndarray  # (rows, columns) raw feature values
    xy: np.ndarray  # (rows, 2) PCA of the clustered matrix
    explained: Sequence[float]  # variance ratio of the two PCA axes
    families: Sequence[str]
    inputs: dict[str, str] = field(default_factory=dict)
    unclustered: dict[str, int] = field(default_factory=dict)  # reason -> count
    field_name: str | None = None
    field_values: np.ndarray | None = None  # (rows,) the numeric field, NaN where null
    notes: Sequence[str] = ()


def scatter_svg(xy: np.ndarray, labels: np.ndarray, names: Sequence[str], explained: Sequence[float]) -> str:
    """A 2-D scatter of the rows coloured by cluster, with hover titles."""
    w, h, pad, legend_w = 720, 440, 46, 110
    if len(xy) == 0:
        return ""
    x, y = xy[:, 0], xy[:, 1]

    def scale(v: np.ndarray, lo_px: float, hi_px: float) -> np.ndarray:
        lo, hi = float(v.min()), float(v.max())
        span = hi - lo if hi > lo else 1.0
        lo, span = lo - 0.06 * span, 1.12 * span  # a margin so that no dot sits on the frame
        return lo_px + (v - lo) / span * (hi_px - lo_px)

    right = w - legend_w
    px, py = scale(x, pad, right - 10), scale(y, h - pad, 10)
    dots = []
    for i in np.argsort(labels, kind="stable"):
        title = html.escape(f"{names[i]} — cluster {int(labels[i])}")
        dots.append(
            f'<circle cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="4.5" fill="{cluster_color(int(labels[i]))}" '
            f'fill-opacity="0.85" stroke="#222" stroke-width="0.5"><title>{title}</title></circle>'
        )
    e1 = 100 * float(explained[0]) if len(explained) else 0.0
    e2 = 100 * float(explained[1]) if len(explained) > 1 else 0.0
    legend = "".join(
        f'<rect x="{right + 8}" y="{16 + 18 * j}" width="11" height="11" fill="{cluster_color(c)}"/>'
        f'<text x="{right + 24}" y="{26 + 18 * j}" font-size="12">cluster {c}</text>'
        for j, c in enumerate(sorted({int(v) for v in labels}))
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'role="img" aria-label="PCA scatter of the communes coloured by cluster">'
        f'<rect x="{pad}" y="10" width="{right - pad}" height="{h - pad - 10}" fill="#fafafa" stroke="#bbb"/>'
        f"{''.join(dots)}{legend}"
        f'<text x="{(right + pad) / 2:.0f}" y="{h - 12}" font-size="13" text-anchor="middle">'
        f"PC 1 ({e1:.0f} % of variance)</text>"
        f'<text x="14" y="{(h - pad) / 2:.0f}" font-size="13" text-anchor="middle" '
        f'transform="rotate(-90 14 {(h - pad) / 2:.0f})">PC 2 ({e2:.0f} %)</text>'
        "</svg>"
    )


def _distinctive(data: ReportData, means: np.ndarray, swatches: Sequence[str], top: int = 3) -> str:
    """For each cluster, the features whose cluster mean lies furthest from the mean of all communes, in standard
    deviations of all communes (e.g. 'frac_built_up +2.1 sd')."""
    overall = data.features.mean(axis=0)
    std = data.features.std(axis=0)
    rows = []
    for c in range(data.k):
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(std > 0, (means[c] - overall) / np.where(std > 0, std, 1.0), 0.0)
        order = np.argsort(-np.abs(np.nan_to_num(z)))[:top]
        text = ", ".join(
            f"{'high' if z[j] > 0 else 'low'} {html.escape(data.columns[j])} ({z[j]:+.1f} sd)" for j in order if z[j]
        )
        rows.append([swatches[c], text or "–"])
    return table(["cluster", "features furthest from the average commune"], rows, "left")


def _sections(data: ReportData) -> list[str]:
    """The report's sections (HTML), after its title."""
    sizes = {c: int((data.labels == c).sum()) for c in range(1, data.k + 1)}
    n = len(data.labels)
    parts = []
    if data.inputs:
        parts.append(
            table(["input", "value"], [[html.escape(k), html.escape(v)] for k, v in data.inputs.items()], "left")
        )
    chosen = "chosen automatically by silhouette score" if data.auto_k else "given"
    parts.append(
        f"<h2>Clusters</h2><p><b>k = {data.k}</b> ({chosen}); mean silhouette <b>{fmt(data.silhouette)}</b> over "
        f"{n} clustered communes (1 = well separated, 0 = on a border, &lt; 0 = closer to another cluster). "
        f"Feature families: {html.escape(', '.join(data.families))}.</p>"
    )
    if data.unclustered:
        items = "".join(f"<li>{html.escape(r)}: {c}</li>" for r, c in data.unclustered.items())
        parts.append(f"<p>Not clustered (null cluster in the layer, with the reason):</p><ul>{items}</ul>")
    if len(data.scores) > 1 or data.auto_k:
        rows = [[str(k), fmt(s), "<b>chosen</b>" if k == data.k else ""] for k, s in sorted(data.scores.items())]
        parts.append("<h3>Silhouette per k tried</h3>" + table(["k", "silhouette", ""], rows))
    means = np.array(
        [
            data.features[data.labels == c].mean(axis=0)
            if (data.labels == c).any()
            else np.full(len(data.columns), np.nan)
            for c in range(1, data.k + 1)
        ]
    ).reshape(data.k, len(data.columns))
    swatches = [f'<span class="sw" style="background:{cluster_color(c)}"></span>{c}' for c in range(1, data.k + 1)]
    parts.append(
        "<h3>Cluster sizes</h3>"
        + table(
            ["cluster", "communes", "share"],
            [[sw, str(sizes[c]), f"{sizes[c] / max(n, 1):.0%}"] for sw, c in zip(swatches, range(1, data.k + 1))],
        )
    )
    if data.columns:
        parts.append("<h3>What sets each cluster apart</h3>" + _distinctive(data, means, swatches))
        rows = [
            [html.escape(col), *(fmt(v) for v in means[:, j]), fmt(float(np.mean(data.features[:, j])))]
            for j, col in enumerate(data.columns)
        ]
        parts.append("<h3>Mean features per cluster</h3>" + table(["feature", *swatches, "all communes"], rows, "wide"))
    if data.field_name and data.field_values is not None:
        rows = []
        for c in range(1, data.k + 1):
            v = data.field_values[data.labels == c]
            v = v[np.isfinite(v)]
            stats = [np.sum(v), np.mean(v), np.median(v), np.min(v), np.max(v)] if v.size else [np.nan] * 5
            rows.append([str(c), str(int(v.size)), *(fmt(s, 1) for s in stats)])
        parts.append(
            f"<h3>{html.escape(data.field_name)} per cluster</h3>"
            + table(["cluster", "communes with a value", "sum", "mean", "median", "min", "max"], rows)
        )
    parts.append(
        "<h3>Feature space (PCA of the standardised, family-weighted features)</h3>"
        + scatter_svg(data.xy, data.labels, data.names, data.explained)
    )
    if data.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in data.notes) + "</ul>")
    return parts


def report_data(
    result: CommuneResult,
    options: Options,
    names: Sequence[str],
    families: Sequence[str],
    raster: str,
    class_raster: str | None,
) -> ReportData:
    """What the report of one clustering run shows: its result, options and inputs (``names``: a name per commune;
    ``families``: the feature families used)."""
    rows = result.clustered
    columns = list(result.columns)
    unclustered: dict[str, int] = {}
    for i, reason in enumerate(result.reason):
        if not result.cluster[i]:
            unclustered[reason] = unclustered.get(reason, 0) + 1
    notes = list(result.notes)
    partial = int(result.partial[rows].sum())
    if partial:
        notes.append(f"{partial} clustered communes lie partly outside the raster: their inside part was used")
    field_values = None
    if options.field_name and options.field_values is not None:
        field_values = np.array([np.nan if v is None else v for v in options.field_values], float)[rows]
    return ReportData(
        title="SAR Seg — commune clustering",
        k=result.k,
        silhouette=result.clustering.silhouette,
        scores=result.clustering.scores,
        auto_k=options.k == 0,
        labels=result.cluster[rows],
        names=[names[i] for i in rows],
        columns=columns,
        features=np.column_stack([result.columns[c][rows] for c in columns]) if columns else np.zeros((len(rows), 0)),
        xy=result.xy,
        explained=list(result.explained),
        families=[FAMILY_LABELS[f] for f in families]
        + ([options.field_name] if options.field_as_feature and options.field_name else []),
        inputs={
            "raster": raster,
            "class raster": class_raster or "segmented by the bundled model",
            "communes": str(len(result.cluster)),
        },
        unclustered=unclustered,
        field_name=options.field_name,
        field_values=field_values,
        notes=notes,
    )


def render(data: ReportData) -> str:
    """The report as one self-contained HTML page."""
    return page(data.title, _sections(data))


def write_report(path: str | os.PathLike, data: ReportData, outputs: OutputSet | None = None) -> Path:
    """Write the report whole (see :func:`.outputs.write_text`), creating its folder when missing."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_page(path, data.title, _sections(data), outputs)
