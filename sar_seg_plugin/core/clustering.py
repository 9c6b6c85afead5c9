"""Clustering of per-polygon features: standardisation by family, K-Means, silhouette, nearest neighbours, PCA.

Features come in families (band statistics, class fractions, embeddings, a numeric field). Every column is
standardised (zero mean, unit variance over the clustered rows), then each family is scaled so that its total
variance is 1: a family of 15 statistics weighs as much as one of 5 class fractions or a single population column.
Embeddings are first reduced to their leading principal components; those keep their relative variances (one
isotropic scale for the whole family) so that noise directions do not weigh as much as the main ones.

Uses scikit-learn, imported only when called: without it the plugin loads and the tool says what to install.
No qgis import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import SarSegError

SKLEARN_MISSING = (
    "This tool needs the Python package scikit-learn, which is not installed in this QGIS: install scikit-learn, "
    "e.g. with the QPIP plugin or `python3 -m pip install --user scikit-learn`, then restart QGIS"
)
#: Automatic k: the range tried, as far as the number of communes allows.
K_MIN, K_MAX = 2, 10
#: Silhouette scores used to choose k are computed on at most this many rows (a seeded sample); the per-commune
#: silhouette values of the final clustering are always computed on all rows.
SILHOUETTE_SAMPLE = 5000
#: Principal components kept from embeddings.
EMBEDDING_COMPONENTS = 8


def import_sklearn() -> Any:
    """The sklearn package (with the submodules used here), or a SarSegError saying how to install it."""
    try:
        import sklearn
        import sklearn.cluster
        import sklearn.decomposition
        import sklearn.metrics
        import sklearn.neighbors
    except ImportError:
        raise SarSegError(SKLEARN_MISSING) from None
    return sklearn


@dataclass
class Family:
    """A block of feature columns that weighs as one: ``isotropic`` keeps the columns' relative variances."""

    name: str
    columns: list[str]
    values: np.ndarray  # (rows, columns)
    isotropic: bool = False


@dataclass
class Clustering:
    """Result over the clustered rows (those with every feature)."""

    labels: np.ndarray  # (rows,) 0..k-1
    k: int
    silhouette: float  # mean silhouette of the chosen clustering (all rows)
    silhouette_samples: np.ndarray  # (rows,)
    scores: dict[int, float]  # k -> silhouette tried (sampled when rows > SILHOUETTE_SAMPLE)
    notes: list[str] = field(default_factory=list)


def reduce_embeddings(embeddings: np.ndarray, seed: int, components: int = EMBEDDING_COMPONENTS) -> np.ndarray:
    """Leading principal components of embeddings (rows, d) -> (rows, min(components, rows - 1, d))."""
    sk = import_sklearn()
    n, d = embeddings.shape
    m = max(1, min(components, n - 1, d))
    return sk.decomposition.PCA(n_components=m, random_state=seed).fit_transform(embeddings)


