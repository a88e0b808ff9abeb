"""The trainer service: versioned datasets, reproducible PyTorch training, the evaluation gate, ONNX export,
registry and experiment records, and continuous training on labels, schedule and alerts (docs/training.md)."""
