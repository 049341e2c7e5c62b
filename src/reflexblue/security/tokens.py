"""Token issue and verification with PyJWT.

Verification follows RFC 8725. The algorithm comes from configuration, never from the token. The
``kid`` is looked up only in our own key set, and ``jku``, ``x5u``, ``jwk``, ``x5c`` and ``crit``
headers are rejected without being followed. Every time claim is required and must be an
integer, and ``iss`` and ``aud`` must match exactly. Any failure at all, including errors that
are not PyJWT's own, becomes :class:`InvalidToken`.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Any

import jwt

from reflexblue.security.keys import KeySet
from reflexblue.settings import Settings

_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"})
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
_REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "cst")
_MAX_TIMESTAMP = 2**53
_MAX_CLAIM_LENGTH = 512
# The forms of the claims this server issues: a user id (UUID), a token id and a credential stamp.
# Anything else cannot be ours, so it is rejected before it reaches the database.
_CLAIM_FORMATS = {
    "sub": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    "jti": re.compile(r"[A-Za-z0-9_-]{16,64}"),
    "cst": re.compile(r"[0-9a-f]{16,32}"),
}


def _require_utf8_json_segments(token: str) -> None:
    """Reject headers and payloads that are not UTF-8 JSON objects (RFC 7515 section 5.2).

    Python's json module would also accept UTF-16, UTF-32 and a byte order mark.
    """
    for segment in token.split(".")[:2]:
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
            text = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            raise InvalidToken(Rejection.MALFORMED, "segment is not base64url-encoded UTF-8") from None
        if "\x00" in text or not text.lstrip(" \t\r\n").startswith("{"):
            raise InvalidToken(Rejection.MALFORMED, "segment is not a JSON object")
_CACHE_SIZE = 10_000


class Rejection(str, Enum):
    """The reason a token was rejected, sent as ``error_description`` and logged."""

    MISSING = "missing"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    INVALID_CLAIMS = "invalid_claims"
    REVOKED = "revoked"
    UNKNOWN_USER = "unknown_user"
    USER_INACTIVE = "user_inactive"
    CREDENTIALS_CHANGED = "credentials_changed"


DESCRIPTIONS: dict[Rejection, str] = {
    Rejection.MISSING: "No bearer token was sent: log in at POST /api/security/login and send "
    "'Authorization: Bearer <token>'",
    Rejection.MALFORMED: "The token is not a well-formed JWT",
    Rejection.TOO_LARGE: "The token is larger than this server accepts",
    Rejection.UNKNOWN_KEY: "The token is not signed with a key of this server",
    Rejection.BAD_SIGNATURE: "The token signature is invalid",
    Rejection.EXPIRED: "The token has expired: log in again to get a new one",
    Rejection.NOT_YET_VALID: "The token is not valid yet",
    Rejection.INVALID_CLAIMS: "The token claims are invalid for this server",
    Rejection.REVOKED: "The token has been revoked: log in again",
    Rejection.UNKNOWN_USER: "The user of this token no longer exists",
    Rejection.USER_INACTIVE: "The user of this token is inactive",
    Rejection.CREDENTIALS_CHANGED: "The user's password changed or all sessions were ended: log in again",
}


class InvalidToken(Exception):
    """Rejection of the presented token, with its ``reason``."""

    def __init__(self, reason: Rejection, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


@dataclass(frozen=True, slots=True)
class Claims:
    """The checked claims of an accepted token."""

    subject: str
    token_id: str
    credential_stamp: str
    issued_at: int
    expires_at: int
    kid: str


class Tokens:
    """Issues and verifies this deployment's tokens."""

    def __init__(self, settings: Settings, keys: KeySet, issuer: str) -> None:
        self._settings = settings
        self._keys = keys
        self.issuer = issuer
        self.audience = settings.token_audience
        self._cache: OrderedDict[str, Claims] = OrderedDict()
        self._cache_lock = threading.Lock()

    def issue(self, subject: str, credential_stamp: str, *, now: float | None = None) -> tuple[str, Claims]:
        issued = int(time.time() if now is None else now)
        key = self._keys.active
        claims = Claims(subject, secrets.token_urlsafe(16), credential_stamp, issued,
                        issued + self._settings.token_lifetime, key.kid)
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": issued,
            "nbf": issued,
            "exp": claims.expires_at,
            "jti": claims.token_id,
            "cst": credential_stamp,
        }
        token = jwt.encode(payload, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"})
        return token, claims

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def verify(self, token: str, *, now: float | None = None) -> Claims:
        """Return the claims of ``token`` or raise InvalidToken; the signature is checked once per token."""
        current = time.time() if now is None else now
        leeway = self._settings.token_leeway
        with self._cache_lock:
            cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at <= current - leeway:
                raise InvalidToken(Rejection.EXPIRED)
            if self._keys.verification_key(cached.kid) is None:
                raise InvalidToken(Rejection.UNKNOWN_KEY)
            return cached
        try:
            claims = self._verify_uncached(token, current)
        except InvalidToken:
            raise
        except Exception as error:  # noqa: BLE001 - any failure to decode means "invalid", never a 500
            raise InvalidToken(Rejection.MALFORMED, type(error).__name__) from error
        with self._cache_lock:
            self._cache[token] = claims
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return claims

    def _verify_uncached(self, token: str, now: float) -> Claims:
        if len(token.encode("utf-8", "surrogatepass")) > self._settings.token_max_bytes:
            raise InvalidToken(Rejection.TOO_LARGE)
        if token.count(".") != 2:
            raise InvalidToken(Rejection.MALFORMED, "not three segments")
        _require_utf8_json_segments(token)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken(Rejection.MALFORMED, str(error)) from error
        if not isinstance(header, dict):
            raise InvalidToken(Rejection.MALFORMED, "header is not an object")
        if _FORBIDDEN_HEADERS & header.keys():
            raise InvalidToken(Rejection.MALFORMED, "key-selection or crit header present")
        if not header.keys() <= _ALLOWED_HEADERS:
            raise InvalidToken(Rejection.MALFORMED, "unexpected header parameter")
        if header.get("typ") != "JWT":
            raise InvalidToken(Rejection.MALFORMED, "typ is not JWT")
        if header.get("alg") != self._keys.algorithm:
            raise InvalidToken(Rejection.BAD_SIGNATURE, "algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken(Rejection.UNKNOWN_KEY)
        key = self._keys.verification_key(kid)
        if key is None:
            raise InvalidToken(Rejection.UNKNOWN_KEY)
        try:
            # PyJWT checks the signature, iss, aud and that every claim is present. Time claims and
            # claim types are checked below against one "now", so tests and callers can pass a clock.
            payload = jwt.decode(
                token,
                key.public_key,
                algorithms=[self._keys.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": list(_REQUIRED_CLAIMS),
                    "verify_signature": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "strict_aud": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidSignatureError as error:
            raise InvalidToken(Rejection.BAD_SIGNATURE) from error
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError, jwt.MissingRequiredClaimError) as error:
            raise InvalidToken(Rejection.INVALID_CLAIMS, str(error)) from error
        except jwt.PyJWTError as error:
            raise InvalidToken(Rejection.MALFORMED, str(error)) from error
        return self._check_claims(payload, kid, now)

    def _check_claims(self, payload: dict[str, Any], kid: str, now: float) -> Claims:
        for name in ("iat", "nbf", "exp"):
            value = payload[name]
            if type(value) is not int or not 0 <= value < _MAX_TIMESTAMP:
                raise InvalidToken(Rejection.INVALID_CLAIMS, f"{name} is not an integer timestamp")
        for name in ("iss", "aud", "sub", "jti", "cst"):
            value = payload[name]
            if not isinstance(value, str) or not value or len(value) > _MAX_CLAIM_LENGTH:
                raise InvalidToken(Rejection.INVALID_CLAIMS, f"{name} is not a string")
        for name, pattern in _CLAIM_FORMATS.items():
            if not pattern.fullmatch(payload[name]):
                raise InvalidToken(Rejection.INVALID_CLAIMS, f"{name} has a form this server never issues")
        if payload["exp"] - payload["iat"] > self._settings.token_lifetime:
            raise InvalidToken(Rejection.INVALID_CLAIMS, "lifetime longer than configured")
        if payload["nbf"] < payload["iat"] - self._settings.token_leeway or payload["exp"] <= payload["nbf"]:
            raise InvalidToken(Rejection.INVALID_CLAIMS, "inconsistent time claims")
        leeway = self._settings.token_leeway
        if payload["exp"] <= now - leeway:
            raise InvalidToken(Rejection.EXPIRED)
        if payload["nbf"] > now + leeway or payload["iat"] > now + leeway:
            raise InvalidToken(Rejection.NOT_YET_VALID)
        return Claims(payload["sub"], payload["jti"], payload["cst"], payload["iat"], payload["exp"], kid)
