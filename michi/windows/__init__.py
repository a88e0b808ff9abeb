"""Analysis windows over uploads: what inference serves on and what the trainer learns from.

One definition shared by both so a model sees at serving time exactly what it was trained on:
`upload.upload_from_proto` (protobuf → numpy), `calibration` (device mount → vehicle frame),
`features.extract_windows` (2 s windows, hop 1 s: summary features [K, F] and resampled signals
[K, C, T]), `features.window_id` (the id labels join on), `features.DATA_VERSION` (hash of the
preprocessing spec), `model_spec` (class order and decision rule of the risk model), `chain` (a device's
uploads in order, calibration chained from one to the next as serving does: how the trainer rebuilds windows).
"""
