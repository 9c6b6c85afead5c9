"""Models: the ONNX model-file contract (``metadata``) and finding/opening models with onnxruntime (``registry``).

Bundled default models are the ``*.onnx`` files in this folder. Only ``registry`` touches onnxruntime, and only
when a model is opened, so the plugin loads in a QGIS without it.
"""
