"""The edge package: the IMU risk model as a signed device bundle, and the runtime a dashcam runs it with.

    michi edge export michi-risk [VERSION] --output bundles/     # champion by default (docs/edge.md)
    runtime = EdgeRuntime.load(Path("bundles/michi-risk-7"), key=fleet_key)
    result = runtime.process(upload)                             # calibrate, window, score, decide on the device
    to_send = runtime.upload_to_send(upload)                     # the same, then the events-only upload to send

One job per module: `decisions` (the serving decision rule applied to probabilities), `reference_windows`
(preprocessed windows for quantisation calibration and held-out agreement, through `michi.windows`),
`quantisation` (fp32 → int8 with onnxruntime's static quantisation, compacted), `bundle` (manifest, sha256 of
every file, HMAC signature, verification), `export` (registry → bundle), `runtime` (the device side),
`reports` (events-only uploads: the device's calls and summaries instead of every sample), `calibration_state` (the
device's mount calibration in a file of its own, so it survives a reboot), `settings` (the fleet's bundle key). The device runs the same `michi.windows` code as the cloud, so features match.
"""
