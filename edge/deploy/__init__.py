"""ONNX Runtime / Jetson deployment."""
