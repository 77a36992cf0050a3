"""Using a trained model: segmenting image files (predict) and exporting to ONNX or TorchScript (export)."""
