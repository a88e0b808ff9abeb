"""`michi edge export MODEL [VERSION] [--output DIR]` and `michi edge verify BUNDLE`: device bundles (docs/edge.md).

Export reads the registry (`MICHI_DATABASE_URL`) and the blob store (`MICHI_BLOB_URL`), and signs with
`MICHI_EDGE_BUNDLE_KEY`; verify checks a bundle with the same key, as a device does before loading it, and with
`--calibration-file FILE --device-id ID` says whether the device's saved calibration would be kept under it.
"""

from __future__ import annotations

from pathlib import Path

import typer

edge_app = typer.Typer(help="Edge bundles: the risk model for the device, fp32 and int8, signed.", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"michi: {message}", err=True)
    raise typer.Exit(1)


@edge_app.command("export")
def export_command(
    model: str = typer.Argument(..., help="registry name, e.g. michi-risk"),
    version: str | None = typer.Argument(None, help="version (default: the champion)"),
    output: Path = typer.Option(Path("bundles"), "--output", help="folder the bundle folder is written in"),
    min_agreement: float = typer.Option(
        0.99, "--min-agreement", help="refuse an int8 model agreeing less on held-out windows"
    ),
) -> None:
    """Write `<output>/<model>-<version>/`: fp32 and int8 graphs, model.json, signed manifest."""
    from michi.blobs import BlobStore
    from michi.edge.export import EdgeExportError, export_bundle
    from michi.edge.settings import EdgeSettings
    from michi.registry import ModelRegistry, UnknownModelVersion
    from michi.settings import load_settings

    settings = load_settings(EdgeSettings)
    registry = ModelRegistry.from_url(settings.resolved_database_url())
    try:
        exported = export_bundle(
            registry,
            BlobStore(settings.resolved_blob_url()),
            model,
            version,
            output,
            settings.edge_bundle_key.get_secret_value().encode(),
            min_agreement=min_agreement,
        )
    except (EdgeExportError, UnknownModelVersion) as error:
        _fail(str(error))
        return
    finally:
        registry.close()
    manifest = exported.manifest
    typer.echo(f"bundle {exported.folder}  ({manifest['model']['name']} {manifest['model']['version']})")
    for precision, entry in manifest["precisions"].items():
        if entry.get("file"):
            typer.echo(f"  {precision:<5} {entry['file']:<16} {entry['bytes']:>8} bytes")
        else:
            typer.echo(f"  {precision:<5} not shipped: {entry['reason']}")
    if exported.agreement is not None:
        measured = exported.agreement
        typer.echo(
            f"  int8 vs fp32 on {measured.windows} held-out windows: calls {measured.call_agreement:.2%}, "
            f"classes {measured.class_agreement:.2%}"
        )


@edge_app.command("verify")
def verify_command(
    bundle: Path = typer.Argument(..., help="a bundle folder"),
    calibration_file: Path | None = typer.Option(
        None, "--calibration-file", help="a device's saved calibration: would this bundle keep it?"
    ),
    device_id: str | None = typer.Option(None, "--device-id", help="the device the calibration file belongs to"),
) -> None:
    """Check the signature and every file's sha256 as a device does; exit 1 with the reason when refused."""
    from michi.edge.bundle import BundleRefused, verify_bundle
    from michi.edge.calibration_state import CalibrationStateFile
    from michi.edge.settings import EdgeSettings
    from michi.settings import load_settings
    from michi.windows.calibration import estimate

    settings = load_settings(EdgeSettings)
    try:
        verified = verify_bundle(bundle, settings.edge_bundle_key.get_secret_value().encode())
    except BundleRefused as error:
        _fail(f"refused: {error}")
        return
    model = verified.manifest["model"]
    typer.echo(f"ok: {model['name']} {model['version']}, {len(verified.files)} files verified")
    if calibration_file is None:
        return
    if device_id is None:
        _fail("--calibration-file needs --device-id: the file holds that device's calibration")
        return
    restored = CalibrationStateFile(calibration_file, device_id, verified.manifest).load()
    if not restored.restored:
        typer.echo(f"calibration: starts fresh under this bundle: {restored.reason}")
        return
    calibration = estimate(restored.sums)
    typer.echo(
        f"calibration: kept ({restored.reason}): {calibration.state}, gravity confidence "
        f"{calibration.gravity_confidence:.2f}, forward confidence {calibration.forward_confidence:.2f} "
        f"({calibration.forward_method})"
    )
