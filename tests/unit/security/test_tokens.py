"""Token issue and verification against real signing keys stored in a real SQLite database.

Crafted tokens are signed with the database's own private key, so each test reaches the check it
is about instead of failing earlier on the signature.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import select

from reflexblue.bootstrap import prepare
from reflexblue.domain.errors import NotFoundError, ValidationError
from reflexblue.security.keys import (
    ACTIVE,
    PREVIOUS,
    RETIRED,
    SigningKeyUnavailable,
    KeySet,
    create_key,
    ensure_active_key,
    list_keys,
    retire_key,
)
from reflexblue.security.tokens import InvalidToken, Rejection, Tokens
from reflexblue.settings import Settings, SettingsError
from reflexblue.storage.database import Database
from reflexblue.storage.models import SigningKey

ISSUER = "urn:reflexblue:unit-test"
STAMP = "5f3a9c0d2e7b4a61"
USER_ID = "7d0e6c52-1f4b-4a8e-9c3d-2b5a6f7e8d90"


def load_key_set(database: Database, settings: Settings) -> KeySet:
    """Load a fresh KeySet from the database, as a server process does at start and on changes."""
    keys = KeySet(settings.token_algorithm, settings.secret_key, settings.token_lifetime, settings.token_leeway)
    with database.read() as session:
        keys.load(session)
    return keys


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def keys(sqlite_database: Database, sqlite_settings: Settings) -> KeySet:
    return load_key_set(sqlite_database, sqlite_settings)


@pytest.fixture
def tokens(sqlite_settings: Settings, keys: KeySet) -> Tokens:
    return Tokens(sqlite_settings, keys, ISSUER)


@pytest.fixture
def claims(sqlite_settings: Settings) -> dict[str, Any]:
    """A valid payload issued now, to be altered by each test."""
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": sqlite_settings.token_audience,
        "sub": USER_ID,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": "token-id-0000000001",
        "cst": STAMP,
    }


@pytest.fixture
def sign(keys: KeySet) -> Callable[..., str]:
    """Return a function that signs a payload with the active key, with extra or replaced headers."""

    def _sign(payload: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        header = {"kid": keys.active.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(payload, keys.active.private_key, algorithm=keys.algorithm, headers=header)

    return _sign


@pytest.fixture
def sign_raw(keys: KeySet) -> Callable[[bytes, bytes], str]:
    """Return a function that signs raw header and payload bytes with the active Ed25519 key."""

    def _sign_raw(header: bytes, payload: bytes) -> str:
        signing_input = f"{b64url(header)}.{b64url(payload)}".encode()
        signature = keys.active.private_key.sign(signing_input)  # type: ignore[call-arg,union-attr]
        return f"{signing_input.decode()}.{b64url(signature)}"

    return _sign_raw


def rejection(tokens: Tokens, token: str, **kwargs: Any) -> Rejection:
    with pytest.raises(InvalidToken) as caught:
        tokens.verify(token, **kwargs)
    return caught.value.reason


# ------------------------------------------------------------------------------------------------
# Issue and verify


def test_issue_verify_roundtrip(tokens: Tokens, keys: KeySet) -> None:
    token, issued = tokens.issue(USER_ID, STAMP)

    verified = tokens.verify(token)

    assert verified == issued
    assert verified.subject == USER_ID
    assert verified.credential_stamp == STAMP
    assert verified.kid == keys.active.kid


def test_issued_token_lifetime_is_configured(tokens: Tokens, sqlite_settings: Settings) -> None:
    _, issued = tokens.issue(USER_ID, STAMP, now=1_800_000_000)

    assert issued.issued_at == 1_800_000_000
    assert issued.expires_at - issued.issued_at == sqlite_settings.token_lifetime == 86_400


def test_issued_token_has_standard_claims(tokens: Tokens, keys: KeySet, sqlite_settings: Settings) -> None:
    token, _ = tokens.issue(USER_ID, STAMP)

    header = jwt.get_unverified_header(token)
    payload = jwt.decode(token, options={"verify_signature": False})

    assert header == {"alg": "EdDSA", "kid": keys.active.kid, "typ": "JWT"}
    assert {"iss", "aud", "sub", "iat", "nbf", "exp", "jti"} <= payload.keys()
    assert payload["iss"] == ISSUER
    assert payload["aud"] == sqlite_settings.token_audience
    assert payload["exp"] - payload["iat"] == 86_400


def test_issued_token_ids_are_unique(tokens: Tokens) -> None:
    token_ids = {tokens.issue(USER_ID, STAMP)[1].token_id for _ in range(50)}

    assert len(token_ids) == 50


def test_verify_repeated_returns_same_claims(tokens: Tokens) -> None:
    token, issued = tokens.issue(USER_ID, STAMP)

    assert tokens.verify(token) == issued
    assert tokens.verify(token) == issued


def test_verify_custom_lifetime(sqlite_database: Database, cheap_settings: Callable[..., Settings],
                                sqlite_url: str) -> None:
    settings = cheap_settings(sqlite_url, token_lifetime=600)
    tokens = Tokens(settings, load_key_set(sqlite_database, settings), ISSUER)

    token, issued = tokens.issue(USER_ID, STAMP)

    assert issued.expires_at - issued.issued_at == 600
    assert tokens.verify(token) == issued


@pytest.mark.parametrize("setting", ["token_audience", "token_issuer"])
def test_long_configured_claim_rejected(cheap_settings: Callable[..., Settings], sqlite_url: str, setting: str) -> None:
    # Claims longer than the verifier accepts must be refused at startup, not at every request.
    value = "https://api.example.com/" + "a" * 200

    with pytest.raises(SettingsError, match=f"REFLEXBLUE_{setting.upper()}"):
        cheap_settings(sqlite_url, **{setting: value}).validate()


# ------------------------------------------------------------------------------------------------
# Time claims


def test_verify_rejects_expired_token(tokens: Tokens) -> None:
    token, _ = tokens.issue(USER_ID, STAMP, now=time.time() - 86_400 - 31)

    assert rejection(tokens, token) is Rejection.EXPIRED


def test_verify_rejects_expired_at_given_now(tokens: Tokens) -> None:
    issued_at = time.time()
    token, _ = tokens.issue(USER_ID, STAMP, now=issued_at)

    # The caller's clock is one second past expiry plus leeway.
    assert rejection(tokens, token, now=issued_at + 86_400 + 31) is Rejection.EXPIRED


def test_verify_accepts_expired_within_leeway(tokens: Tokens) -> None:
    token, issued = tokens.issue(USER_ID, STAMP, now=time.time() - 86_400 - 10)

    assert tokens.verify(token) == issued


def test_verify_cached_token_expires(tokens: Tokens) -> None:
    issued_at = time.time()
    token, _ = tokens.issue(USER_ID, STAMP, now=issued_at)
    tokens.verify(token)

    assert rejection(tokens, token, now=issued_at + 86_400 + 31) is Rejection.EXPIRED


def test_verify_rejects_not_yet_valid(tokens: Tokens) -> None:
    token, _ = tokens.issue(USER_ID, STAMP, now=time.time() + 600)

    assert rejection(tokens, token) is Rejection.NOT_YET_VALID


def test_verify_accepts_future_within_leeway(tokens: Tokens) -> None:
    token, issued = tokens.issue(USER_ID, STAMP, now=time.time() + 10)

    assert tokens.verify(token) == issued


def test_verify_rejects_future_nbf(tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any]) -> None:
    token = sign({**claims, "nbf": claims["iat"] + 600})

    assert rejection(tokens, token) is Rejection.NOT_YET_VALID


# ------------------------------------------------------------------------------------------------
# Signatures and keys


def test_verify_rejects_tampered_signature(tokens: Tokens) -> None:
    token, _ = tokens.issue(USER_ID, STAMP)
    header, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]

    assert rejection(tokens, f"{header}.{payload}.{flipped}") is Rejection.BAD_SIGNATURE


def test_verify_rejects_tampered_payload(tokens: Tokens) -> None:
    token, _ = tokens.issue(USER_ID, STAMP)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = b64url(json.dumps({**claims, "sub": "admin"}).encode())

    assert rejection(tokens, f"{header}.{forged}.{signature}") is Rejection.BAD_SIGNATURE


def test_verify_rejects_foreign_key(tokens: Tokens, keys: KeySet, claims: dict[str, Any]) -> None:
    foreign = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode(claims, foreign, algorithm="EdDSA", headers={"kid": keys.active.kid, "typ": "JWT"})

    assert rejection(tokens, token) is Rejection.BAD_SIGNATURE


def test_verify_rejects_empty_signature(tokens: Tokens) -> None:
    token, _ = tokens.issue(USER_ID, STAMP)
    header, payload, _signature = token.split(".")

    assert rejection(tokens, f"{header}.{payload}.") is Rejection.BAD_SIGNATURE


def test_verify_rejects_unknown_kid(tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any]) -> None:
    assert rejection(tokens, sign(claims, {"kid": "no-such-key"})) is Rejection.UNKNOWN_KEY


@pytest.mark.parametrize("kid", [None, ""])
def test_verify_rejects_missing_kid(
    tokens: Tokens, sign_raw: Callable[[bytes, bytes], str], claims: dict[str, Any], kid: str | None
) -> None:
    header = {"alg": "EdDSA", "typ": "JWT"} if kid is None else {"alg": "EdDSA", "typ": "JWT", "kid": kid}
    token = sign_raw(json.dumps(header).encode(), json.dumps(claims).encode())

    assert rejection(tokens, token) is Rejection.UNKNOWN_KEY


@pytest.mark.parametrize("kid", [7, ["kid"], {"kid": "x"}])
def test_verify_rejects_non_string_kid(
    tokens: Tokens, sign_raw: Callable[[bytes, bytes], str], claims: dict[str, Any], kid: object
) -> None:
    header = {"alg": "EdDSA", "typ": "JWT", "kid": kid}
    token = sign_raw(json.dumps(header).encode(), json.dumps(claims).encode())

    assert rejection(tokens, token) is Rejection.MALFORMED


def test_verify_rejects_other_database_token(tokens: Tokens, cheap_settings: Callable[..., Settings],
                                             tmp_path: Any) -> None:
    other_settings = cheap_settings(f"sqlite:///{tmp_path}/other.db")
    other_database = prepare(other_settings, signing_key=True)
    other = Tokens(other_settings, load_key_set(other_database, other_settings), ISSUER)
    token, _ = other.issue(USER_ID, STAMP)

    assert rejection(tokens, token) is Rejection.UNKNOWN_KEY
    other_database.dispose()


# ------------------------------------------------------------------------------------------------
# Algorithm confusion


def test_verify_rejects_alg_none(tokens: Tokens, keys: KeySet, claims: dict[str, Any]) -> None:
    header = b64url(json.dumps({"alg": "none", "kid": keys.active.kid, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())

    assert rejection(tokens, f"{header}.{payload}.") is Rejection.BAD_SIGNATURE


@pytest.mark.parametrize("alg", ["None", "NONE", "nOnE"])
def test_verify_rejects_alg_none_spellings(tokens: Tokens, keys: KeySet, claims: dict[str, Any], alg: str) -> None:
    header = b64url(json.dumps({"alg": alg, "kid": keys.active.kid, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())

    assert rejection(tokens, f"{header}.{payload}.") is Rejection.BAD_SIGNATURE


@pytest.mark.parametrize("encoding", ["pem", "raw", "jwk_x"])
def test_verify_rejects_hs256_with_public_key(
    tokens: Tokens, keys: KeySet, claims: dict[str, Any], encoding: str
) -> None:
    # Key confusion: an attacker signs with HMAC, using the published public key as the secret.
    public_key = keys.active.public_key
    secret = {
        "pem": public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "raw": public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        "jwk_x": keys.active.public_jwk["x"].encode(),
    }[encoding]
    header = b64url(json.dumps({"alg": "HS256", "kid": keys.active.kid, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()

    assert rejection(tokens, f"{header}.{payload}.{b64url(signature)}") is Rejection.BAD_SIGNATURE


def test_verify_rejects_es256_on_eddsa_server(tokens: Tokens, keys: KeySet, claims: dict[str, Any]) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims, other, algorithm="ES256", headers={"kid": keys.active.kid, "typ": "JWT"})

    assert rejection(tokens, token) is Rejection.BAD_SIGNATURE


# ------------------------------------------------------------------------------------------------
# Headers


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("jwk", {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
        ("x5c", ["MIIBszCCAVmgAwIBAgIUBase64Cert"]),
        ("crit", ["exp"]),
    ],
)
def test_verify_rejects_key_selection_header(
    tokens: Tokens, sign_raw: Callable[[bytes, bytes], str], keys: KeySet, claims: dict[str, Any],
    name: str, value: Any,
) -> None:
    header = json.dumps({"alg": "EdDSA", "kid": keys.active.kid, "typ": "JWT", name: value}).encode()

    assert rejection(tokens, sign_raw(header, json.dumps(claims).encode())) is Rejection.MALFORMED


def test_verify_rejects_unexpected_header(
    tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any]
) -> None:
    assert rejection(tokens, sign(claims, {"cty": "JWT"})) is Rejection.MALFORMED


@pytest.mark.parametrize("typ", [None, "at+jwt", "jwt", "JWS"])
def test_verify_rejects_other_typ(
    tokens: Tokens, sign_raw: Callable[[bytes, bytes], str], keys: KeySet, claims: dict[str, Any], typ: str | None
) -> None:
    header: dict[str, Any] = {"alg": "EdDSA", "kid": keys.active.kid}
    if typ is not None:
        header["typ"] = typ

    token = sign_raw(json.dumps(header).encode(), json.dumps(claims).encode())

    assert rejection(tokens, token) is Rejection.MALFORMED


# ------------------------------------------------------------------------------------------------
# Malformed and oversized tokens


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-token",
        "a.b",
        "a.b.c.d",
        "..",
        "a.b.c",
        "!!!.@@@.###",
        b64url(b"[]") + "." + b64url(b"{}") + ".",
        b64url(b"not json") + "." + b64url(b"{}") + ".",
        b64url(b'"string"') + "." + b64url(b"{}") + ".",
        "eyJhbGciOiJFZERTQSJ9\u00e9.e30.AAAA",
        "eyJhbGciOiJFZERTQSJ9.e30.AAAA\ud800",
    ],
)
def test_verify_rejects_malformed(tokens: Tokens, token: str) -> None:
    assert rejection(tokens, token) is Rejection.MALFORMED


def test_verify_rejects_payload_not_object(
    tokens: Tokens, sign_raw: Callable[[bytes, bytes], str], keys: KeySet
) -> None:
    header = json.dumps({"alg": "EdDSA", "kid": keys.active.kid, "typ": "JWT"}).encode()

    assert rejection(tokens, sign_raw(header, b"[1, 2, 3]")) is Rejection.MALFORMED


def test_verify_rejects_payload_not_json(
    tokens: Tokens, sign_raw: Callable[[bytes, bytes], str], keys: KeySet
) -> None:
    header = json.dumps({"alg": "EdDSA", "kid": keys.active.kid, "typ": "JWT"}).encode()

    assert rejection(tokens, sign_raw(header, b"\xff\xfe not json")) is Rejection.MALFORMED


def test_verify_rejects_oversized_token(tokens: Tokens) -> None:
    assert rejection(tokens, "a" * 4097) is Rejection.TOO_LARGE


def test_verify_counts_size_in_bytes(tokens: Tokens) -> None:
    # 2,049 two-byte characters are 4,098 bytes, over the 4,096-byte default.
    assert rejection(tokens, "\u00e9" * 2049) is Rejection.TOO_LARGE


def test_verify_rejects_signed_oversized_token(
    tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any]
) -> None:
    assert rejection(tokens, sign({**claims, "padding": "x" * 5000})) is Rejection.TOO_LARGE


@pytest.fixture
def large_tokens(sqlite_database: Database, cheap_settings: Callable[..., Settings], sqlite_url: str) -> Tokens:
    """Tokens that accept up to 64 KiB, so deeply nested JSON fits under the size check."""
    settings = cheap_settings(sqlite_url, token_max_bytes=65_536)
    return Tokens(settings, load_key_set(sqlite_database, settings), ISSUER)


def test_verify_nested_payload_raises_invalid_token(
    large_tokens: Tokens, sign_raw: Callable[[bytes, bytes], str], keys: KeySet, claims: dict[str, Any]
) -> None:
    nested = b"[" * 20_000 + b"]" * 20_000
    payload = json.dumps(claims).encode()[:-1] + b', "deep": ' + nested + b"}"
    header = json.dumps({"alg": "EdDSA", "kid": keys.active.kid, "typ": "JWT"}).encode()
    token = sign_raw(header, payload)
    assert len(token) <= 65_536

    assert rejection(large_tokens, token) is Rejection.MALFORMED


def test_verify_nested_header_raises_invalid_token(large_tokens: Tokens, claims: dict[str, Any]) -> None:
    header = b'{"alg": "EdDSA", "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    token = f"{b64url(header)}.{b64url(json.dumps(claims).encode())}.AAAA"

    assert rejection(large_tokens, token) is Rejection.MALFORMED


# ------------------------------------------------------------------------------------------------
# Claims


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("exp", "string"),
        ("exp", "float"),
        ("exp", "bool"),
        ("iat", "string"),
        ("iat", "float"),
        ("iat", "bool"),
        ("nbf", "string"),
        ("nbf", "float"),
        ("nbf", "bool"),
        ("exp", "huge"),
    ],
)
def test_verify_rejects_non_integer_time_claim(
    tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any], name: str, kind: str
) -> None:
    value = {
        "string": str(claims[name]),
        "float": claims[name] + 0.5,
        "bool": True,
        "huge": 2**60,
    }[kind]

    assert rejection(tokens, sign({**claims, name: value})) is Rejection.INVALID_CLAIMS


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sub", ""),
        ("sub", 12345),
        ("sub", [USER_ID]),
        ("sub", "u" * 513),
        ("jti", ""),
        ("jti", 7),
        ("cst", ""),
        ("cst", None),
        ("cst", 1),
    ],
    ids=["sub-empty", "sub-int", "sub-list", "sub-too-long", "jti-empty", "jti-int", "cst-empty", "cst-null", "cst-int"],
)
def test_verify_rejects_non_string_claim(
    tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any], name: str, value: Any
) -> None:
    assert rejection(tokens, sign({**claims, name: value})) is Rejection.INVALID_CLAIMS


@pytest.mark.parametrize("name", ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "cst"])
def test_verify_rejects_missing_claim(
    tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any], name: str
) -> None:
    payload = {key: value for key, value in claims.items() if key != name}

    assert rejection(tokens, sign(payload)) is Rejection.INVALID_CLAIMS


def test_verify_rejects_lifetime_too_long(tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any]) -> None:
    token = sign({**claims, "exp": claims["iat"] + 86_400 + 1})

    assert rejection(tokens, token) is Rejection.INVALID_CLAIMS


@pytest.mark.parametrize("issuer", ["urn:reflexblue:other", "urn:reflexblue:unit-test ", "URN:REFLEXBLUE:UNIT-TEST"])
def test_verify_rejects_wrong_issuer(
    tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any], issuer: str
) -> None:
    assert rejection(tokens, sign({**claims, "iss": issuer})) is Rejection.INVALID_CLAIMS


@pytest.mark.parametrize("audience", ["other-api", "reflexblue-external-api ", "Reflexblue-External-Api"])
def test_verify_rejects_wrong_audience(
    tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any], audience: str
) -> None:
    assert rejection(tokens, sign({**claims, "aud": audience})) is Rejection.INVALID_CLAIMS


def test_verify_rejects_audience_list(tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any]) -> None:
    token = sign({**claims, "aud": [claims["aud"], "other-api"]})

    assert rejection(tokens, token) is Rejection.INVALID_CLAIMS


def test_verify_rejects_single_audience_list(
    tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any]
) -> None:
    assert rejection(tokens, sign({**claims, "aud": [claims["aud"]]})) is Rejection.INVALID_CLAIMS


def test_verify_rejects_exp_before_nbf(tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any]) -> None:
    token = sign({**claims, "iat": claims["iat"] - 100, "nbf": claims["iat"] - 10, "exp": claims["iat"] - 20})

    assert rejection(tokens, token) in (Rejection.INVALID_CLAIMS, Rejection.EXPIRED)


def test_verify_rejects_nbf_long_before_iat(
    tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any]
) -> None:
    token = sign({**claims, "nbf": claims["iat"] - 3600})

    assert rejection(tokens, token) is Rejection.INVALID_CLAIMS


def test_invalid_token_message_omits_token(tokens: Tokens, sign: Callable[..., str], claims: dict[str, Any]) -> None:
    token = sign({**claims, "iss": "urn:other"})

    with pytest.raises(InvalidToken) as caught:
        tokens.verify(token)

    assert token not in str(caught.value)
    assert token.split(".")[2] not in str(caught.value)


# ------------------------------------------------------------------------------------------------
# Rotation, retirement and the JWKS


def rotate(database: Database) -> str:
    with database.write() as session:
        return create_key(session, "EdDSA", secret="", actor="test").kid


def test_rotation_keeps_old_tokens_valid(
    sqlite_database: Database, sqlite_settings: Settings, tokens: Tokens
) -> None:
    token, issued = tokens.issue(USER_ID, STAMP)
    rotate(sqlite_database)
    reloaded = Tokens(sqlite_settings, load_key_set(sqlite_database, sqlite_settings), ISSUER)

    assert reloaded.verify(token) == issued


def test_rotation_signs_with_new_key(sqlite_database: Database, sqlite_settings: Settings, keys: KeySet) -> None:
    old_kid = keys.active.kid
    new_kid = rotate(sqlite_database)
    reloaded = Tokens(sqlite_settings, load_key_set(sqlite_database, sqlite_settings), ISSUER)

    _, issued = reloaded.issue(USER_ID, STAMP)

    assert new_kid != old_kid
    assert issued.kid == new_kid


def test_rotation_marks_old_key_previous(sqlite_database: Database, keys: KeySet) -> None:
    old_kid = keys.active.kid
    new_kid = rotate(sqlite_database)

    with sqlite_database.read() as session:
        states = {key.kid: (key.state, key.deactivated_at) for key in list_keys(session)}

    assert states[old_kid][0] == PREVIOUS
    assert states[old_kid][1] is not None
    assert states[new_kid] == (ACTIVE, None)


def test_retired_key_tokens_rejected(
    sqlite_database: Database, sqlite_settings: Settings, tokens: Tokens, keys: KeySet
) -> None:
    token, _ = tokens.issue(USER_ID, STAMP)
    rotate(sqlite_database)
    with sqlite_database.write() as session:
        retire_key(session, keys.active.kid, actor="test")
    reloaded = Tokens(sqlite_settings, load_key_set(sqlite_database, sqlite_settings), ISSUER)

    assert rejection(reloaded, token) is Rejection.UNKNOWN_KEY


def test_retired_key_rejects_cached_token(
    sqlite_database: Database, tokens: Tokens, keys: KeySet
) -> None:
    token, _ = tokens.issue(USER_ID, STAMP)
    tokens.verify(token)
    old_kid = keys.active.kid
    rotate(sqlite_database)
    with sqlite_database.write() as session:
        retire_key(session, old_kid, actor="test")
    with sqlite_database.read() as session:
        keys.load(session)

    assert rejection(tokens, token) is Rejection.UNKNOWN_KEY


def test_retire_active_key_rejected(sqlite_database: Database, keys: KeySet) -> None:
    with pytest.raises(ValidationError, match="keys rotate"), sqlite_database.write() as session:
        retire_key(session, keys.active.kid, actor="test")


def test_retire_unknown_key_not_found(sqlite_database: Database) -> None:
    with pytest.raises(NotFoundError), sqlite_database.write() as session:
        retire_key(session, "no-such-kid", actor="test")


def test_retire_retired_key_is_noop(sqlite_database: Database, keys: KeySet) -> None:
    old_kid = keys.active.kid
    rotate(sqlite_database)
    with sqlite_database.write() as session:
        retire_key(session, old_kid, actor="test")
    with sqlite_database.write() as session:
        retire_key(session, old_kid, actor="test")

    with sqlite_database.read() as session:
        assert session.get(SigningKey, old_kid).state == RETIRED


def test_retire_marks_key_retired(sqlite_database: Database, keys: KeySet) -> None:
    old_kid = keys.active.kid
    rotate(sqlite_database)
    with sqlite_database.write() as session:
        retire_key(session, old_kid, actor="test")

    with sqlite_database.read() as session:
        assert session.get(SigningKey, old_kid).state == RETIRED


def test_ensure_active_key_is_idempotent(sqlite_database: Database, keys: KeySet) -> None:
    with sqlite_database.write() as session:
        kid = ensure_active_key(session, "EdDSA", secret="", actor="test").kid
    with sqlite_database.read() as session:
        count = len(list_keys(session))

    assert kid == keys.active.kid
    assert count == 1


def test_jwks_lists_active_and_previous(sqlite_database: Database, sqlite_settings: Settings, keys: KeySet) -> None:
    old_kid = keys.active.kid
    new_kid = rotate(sqlite_database)
    reloaded = load_key_set(sqlite_database, sqlite_settings)

    published = reloaded.jwks(dt.datetime.now(dt.UTC))

    assert sorted(key["kid"] for key in published["keys"]) == sorted([old_kid, new_kid])


def test_jwks_entries_are_public_ed25519(keys: KeySet) -> None:
    (entry,) = keys.jwks(dt.datetime.now(dt.UTC))["keys"]

    assert entry["kty"] == "OKP"
    assert entry["crv"] == "Ed25519"
    assert entry["alg"] == "EdDSA"
    assert entry["use"] == "sig"
    assert entry["kid"] == keys.active.kid
    assert "d" not in entry


def test_jwks_drops_expired_previous_key(sqlite_database: Database, sqlite_settings: Settings, keys: KeySet) -> None:
    old_kid = keys.active.kid
    new_kid = rotate(sqlite_database)
    reloaded = load_key_set(sqlite_database, sqlite_settings)
    deactivated_at = reloaded.verification_key(old_kid).deactivated_at
    horizon = dt.timedelta(seconds=sqlite_settings.token_lifetime + sqlite_settings.token_leeway)

    before = reloaded.jwks(deactivated_at + horizon - dt.timedelta(seconds=1))
    after = reloaded.jwks(deactivated_at + horizon + dt.timedelta(seconds=1))

    assert {key["kid"] for key in before["keys"]} == {old_kid, new_kid}
    assert [key["kid"] for key in after["keys"]] == [new_kid]


def test_jwks_omits_retired_key(sqlite_database: Database, sqlite_settings: Settings, keys: KeySet) -> None:
    old_kid = keys.active.kid
    new_kid = rotate(sqlite_database)
    with sqlite_database.write() as session:
        retire_key(session, old_kid, actor="test")

    published = load_key_set(sqlite_database, sqlite_settings).jwks(dt.datetime.now(dt.UTC))

    assert [key["kid"] for key in published["keys"]] == [new_kid]


def test_jwks_key_verifies_issued_token(tokens: Tokens, keys: KeySet, sqlite_settings: Settings) -> None:
    token, _ = tokens.issue(USER_ID, STAMP)
    (entry,) = keys.jwks(dt.datetime.now(dt.UTC))["keys"]
    public_key = jwt.PyJWK(entry).key

    payload = jwt.decode(token, public_key, algorithms=["EdDSA"], audience=sqlite_settings.token_audience)

    assert payload["sub"] == USER_ID


def test_active_key_missing_raises(sqlite_settings: Settings) -> None:
    empty = KeySet("EdDSA", "", sqlite_settings.token_lifetime, sqlite_settings.token_leeway)

    with pytest.raises(SigningKeyUnavailable, match="no active signing key"):
        empty.active  # noqa: B018 - the property access is the behaviour under test


# ------------------------------------------------------------------------------------------------
# ES256


@pytest.fixture
def es256_settings(cheap_settings: Callable[..., Settings], sqlite_url: str) -> Settings:
    return cheap_settings(sqlite_url, token_algorithm="ES256")


def test_es256_roundtrip(es256_settings: Settings) -> None:
    database = prepare(es256_settings, signing_key=True)
    tokens = Tokens(es256_settings, load_key_set(database, es256_settings), ISSUER)

    token, issued = tokens.issue(USER_ID, STAMP)

    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert tokens.verify(token) == issued
    database.dispose()


def test_es256_jwks_is_p256(es256_settings: Settings) -> None:
    database = prepare(es256_settings, signing_key=True)

    (entry,) = load_key_set(database, es256_settings).jwks(dt.datetime.now(dt.UTC))["keys"]

    assert (entry["kty"], entry["crv"], entry["alg"]) == ("EC", "P-256", "ES256")
    assert "d" not in entry
    database.dispose()


def test_algorithm_switch_rejects_old_tokens(
    sqlite_database: Database, tokens: Tokens, es256_settings: Settings
) -> None:
    eddsa_token, _ = tokens.issue(USER_ID, STAMP)
    with sqlite_database.write() as session:
        ensure_active_key(session, "ES256", secret="", actor="test")
    es256_tokens = Tokens(es256_settings, load_key_set(sqlite_database, es256_settings), ISSUER)

    assert es256_tokens.verify(es256_tokens.issue(USER_ID, STAMP)[0]).subject == USER_ID
    assert rejection(es256_tokens, eddsa_token) is Rejection.BAD_SIGNATURE


# ------------------------------------------------------------------------------------------------
# Private keys at rest


SECRET = "unit-test-secret-key-value"


def stored_private_keys(database: Database) -> list[bytes]:
    with database.read() as session:
        return list(session.scalars(select(SigningKey.private_key)))


def test_private_key_encrypted_with_secret(cheap_settings: Callable[..., Settings], sqlite_url: str) -> None:
    database = prepare(cheap_settings(sqlite_url, secret_key=SECRET), signing_key=True)

    (pem,) = stored_private_keys(database)

    assert b"BEGIN ENCRYPTED PRIVATE KEY" in pem
    database.dispose()


def test_private_key_plain_without_secret(sqlite_database: Database) -> None:
    (pem,) = stored_private_keys(sqlite_database)

    assert b"BEGIN PRIVATE KEY" in pem
    assert b"ENCRYPTED" not in pem


def test_encrypted_key_opens_with_secret(cheap_settings: Callable[..., Settings], sqlite_url: str) -> None:
    settings = cheap_settings(sqlite_url, secret_key=SECRET)
    database = prepare(settings, signing_key=True)
    tokens = Tokens(settings, load_key_set(database, settings), ISSUER)

    token, issued = tokens.issue(USER_ID, STAMP)

    assert tokens.verify(token) == issued
    database.dispose()


@pytest.mark.parametrize("wrong_secret", ["another-secret-value", ""])
def test_wrong_secret_rejected(
    cheap_settings: Callable[..., Settings], sqlite_url: str, wrong_secret: str
) -> None:
    database = prepare(cheap_settings(sqlite_url, secret_key=SECRET), signing_key=True)
    wrong = cheap_settings(sqlite_url, secret_key=wrong_secret)

    keys = load_key_set(database, wrong)

    assert keys.problem is not None
    assert "REFLEXBLUE_SECRET_KEY" in keys.problem
    assert SECRET not in keys.problem
    with pytest.raises(SigningKeyUnavailable):
        _ = keys.active
    database.dispose()


def test_secret_on_plain_key_accepted(
    sqlite_database: Database, cheap_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    keys = load_key_set(sqlite_database, cheap_settings(sqlite_url, secret_key=SECRET))

    assert keys.problem is None
    assert keys.active.private_key is not None
