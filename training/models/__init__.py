"""Segmentation models: the architecture registry (``create_model``) and ONNX export (``export_onnx``)."""

from training.models.segmentation import (
    ARCHITECTURES,
    count_parameters,
    create_model,
    export_onnx,
    freeze_encoder,
    required_multiple,
)

__all__ = ["ARCHITECTURES", "count_parameters", "create_model", "export_onnx", "freeze_encoder", "required_multiple"]
