"""Model registry: bundled default ONNX models and the metadata contract (filled by the training issue)."""
