"""Adapters: ONNX Runtime models, model artifacts (blob store and cache), rollout plans, the device table, metrics."""