def weighted_matrix(families: Sequence[Family]) -> np.ndarray:
    """Standardise and weight families (see the module docstring); constant columns become 0."""
    parts = []
    for fam in families:
        x = np.asarray(fam.values, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        x = x - x.mean(axis=0)
        if fam.isotropic:
            total_variance = float((x**2).sum()) / max(len(x), 1)
            parts.append(x / np.sqrt(total_variance) if total_variance > 0 else x)
        else:
            std = x.std(axis=0)
            x = np.where(std > 0, x / np.where(std > 0, std, 1.0), 0.0)
            parts.append(x / np.sqrt(x.shape[1]))
    if not parts:
        raise SarSegError("no feature family was chosen: choose at least one")
    return np.hstack(parts)


def k_range(n_rows: int, k_min: int = K_MIN, k_max: int = K_MAX) -> list[int]:
    """k values the automatic choice tries: k_min..k_max, at most n_rows - 1 (silhouette needs k < rows)."""
    return list(range(max(2, k_min), min(k_max, n_rows - 1) + 1))


def check_k(k: int, n_rows: int, n_total: int) -> None:
    """Refuse a k that cannot be used with ``n_rows`` clusterable rows (out of ``n_total`` polygons)."""
    dropped = n_total - n_rows
    why = f" ({dropped} of {n_total} polygons have no usable data)" if dropped else ""
    if n_rows < 3:
        raise SarSegError(
            f"only {n_rows} polygon(s) have usable data{why}; clustering needs at least 3. "
            "Check that the polygons overlap the raster's valid pixels."
        )
    if k == 1:
        raise SarSegError("k = 1 puts every polygon in one cluster: give k >= 2, or 0 to choose k automatically")
    if k >= n_rows:
        raise SarSegError(
            f"k = {k} is not smaller than the number of polygons with usable data ({n_rows}){why}: give k between "
            f"2 and {n_rows - 1}, or 0 to choose k automatically"
        )


def cluster(
    x: np.ndarray,
    k: int,
    seed: int = 0,
    k_min: int = K_MIN,
    k_max: int = K_MAX,
    n_total: int | None = None,
    log: Any = None,
) -> Clustering:
    """K-Means on the weighted matrix ``x``: with ``k`` clusters, or (k = 0) the k in k_min..k_max with the highest
    silhouette score. ``n_total`` (all polygons, for messages) defaults to the rows of ``x``."""
    sk = import_sklearn()
    n = len(x)
    check_k(k, n, n_total if n_total is not None else n)
    if k == 0:
        candidates = k_range(n, k_min, k_max)
        if not candidates:
            raise SarSegError(f"no k between {k_min} and {k_max} can be tried with {n} polygons with usable data")
    else:
        candidates = [k]
    sample = SILHOUETTE_SAMPLE if n > SILHOUETTE_SAMPLE else None
    scores: dict[int, float] = {}
    fits: dict[int, np.ndarray] = {}  # k -> labels
    for kk in candidates:
        km = sk.cluster.KMeans(n_clusters=kk, n_init=10, random_state=seed).fit(x)
        if len(np.unique(km.labels_)) < 2:
            scores[kk] = float("nan")  # identical rows: no silhouette
        else:
            scores[kk] = float(sk.metrics.silhouette_score(x, km.labels_, sample_size=sample, random_state=seed))
        fits[kk] = km.labels_
        if log and k == 0:
            log(f"k = {kk}: silhouette {scores[kk]:.3f}")
    valid_scores = {kk: s for kk, s in scores.items() if np.isfinite(s)}
    best = max(valid_scores, key=lambda kk: (valid_scores[kk], -kk)) if valid_scores else candidates[0]
    labels = fits[best].astype(np.int64)
    samples = sk.metrics.silhouette_samples(x, labels) if len(np.unique(labels)) > 1 else np.zeros(n)
    notes = []
    if sample:
        notes.append(f"silhouette scores for choosing k were computed on a sample of {sample} of {n} polygons")
    return Clustering(
        labels=labels,
        k=best,
        silhouette=float(samples.mean()),
        silhouette_samples=samples,
        scores=scores,
        notes=notes,
    )


def nearest_neighbours(x: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the ``count`` nearest other rows in ``x`` (Euclidean): (indices, distances), each (rows, m)
    with m = min(count, rows - 1), nearest first; a row is never its own neighbour."""
    sk = import_sklearn()
    n = len(x)
    m = max(0, min(count, n - 1))
    if m == 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0))
    nn = sk.neighbors.NearestNeighbors(n_neighbors=m + 1).fit(x)
    dist, idx = nn.kneighbors(x)
    out_i = np.empty((n, m), np.int64)
    out_d = np.empty((n, m))
    for r in range(n):
        keep = idx[r] != r
        # duplicates of row r may come first in place of r itself: drop exactly one entry, r or the last
        ii, dd = idx[r][keep][:m], dist[r][keep][:m]
        out_i[r], out_d[r] = ii, dd
    return out_i, out_d


def pca_2d(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA projection of rows (rows, 2) and the explained variance ratio of both axes."""
    sk = import_sklearn()
    if x.shape[1] < 2 or len(x) < 2:
        xy = np.zeros((len(x), 2))
        xy[:, : min(1, x.shape[1])] = x[:, :1] if x.shape[1] else 0
        return xy, np.array([1.0, 0.0])
    pca = sk.decomposition.PCA(n_components=2, random_state=seed).fit(x)
    return pca.transform(x), pca.explained_variance_ratio_
