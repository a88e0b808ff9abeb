"""Pretrained camera models run with ONNX Runtime and NumPy (docs/vision.md).

The ONNX files are built once by `make models` (tools/models/build_vision_models.py) from pinned registry
packages and checked against the committed lock `models/vision/models.lock.json`; nothing here downloads.

- `michi.vision.model_lock`: the lock's format and the sha256 checks (shared with the build).
- `michi.vision.model_store`: where the built models live and loading one by name, digest checked.
- `michi.vision.images`: decoding images and video frames (PyAV), resizing and affine crops in NumPy.
- `michi.vision.boxes`: box overlap and suppression shared by the detectors.
- `michi.vision.faces`: BlazeFace face detection (box, six keypoints).
- `michi.vision.landmarks`: the 468-point face mesh and the iris model.
- `michi.vision.objects`: SSD-MobileNetV2 (Open Images) people and vehicle detection.
"""
