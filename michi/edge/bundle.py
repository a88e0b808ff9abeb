"""A device bundle on disk: its manifest, the sha256 of every file, the HMAC signature, and verification.

    <bundle>/model.fp32.onnx     the registered graph, byte for byte (sha256 = the registry's artifact_sha256)
    <bundle>/model.int8.onnx     onnxruntime static int8 of it (absent for a rule graph: `precisions` says so)
    <bundle>/model.json          the registry's manifest of the version (training record), verbatim
    <bundle>/manifest.json       `edge-bundle-1`: files (sha256, bytes), model lineage, preprocessing version and
                                 spec, the calibration contract, inputs/outputs, classes, the detection rule,
                                 quantisation facts (calibration sources, held-out agreement)
    <bundle>/manifest.sig        {"algorithm": "hmac-sha256", "key_id": ..., "signature": hex}

The signature is HMAC-SHA256 over `SIGNATURE_CONTEXT` + the exact bytes of manifest.json, with the fleet key
(`MICHI_EDGE_BUNDLE_KEY`); `key_id` is the first 16 hex digits of the key's sha256 so a device holding another
key says so instead of "bad signature". The manifest names the sha256 of every other file, so one signature
covers the bundle. `verify_bundle` refuses (`BundleRefused`) a bad or missing signature, a file whose bytes
changed or that is missing, an unknown format, or a preprocessing version other than the one the device's
`michi.windows` computes (its features would not be the model's).

HMAC and not a public-key signature: `cryptography` (ed25519) is not a dependency of Michi, and devices
already share a secret with the platform (their token). The cost: whoever holds the fleet key can sign
bundles, so it must stay in the device's secure storage; an ed25519 key pair would let devices verify
without being able to sign (docs/edge.md, "What is left").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from michi.windows.features import DATA_VERSION

BUNDLE_FORMAT = "edge-bundle-1"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
SIGNATURE_ALGORITHM = "hmac-sha256"
SIGNATURE_CONTEXT = b"michi-edge-bundle-1\n"
FP32_FILE = "model.fp32.onnx"
INT8_FILE = "model.int8.onnx"
REGISTRY_MANIFEST_FILE = "model.json"


class BundleRefused(ValueError):
    """The bundle cannot be trusted or run here; the message says why."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def sign(manifest_bytes: bytes, key: bytes) -> dict[str, str]:
    signature = hmac.new(key, SIGNATURE_CONTEXT + manifest_bytes, hashlib.sha256).hexdigest()
    return {"algorithm": SIGNATURE_ALGORITHM, "key_id": key_id(key), "signature": signature}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, fixed separators): the bytes that are signed and written."""
    return (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode()


def write_bundle(folder: Path, files: dict[str, bytes], manifest: dict[str, Any], key: bytes) -> Path:
    """Write `files`, then the manifest listing their sha256, then its signature (last: a partial bundle fails)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (MANIFEST_FILE, SIGNATURE_FILE, INT8_FILE):
        (folder / stale).unlink(missing_ok=True)
    for name, payload in files.items():
        _write(folder / name, payload)
    listed = {
        name: {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)} for name, payload in files.items()
    }
    document = {**manifest, "format": BUNDLE_FORMAT, "files": listed}
    encoded = manifest_bytes(document)
    _write(folder / MANIFEST_FILE, encoded)
    _write(folder / SIGNATURE_FILE, (json.dumps(sign(encoded, key), sort_keys=True) + "\n").encode())
    return folder


def _write(path: Path, payload: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(payload)
    temporary.replace(path)


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature and every file were checked; `files` holds the verified bytes."""

    folder: Path
    manifest: dict[str, Any]
    files: dict[str, bytes]

    def model_bytes(self, precision: str) -> bytes:
        name = self.manifest["precisions"].get(precision, {}).get("file")
        if not name:
            available = sorted(key for key, value in self.manifest["precisions"].items() if value.get("file"))
            raise BundleRefused(f"the bundle has no {precision} model (it has: {', '.join(available)})")
        return self.files[name]


def verify_bundle(folder: Path, key: bytes, *, preprocessing_version: str = DATA_VERSION) -> VerifiedBundle:
    """The bundle's manifest and file bytes, once the signature, every sha256 and the preprocessing check out."""
    try:
        encoded = (folder / MANIFEST_FILE).read_bytes()
        signature = json.loads((folder / SIGNATURE_FILE).read_bytes())
    except FileNotFoundError as error:
        raise BundleRefused(f"not a bundle: {Path(error.filename).name} missing in {folder}") from error
    except ValueError as error:
        raise BundleRefused(f"{SIGNATURE_FILE} is not JSON: {error}") from error
    if not isinstance(signature, dict) or signature.get("algorithm") != SIGNATURE_ALGORITHM:
        raise BundleRefused(f"unknown signature algorithm (expected {SIGNATURE_ALGORITHM})")
    if signature.get("key_id") != key_id(key):
        raise BundleRefused(f"signed with key {signature.get('key_id')!r}, this device holds key {key_id(key)!r}")
    expected = sign(encoded, key)["signature"]
    if not hmac.compare_digest(str(signature.get("signature", "")), expected):
        raise BundleRefused("bad signature: manifest.json was changed or signed with another key")
    manifest = json.loads(encoded)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleRefused(f"bundle format {manifest.get('format')!r}; this runtime reads {BUNDLE_FORMAT}")
    files: dict[str, bytes] = {}
    for name, entry in sorted(manifest["files"].items()):
        if Path(name).name != name:
            raise BundleRefused(f"file name {name!r} is not a plain name")
        try:
            payload = (folder / name).read_bytes()
        except FileNotFoundError:
            raise BundleRefused(f"{name} is missing") from None
        actual = hashlib.sha256(payload).hexdigest()
        if actual != entry["sha256"]:
            raise BundleRefused(f"{name} was changed: sha256 {actual}, the signed manifest says {entry['sha256']}")
        files[name] = payload
    bundled = manifest["preprocessing"]["version"]
    if bundled != preprocessing_version:
        raise BundleRefused(
            f"the model reads preprocessing {bundled}; this device computes {preprocessing_version}: "
            "its features would not be the model's"
        )
    return VerifiedBundle(folder, manifest, files)
