"""sarseg:extract_patches — training patches with a leak-free spatial train/validation split."""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateTransform,
    QgsCsException,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)

from ..core.patches import FORMATS, extract_patches
from .base import SarSegAlgorithm


class ExtractPatchesAlgorithm(SarSegAlgorithm):
    INPUT = "INPUT"
    LABELS = "LABELS"
    AOI = "AOI"
    PATCH_SIZE = "PATCH_SIZE"
    STRIDE = "STRIDE"
    MIN_VALID = "MIN_VALID"
    VAL_FRACTION = "VAL_FRACTION"
    SPLIT_BLOCK = "SPLIT_BLOCK"
    FORMAT = "FORMAT"
    SEED = "SEED"
    OUTPUT = "OUTPUT"
    TRAIN_COUNT = "TRAIN_COUNT"
    VAL_COUNT = "VAL_COUNT"
    INDEX = "INDEX"

    NAME = "extract_patches"
    DISPLAY_NAME = "Extract training patches"
    GROUP_ID = "preprocessing"
    HELP = (
        "Cuts a raster (and its label raster) into square patches for training a segmentation model.\n\n"
        "<b>Image raster</b>: the bands to cut (e.g. VV/VH in dB).\n"
        "<b>Label raster</b> (optional): class ids per pixel (band 1), whole numbers from 0 to 254; resampled "
        "(nearest) to the image grid if needed. Label patches are 8-bit with 255 = no label (declared as their "
        "nodata value): the label raster's nodata and pixels it does not cover become 255. A value outside 0..254 "
        "stops the run; if it marks unlabelled pixels, set it as the label raster's nodata value.\n"
        "<b>Area of interest</b> (optional): polygons; only pixels inside them count as valid.\n"
        "<b>Patch size / stride</b>: patch side and step in pixels (stride < size gives overlapping patches).\n"
        "<b>Minimum valid fraction</b>: a patch is kept when at least this fraction of its pixels hold data "
        "in every band, have a label and lie inside the AOI.\n"
        "<b>Validation fraction / split block size</b>: the raster is cut into square blocks (default 4 "
        "patch sizes, made smaller, down to one patch size, when the raster would otherwise be a single block); "
        "a random fraction of whole blocks goes to validation. Patches that would overlap both "
        "a training and a validation block are dropped, so no pixel is shared between the two splits. "
        "A run that would give an empty training or validation set stops and says which setting to change.\n"
        "<b>Format</b>: GeoTIFF pairs (train|val/images|labels/patch_NNNNNN.tif) or NumPy archives "
        "(train.npz, val.npz with images (N, bands, size, size, float32), positions (N, 2: column, row), the "
        "image's band_names, band_units, image_nodata, crs_wkt and geotransform and, with a label raster, labels "
        "(N, size, size, uint8) and label_nodata (255)). An index.csv lists every patch. Both layouts can be "
        "given as they are to python -m training.train_segmentation --data.\n"
        "<b>Random seed</b>: which blocks go to validation; the same seed gives the same split.\n"
        "<b>Output folder</b>: a new or empty folder, or the folder of an earlier run of this tool, whose "
        "train/, val/, train.npz, val.npz and index.csv are replaced (other files are left alone). A folder "
        "holding such names that this tool did not write is refused before any work: choose an empty folder or "
        "delete them. A failed or cancelled run leaves the folder as it was.\n"
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Image raster")))
        self.addParameter(QgsProcessingParameterRasterLayer(self.LABELS, self.tr("Label raster"), optional=True))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.AOI, self.tr("Area of interest"), [QgsProcessing.TypeVectorPolygon], optional=True
            )
        )
        integer, double = QgsProcessingParameterNumber.Integer, QgsProcessingParameterNumber.Double
        self.addParameter(
            QgsProcessingParameterNumber(self.PATCH_SIZE, self.tr("Patch size (pixels)"), integer, 256, False, 8)
        )
        self.addParameter(QgsProcessingParameterNumber(self.STRIDE, self.tr("Stride (pixels)"), integer, 256, False, 1))
        self.addParameter(
            QgsProcessingParameterNumber(self.MIN_VALID, self.tr("Minimum valid fraction"), double, 0.9, False, 0, 1)
        )
        self.addParameter(
            QgsProcessingParameterNumber(self.VAL_FRACTION, self.tr("Validation fraction"), double, 0.2, False, 0, 0.9)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.SPLIT_BLOCK,
                self.tr("Split block size (pixels, 0 = 4 patch sizes)"),
                integer,
                0,
                False,
                0,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.FORMAT,
                self.tr("Format"),
                options=[self.tr("GeoTIFF pairs"), self.tr("NumPy .npz")],
                defaultValue=0,
            )
        )
        self.addParameter(QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"), integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputNumber(self.TRAIN_COUNT, self.tr("Training patches")))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_COUNT, self.tr("Validation patches")))
        self.addOutput(QgsProcessingOutputFile(self.INDEX, self.tr("Patch index (CSV)")))

    def _aoi_wkts(self, parameters: dict, context: QgsProcessingContext, raster_crs: object) -> list[str] | None:
        source = self.parameterAsSource(parameters, self.AOI, context)
        if source is None:
            return None
        self.check_vector_crs(source, self.tr("area-of-interest layer"))
        transform = QgsCoordinateTransform(source.sourceCrs(), raster_crs, context.transformContext())
        wkts = []
        for feature in source.getFeatures():
            geom = feature.geometry()
            if geom.isEmpty() or QgsWkbTypes.geometryType(geom.wkbType()) != QgsWkbTypes.PolygonGeometry:
                continue
            if not geom.isGeosValid():
                geom = geom.makeValid()
            try:
                geom.transform(transform)
            except QgsCsException as exc:
                raise QgsProcessingException(
                    self.tr(
                        "An area-of-interest polygon cannot be reprojected to the image raster's CRS ({}); it "
                        "probably lies far outside the image. Give polygons that cover part of the image."
                    ).format(exc)
                ) from exc
            wkts.append(geom.asWkt())
        if not wkts:
            raise QgsProcessingException(
                self.tr("The area-of-interest layer has no polygon. Give polygons or leave the AOI empty.")
            )
        return wkts

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        layer = self.raster_layer(parameters, self.INPUT, context)
        image = layer.source().split("|")[0]
        labels = None
        if parameters.get(self.LABELS):
            labels = self.raster_path(parameters, self.LABELS, context)
        aoi = self._aoi_wkts(parameters, context, layer.crs())
        out_dir = self.parameterAsString(parameters, self.OUTPUT, context)
        result = self.run_core(
            lambda: extract_patches(
                image,
                out_dir,
                size=self.parameterAsInt(parameters, self.PATCH_SIZE, context),
                stride=self.parameterAsInt(parameters, self.STRIDE, context),
                label_path=labels,
                aoi_wkts=aoi,
                min_valid=self.parameterAsDouble(parameters, self.MIN_VALID, context),
                val_fraction=self.parameterAsDouble(parameters, self.VAL_FRACTION, context),
                split_block=self.parameterAsInt(parameters, self.SPLIT_BLOCK, context) or None,
                fmt=FORMATS[self.parameterAsEnum(parameters, self.FORMAT, context)],
                seed=self.parameterAsInt(parameters, self.SEED, context),
                **self.callbacks(feedback),
            )
        )
        feedback.pushInfo(
            self.tr(
                "{} training and {} validation patches of {} candidates ({} with too little valid data, {} dropped "
                "at train/validation borders; split blocks of {} pixels)."
            ).format(
                result["train"],
                result["val"],
                result["candidates"],
                result["dropped_invalid"],
                result["dropped_at_split_borders"],
                result["split_block"],
            )
        )
        return {
            self.OUTPUT: out_dir,
            self.TRAIN_COUNT: result["train"],
            self.VAL_COUNT: result["val"],
            self.INDEX: result["index"],
        }
