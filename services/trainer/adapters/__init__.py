"""The trainer's adapters: SQL tables, archive, simulated fleets, ONNX, artifacts, Kafka."""
