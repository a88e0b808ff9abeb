"""Device tokens: signed, bound to one device id, readable without a database.

Format: `mdt1.<device id, base64url>.<token id, 16 hex>.<HMAC-SHA256, base64url>`,
the HMAC covering everything before the last dot. The signature check is the
cheap first gate (no I/O); the registry then checks the token's sha256 in SQL,
which is what makes revocation possible.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

TOKEN_VERSION = "mdt1"
# What `issue_token` writes: four dot-separated parts of base64url (the version and a hex token id
# included). Anything else (non-ASCII, spaces, control characters) is refused before any HMAC or
# base64 is computed over it: both raised on non-ASCII text (a 500) instead of refusing it.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){3}")
# A device id of 128 characters in base64url, a token id and a signature fit in far less.
MAX_TOKEN_LENGTH = 512


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
    if len(token) > MAX_TOKEN_LENGTH or TOKEN_PATTERN.fullmatch(token) is None:
        raise InvalidToken("not a Michi device token")
    parts = token.split(".")
    if parts[0] != TOKEN_VERSION:
        raise InvalidToken("not a Michi device token")
    payload, signature = token.rpartition(".")[::2]
    if not hmac.compare_digest(signature.encode("ascii"), _signature(secret, payload).encode("ascii")):
        raise InvalidToken("bad token signature")
    try:
        device_id = _decode(parts[1]).decode("utf-8")
    except ValueError as error:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidToken("bad device id in token") from error
    return device_id, parts[2]


def device_id_of(token: str) -> str:
    """The device id a token names, without checking it (for messages and logs)."""
    try:
        return _decode(token.split(".")[1]).decode("utf-8")
    except (IndexError, ValueError):  # binascii.Error, UnicodeDecodeError, non-ASCII text are ValueErrors
        return ""


def token_hash(token: str) -> str:
    """What the registry stores instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
