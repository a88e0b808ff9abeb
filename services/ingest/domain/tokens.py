"""Device tokens: signed, bound to one device id, readable without a database.

Format: `mdt1.<device id, base64url>.<token id, 16 hex>.<HMAC-SHA256, base64url>`,
the HMAC covering everything before the last dot. The signature check is the
cheap first gate (no I/O); the registry then checks the token's sha256 in SQL,
which is what makes revocation possible.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

TOKEN_VERSION = "mdt1"


class TokenRejected(Exception):
    """The token cannot authenticate a device; `reason` is machine-readable."""

    reason = "invalid-token"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidToken(TokenRejected):
    """Malformed, or signed with another secret, or tampered with."""

    reason = "invalid-token"


class UnknownToken(TokenRejected):
    """Well signed but not in the registry (issued by another registry, or deleted)."""

    reason = "unknown-token"


class RevokedToken(TokenRejected):
    reason = "revoked-token"


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, payload: str) -> str:
    return _encode(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())


def issue_token(secret: bytes, device_id: str, token_id: str | None = None) -> str:
    """A new token for `device_id` (random token id unless given)."""
    payload = f"{TOKEN_VERSION}.{_encode(device_id.encode())}.{token_id or secrets.token_hex(8)}"
    return f"{payload}.{_signature(secret, payload)}"


def verify_signature(secret: bytes, token: str) -> tuple[str, str]:
    """(device_id, token_id) of a well-signed token; raises `InvalidToken` otherwise."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != TOKEN_VERSION:
        raise InvalidToken("not a Michi device token")
    payload, signature = token.rpartition(".")[::2]
    if not hmac.compare_digest(signature, _signature(secret, payload)):
        raise InvalidToken("bad token signature")
    try:
        device_id = _decode(parts[1]).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise InvalidToken("bad device id in token") from error
    return device_id, parts[2]


def device_id_of(token: str) -> str:
    """The device id a token names, without checking it (for messages and logs)."""
    try:
        return _decode(token.split(".")[1]).decode("utf-8")
    except (IndexError, binascii.Error, UnicodeDecodeError):
        return ""


def token_hash(token: str) -> str:
    """What the registry stores instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
