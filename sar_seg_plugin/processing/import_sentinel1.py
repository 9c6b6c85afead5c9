"""sarseg:import_sentinel1 — a Sentinel-1 IW GRD product (.SAFE folder, manifest.safe or .zip) to calibrated,
denoised, geocoded backscatter with its date in the file name and the layer's temporal range."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from osgeo import osr
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsRasterLayer,
    QgsRasterLayerTemporalProperties,
)

from ..core import sentinel1
from .base import SarSegAlgorithm
from .forecast_layers import day_range
from .styling import GrayStretchStyle

POLARISATIONS = ("VV", "VH", "HH", "HV")


class AcquisitionDayStyle(GrayStretchStyle):
    """Grey stretch, and the acquisition day as the layer's fixed temporal range (for the temporal controller)."""

    def __init__(self, date: dt.date) -> None:
        super().__init__()
        self.date = date

    def postProcessLayer(  # noqa: N802 - QGIS API name
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        super().postProcessLayer(layer, context, feedback)
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            props = layer.temporalProperties()
            props.setMode(QgsRasterLayerTemporalProperties.ModeFixedTemporalRange)
            props.setFixedTemporalRange(day_range(self.date))
            props.setIsActive(True)


_ALIVE: dict[str, GrayStretchStyle] = {}


def keep_alive(output: str, style: GrayStretchStyle) -> GrayStretchStyle:
    """The context holds post-processors by pointer: keep ``style`` alive until QGIS has applied it."""
    _ALIVE[output] = style
    return style


class ImportSentinel1Algorithm(SarSegAlgorithm):
    INPUT = "INPUT"
    POLARISATIONS = "POLARISATIONS"
    RADIOMETRY = "RADIOMETRY"
    NOISE = "NOISE_REMOVAL"
    NEGATIVE = "NEGATIVE"
    FLOOR_DB = "FLOOR_DB"
    BORDER = "BORDER_NOISE"
    SCALE = "OUTPUT_SCALE"
    CRS = "CRS"
    PIXEL_SIZE = "PIXEL_SIZE"
    EXTENT = "EXTENT"
    AOI = "AOI"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    OUTPUT = "OUTPUT"

    NAME = "import_sentinel1"
    DISPLAY_NAME = "Import Sentinel-1 GRD product"
    GROUP_ID = "preprocessing"
    HELP = (
        "Turns a Sentinel-1 IW GRD product, as downloaded, into calibrated backscatter on a map grid, ready for the "
        "other tools.\n\n"
        "<b>Product</b>: the .zip as downloaded (read in place, never unpacked), the .SAFE folder or its "
        "manifest.safe. SLC, EW, SM and WV products are refused with the reason.\n"
        "<b>Polarisations</b>: the bands to import (default: all the product holds, e.g. VV and VH).\n"
        "<b>Radiometry</b>: sigma0 (default, what the segmentation model expects), gamma0 or beta0, from the "
        "product's calibration look-up tables.\n"
        "<b>Thermal noise removal</b>: subtracts the product's noise (range and azimuth noise vectors) before "
        "calibration: (DN² - noise) / A². Dark surfaces (calm water in VH) then come out near their true level "
        "instead of at the noise floor. What the subtraction takes to zero or below is set to the <b>floor</b> "
        "(default -30 dB) or to nodata.\n"
        "<b>Border noise</b>: masks the low-value noise some products carry at the near and far range edges.\n"
        "<b>Output scale</b>: linear power (default: speckle filters work in linear power) or dB. Band units and "
        "names (VV, VH) are set, so later tools know the scale.\n"
        "<b>CRS / pixel size</b>: default the UTM zone of the scene (or area) centre at 10 m. Geocoding uses the "
        "product's geolocation grid (ellipsoid heights, thin-plate spline, bilinear in linear power): this is "
        "ellipsoid geocoding, <i>not terrain correction</i>; in mountains, positions shift with height and slopes "
        "are not normalised.\n"
        "<b>Extent / area of interest</b>: only the part of the product covering it is read and processed, and "
        "the output is cut to it: a commune out of a 25,000 x 17,000 px product takes seconds.\n\n"
        "The output file, in the output folder, is named after the platform, mode and acquisition time (e.g. "
        "S1A_IW_20240305T054512_VVVH_sigma0.tif), so 'Stack time series' and 'Forecast' read its date; the loaded "
        "layer gets the acquisition day as its temporal range, and the file's metadata keeps the product name, "
        "platform, pass direction, relative orbit and polarisations."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(
            QgsProcessingParameterFile(
                self.INPUT,
                self.tr("Sentinel-1 product (.zip, .SAFE folder or manifest.safe)"),
                fileFilter="Sentinel-1 products (*.zip manifest.safe *.SAFE);;All files (*.*)",
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.POLARISATIONS,
                self.tr("Polarisations (default: all in the product)"),
                options=list(POLARISATIONS),
                allowMultiple=True,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.RADIOMETRY, self.tr("Radiometry"), options=["sigma0", "gamma0", "beta0"], defaultValue=0
            )
        )
        self.addParameter(QgsProcessingParameterBoolean(self.NOISE, self.tr("Remove thermal noise"), True))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.NEGATIVE,
                self.tr("Values at or below zero after noise removal"),
                options=[self.tr("Set to the floor"), self.tr("Set to nodata")],
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.FLOOR_DB,
                self.tr("Floor (dB)"),
                QgsProcessingParameterNumber.Double,
                sentinel1.DEFAULT_FLOOR_DB,
                False,
                -60,
                0,
            )
        )
        self.addParameter(QgsProcessingParameterBoolean(self.BORDER, self.tr("Mask border noise"), True))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.SCALE, self.tr("Output scale"), options=[self.tr("Linear power"), self.tr("dB")], defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterCrs(self.CRS, self.tr("Output CRS (default: UTM zone of the centre)"), optional=True)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.PIXEL_SIZE,
                self.tr("Pixel size (output CRS units)"),
                QgsProcessingParameterNumber.Double,
                sentinel1.DEFAULT_PIXEL_SIZE,
                False,
                0.000001,
            )
        )
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent to import"), optional=True))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.AOI,
                self.tr("Area of interest (polygons)"),
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputRasterLayer(self.OUTPUT, self.tr("Imported backscatter")))

    def _aoi(self, parameters: dict, context: QgsProcessingContext) -> tuple[str, osr.SpatialReference] | None:
        """The area to import as (WKT, its spatial reference): the polygons' union, else the extent, else None."""
        if parameters.get(self.AOI):
            source = self.parameterAsSource(parameters, self.AOI, context)
            if source is None:
                raise QgsProcessingException(self.tr("The area of interest layer cannot be read."))
            geoms = [f.geometry() for f in source.getFeatures() if f.hasGeometry() and not f.geometry().isEmpty()]
            if not geoms:
                raise QgsProcessingException(
                    self.tr("The area of interest layer has no polygon. Choose a layer with at least one polygon.")
                )
            if not source.sourceCrs().isValid():
                raise QgsProcessingException(
                    self.tr("The area of interest layer has no CRS. Set its CRS in the layer properties.")
                )
            return QgsGeometry.unaryUnion(geoms).asWkt(), _srs(source.sourceCrs())
        if parameters.get(self.EXTENT):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context)
            crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
            if rect.isEmpty():
                return None
            if not crs.isValid():
                crs = QgsCoordinateReferenceSystem("EPSG:4326")
            return QgsGeometry.fromRect(rect).asWkt(), _srs(crs)
        return None

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        path = self.parameterAsFile(parameters, self.INPUT, context)
        product = self.run_core(lambda: sentinel1.open_product(path))
        given = parameters.get(self.POLARISATIONS) not in (None, "", [])  # QGIS reads an unset multi-enum as [0]
        chosen = (
            [POLARISATIONS[i] for i in self.parameterAsEnums(parameters, self.POLARISATIONS, context)] if given else []
        )
        pols = chosen or [p for p in product.polarisations if p in product.measurements]
        radiometry = sentinel1.RADIOMETRY[self.parameterAsEnum(parameters, self.RADIOMETRY, context)]
        scale = sentinel1.SCALES[self.parameterAsEnum(parameters, self.SCALE, context)]
        crs = self.parameterAsCrs(parameters, self.CRS, context) if parameters.get(self.CRS) else None
        epsg = None
        if crs is not None and crs.isValid():
            if crs.isGeographic():
                raise QgsProcessingException(
                    self.tr(
                        "The output CRS {} is geographic (degrees). Choose a projected CRS in metres, e.g. UTM."
                    ).format(crs.authid())
                )
            epsg = int(crs.postgisSrid()) or None
            if epsg is None:
                raise QgsProcessingException(self.tr("Choose an output CRS with an EPSG code, e.g. a UTM zone."))
        aoi = self._aoi(parameters, context)
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        Path(folder).mkdir(parents=True, exist_ok=True)
        destination = str(Path(folder) / sentinel1.output_name(product, pols, radiometry, scale))
        feedback.pushInfo(self.tr("Product: {}").format(product.name))
        result = self.run_core(
            lambda: sentinel1.import_product(
                product,
                destination,
                polarisations=pols,
                radiometry=radiometry,
                remove_noise=self.parameterAsBoolean(parameters, self.NOISE, context),
                negative=sentinel1.NEGATIVE[self.parameterAsEnum(parameters, self.NEGATIVE, context)],
                floor_db=self.parameterAsDouble(parameters, self.FLOOR_DB, context),
                border=self.parameterAsBoolean(parameters, self.BORDER, context),
                scale=scale,
                epsg=epsg,
                pixel_size=self.parameterAsDouble(parameters, self.PIXEL_SIZE, context),
                aoi=aoi,
                log=feedback.pushInfo,  # core messages are not translatable
                **self.callbacks(feedback),
            )
        )
        feedback.pushInfo(
            self.tr("Wrote {} ({} x {} px, EPSG:{})").format(result.path, result.width, result.height, result.epsg)
        )
        details = QgsProcessingContext.LayerDetails(Path(result.path).stem, context.project(), self.OUTPUT)
        details.setPostProcessor(keep_alive(result.path, AcquisitionDayStyle(product.start.date())))
        context.addLayerToLoadOnCompletion(result.path, details)
        return {self.OUTPUT: result.path, self.OUTPUT_FOLDER: folder}


def _srs(crs: QgsCoordinateReferenceSystem) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL))
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs
