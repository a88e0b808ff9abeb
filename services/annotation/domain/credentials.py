"""Passwords (scrypt, salted) and session tokens (random, stored as sha256), checked in constant time.

Password hash format: `scrypt$<n>$<r>$<p>$<salt, base64>$<key, base64>`; the parameters travel with
the hash, so they can be raised later without invalidating existing passwords.
Session token format: `mas1.<43 url-safe characters>`; only its sha256 is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
KEY_BYTES = 32
SESSION_PREFIX = "mas1."
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256


class InvalidName(ValueError):
    pass


def check_name(name: str) -> str:
    if NAME_PATTERN.fullmatch(name) is None:
        raise InvalidName("names are 1-64 characters of A-Z a-z 0-9 . _ -")
    return name


def _encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(f"passwords are {MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} characters")
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_BYTES)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_encode(salt)}${_encode(key)}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored` (False for a malformed hash, never an exception)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def new_password() -> str:
    """A one-time password for a new account (printed once, never stored)."""
    return secrets.token_urlsafe(18)


def new_session_token() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What SQL stores instead of a session token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_session_token(token: str) -> bool:
    return token.startswith(SESSION_PREFIX) and 20 < len(token) < 100
