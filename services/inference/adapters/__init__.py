"""Adapters: the ONNX Runtime detector and Prometheus metrics."""
