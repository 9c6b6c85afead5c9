"""sarseg:evaluate_segmentation — predicted vs reference class raster: IoU, Dice, precision, recall, mIoU."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..core.evaluation import TABLE_FORMATS, evaluate_rasters, write_html_report, write_table
from ..core.outputs import OutputSet
from ..core.raster_io import check_not_same_file
from ..models.registry import load_model
from .base import SarSegAlgorithm


class EvaluateSegmentationAlgorithm(SarSegAlgorithm):
    PREDICTED = "PREDICTED"
    REFERENCE = "REFERENCE"
    MODEL = "MODEL"
    OUTPUT_HTML = "OUTPUT_HTML"
    OUTPUT_TABLE = "OUTPUT_TABLE"
    MIOU = "MIOU"
    OVERALL_ACCURACY = "OVERALL_ACCURACY"

    NAME = "evaluate_segmentation"
    DISPLAY_NAME = "Evaluate segmentation"
    GROUP_ID = "segmentation"
    HELP = (
        "Compares a predicted class raster with a reference (ground truth) class raster and reports per-class "
        "IoU, Dice, precision, recall and support, the overall accuracy, the mean IoU (mIoU), the mean Dice and "
        "the confusion matrix (rows: reference, columns: predicted).\n\n"
        "<b>Predicted raster</b>: the class map to evaluate (e.g. the output of the segmentation tool); "
        "first band, class values 0..254. Its category names name the classes.\n"
        "<b>Reference raster</b>: the ground-truth class map, same class values. If its grid differs it is "
        "resampled (nearest neighbour) onto the predicted raster's grid; it must overlap it and both need a "
        "CRS.\n"
        "<b>Model for class names</b> (optional): a bundled model name or an .onnx file whose class names "
        "label the classes instead of the raster's category names.\n"
        "<b>HTML report</b>: a self-contained page with the summary, the per-class table and the confusion "
        "matrix.\n"
        "<b>Metrics table</b>: the same numbers as .csv or .json (chosen by the file extension).\n\n"
        "Pixels that are nodata in either raster are ignored. Means are taken over the classes present in the "
        "reference or the prediction. The mIoU and overall accuracy are also returned as numbers for models."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterRasterLayer(self.PREDICTED, self.tr("Predicted class raster")))
        self.addParameter(
            QgsProcessingParameterRasterLayer(self.REFERENCE, self.tr("Reference (ground truth) class raster"))
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.MODEL, self.tr("Model for class names (bundled name or .onnx file)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_HTML, self.tr("HTML report"), self.tr("HTML files (*.html)")
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_TABLE,
                self.tr("Metrics table"),
                self.tr("CSV files (*.csv);;JSON files (*.json)"),
                optional=True,
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, self.tr("Mean IoU")))
        self.addOutput(QgsProcessingOutputNumber(self.OVERALL_ACCURACY, self.tr("Overall accuracy")))

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        predicted = self.raster_path(parameters, self.PREDICTED, context)
        reference = self.raster_path(parameters, self.REFERENCE, context)
        model = (self.parameterAsString(parameters, self.MODEL, context) or "").strip()
        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        table_path = self.parameterAsFileOutput(parameters, self.OUTPUT_TABLE, context)
        if table_path and Path(table_path).suffix.lower() not in TABLE_FORMATS:
            raise QgsProcessingException(
                self.tr("The metrics table '{}' must end in .csv or .json. Choose one of these formats.").format(
                    table_path
                )
            )
        for output in (html_path, table_path):
            if output:
                self.run_core(lambda output=output: check_not_same_file([predicted, reference], output))
        self.check_outputs(parameters, [self.OUTPUT_HTML, self.OUTPUT_TABLE], context, feedback.pushInfo)

        class_names = None
        if model:
            meta = self.run_core(lambda: load_model(model).metadata)
            class_names = list(meta.class_names) or None
            if class_names:
                feedback.pushInfo(self.tr("Class names from the model: {}").format(", ".join(class_names)))

        result = self.run_core(lambda: evaluate_rasters(predicted, reference, class_names, **self.callbacks(feedback)))
        for note in result.notes:
            feedback.pushInfo(note)
        feedback.pushInfo(
            self.tr("Overall accuracy {:.4f}, mIoU {:.4f}, mean Dice {:.4f}").format(
                result.overall_accuracy, result.mean_iou, result.mean_dice
            )
        )

        def write() -> None:  # the report and the table appear together, or neither does
            with OutputSet() as outputs:
                write_html_report(result, html_path, outputs)
                if table_path:
                    write_table(result, table_path, outputs)

        self.run_core(write)
        outputs = {
            self.OUTPUT_HTML: html_path,
            self.MIOU: result.mean_iou,
            self.OVERALL_ACCURACY: result.overall_accuracy,
        }
        if table_path:
            outputs[self.OUTPUT_TABLE] = table_path
        return outputs
