"""Using a trained model: predictions for image files (predict.py), the HTTP service and its web page (serve.py,
web/), and ONNX export with an ONNX Runtime twin of the ensemble (export.py)."""
