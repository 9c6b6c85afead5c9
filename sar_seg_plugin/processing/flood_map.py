"""sarseg:flood_map — flooded land from a post-event and a pre-event SAR image: classes, polygons, per commune."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from qgis.core import (
    QgsFeature,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)
from qgis.PyQt.QtCore import QMetaType

from ..core import flood
from ..core.inference import segment_raster
from ..core.outputs import OutputSet, remove_folder, temporary_folder
from ..models.registry import fast_segmentation_model
from .base import INPUT_SCALE_HELP, SarSegAlgorithm, layer_path
from .styling import ClassPaletteStyle, FloodCommunesStyle, FloodPolygonStyle, style_on_load


def _hex(rgba: tuple[int, int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgba[:3])


class FloodMapAlgorithm(SarSegAlgorithm):
    POST = "POST"
    PRE = "PRE"
    HEIGHT = "HEIGHT"
    MAX_HEIGHT = "MAX_HEIGHT"
    WATER_THRESHOLD = "WATER_THRESHOLD"
    CHANGE_THRESHOLD = "CHANGE_THRESHOLD"
    METHOD = "METHOD"
    POLARISATIONS = "POLARISATIONS"
    SMOOTH = "SMOOTH"
    MIN_AREA = "MIN_AREA"
    COMMUNES = "COMMUNES"
    MODEL_OPINION = "MODEL_OPINION"
    NAME_FIELD = "NAME_FIELD"
    OUTPUT = "OUTPUT"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    OUTPUT_COMMUNES = "OUTPUT_COMMUNES"
    OUTPUT_HTML = "OUTPUT_HTML"
    FLOODED_KM2 = "FLOODED_KM2"
    WATER_THRESHOLD_OUT = "WATER_THRESHOLD_OUT"
    CHANGE_THRESHOLD_OUT = "CHANGE_THRESHOLD_OUT"

    NAME = "flood_map"
    DISPLAY_NAME = "Flood map (pre / post event)"
    GROUP_ID = "segmentation"
    HELP = (
        "Maps flooded land from a SAR image taken during a flood and, better, one taken before it.\n\n"
        "<b>Post-event image</b> and <b>pre-event image</b> (optional): VV (or HH) backscatter, with VH (or HV) "
        "when you have it, linear power or dB (units detected). A pre-event image on another grid is aligned to the "
        "post-event one.\n"
        "<b>Polarisations</b> (advanced): where both images have bands named VV and VH (or HH and HV), water and "
        "change are found on the mean of their dB values: open water is dark in both and the two speckles are "
        "independent, which finds shallow floods (grass through the water) that VV alone misses. Otherwise, or "
        "with 'co-polarised only', the band named VV is used, else HH, else band 1. Unnamed bands are taken by "
        "brightness: the brighter is VV (exports often put VH first), and the darker its VH when 4 dB or more "
        "below it (calibrated pairs are 5-10 dB apart). The log says which.\n"
        "<b>Method</b>: each image is smoothed by the median of its dB values in a small window (<b>smoothing</b>: "
        "it keeps shores in place). Open water is dark: "
        "the water threshold is found by split-based thresholding (Kittler-Illingworth or Otsu on the tiles that "
        "hold both water and land; tiles of land alone do not count), and so is the change threshold on the "
        "log-ratio post - pre. Flooded: water after, not before, and darker by more than the change threshold. "
        "Permanent water: water on both dates. Without a pre-event image, all open water is mapped as 'water'. "
        "Where no tile holds water and land, the water threshold is found on the tiles where the change holds a "
        "drop; where none does either, the literature value (-18 dB VV, -21 dB for the VV/VH mean; a 3 dB drop) "
        "is used and the log says so; "
        "give the thresholds when you know them. The log and the report say every threshold and how it was "
        "found.\n"
        "<b>Height raster</b> (optional): height above the nearest drainage (HAND) or a DEM: no flood above the "
        "maximum height.\n"
        "<b>Segmentation model's water as a third opinion</b> (advanced, with a pre-event image): the post-event "
        "image is also segmented by the bundled model; land that was not water before is flooded where two of "
        "three say so (darker than the water threshold, darker than before by the change threshold, the model's "
        "water class). It can add flood the thresholds miss, never remove what both found.\n"
        "<b>Minimum mapping unit</b>: patches smaller than this (m²) take the class around them.\n"
        "<b>Communes</b> (optional): polygons in any CRS; the output table adds flooded_km2, permanent_km2, "
        "flooded_pct (of the commune's mapped land) and mapped_pct.\n"
        + INPUT_SCALE_HELP
        + "\nLimits: flooded forest and streets are not seen (C-band does not reach the water under them); a "
        "shallow flood only 2-3 dB below the fields needs VH too, and one as bright as the darkest fields is "
        "under-mapped, never invented; dark dry surfaces (sand, tarmac) can look like water on both dates "
        "(permanent water)."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterRasterLayer(self.POST, self.tr("Post-event image (during the flood)")))
        self.addParameter(
            QgsProcessingParameterRasterLayer(self.PRE, self.tr("Pre-event image (before the flood)"), optional=True)
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                self.HEIGHT, self.tr("Height raster (height above drainage or DEM)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MAX_HEIGHT, self.tr("Maximum height of flooded land (m, with a height raster)"),
                QgsProcessingParameterNumber.Double, 15.0, False, 0.0,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.COMMUNES, self.tr("Communes (flooded area per polygon)"), [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterField(
                self.NAME_FIELD, self.tr("Commune name field (for the report)"), None, self.COMMUNES, optional=True
            )
        )
        advanced = [
            QgsProcessingParameterBoolean(
                self.MODEL_OPINION, self.tr("Segmentation model's water as a third opinion"), defaultValue=False
            ),
            QgsProcessingParameterNumber(
                self.WATER_THRESHOLD, self.tr("Water threshold (dB; empty: found automatically)"),
                QgsProcessingParameterNumber.Double, None, True,
            ),
            QgsProcessingParameterNumber(
                self.CHANGE_THRESHOLD, self.tr("Change threshold (dB, a drop, e.g. -3; empty: found automatically)"),
                QgsProcessingParameterNumber.Double, None, True,
            ),
            QgsProcessingParameterEnum(
                self.METHOD, self.tr("Threshold method"), options=["Kittler-Illingworth", "Otsu"], defaultValue=0
            ),
            QgsProcessingParameterEnum(
                self.POLARISATIONS, self.tr("Polarisations"),
                options=[
                    self.tr("VV and VH together where both images have both"),
                    self.tr("Co-polarised only (VV or HH)"),
                ],
                defaultValue=0,
            ),
            QgsProcessingParameterNumber(
                self.SMOOTH, self.tr("Smoothing window (pixels, odd)"), QgsProcessingParameterNumber.Integer,
                flood.DEFAULT_SMOOTH, False, 1, 15,
            ),
            QgsProcessingParameterNumber(
                self.MIN_AREA, self.tr("Minimum mapping unit (m²)"), QgsProcessingParameterNumber.Double,
                flood.DEFAULT_MIN_AREA_M2, False, 0.0,
            ),
        ]  # fmt: skip
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.add_input_scale_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Flood classes")))
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT_POLYGONS, self.tr("Flood polygons"), QgsProcessing.TypeVectorPolygon, optional=True,
                createByDefault=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_COMMUNES, self.tr("Communes with flooded area"), QgsProcessing.TypeVectorPolygon,
                optional=True, createByDefault=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_HTML, self.tr("Summary report"), self.tr("HTML files (*.html)"), optional=True,
                createByDefault=False,
            )
        )  # fmt: skip
        self.addOutput(QgsProcessingOutputNumber(self.FLOODED_KM2, self.tr("Flooded area (km²)")))
        self.addOutput(QgsProcessingOutputNumber(self.WATER_THRESHOLD_OUT, self.tr("Water threshold used (dB)")))
        self.addOutput(QgsProcessingOutputNumber(self.CHANGE_THRESHOLD_OUT, self.tr("Change threshold used (dB)")))

    def _optional_number(self, parameters: dict, name: str, context: QgsProcessingContext) -> float | None:
        value = parameters.get(name)
        return None if value in (None, "") else self.parameterAsDouble(parameters, name, context)

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        post_layer = self.raster_layer(parameters, self.POST, context)
        post = layer_path(post_layer)
        pre = self.raster_path(parameters, self.PRE, context) if parameters.get(self.PRE) else None
        height = self.raster_path(parameters, self.HEIGHT, context) if parameters.get(self.HEIGHT) else None
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        polygons = self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context) or None
        if polygons and Path(polygons.split("|")[0]).suffix.lower() != ".gpkg":
            raise QgsProcessingException(
                self.tr("Flood polygons are written as a GeoPackage: give a file name ending in .gpkg ({}).").format(
                    polygons
                )
            )
        report = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context) if parameters.get(
            self.OUTPUT_HTML
        ) else None  # fmt: skip
        source = self.parameterAsSource(parameters, self.COMMUNES, context) if parameters.get(self.COMMUNES) else None
        if source is not None:
            self.check_vector_crs(source, self.tr("Communes"))
        self.check_outputs(
            parameters, [self.OUTPUT, self.OUTPUT_POLYGONS, self.OUTPUT_COMMUNES, self.OUTPUT_HTML], context,
            feedback.pushInfo,
        )  # fmt: skip
        methods = flood.METHODS
        run = OutputSet()
        results: dict = {}
        sink_ids: list[tuple[str, str]] = []

        use_model = self.parameterAsBoolean(parameters, self.MODEL_OPINION, context) and pre is not None
        scratch = temporary_folder(tempfile.gettempdir()) if use_model else None

        def work() -> None:  # every output appears together, or none
            with run:
                opinion, water_class = self._segment(post, scratch, feedback) if use_model else (None, 0)
                result = flood.flood_map(
                    post, out, pre=pre, height=height, opinion=opinion, opinion_water=water_class,
                    max_height=self.parameterAsDouble(parameters, self.MAX_HEIGHT, context) if height else None,
                    water_db=self._optional_number(parameters, self.WATER_THRESHOLD, context),
                    change_db=self._optional_number(parameters, self.CHANGE_THRESHOLD, context),
                    method=methods[self.parameterAsEnum(parameters, self.METHOD, context)],
                    polarisations=flood.POLARISATIONS[self.parameterAsEnum(parameters, self.POLARISATIONS, context)],
                    smooth=self.parameterAsInt(parameters, self.SMOOTH, context),
                    min_area_m2=self.parameterAsDouble(parameters, self.MIN_AREA, context),
                    input_scale=self.input_scale(parameters, context), outputs=run,
                    log=feedback.pushInfo, warn=feedback.pushWarning, **self.callbacks(feedback),
                )  # fmt: skip
                results["result"] = result
                classes = run.temporary_of(out)  # written, moved into place with the other outputs
                if polygons:
                    n = flood.polygonize(str(classes), polygons, outputs=run, is_canceled=feedback.isCanceled)
                    feedback.pushInfo(self.tr("{} flood polygons").format(n))
                rows = []
                if source is not None:
                    ids, rows = self._communes(parameters, context, source, str(classes), post_layer, run, feedback)
                    sink_ids.extend(ids)
                if report:
                    flood.write_report(report, result, post=post, pre=pre, communes=rows, outputs=run)

        try:
            self.run_core(work)
        finally:
            remove_folder(scratch)
        self.sinks_committed(context, sink_ids)
        result: flood.FloodResult = results["result"]
        names = list(result.class_names)
        style_on_load(
            context, out,
            ClassPaletteStyle([(i, names[i], _hex(flood.COLORS[i])) for i in range(len(names))]),
        )  # fmt: skip
        outputs = {
            self.OUTPUT: out,
            self.FLOODED_KM2: result.area_km2(names[1]),
            self.WATER_THRESHOLD_OUT: result.thresholds[0].value,
            self.CHANGE_THRESHOLD_OUT: result.thresholds[-1].value if pre else None,
        }
        if polygons:
            outputs[self.OUTPUT_POLYGONS] = polygons
            style_on_load(context, polygons, FloodPolygonStyle())
        if sink_ids:
            outputs[self.OUTPUT_COMMUNES] = sink_ids[0][1]
            style_on_load(context, outputs[self.OUTPUT_COMMUNES], FloodCommunesStyle())
        if report:
            outputs[self.OUTPUT_HTML] = report
        return outputs

    def _segment(self, post: str, folder, feedback: QgsProcessingFeedback) -> tuple[str, int]:  # noqa: ANN001
        """The post-event image segmented by the bundled model; its water class."""
        model, reference = self.load_segmentation(fast_segmentation_model(), "auto", feedback)
        names = [n.lower() for n in model.metadata.class_names]
        if "water" not in names:
            raise QgsProcessingException(self.tr("The segmentation model has no water class."))
        path = str(folder / "post_classes.tif")
        feedback.pushInfo(
            self.tr("Segmenting the post-event image with {} (third opinion)").format(model.metadata.name)
        )
        segment_raster(post, path, model, log=feedback.pushInfo, warn=feedback.pushWarning,
                       is_canceled=feedback.isCanceled, reference=reference)  # fmt: skip
        return path, names.index("water")

    def _communes(self, parameters, context, source, classes, post_layer, run, feedback):  # noqa: ANN001, ANN202
        """Flooded area per commune; the communes written with it as one of the run's outputs."""
        from qgis.core import QgsCoordinateTransform

        transform = QgsCoordinateTransform(source.sourceCrs(), post_layer.crs(), context.transformContext())
        features, wkbs = [], []
        for feature in source.getFeatures():
            features.append(feature)
            geom = feature.geometry()
            if geom is None or geom.isNull() or geom.isEmpty():
                wkbs.append(None)
                continue
            geom = geom.makeValid() if not geom.isGeosValid() else geom
            geom.transform(transform)
            wkbs.append(bytes(geom.asWkb()))
        stats = flood.flood_per_commune(classes, wkbs, is_canceled=feedback.isCanceled)
        added = [("flooded_km2", QMetaType.Type.Double), ("permanent_km2", QMetaType.Type.Double),
                 ("flooded_pct", QMetaType.Type.Double), ("mapped_pct", QMetaType.Type.Double)]  # fmt: skip
        added_names = {name for name, _ in added}
        fields, kept = QgsFields(), []
        for i, fld in enumerate(source.fields()):
            if fld.name().lower() not in added_names:
                fields.append(fld)
                kept.append(i)
        for name, kind in added:
            fields.append(QgsField(name, kind))

        def num(v: float, scale: float = 1.0) -> float | None:
            return float(v) * scale if np.isfinite(v) else None

        def rows():  # noqa: ANN202
            for i, feature in enumerate(features):
                f = QgsFeature(fields)
                f.setGeometry(feature.geometry())
                f.setAttributes(
                    [feature.attribute(j) for j in kept]
                    + [num(stats.flooded_km2[i]), num(stats.permanent_km2[i]), num(stats.flooded_share[i], 100.0),
                       num(stats.mapped_share[i], 100.0)]
                )  # fmt: skip
                yield f

        ids = [
            self.write_features(
                run, parameters, self.OUTPUT_COMMUNES, context, fields, rows(), source.wkbType(), source.sourceCrs()
            )
        ] if parameters.get(self.OUTPUT_COMMUNES) is not None else []  # fmt: skip
        name_field = self.parameterAsString(parameters, self.NAME_FIELD, context)
        index = source.fields().lookupField(name_field) if name_field else -1
        report_rows = [
            (str(f.attribute(index)) if index >= 0 else str(f.id()), stats.flooded_km2[i], stats.permanent_km2[i],
             stats.flooded_share[i])
            for i, f in enumerate(features)
        ]  # fmt: skip
        return ids, report_rows
