"""sarseg:cluster_communes through Processing: archetypes recovered, similar-communes table, report, styling,
reprojection, polygons outside / partly outside / invalid, bad input, cancel, qgis_process."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, ogr
from qgisproc import qgis_process_env, run_algorithm
from rasters import file_digest

from training import synthetic

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")
from sklearn.metrics import adjusted_rand_score  # noqa: E402

ALG = "sarseg:cluster_communes"
STAT_COLUMNS = [f"{s}_{q}" for s in ("vv", "vh", "vh_vv") for q in ("mean", "std", "p10", "p50", "p90")]
FRACTION_COLUMNS = ["frac_water", "frac_vegetation", "frac_forest", "frac_built_up", "frac_bare_soil"]


@pytest.fixture(autouse=True)
def collect_garbage():
    yield
    gc.collect()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """25 synthetic communes (320 x 320 px scene, 10 m) whose land cover follows 4 known archetypes."""
    out = tmp_path_factory.mktemp("communes")
    synthetic.write_series(synthetic.generate_series(size=320, days=2, seed=11, n_communes=25), out)
    return out


def paths(scene):  # noqa: ANN001, ANN201
    return str(scene / "communes.gpkg"), str(scene / "sar_20260301.tif"), str(scene / "labels_20260301.tif")


def features_of(layer_or_path) -> list[dict]:  # noqa: ANN001
    from qgis.core import QgsVectorLayer

    layer = layer_or_path if isinstance(layer_or_path, QgsVectorLayer) else QgsVectorLayer(layer_or_path)
    assert layer.isValid()
    names = layer.fields().names()
    rows = []
    for f in layer.getFeatures():
        row = {
            n: (None if v is None or (hasattr(v, "isNull") and v.isNull()) else v)
            for n, v in zip(names, f.attributes())
        }
        row["_geom"] = f.geometry()
        rows.append(row)
    return rows


def test_recovers_the_archetypes_and_writes_table_and_report(sarseg, scene, tmp_path, feedback):
    """Without a class raster the bundled model segments the raster; the clusters still match the archetypes."""
    from qgis.core import QgsVectorLayer

    communes, sar, _ = paths(scene)
    digests = {p: file_digest(p) for p in (communes, sar)}
    report = tmp_path / "report.html"
    result = sarseg.run(
        ALG,
        {
            "INPUT": communes,
            "RASTER": sar,
            "FIELD": "population",
            "NAME_FIELD": "name",
            "OUTPUT": str(tmp_path / "clusters.gpkg"),
            "OUTPUT_SIMILAR": str(tmp_path / "similar.csv"),
            "OUTPUT_REPORT": str(report),
        },
        feedback=feedback,
    )
    # the bundled int8 copy segments, checked as in sarseg:segment
    assert [line for line in feedback.lines if line.startswith("Model check: ")], feedback.lines
    rows = features_of(result["OUTPUT"])
    assert len(rows) == 25
    truth = np.array([r["archetype_id"] for r in rows])
    clusters = np.array([r["cluster"] for r in rows])
    # stated: automatic k finds the 4 archetypes and the clusters recover them with ARI >= 0.9 (measured 1.0)
    assert result["CLUSTERS"] == 4
    assert adjusted_rand_score(truth, clusters) >= 0.9
    assert sorted(set(clusters)) == [1, 2, 3, 4]
    sizes = [int((clusters == c).sum()) for c in (1, 2, 3, 4)]
    assert sizes == sorted(sizes, reverse=True)  # cluster 1 is the largest
    sil = np.array([r["silhouette"] for r in rows])
    assert result["SILHOUETTE"] == pytest.approx(sil.mean())
    assert all(r["reason"] is None and r["partial"] is False and r["inside_pct"] == 100 for r in rows)
    for r in rows:
        assert sum(r[c] for c in FRACTION_COLUMNS) == pytest.approx(1.0)
        assert r["vv_p10"] <= r["vv_p50"] <= r["vv_p90"]
    assert {"commune_id", "name", "archetype", "population"} <= set(rows[0])  # input attributes kept

    # The similar-communes table: the 5 nearest communes in the standardised, family-weighted feature space,
    # recomputed here from the layer's own columns.
    x = np.array([[r[c] for c in STAT_COLUMNS + FRACTION_COLUMNS] for r in rows], float)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x[:, :15] /= np.sqrt(15)
    x[:, 15:] /= np.sqrt(5)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    similar = features_of(
        QgsVectorLayer(f"file://{tmp_path / 'similar.csv'}?delimiter=,&detectTypes=yes", "s", "delimitedtext")
    )
    assert len(similar) == 25 * 5
    fid_to_row = {int(r["commune_id"]): i for i, r in enumerate(rows)}  # fids follow commune_id in the gpkg
    for s in similar:
        i, j = fid_to_row[int(s["commune_fid"])], fid_to_row[int(s["similar_fid"])]
        assert s["distance"] == pytest.approx(d[i, j], rel=1e-6)
        assert int(s["rank"]) == 1 + int((np.delete(d[i], i) < d[i, j] - 1e-12).sum())
        assert s["commune"] == rows[i]["name"]
        assert bool(int(s["same_cluster"])) == (clusters[i] == clusters[j])

    page = report.read_text(encoding="utf-8")
    assert "<b>k = 4</b>" in page and page.count("<circle") == 25
    assert "population per cluster" in page
    pop = np.array([r["population"] for r in rows])
    assert f"<td>{pop[clusters == 1].sum():.1f}</td>" in page
    assert {p: file_digest(p) for p in (communes, sar)} == digests  # inputs untouched


def test_loaded_layer_is_styled_by_cluster(sarseg, scene):
    from qgis.core import QgsCategorizedSymbolRenderer, QgsProject

    communes, sar, labels = paths(scene)
    project = QgsProject.instance()
    project.clear()
    result = sarseg.runAndLoadResults(
        ALG, {"INPUT": communes, "RASTER": sar, "CLASS_RASTER": labels, "K": 3, "OUTPUT": "TEMPORARY_OUTPUT"}
    )
    layer = project.mapLayer(result["OUTPUT"]) or project.mapLayersByName("Clustered communes")[0]
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert renderer.classAttribute() == "cluster"
    values = [c.value() for c in renderer.categories()]
    assert values[:3] == [1, 2, 3] and len(values) == 4  # 3 clusters + "not clustered"
    colours = {c.symbol().color().name() for c in renderer.categories()[:3]}
    assert len(colours) == 3
    project.clear()


def test_reprojected_communes_give_the_same_clusters(sarseg, scene, tmp_path):
    communes, sar, labels = paths(scene)
    wgs84 = str(tmp_path / "communes_4326.gpkg")
    gdal.VectorTranslate(wgs84, communes, dstSRS="EPSG:4326")
    params = {"RASTER": sar, "CLASS_RASTER": labels, "K": 4}
    utm = features_of(sarseg.run(ALG, {**params, "INPUT": communes, "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"])
    geo = features_of(sarseg.run(ALG, {**params, "INPUT": wgs84, "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"])
    assert geo[0]["_geom"].boundingBox().xMaximum() < 180  # the output keeps the communes' own CRS
    assert adjusted_rand_score([r["cluster"] for r in utm], [r["cluster"] for r in geo]) == 1.0
    for a, b in zip(utm, geo):  # reprojection moves edges by far less than a pixel: almost the same pixels
        assert abs(a["pixels"] - b["pixels"]) <= 0.02 * a["pixels"]
        assert b["frac_water"] == pytest.approx(a["frac_water"], abs=0.02)


def _layer_with_extras(communes: str):  # noqa: ANN202
    """The communes in a memory layer plus: one outside the raster, one half outside, a self-intersecting
    'bow-tie' inside, and one without geometry."""
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    src = QgsVectorLayer(communes)
    layer = QgsVectorLayer("MultiPolygon?crs=EPSG:32631&field=name:string&field=population:integer", "c", "memory")
    feats = []
    for f in src.getFeatures():
        g = QgsFeature(layer.fields())
        g.setGeometry(f.geometry())
        g.setAttributes([f["name"], f["population"]])
        feats.append(g)
    x0, y0, size = 600000.0, 4900000.0, 3200.0  # the scene: 320 px of 10 m from (600000, 4900000)

    def box(xa: float, ya: float, xb: float, yb: float) -> str:
        return f"POLYGON(({xa} {ya}, {xb} {ya}, {xb} {yb}, {xa} {yb}, {xa} {ya}))"

    extras = {
        "outside": box(x0 + 5000, y0, x0 + 6000, y0 - 1000),
        "half": box(x0 + size - 300, y0 - 1000, x0 + size + 300, y0 - 1600),
        # a self-intersecting bow-tie: its ring crosses itself in the middle
        "bowtie": f"POLYGON(({x0 + 1000} {y0 - 1000}, {x0 + 1600} {y0 - 1600}, {x0 + 1600} {y0 - 1000}, "
        f"{x0 + 1000} {y0 - 1600}, {x0 + 1000} {y0 - 1000}))",
        "empty": None,
    }
    for name, wkt in extras.items():
        g = QgsFeature(layer.fields())
        if wkt:
            g.setGeometry(QgsGeometry.fromWkt(wkt))
        g.setAttributes([name, 1000])
        feats.append(g)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_polygons_outside_partial_invalid_or_empty(sarseg, scene):
    communes, sar, labels = paths(scene)
    layer = _layer_with_extras(communes)
    assert not next(f for f in layer.getFeatures() if f["name"] == "bowtie").geometry().isGeosValid()
    result = sarseg.run(ALG, {"INPUT": layer, "RASTER": sar, "CLASS_RASTER": labels, "OUTPUT": "TEMPORARY_OUTPUT"})
    rows = {r["name"]: r for r in features_of(result["OUTPUT"])}
    assert len(rows) == 29  # every input feature is in the output
    assert rows["outside"]["cluster"] is None and rows["outside"]["reason"] == "outside the raster"
    assert rows["outside"]["inside_pct"] == 0
    assert rows["empty"]["cluster"] is None and rows["empty"]["reason"] == "no geometry"
    half = rows["half"]
    assert half["cluster"] is not None and half["partial"] is True and half["inside_pct"] == pytest.approx(50.0)
    assert half["pixels"] == 30 * 60  # its inside part: 30 x 60 pixels
    bowtie = rows["bowtie"]  # repaired into two triangles, then clustered
    assert bowtie["cluster"] is not None and bowtie["reason"] is None
    assert bowtie["pixels"] == pytest.approx(0.5 * 60 * 60, rel=0.05)
    assert layer.featureCount() == 29  # the input layer is not modified


def bad(sarseg, params: dict, message: str) -> None:  # noqa: ANN001
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=message):
        sarseg.run(ALG, params)


def test_k_larger_than_usable_polygons(sarseg, scene):
    communes, sar, labels = paths(scene)
    bad(
        sarseg,
        {"INPUT": communes, "RASTER": sar, "CLASS_RASTER": labels, "K": 25, "OUTPUT": "TEMPORARY_OUTPUT"},
        r"k = 25 is not smaller than the number of polygons with usable data \(25\).*give k between 2 and 24",
    )


def test_non_polygon_layer(sarseg, scene, tmp_path):
    communes, sar, _ = paths(scene)
    points = str(tmp_path / "points.gpkg")
    gdal.VectorTranslate(points, communes, SQLStatement="SELECT ST_Centroid(geom) AS geom, name FROM communes",
                         SQLDialect="SQLite")  # fmt: skip
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="The communes layer is a point layer: give a polygon layer"):
        sarseg.run(ALG, {"INPUT": points, "RASTER": sar, "OUTPUT": "TEMPORARY_OUTPUT"})


def test_no_overlap_with_the_raster(sarseg, scene, tmp_path):
    communes, sar, _ = paths(scene)
    moved = str(tmp_path / "moved.gpkg")
    gdal.VectorTranslate(moved, communes, SQLStatement="SELECT ST_Translate(geom, 100000, 0, 0) AS geom, name "
                         "FROM communes", SQLDialect="SQLite", layerName="moved")  # fmt: skip
    bad(sarseg, {"INPUT": moved, "RASTER": sar, "OUTPUT": "TEMPORARY_OUTPUT"}, "no polygon overlaps the raster")


def test_non_numeric_field(sarseg, scene):
    communes, sar, labels = paths(scene)
    bad(
        sarseg,
        {"INPUT": communes, "RASTER": sar, "CLASS_RASTER": labels, "FIELD": "archetype", "OUTPUT": "TEMPORARY_OUTPUT"},
        "The field 'archetype' is a .* field, not a number: choose a numeric field",
    )


def test_population_as_a_feature_and_null_values(sarseg, scene, tmp_path):
    communes, sar, labels = paths(scene)
    copy = str(tmp_path / "pop.gpkg")
    shutil.copy(communes, copy)
    ds = ogr.Open(copy, 1)
    ds.ExecuteSQL("UPDATE communes SET population = NULL WHERE commune_id = 3")
    ds = None
    result = sarseg.run(
        ALG,
        {"INPUT": copy, "RASTER": sar, "CLASS_RASTER": labels, "FIELD": "population", "FIELD_USE": 1,
         "OUTPUT": "TEMPORARY_OUTPUT", "OUTPUT_REPORT": str(tmp_path / "r.html")},
    )  # fmt: skip
    rows = {r["commune_id"]: r for r in features_of(result["OUTPUT"])}
    assert rows[3]["cluster"] is None and rows[3]["reason"] == "no value in field 'population'"
    assert sum(r["cluster"] is not None for r in rows.values()) == 24
    assert "population" in (tmp_path / "r.html").read_text()


def test_embeddings_family_runs_the_encoder(sarseg, scene):
    communes, sar, labels = paths(scene)
    result = sarseg.run(
        ALG,
        {"INPUT": communes, "RASTER": sar, "CLASS_RASTER": labels, "FEATURES": [0, 1, 2], "K": 4,
         "OUTPUT": "TEMPORARY_OUTPUT"},
    )  # fmt: skip
    rows = features_of(result["OUTPUT"])
    emb = np.array([[r[f"emb_pc{j}"] for j in range(1, 9)] for r in rows])
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(emb.mean(axis=0), 0, atol=1e-9)  # principal components are centred
    var = emb.var(axis=0)
    assert (np.diff(var) <= 1e-12).all()  # ... and ordered by decreasing variance


def test_missing_sklearn_message(sarseg, scene, monkeypatch):
    communes, sar, labels = paths(scene)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    bad(sarseg, {"INPUT": communes, "RASTER": sar, "CLASS_RASTER": labels, "OUTPUT": "TEMPORARY_OUTPUT"},
        r"needs the Python package scikit-learn.*pip install --user scikit-learn")  # fmt: skip


def test_plugin_loads_without_sklearn():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from sar_seg_plugin.processing.provider import SarSegProvider\n"
        "from sar_seg_plugin.processing.cluster_communes import ClusterCommunesAlgorithm\n"
        "print(ClusterCommunesAlgorithm().name())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cluster_communes"


def test_cancel_leaves_no_output(sarseg, scene, tmp_path):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    communes, sar, labels = paths(scene)
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda p: feedback.cancel() if p > 20 else None)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        sarseg.run(
            ALG,
            {"INPUT": communes, "RASTER": sar, "CLASS_RASTER": labels, "OUTPUT": str(tmp_path / "c.gpkg"),
             "OUTPUT_SIMILAR": str(tmp_path / "s.csv"), "OUTPUT_REPORT": str(tmp_path / "r.html")},
            feedback=feedback,
        )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_qgis_process_json(scene, tmp_path):
    communes, sar, labels = paths(scene)
    env = qgis_process_env(tmp_path / "profile")
    out = run_algorithm(
        ALG,
        {"INPUT": communes, "RASTER": sar, "CLASS_RASTER": labels, "OUTPUT": str(tmp_path / "c.gpkg"),
         "OUTPUT_REPORT": str(tmp_path / "r.html")},
        env,
    )  # fmt: skip
    results = out["results"]
    assert results["CLUSTERS"] == 4
    rows = features_of(results["OUTPUT"])
    truth = [r["archetype_id"] for r in rows]
    assert adjusted_rand_score(truth, [r["cluster"] for r in rows]) >= 0.9
    assert (tmp_path / "r.html").read_text().count("<circle") == 25


def test_imagenet_encoder_refuses_sar_and_runs_on_rgb(sarseg, scene, tmp_path):
    """The bundled ImageNet encoder wants 8-bit RGB: on the VV/VH raster it says so; on an RGB rendering of the
    land cover its embeddings go into the layer."""
    from rasters import read_raster, write_raster

    from sar_seg_plugin.processing.cluster_communes import encoder_models

    communes, sar, labels = paths(scene)
    imagenet = encoder_models().index("imagenet_effnetlite0_encoder_rgb")
    params = {"INPUT": communes, "FEATURES": [2], "ENCODER": imagenet, "K": 4, "OUTPUT": "TEMPORARY_OUTPUT"}
    bad(sarseg, {**params, "RASTER": sar}, r"expects 3 bands: R \(uint8\), G \(uint8\), B \(uint8\); the raster has 2")
    classes = read_raster(labels)[0]
    palette = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in synthetic.CLASS_COLORS] + [[0, 0, 0]] * 251)
    rgb = palette[classes].transpose(2, 0, 1).astype(np.uint8)
    ds = gdal.Open(labels)
    path = write_raster(tmp_path / "rgb.tif", rgb, geotransform=ds.GetGeoTransform(), descriptions=["R", "G", "B"])
    ds = None
    rows = features_of(sarseg.run(ALG, {**params, "RASTER": path})["OUTPUT"])
    emb = np.array([[r[f"emb_pc{j}"] for j in range(1, 9)] for r in rows])
    assert np.isfinite(emb).all() and emb.std(axis=0).min() > 0
    assert "vv_mean" not in rows[0] and "frac_water" not in rows[0]  # only the chosen family


def test_rerun_on_a_clustered_layer_replaces_its_columns(sarseg, scene, tmp_path):
    communes, sar, labels = paths(scene)
    params = {"RASTER": sar, "CLASS_RASTER": labels, "K": 4}
    first = sarseg.run(ALG, {**params, "INPUT": communes, "OUTPUT": str(tmp_path / "first.gpkg")})["OUTPUT"]
    second = sarseg.run(ALG, {**params, "INPUT": first, "OUTPUT": str(tmp_path / "second.gpkg")})["OUTPUT"]
    a, b = features_of(first), features_of(second)
    assert list(a[0]) == list(b[0])  # the same columns, none doubled (e.g. cluster_2)
    assert [r["cluster"] for r in a] == [r["cluster"] for r in b]
    assert [r["vh_p50"] for r in a] == pytest.approx([r["vh_p50"] for r in b])


def test_dialog_values_run(sarseg, scene, qgis_iface):
    """The toolbox dialog builds with every parameter, and the values it produces run."""
    from qgis.core import QgsApplication
    from qgis.gui import QgsBrowserGuiModel

    browser = QgsBrowserGuiModel()
    qgis_iface.browserModel = lambda: browser  # the parameter widgets need a browser model
    communes, sar, labels = paths(scene)
    dialog = sarseg.createAlgorithmDialog(ALG, {"INPUT": communes, "RASTER": sar, "CLASS_RASTER": labels})
    try:
        dialog.show()
        values = dialog.mainWidget().createProcessingParameters()
        alg = QgsApplication.processingRegistry().algorithmById(ALG)
        assert (
            {"INPUT", "RASTER", "FEATURES", "K", "OUTPUT"}
            <= set(values)
            <= {p.name() for p in alg.parameterDefinitions()}
        )
        assert values["FEATURES"] == [0, 1] and values["K"] == 0
    finally:
        dialog.close()
    result = sarseg.run(ALG, values)
    assert result["CLUSTERS"] == 4


def test_modeler_chain_segment_then_cluster(sarseg, scene, tmp_path):
    """A graphical model: segment the raster, then cluster the communes with that class raster."""
    from qgis.core import (
        QgsProcessing,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFeatureSource,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("segment_and_cluster", "SAR Seg")
    model.addModelParameter(QgsProcessingParameterRasterLayer("sar", "SAR"), QgsProcessingModelParameter("sar"))
    model.addModelParameter(
        QgsProcessingParameterFeatureSource("communes", "Communes", [QgsProcessing.TypeVectorPolygon]),
        QgsProcessingModelParameter("communes"),
    )
    from_param = QgsProcessingModelChildParameterSource.fromModelParameter
    seg = QgsProcessingModelChildAlgorithm("sarseg:segment")
    seg.setChildId("seg")
    seg.addParameterSources("INPUT", [from_param("sar")])
    model.addChildAlgorithm(seg)
    clu = QgsProcessingModelChildAlgorithm("sarseg:cluster_communes")
    clu.setChildId("clu")
    clu.addParameterSources("INPUT", [from_param("communes")])
    clu.addParameterSources("RASTER", [from_param("sar")])
    clu.addParameterSources("CLASS_RASTER", [QgsProcessingModelChildParameterSource.fromChildOutput("seg", "OUTPUT")])
    output = QgsProcessingModelOutput("clusters")
    output.setChildOutputName("OUTPUT")
    clu.setModelOutputs({"clusters": output})
    model.addChildAlgorithm(clu)
    assert model.validate()[0], model.validate()[1]

    communes, sar, _ = paths(scene)
    result = sarseg.run(model, {"sar": sar, "communes": communes, "clu:clusters": str(tmp_path / "c.gpkg")})
    rows = features_of(result["clu:clusters"])
    assert adjusted_rand_score([r["archetype_id"] for r in rows], [r["cluster"] for r in rows]) >= 0.9


def test_output_over_the_communes_file_is_refused(sarseg, scene, tmp_path):
    communes, sar, labels = paths(scene)
    copy = str(tmp_path / "communes.gpkg")
    shutil.copy(communes, copy)
    digest = file_digest(copy)
    bad(sarseg, {"INPUT": copy, "RASTER": sar, "CLASS_RASTER": labels, "OUTPUT": copy},
        "is the communes layer's own file. Choose another output")  # fmt: skip
    assert file_digest(copy) == digest


def test_a_swath_filled_with_undeclared_zeros_does_not_enter_the_statistics(sarseg, scene, tmp_path):
    """Zeros in every band with no nodata declared are the fill outside a swath: the communes' dB statistics are
    those of the raster with 0 declared as nodata (before: -50 dB floor values pulled the edge communes' means)."""
    from rasters import read_raster, write_raster

    communes, sar, labels = paths(scene)
    data = read_raster(sar, dtype=np.float64)
    data[:, :, :100] = 0.0  # the western third: outside the swath
    ds = gdal.Open(sar)
    grid = {"geotransform": ds.GetGeoTransform(), "descriptions": ["VV", "VH"], "units": ["linear", "linear"]}
    ds = None
    params = {"INPUT": communes, "CLASS_RASTER": labels, "FEATURES": [0], "K": 4, "OUTPUT": "TEMPORARY_OUTPUT"}
    rows = {}
    for name, nodata in (("undeclared", None), ("declared", 0.0)):
        raster = write_raster(tmp_path / f"{name}.tif", data, nodata=nodata, **grid)
        rows[name] = features_of(sarseg.run(ALG, {**params, "RASTER": raster})["OUTPUT"])
    by_id = {name: {r["commune_id"]: r for r in found} for name, found in rows.items()}
    assert by_id["undeclared"].keys() == by_id["declared"].keys()
    assert any(r["vv_mean"] is None for r in rows["declared"])  # communes wholly in the fill have no statistics
    for cid, a in by_id["undeclared"].items():
        b = by_id["declared"][cid]
        for column in STAT_COLUMNS:
            assert (a[column] is None and b[column] is None) or a[column] == pytest.approx(b[column], abs=1e-6)
    # the test would fail without the rule: the fill is inside some communes
    assert min(r["vv_p10"] for r in rows["undeclared"] if r["vv_p10"] is not None) > -40.0
