"""Clustering core: family weighting, K-Means with silhouette, neighbours, the report, and the whole core pipeline
on the synthetic communes whose archetypes are known."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from osgeo import ogr
from sklearn.metrics import adjusted_rand_score, silhouette_samples

from sar_seg_plugin.core import clustering, communes
from sar_seg_plugin.core.cluster_report import ReportData, render, write_report
from sar_seg_plugin.core.errors import SarSegError
from training import synthetic


def _blobs(seed: int = 0, centres: int = 3, per: int = 20, dims: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(centres), per)
    x = rng.normal(size=(centres, dims))[truth] * 10 + rng.normal(size=(centres * per, dims))
    return x, truth


def test_each_family_weighs_one_whatever_its_size():
    rng = np.random.default_rng(1)
    big = clustering.Family("stats", [], rng.normal(5, 3, size=(50, 15)))
    small = clustering.Family("fractions", [], rng.uniform(size=(50, 5)))
    one = clustering.Family("population", [], rng.lognormal(8, 1, size=(50, 1)))
    emb = clustering.Family("emb", [], rng.normal(size=(50, 8)) * np.arange(8, 0, -1), isotropic=True)
    x = clustering.weighted_matrix([big, small, one, emb])
    assert x.shape == (50, 29)
    for cols in (slice(0, 15), slice(15, 20), slice(20, 21), slice(21, 29)):
        assert x[:, cols].var(axis=0).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-12)
    # isotropic: relative variances kept (column j had std 8 - j)
    v = x[:, 21:].var(axis=0)
    assert v[0] / v[-1] == pytest.approx(emb.values[:, 0].var() / emb.values[:, -1].var())


def test_constant_columns_become_zero_not_nan():
    x = clustering.weighted_matrix([clustering.Family("f", [], np.column_stack([np.ones(5), np.arange(5.0)]))])
    assert np.isfinite(x).all() and (x[:, 0] == 0).all()


def test_auto_k_recovers_separated_groups_and_silhouette_is_sklearns():
    x, truth = _blobs(centres=3)
    result = clustering.cluster(x, 0, seed=0)
    assert result.k == 3
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert set(result.scores) == set(range(2, 11))
    assert result.scores[3] == max(result.scores.values())
    np.testing.assert_allclose(result.silhouette_samples, silhouette_samples(x, result.labels))
    assert result.silhouette == pytest.approx(result.scores[3])


def test_k_checks_say_what_to_do():
    x, _ = _blobs(centres=2, per=3)
    with pytest.raises(SarSegError, match=r"k = 6 is not smaller than the number of polygons with usable data \(6\)"):
        clustering.cluster(x, 6)
    with pytest.raises(SarSegError, match=r"\(4 of 10 polygons have no usable data\)"):
        clustering.check_k(7, 6, 10)
    with pytest.raises(SarSegError, match="k = 1 puts every polygon in one cluster"):
        clustering.cluster(x, 1)
    with pytest.raises(SarSegError, match="only 2 polygon"):
        clustering.cluster(x[:2], 0)


def test_nearest_neighbours_match_brute_force():
    x, _ = _blobs(seed=4, centres=2, per=8)
    idx, dist = clustering.nearest_neighbours(x, 5)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    expected = np.argsort(d, axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(dist, np.take_along_axis(d, expected, axis=1))
    assert (idx != np.arange(len(x))[:, None]).all()
    np.testing.assert_array_equal(idx, expected)


def test_missing_sklearn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` fail
    with pytest.raises(SarSegError) as info:
        clustering.cluster(np.zeros((5, 2)), 2)
    assert str(info.value) == clustering.SKLEARN_MISSING
    assert "`python3 -m pip install --user scikit-learn`" in str(info.value)


def test_report_lists_k_sizes_population_and_one_dot_per_commune(tmp_path):
    x, truth = _blobs(centres=3, per=4)
    labels = truth + 1
    data = ReportData(
        title="t",
        k=3,
        silhouette=0.71,
        scores={2: 0.5, 3: 0.71, 4: 0.6},
        auto_k=True,
        labels=labels,
        names=[f"c{i}" for i in range(12)],
        columns=["a", "b"],
        features=np.column_stack([labels * 1.0, labels * 10.0]),
        xy=x[:, :2],
        explained=[0.8, 0.1],
        families=["fractions"],
        field_name="population",
        field_values=np.arange(12.0),
        unclustered={"outside the raster": 2},
    )
    page = render(data)
    assert "<b>k = 3</b>" in page and "chosen automatically" in page
    assert page.count("<circle") == 12
    assert "outside the raster: 2" in page
    # cluster 2 = rows 4..7: mean feature a = 2, b = 20; population sum 4+5+6+7 = 22
    assert re.search(r"</span>2</td><td>4</td><td>33%</td>", page)
    assert "<td>a</td><td>1.000</td><td>2.000</td><td>3.000</td><td>2.000</td>" in page
    assert "<td>b</td><td>10.000</td><td>20.000</td><td>30.000</td><td>20.000</td>" in page
    # what sets cluster 1 apart: a and b lowest, (1 - 2) / std(a) = -1 / 0.816 = -1.2 sd
    assert "low a (-1.2 sd), low b (-1.2 sd)" in page
    assert "<td>2</td><td>4</td><td>22.0</td><td>5.5</td>" in page
    path = write_report(tmp_path / "r" / "report.html", data)
    assert path.read_text(encoding="utf-8") == page
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


@pytest.fixture(scope="module")
def archetype_scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("archetypes")
    synthetic.write_series(synthetic.generate_series(size=320, days=2, seed=11, n_communes=25), out)
    ds = ogr.Open(str(out / "communes.gpkg"))
    layer = ds.GetLayer(0)
    geoms, truth = [], []
    for f in layer:
        geoms.append(f.GetGeometryRef().ExportToWkb())
        truth.append(f.GetField("archetype_id"))
    ds = None
    return out, geoms, np.array(truth)


def test_core_recovers_the_archetypes(archetype_scene):
    """The synthetic communes follow 4 archetypes: automatic k finds 4 and the clusters match them (ARI >= 0.9)."""
    out, geoms, truth = archetype_scene
    result = communes.cluster_communes(
        geoms, str(out / "sar_20260301.tif"), communes.Options(), class_path=str(out / "labels_20260301.tif")
    )
    assert result.k == len(synthetic.ARCHETYPES) == 4
    assert len(result.clustered) == len(geoms)
    assert adjusted_rand_score(truth, result.cluster) >= 0.9
    assert result.clustering.silhouette > 0.5
    assert list(result.family_columns) == ["statistics", "fractions"]
    assert result.class_names == list(synthetic.CLASS_NAMES)
    # each archetype's communes have about the generator's class proportions
    names = list(synthetic.ARCHETYPES)
    fractions = np.column_stack(
        [result.columns[f"frac_{c.replace('-', '_').replace(' ', '_')}"] for c in synthetic.CLASS_NAMES]
    )
    for a, props in enumerate(synthetic.ARCHETYPES.values()):
        mean = fractions[truth == a].mean(axis=0)
        np.testing.assert_allclose(mean, [props[c] for c in range(5)], atol=0.1, err_msg=names[a])
