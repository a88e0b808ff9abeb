"""Optional request signing: a timestamp, a nonce and an HMAC over the request, keyed from the device token.

A device that signs sends three headers besides `Authorization`:

    X-Michi-Timestamp: 1767225600                      (unix seconds)
    X-Michi-Nonce:     3f9c2b0e6d1a4c58                (random, 1-64 characters of A-Z a-z 0-9 . _ -)
    X-Michi-Signature: <hex HMAC-SHA256(signing key, canonical request)>

with `signing key = HMAC-SHA256(token, "michi-request-signing")` and the canonical request
`timestamp \\n nonce \\n METHOD \\n path \\n hex sha256(body)`. The signature proves the body was
not changed in transit and, with the nonce remembered for the window, that it is not a replay.
Pure functions here; remembering nonces is the Redis adapter's job (`adapters/rate_limits.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

TIMESTAMP_HEADER = "x-michi-timestamp"
NONCE_HEADER = "x-michi-nonce"
SIGNATURE_HEADER = "x-michi-signature"
SIGNING_HEADERS = (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
SIGNING_KEY_LABEL = b"michi-request-signing"
DEFAULT_WINDOW_S = 300
NONCE_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
SIGNATURE_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
# Unix seconds of 10 digits or fewer: anything longer is not a timestamp of this era.
TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,10}")


class SignatureRejected(Exception):
    """A signed request ingest will not take; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SignedRequest:
    """The three signing headers of one request, checked for shape."""

    timestamp: int
    nonce: str
    signature: str


def signing_key(token: str) -> bytes:
    """The per-device key: derived from the token, so rotating the token rotates the key."""
    return hmac.new(token.encode("utf-8"), SIGNING_KEY_LABEL, hashlib.sha256).digest()


def canonical_request(timestamp: int | str, nonce: str, method: str, path: str, body: bytes) -> bytes:
    return f"{timestamp}\n{nonce}\n{method.upper()}\n{path}\n{hashlib.sha256(body).hexdigest()}".encode()


def sign_request(token: str, timestamp: int | str, nonce: str, method: str, path: str, body: bytes) -> str:
    """The hex signature a device sends in `X-Michi-Signature`."""
    return hmac.new(
        signing_key(token), canonical_request(timestamp, nonce, method, path, body), hashlib.sha256
    ).hexdigest()


def parse_signing_headers(timestamp: str | None, nonce: str | None, signature: str | None) -> SignedRequest | None:
    """None when the request is unsigned (no signing header at all); raises when it is half or badly signed."""
    if timestamp is None and nonce is None and signature is None:
        return None
    if timestamp is None or nonce is None or signature is None:
        raise SignatureRejected("bad-signature", "X-Michi-Timestamp, X-Michi-Nonce and X-Michi-Signature go together")
    if TIMESTAMP_PATTERN.fullmatch(timestamp) is None:
        raise SignatureRejected("bad-signature", "X-Michi-Timestamp must be unix seconds")
    if NONCE_PATTERN.fullmatch(nonce) is None:
        raise SignatureRejected("bad-signature", "X-Michi-Nonce must be 1-64 characters of A-Z a-z 0-9 . _ -")
    if SIGNATURE_PATTERN.fullmatch(signature) is None:
        raise SignatureRejected("bad-signature", "X-Michi-Signature must be 64 hex digits")
    return SignedRequest(int(timestamp), nonce, signature.lower())


def verify_request(
    signed: SignedRequest,
    token: str,
    method: str,
    path: str,
    body: bytes,
    now_s: float,
    window_s: float = DEFAULT_WINDOW_S,
) -> None:
    """Raises `stale-signature` outside ±window_s of now, `bad-signature` when the HMAC does not match.

    The nonce is not checked here: the caller remembers it (after this passed, so a forger cannot burn
    a device's nonces).
    """
    if abs(now_s - signed.timestamp) > window_s:
        raise SignatureRejected(
            "stale-signature", f"X-Michi-Timestamp is more than {window_s:.0f} s away from the server clock"
        )
    expected = sign_request(token, signed.timestamp, signed.nonce, method, path, body)
    if not hmac.compare_digest(expected, signed.signature):
        raise SignatureRejected("bad-signature", "X-Michi-Signature does not match the request")
