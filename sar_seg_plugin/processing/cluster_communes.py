"""sarseg:cluster_communes — group communes (polygons) by what the imagery shows inside them."""

from __future__ import annotations

import os

import numpy as np
from qgis.core import (
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeature,
    QgsFeatureRequest,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QMetaType

from ..core import communes
from ..core.cluster_report import report_data, write_report
from ..core.clustering import K_MAX, K_MIN
from ..core.inference import segment_raster
from ..core.outputs import OutputSet
from ..models.registry import DEVICES, bundled_models, fast_segmentation_model, load_model
from .base import INPUT_SCALE_HELP, RADIOMETRY_HELP, SarSegAlgorithm, layer_path
from .styling import ClusterStyle, style_on_load

DEFAULT_ENCODER = "sarseg_encoder_vvvh"
FAMILY_OPTIONS = (communes.STATISTICS, communes.FRACTIONS, communes.EMBEDDINGS)
NUMERIC = (
    QMetaType.Type.Int,
    QMetaType.Type.UInt,
    QMetaType.Type.LongLong,
    QMetaType.Type.ULongLong,
    QMetaType.Type.Double,
)


def encoder_models() -> list[str]:
    """Bundled encoders offered in the ENCODER list, the SAR encoder first."""
    names = list(bundled_models("encoder"))
    return sorted(names, key=lambda n: (n != DEFAULT_ENCODER, n))


class ClusterCommunesAlgorithm(SarSegAlgorithm):
    INPUT = "INPUT"
    RASTER = "RASTER"
    CLASS_RASTER = "CLASS_RASTER"
    FEATURES = "FEATURES"
    K = "K"
    K_MIN = "K_MIN"
    K_MAX = "K_MAX"
    FIELD = "FIELD"
    FIELD_USE = "FIELD_USE"
    NAME_FIELD = "NAME_FIELD"
    NEIGHBOURS = "NEIGHBOURS"
    SEED = "SEED"
    ENCODER = "ENCODER"
    ENCODER_FILE = "ENCODER_FILE"
    SEGMENTATION_MODEL_FILE = "SEGMENTATION_MODEL_FILE"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    OUTPUT_SIMILAR = "OUTPUT_SIMILAR"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    K_OUT = "CLUSTERS"
    SILHOUETTE = "SILHOUETTE"

    NAME = "cluster_communes"
    DISPLAY_NAME = "Cluster communes"
    GROUP_ID = "clustering"
    HELP = (
        "Groups communes (or any polygons) by what a raster shows inside them, with K-Means.\n\n"
        "<b>Communes</b>: a polygon layer in any CRS (reprojected to the raster's). Invalid geometries are "
        "repaired (makeValid) and the log says which. A polygon partly outside the raster uses its inside part "
        "and is flagged (<i>partial</i>, <i>inside_pct</i>); a polygon fully outside the raster, without any valid "
        "pixel, without geometry or smaller than a pixel is kept with a NULL cluster and a <i>reason</i>.\n"
        "<b>Raster</b>: e.g. Sentinel-1 VV/VH backscatter (linear power or dB). Bands named VV, VH, HH or HV are "
        "summarised in dB; an unnamed 2-band raster is taken as VV, VH.\n"
        + INPUT_SCALE_HELP
        + RADIOMETRY_HELP
        + "<b>Class raster</b> (optional): land-cover classes, e.g. the output of 'Segment raster', aligned to the "
        "raster by nearest neighbour. When empty and land-cover fractions are wanted, the raster is segmented "
        "with the bundled model (or the <b>Segmentation model file</b>).\n"
        "<b>Features</b>:\n"
        "- <i>Backscatter statistics</i>: mean, standard deviation and 10th/50th/90th percentiles of each band "
        "(dB for SAR bands) and of the cross-polarisation ratio VH/VV in dB. Percentiles come from per-commune "
        "histograms of 1024 bins over the raster's value range.\n"
        "- <i>Land-cover fractions</i>: share of each class among the commune's classified pixels.\n"
        "- <i>CNN embeddings</i>: the encoder runs over each commune's own pixels (pixels outside it set to the "
        "training mean), tile embeddings are averaged weighted by the commune's pixels, and the leading 8 principal "
        "components are kept. <b>Encoder</b>: the bundled SAR encoder (VV/VH), or the ImageNet EfficientNet-Lite0 "
        "encoder for 8-bit RGB optical imagery; an <b>Encoder file</b> (.onnx with encoder metadata) overrides it.\n"
        "Every feature is standardised, and each family is scaled to the same total weight.\n"
        "<b>Number of clusters k</b>: 0 chooses k between <b>k min</b> and <b>k max</b> by the best silhouette "
        "score (computed on a sample of 5000 communes when there are more).\n"
        "<b>Numeric field</b> (e.g. population) and <b>Use of the numeric field</b>: summarised per cluster in the "
        "report only, or also used as one more clustering feature (communes without a value are then not "
        "clustered).\n"
        "<b>Name field</b>: names communes in the similar-communes table and the report (feature ids otherwise).\n"
        "<b>Similar communes listed per commune</b>: rows per commune in the similar-communes table.\n"
        "<b>Random seed</b>: K-Means initialisation and silhouette sampling; the same seed gives the same clusters.\n"
        "<b>Device</b>: where the models run (auto, CPU or CUDA).\n\n"
        "Outputs: the communes with <i>cluster</i> (1 = largest), <i>silhouette</i> (per commune, -1..1: how much "
        "closer it is to its own cluster than to the next one) and the feature columns, styled by cluster; a "
        "table of the most similar communes of each commune (nearest neighbours in the standardised feature "
        "space); an HTML report with k and the silhouette per k tried, cluster sizes and mean features, a PCA "
        "scatter coloured by cluster, and the numeric field per cluster. Memory is bounded by a raster block and "
        "a few kB per commune, whatever the raster size. Needs scikit-learn (and onnxruntime for models)."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT, self.tr("Communes (polygon layer)"), [QgsProcessing.TypeVectorPolygon]
            )
        )
        self.addParameter(QgsProcessingParameterRasterLayer(self.RASTER, self.tr("Raster (e.g. VV/VH backscatter)")))
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                self.CLASS_RASTER, self.tr("Class raster (empty: segment the raster)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.FEATURES,
                self.tr("Features"),
                options=[
                    self.tr("Backscatter statistics (mean, std, percentiles of VV, VH, VH/VV in dB)"),
                    self.tr("Land-cover fractions"),
                    self.tr("CNN embeddings"),
                ],
                allowMultiple=True,
                defaultValue=[0, 1],
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.K,
                self.tr("Number of clusters k (0 = choose by silhouette)"),
                QgsProcessingParameterNumber.Integer,
                0,
                False,
                0,
                1000,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.FIELD,
                self.tr("Numeric field (e.g. population)"),
                parentLayerParameterName=self.INPUT,
                type=QgsProcessingParameterField.Numeric,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.FIELD_USE,
                self.tr("Use of the numeric field"),
                options=[self.tr("Report only"), self.tr("Also a clustering feature")],
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.NAME_FIELD,
                self.tr("Name field (for the similar-communes table and the report)"),
                parentLayerParameterName=self.INPUT,
                optional=True,
            )
        )
        advanced = [
            QgsProcessingParameterNumber(
                self.K_MIN, self.tr("k min (automatic k)"), QgsProcessingParameterNumber.Integer, K_MIN, False, 2, 1000
            ),
            QgsProcessingParameterNumber(
                self.K_MAX, self.tr("k max (automatic k)"), QgsProcessingParameterNumber.Integer, K_MAX, False, 2, 1000
            ),
            QgsProcessingParameterNumber(
                self.NEIGHBOURS,
                self.tr("Similar communes listed per commune"),
                QgsProcessingParameterNumber.Integer,
                5,
                False,
                1,
                100,
            ),
            QgsProcessingParameterNumber(
                self.SEED, self.tr("Random seed"), QgsProcessingParameterNumber.Integer, 0, False, 0
            ),
            QgsProcessingParameterEnum(
                self.ENCODER, self.tr("Encoder (embeddings)"), options=encoder_models(), defaultValue=0
            ),
            QgsProcessingParameterFile(
                self.ENCODER_FILE,
                self.tr("Encoder file (.onnx, overrides the bundled encoder)"),
                extension="onnx",
                optional=True,
            ),
            QgsProcessingParameterFile(
                self.SEGMENTATION_MODEL_FILE,
                self.tr("Segmentation model file (.onnx, when no class raster is given)"),
                extension="onnx",
                optional=True,
            ),
            QgsProcessingParameterEnum(
                self.DEVICE, self.tr("Device"), options=[self.tr("Auto"), "CPU", "CUDA"], defaultValue=0
            ),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.add_input_scale_parameter()
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, self.tr("Clustered communes"), QgsProcessing.TypeVectorPolygon
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_SIMILAR,
                self.tr("Most similar communes"),
                QgsProcessing.TypeVector,
                optional=True,
                createByDefault=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT,
                self.tr("Clustering report"),
                self.tr("HTML files (*.html)"),
                optional=True,
                createByDefault=True,
            )
        )

        self.addOutput(QgsProcessingOutputNumber(self.K_OUT, self.tr("Number of clusters")))
        self.addOutput(QgsProcessingOutputNumber(self.SILHOUETTE, self.tr("Mean silhouette")))

    # --- reading the polygons ---------------------------------------------------------------------------------------

    def _source(self, parameters: dict, context: QgsProcessingContext) -> QgsProcessingFeatureSource:
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        geometry_type = QgsWkbTypes.geometryType(source.wkbType())
        if geometry_type != QgsWkbTypes.PolygonGeometry:
            kind = {
                QgsWkbTypes.PointGeometry: "point",
                QgsWkbTypes.LineGeometry: "line",
                QgsWkbTypes.NullGeometry: "geometry-less table",
            }.get(geometry_type, "non-polygon")
            raise QgsProcessingException(
                self.tr(
                    "The communes layer is a {} layer: give a polygon layer (one polygon or multipolygon per commune)."
                ).format(kind)
            )
        self.check_vector_crs(source, self.tr("communes layer"))
        return source

    def _geometries(self, source, raster_crs, context, feedback):  # noqa: ANN001, ANN202
        """Features, and for each its polygon WKB in the raster CRS (None with a reason when unusable)."""
        transform = QgsCoordinateTransform(source.sourceCrs(), raster_crs, context.transformContext())
        features, wkbs, reasons = [], [], []
        repaired = 0
        request = QgsFeatureRequest()
        for feature in source.getFeatures(request, QgsProcessingFeatureSource.FlagSkipGeometryValidityChecks):
            if feedback.isCanceled():
                raise QgsProcessingException(self.tr("Cancelled by the user: no output was written."))
            features.append(QgsFeature(feature))
            geom = QgsGeometry(feature.geometry())
            if geom.isNull() or geom.isEmpty():
                wkbs.append(None)
                reasons.append("no geometry")
                continue
            if not geom.isGeosValid():
                fixed = geom.makeValid()
                fixed.convertGeometryCollectionToSubclass(QgsWkbTypes.PolygonGeometry)
                if fixed.isNull() or fixed.isEmpty() or fixed.type() != QgsWkbTypes.PolygonGeometry:
                    wkbs.append(None)
                    reasons.append("invalid geometry that could not be repaired")
                    feedback.pushWarning(
                        self.tr("Feature {}: invalid geometry that could not be repaired").format(feature.id())
                    )
                    continue
                repaired += 1
                feedback.pushInfo(
                    self.tr("Feature {}: invalid geometry ({}) repaired").format(
                        feature.id(), geom.lastError() or "not valid"
                    )
                )
                geom = fixed
            try:
                geom.transform(transform)
            except QgsCsException:
                wkbs.append(None)
                reasons.append("cannot be transformed to the raster's CRS")
                continue
            wkbs.append(bytes(geom.asWkb()))
            reasons.append("")
        if repaired:
            feedback.pushWarning(self.tr("{} invalid geometries were repaired with makeValid").format(repaired))
        return features, wkbs, reasons

    def _field_values(self, source, field_name, features):  # noqa: ANN001, ANN202
        if not field_name:
            return None
        index = source.fields().lookupField(field_name)
        if index < 0:
            raise QgsProcessingException(self.tr("The field '{}' is not in the communes layer.").format(field_name))
        fld = source.fields().at(index)
        if fld.type() not in NUMERIC:
            raise QgsProcessingException(
                self.tr(
                    "The field '{}' is a {} field, not a number: choose a numeric field (integer or decimal), or "
                    'convert it first (Field Calculator, e.g. to_real("field")).'
                ).format(field_name, fld.typeName())
            )
        values = []
        for f in features:
            v = f.attribute(index)
            values.append(None if v is None or v == "" or (hasattr(v, "isNull") and v.isNull()) else float(v))
        return values

    # --- run ------------------------------------------------------------------------------------------------------

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        source = self._source(parameters, context)
        raster_layer = self.raster_layer(parameters, self.RASTER, context)
        raster = layer_path(raster_layer)
        class_raster = (
            self.raster_path(parameters, self.CLASS_RASTER, context)
            if parameters.get(self.CLASS_RASTER) not in (None, "")
            else None
        )
        family_idx = self.parameterAsEnums(parameters, self.FEATURES, context)
        families = [FAMILY_OPTIONS[i] for i in family_idx]
        field_name = self.parameterAsString(parameters, self.FIELD, context) or None
        field_as_feature = self.parameterAsEnum(parameters, self.FIELD_USE, context) == 1
        name_field = self.parameterAsString(parameters, self.NAME_FIELD, context) or None
        k = self.parameterAsInt(parameters, self.K, context)
        k_min = self.parameterAsInt(parameters, self.K_MIN, context)
        k_max = self.parameterAsInt(parameters, self.K_MAX, context)
        device = DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        if k_min > k_max:
            raise QgsProcessingException(
                self.tr("k min ({}) is larger than k max ({}): swap them.").format(k_min, k_max)
            )
        if not families and not (field_name and field_as_feature):
            raise QgsProcessingException(self.tr("No feature was chosen: choose at least one in Features."))
        self._refuse_input_as_output(parameters, context)
        self.check_outputs(parameters, [self.OUTPUT, self.OUTPUT_SIMILAR, self.OUTPUT_REPORT], context,
                           feedback.pushInfo)  # fmt: skip
        input_scale = self.input_scale(parameters, context)

        features, wkbs, reasons = self._geometries(source, raster_layer.crs(), context, feedback)
        values = self._field_values(source, field_name, features)
        options = communes.Options(
            families=families,
            k=k,
            k_min=k_min,
            k_max=k_max,
            seed=self.parameterAsInt(parameters, self.SEED, context),
            neighbours=self.parameterAsInt(parameters, self.NEIGHBOURS, context),
            field_name=field_name,
            field_values=values,
            field_as_feature=field_as_feature,
        )
        encoder = None
        if communes.EMBEDDINGS in families:
            encoder_file = self.parameterAsFile(parameters, self.ENCODER_FILE, context)
            names = encoder_models()
            encoder_name = encoder_file or names[self.parameterAsEnum(parameters, self.ENCODER, context)]
            encoder = self.run_core(lambda: load_model(encoder_name, device))
            if encoder.metadata.task != "encoder":
                raise QgsProcessingException(
                    self.tr(
                        "Model '{}' is a {} model: the embeddings need an encoder model (task 'encoder'), such as "
                        "the bundled SAR encoder."
                    ).format(encoder.metadata.name, encoder.metadata.task)
                )
            feedback.pushInfo(self.tr("Encoder: {} ({})").format(encoder.metadata.name, encoder.path))
        seg_file = self.parameterAsFile(parameters, self.SEGMENTATION_MODEL_FILE, context)

        def segment(src: str, dst: str) -> list[str]:
            model, reference = self.load_segmentation(seg_file or fast_segmentation_model(), device, feedback)
            feedback.pushInfo(self.tr("Segmentation model: {} ({})").format(model.metadata.name, model.path.name))
            segment_raster(
                src,
                dst,
                model,
                reference=reference,
                input_scale=input_scale,
                log=feedback.pushInfo,
                warn=feedback.pushWarning,
                is_canceled=feedback.isCanceled,
                progress=lambda p: feedback.setProgress(5 + 0.4 * p),  # the core reports 5 % before, 45 % after
            )
            return list(model.metadata.class_names)

        result = self.run_core(
            lambda: communes.cluster_communes(
                wkbs,
                raster,
                options,
                reasons=reasons,
                class_path=class_raster,
                segment=segment,
                encoder=encoder,
                log=feedback.pushInfo,
                input_scale=input_scale,
                **self.callbacks(feedback),
            )
        )
        for note in result.notes:
            feedback.pushWarning(note)  # core messages are built with their values: not translatable
        feedback.pushInfo(
            self.tr("k = {}, mean silhouette {:.3f}; {} of {} communes clustered").format(
                result.k, result.clustering.silhouette, len(result.clustered), len(features)
            )
        )
        names = self._names(source, name_field, features)
        report = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        run_outputs = OutputSet()
        sink_ids: list[tuple[str, str]] = []

        def write() -> None:  # the layer, the table and the report appear together, or none of them
            with run_outputs:
                sink_ids.append(self._write_layer(parameters, context, source, features, result, feedback, run_outputs))
                if parameters.get(self.OUTPUT_SIMILAR) is not None:
                    sink_ids.append(self._write_similar(parameters, context, features, names, result, run_outputs))
                if report:
                    write_report(
                        report, report_data(result, options, names, families, raster, class_raster), run_outputs
                    )

        self.run_core(write)
        self.sinks_committed(context, sink_ids)
        outputs = {self.K_OUT: result.k, self.SILHOUETTE: result.clustering.silhouette}
        outputs[self.OUTPUT] = sink_ids[0][1]
        style_on_load(context, outputs[self.OUTPUT], ClusterStyle(result.k))
        if len(sink_ids) > 1:
            outputs[self.OUTPUT_SIMILAR] = sink_ids[1][1]
        if report:
            outputs[self.OUTPUT_REPORT] = report
        return outputs

    def _refuse_input_as_output(self, parameters, context) -> None:  # noqa: ANN001
        layer = self.parameterAsVectorLayer(parameters, self.INPUT, context)
        if layer is None:
            return
        inputs = {os.path.realpath(layer_path(layer))}
        for name in (self.OUTPUT, self.OUTPUT_SIMILAR):
            value = self.sink_destination(parameters, name, context)
            path = value.split("|")[0]
            if path and os.path.exists(path) and os.path.realpath(path) in inputs:
                raise QgsProcessingException(
                    self.tr(
                        "The output '{}' is the communes layer's own file. Choose another output; inputs are never "
                        "overwritten."
                    ).format(value)
                )

    @staticmethod
    def _names(source, name_field, features) -> list[str]:  # noqa: ANN001
        index = source.fields().lookupField(name_field) if name_field else -1
        if index < 0:
            return [str(f.id()) for f in features]
        return [str(f.attribute(index)) for f in features]

    def _write_layer(self, parameters, context, source, features, result, feedback, outputs) -> tuple[str, str]:  # noqa: ANN001
        added = [
            QgsField("cluster", QMetaType.Type.Int),
            QgsField("silhouette", QMetaType.Type.Double),
            QgsField("reason", QMetaType.Type.QString),
            QgsField("inside_pct", QMetaType.Type.Double),
            QgsField("partial", QMetaType.Type.Bool),
            QgsField("pixels", QMetaType.Type.LongLong),
            QgsField("valid_pct", QMetaType.Type.Double),
        ] + [QgsField(name, QMetaType.Type.Double) for name in result.columns]
        added_names = {f.name().lower() for f in added}
        fields = QgsFields()
        kept = []
        for i, fld in enumerate(source.fields()):
            if fld.name().lower() in added_names:  # e.g. a column from an earlier run
                feedback.pushWarning(self.tr("The input column '{}' is replaced by this run's").format(fld.name()))
                continue
            fields.append(fld)
            kept.append(i)
        for fld in added:
            fields.append(fld)

        def num(v: float) -> float | None:
            return None if not np.isfinite(v) else float(v)

        def rows():  # noqa: ANN202
            for i, feature in enumerate(features):
                out = QgsFeature(fields)
                out.setGeometry(feature.geometry())
                attrs = [feature.attribute(j) for j in kept]
                c = int(result.cluster[i])
                attrs += [
                    c if c else None,
                    num(result.silhouette[i]),
                    result.reason[i] or None,
                    round(100.0 * float(result.inside[i]), 3),
                    bool(result.partial[i]),
                    int(result.pixels[i]),
                    num(100.0 * result.valid_share[i]),
                ]
                attrs += [num(col[i]) for col in result.columns.values()]
                out.setAttributes(attrs)
                yield out

        return self.write_features(
            outputs, parameters, self.OUTPUT, context, fields, rows(), source.wkbType(), source.sourceCrs()
        )

    def _write_similar(self, parameters, context, features, names, result, outputs) -> tuple[str, str]:  # noqa: ANN001
        fields = self.table_fields(
            (
                ("commune_fid", QMetaType.Type.LongLong),
                ("commune", QMetaType.Type.QString),
                ("cluster", QMetaType.Type.Int),
                ("rank", QMetaType.Type.Int),
                ("similar_fid", QMetaType.Type.LongLong),
                ("similar", QMetaType.Type.QString),
                ("similar_cluster", QMetaType.Type.Int),
                ("distance", QMetaType.Type.Double),
                ("same_cluster", QMetaType.Type.Bool),
            )
        )

        def rows():  # noqa: ANN202
            for r, i in enumerate(result.clustered):
                for rank, (j, d) in enumerate(zip(result.neighbours[r], result.distances[r]), start=1):
                    out = QgsFeature(fields)
                    ci, cj = int(result.cluster[i]), int(result.cluster[j])
                    out.setAttributes(
                        [features[i].id(), names[i], ci, rank, features[j].id(), names[j], cj, float(d), ci == cj]
                    )
                    yield out

        return self.write_features(outputs, parameters, self.OUTPUT_SIMILAR, context, fields, rows())
