"""sarseg:segment — land-cover segmentation of a raster with an ONNX model, tiled with smooth blending."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ..core.class_rasters import CONFIDENCE_MEASURES
from ..core.inference import segment_raster
from ..core.resampling import SINGLE_LOOK_ENL
from ..core.vectors import PolygonRequest
from ..models.registry import (
    DEVICES,
    bundled_models,
    default_segmentation_model,
    fast_segmentation_model,
)
from .base import INPUT_SCALE_HELP, RADIOMETRY_HELP, SarSegAlgorithm
from .styling import ClassPaletteStyle, GrayStretchStyle, style_on_load


def segmentation_models() -> list[str]:
    """Bundled segmentation models (by their metadata's task) offered in the MODEL list: the float32 U-Net first,
    then the others by name (indexes that scripts passing MODEL keep)."""
    names = list(bundled_models("segmentation"))
    first = default_segmentation_model()
    return sorted(names, key=lambda n: (n != first, n))


def default_model_index() -> int:
    """MODEL's default: the int8 copy (checked against the float32 model on every run) where it is bundled."""
    names = segmentation_models()
    fast = fast_segmentation_model()
    return names.index(fast) if fast in names else 0


class SegmentAlgorithm(SarSegAlgorithm):
    INPUT = "INPUT"
    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    MEAN_CONFIDENCE = "MEAN_CONFIDENCE"
    UNSURE_SHARE = "UNSURE_SHARE"
    RESAMPLE = "RESAMPLE"
    CONFIDENCE_MEASURE = "CONFIDENCE_MEASURE"
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    SIMPLIFY = "SIMPLIFY"
    MIN_POLYGON_AREA = "MIN_POLYGON_AREA"

    NAME = "segment"
    DISPLAY_NAME = "Segment raster (land cover)"
    GROUP_ID = "segmentation"
    HELP = (
        "Classifies every pixel of a raster with a segmentation model (ONNX) into the model's classes, e.g. water, "
        "vegetation, forest, built-up and bare soil from Sentinel-1 VV/VH backscatter.\n\n"
        "<b>Input raster</b>: the bands the model expects (the default model takes VV and VH). Bands named as "
        "polarisations (band descriptions such as 'VV', 'VH' or 'Sigma0_VV_db') are matched to the model's by "
        "name, in any order, and other bands are left out; unnamed bands are taken in order (the log says so), "
        "unless the one in VV's place is clearly the darker: VH always is, so the two are swapped, with a warning. "
        "Bands in linear power are converted to dB (floor -50 dB) when the model wants dB, and the other way. A "
        "missing polarisation, HH/HV for a VV/VH model, or a wrong band count is refused with the expected bands "
        "in the message. Pixels holding the same 0 (or a dB value of -90 or less, such as -99) in every band, with "
        "no nodata value declared, are taken as the fill outside a swath (no data).\n"
        + INPUT_SCALE_HELP
        + RADIOMETRY_HELP
        + "<b>Bundled model</b>: a model shipped with the plugin: a U-Net trained on domain-randomised synthetic "
        "Sentinel-1-like VV/VH scenes (10-40 m pixels, 1-30 looks, speckle-filtered or not). "
        "The default, sarseg_unet_vvvh_int8, is its int8 copy: 1.4-1.5x faster on a CPU (measured with "
        "and without VNNI instructions), the same mIoU on every domain of the model card, the same class for "
        "99.5 % of pixels on average. Its kernels differ from CPU to CPU, so every run checks it: before the raster is "
        "segmented, tiles holding data, spread over the whole raster and the most unlike first, run through both "
        "models (three tiles' worth of pixels), and the float32 model segments the raster when the two differ on "
        "more than 2 % of those pixels or 3 % of any one tile's; the log and the outputs' metadata "
        "(SARSEG_MODEL_CHECK) say what was measured. A raster of fewer than 16 tiles runs on the float32 model "
        "alone (the check would cost more than the copy saves). On a GPU the "
        "float32 model runs. sarseg_unet_vvvh, the float32 model, runs unchecked. Their scores on data they were "
        "not trained on are in MODEL_CARD.md beside the model files.\n"
        "<b>Model file</b>: optional .onnx model with SAR Seg (or Deepness) metadata; when given it is used "
        "instead of the bundled model.\n"
        "<b>Device</b>: auto (CUDA when onnxruntime offers it, else CPU), CPU, or CUDA (falls back to CPU when "
        "unavailable). The device actually used is written to the log.\n"
        "<b>Batch size</b>: tiles run through the model at once (default 1). On a CPU larger batches are no "
        "faster (batch 1 runs closest to onnxruntime's own speed) and need more memory (about 40 MB per tile "
        "for the default model); on a GPU try 8 to 32.\n"
        "<b>Resample to the model's pixel size</b> (on by default): when the raster's pixel size differs from "
        "the model's by more than 10 %, or its CRS is geographic (degrees), the raster is warped to the model's "
        "pixel size (bilinear, in linear power; geographic rasters in the UTM zone of their centre), segmented, "
        "and the results are warped back onto the raster's exact grid (the probabilities bilinear; the classes "
        "and confidence are read off them). A model that records the range of pixel sizes it was trained on is given "
        "rasters inside that range as they are; finer rasters are averaged in linear power (multilooked) to the "
        "range's finest size, coarser ones interpolated to its coarsest. A single-look raster (ENL measured "
        f"under {SINGLE_LOOK_ENL:g}) inside that range is averaged 2 x 2 first (about 4 looks) when twice its "
        "pixel size is still inside: such models read single-look speckle worst. A raster whose values repeat in "
        "2 x 2, 3 x 3 or 4 x 4 blocks (resampled by nearest neighbour from coarser pixels) is averaged back over "
        "the blocks, to the pixel size it was made at, where that is inside the range. The log says what was "
        "resampled and why.\n"
        "<b>Class raster</b>: one byte per pixel, the most probable class, with the model's colours and class "
        "names; 255 where the input is nodata.\n"
        "<b>Class probabilities</b> (optional): one float band per class.\n"
        "<b>Confidence</b> (optional): with the <b>Confidence measure</b> 'Maximum probability' (the default), "
        "the probability of the chosen class (low values mark uncertain pixels); with 'Normalised entropy', the "
        "Shannon entropy of the class probabilities divided by log(number of classes): 0 where the model is "
        "certain, 1 where all classes are equally likely (high values mark uncertain pixels).\n"
        "<b>Mean confidence</b> and <b>Share of unsure pixels</b> (outputs, also in the log, per class too): the "
        "mean probability of the chosen class over the map, and the share of pixels where it is under 0.5. The "
        "bundled model's probabilities are calibrated on its training scenes, where the mean confidence is the "
        "share of pixels it gets right; on scenes unlike them it is an upper bound, and the log quotes the gap "
        "measured on scenes the model was not trained on. More than 25 % unsure pixels is a warning. Outside the "
        "model's training envelope (see the input domain check below) a model can be confidently wrong: the "
        "log then says so.\n"
        "<b>Class polygons</b> (optional, GeoPackage): the classes as polygons (fields class, name, area_km2; "
        "GDAL polygonize, patches whole across blocks). <b>Polygon simplification tolerance</b> (advanced, in "
        "the raster's CRS units; 0: none) works polygon by polygon: neighbours may overlap a little. "
        "<b>Smallest polygon kept</b> (advanced, m²): smaller patches are left out of the polygons.\n\n"
        "The raster is cut into the model's tiles with its recommended overlap; overlapping predictions are "
        "blended with smooth weights so no seams appear. Finished pixels are written as soon as no other tile "
        "touches them: memory is a few tiles plus a few bytes per raster column, whatever the raster size. "
        "Needs the Python package onnxruntime.\n\n"
        "<b>Input domain check</b>: when the model records the inputs it was trained on (equivalent number of "
        "looks, pixel sizes, and the range of each band's 2nd, 50th and 98th percentile in dB), the raster is "
        "measured on a sample spread over it and compared with them. Each difference is a warning in the log that "
        "says what differs and what to do (e.g. a single-look raster: apply a speckle filter; a median far below "
        "the training scenes: check that the raster is calibrated sigma0 and the 'Input units'; many neighbouring "
        "pixels with the very same value: the raster looks median-filtered, which removes the point targets and "
        "texture of built-up land, so segment the unfiltered raster or filter it with Lee); the outputs are "
        "still written, and their metadata record the outcome (SARSEG_INPUT_DOMAIN inside or outside, "
        "SARSEG_INPUT_ENL, SARSEG_DOMAIN_WARNINGS). Models that record no such envelope are not checked."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.MODEL, self.tr("Bundled model"), options=segmentation_models(), defaultValue=default_model_index()
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL_FILE,
                self.tr("Model file (.onnx, overrides the bundled model)"),
                extension="onnx",
                optional=True,
            )
        )
        device = QgsProcessingParameterEnum(
            self.DEVICE, self.tr("Device"), options=[self.tr("Auto"), "CPU", "CUDA"], defaultValue=0
        )
        batch = QgsProcessingParameterNumber(
            self.BATCH_SIZE, self.tr("Batch size (tiles)"), QgsProcessingParameterNumber.Integer, 1, False, 1, 256
        )
        resample = QgsProcessingParameterBoolean(
            self.RESAMPLE, self.tr("Resample to the model's pixel size"), defaultValue=True
        )
        measure = QgsProcessingParameterEnum(
            self.CONFIDENCE_MEASURE,
            self.tr("Confidence measure"),
            options=[self.tr("Maximum probability"), self.tr("Normalised entropy (0 certain, 1 uniform)")],
            defaultValue=0,
        )
        simplify = QgsProcessingParameterNumber(
            self.SIMPLIFY,
            self.tr("Polygon simplification tolerance (CRS units; 0: none)"),
            QgsProcessingParameterNumber.Double,
            0.0,
            False,
            0.0,
        )
        min_area = QgsProcessingParameterNumber(
            self.MIN_POLYGON_AREA, self.tr("Smallest polygon kept (m²)"), QgsProcessingParameterNumber.Double, 0.0,
            False, 0.0,
        )  # fmt: skip
        for param in (device, batch, resample, measure, simplify, min_area):
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.add_input_scale_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Class raster")))
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_PROBABILITIES, self.tr("Class probabilities"), optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_CONFIDENCE, self.tr("Confidence"), optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT_POLYGONS, self.tr("Class polygons (GeoPackage)"), QgsProcessing.TypeVectorPolygon,
                optional=True, createByDefault=False,
            )
        )  # fmt: skip
        self.addOutput(QgsProcessingOutputNumber(self.MEAN_CONFIDENCE, self.tr("Mean confidence")))
        self.addOutput(QgsProcessingOutputNumber(self.UNSURE_SHARE, self.tr("Share of unsure pixels")))

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        src = self.raster_path(parameters, self.INPUT, context)
        model_file = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        model_name = model_file or segmentation_models()[self.parameterAsEnum(parameters, self.MODEL, context)]
        device = DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        batch_size = self.parameterAsInt(parameters, self.BATCH_SIZE, context)
        resample = self.parameterAsBoolean(parameters, self.RESAMPLE, context)
        measure = CONFIDENCE_MEASURES[self.parameterAsEnum(parameters, self.CONFIDENCE_MEASURE, context)]
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        probabilities = self.parameterAsOutputLayer(parameters, self.OUTPUT_PROBABILITIES, context) or None
        confidence = self.parameterAsOutputLayer(parameters, self.OUTPUT_CONFIDENCE, context) or None
        polygons_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context) or None
        polygons = (
            PolygonRequest(
                polygons_path.split("|")[0],
                self.parameterAsDouble(parameters, self.SIMPLIFY, context),
                self.parameterAsDouble(parameters, self.MIN_POLYGON_AREA, context),
            )
            if polygons_path
            else None
        )
        input_scale = self.input_scale(parameters, context)

        model, reference = self.load_segmentation(model_name, device, feedback)
        feedback.pushInfo(self.tr("Model: {} ({})").format(model.metadata.name, model.path))
        run = self.run_core(
            lambda: segment_raster(
                src,
                dst,
                model,
                probabilities_path=probabilities,
                confidence_path=confidence,
                batch_size=batch_size,
                resample=resample,
                confidence=measure,
                input_scale=input_scale,
                log=feedback.pushInfo,
                warn=feedback.pushWarning,
                polygons=polygons,
                reference=reference,
                **self.callbacks(feedback),
            )
        )
        # The class raster carries a GDAL colour table (QGIS shows it paletted anyway); the style lists only the
        # model's classes.
        meta = model.metadata
        style_on_load(
            context,
            dst,
            ClassPaletteStyle(list(zip(range(len(meta.class_names)), meta.class_names, meta.class_colors))),
        )
        results = {
            self.OUTPUT: dst,
            self.MEAN_CONFIDENCE: run["confidence"]["mean"],
            self.UNSURE_SHARE: run["confidence"]["unsure_share"],
        }
        if polygons:
            results[self.OUTPUT_POLYGONS] = polygons.path
        if probabilities:
            results[self.OUTPUT_PROBABILITIES] = probabilities
        if confidence:
            style_on_load(context, confidence, GrayStretchStyle())
            results[self.OUTPUT_CONFIDENCE] = confidence
        return results
