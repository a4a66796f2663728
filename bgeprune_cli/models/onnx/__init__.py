"""ONNX views of an export: the graphs traced and quantized (export.py) and run in onnxruntime
(runtime.py).
"""
