"""Forged, tampered and odd tokens: each must get 401, never 200 or a server error.

Some tokens here are signed with the deployment's own private key, read from its ``signing_keys``
table, so that the claim checks are reached and tested rather than stopped by the signature check.
``test_minted_valid_token_is_accepted`` shows that such a token with correct claims is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .support import (
    ApiUser,
    Deployment,
    b64url_decode,
    b64url_encode,
    encode_segment,
    mint,
    sign_eddsa,
    token_header,
    token_payload,
)


@pytest.fixture(scope="module")
def victim(deployment: Deployment, acme: str) -> ApiUser:
    return deployment.seed.user({acme: ["administration.access", "v2.articles"]})


@pytest.fixture(scope="module")
def token(deployment: Deployment, victim: ApiUser) -> str:
    return deployment.login(victim)


@pytest.fixture(scope="module")
def signing_key(deployment: Deployment, token: str) -> ed25519.Ed25519PrivateKey:
    kid, private_key = deployment.seed.active_signing_key()
    assert kid == token_header(token)["kid"]
    return private_key


@pytest.fixture
def claims(token: str) -> dict[str, Any]:
    """The claims of a real token, with a fresh jti and times around now."""
    payload = token_payload(token)
    now = int(time.time())
    payload.update(jti=secrets.token_urlsafe(16), iat=now, nbf=now, exp=now + 3600)
    return payload


@pytest.fixture
def header(token: str) -> dict[str, Any]:
    return token_header(token)


@pytest.fixture(scope="module")
def other_instance(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """A second deployment with a database, and so keys, of its own."""
    deployment = launch()
    deployment.seed.administration("acme", "Acme Wholesale")
    yield deployment
    deployment.stop()


def call(deployment: Deployment, token: str | bytes) -> httpx.Response:
    authorization = token if isinstance(token, bytes) else f"Bearer {token}".encode("ascii")
    with deployment.client() as client:
        return client.get("/api/v2/administrations/acme/articles", headers={"Authorization": authorization})


def assert_rejected(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_real_token_is_accepted(deployment: Deployment, token: str) -> None:
    assert call(deployment, token).status_code == 200


def test_minted_valid_token_is_accepted(deployment: Deployment, header: dict[str, Any], claims: dict[str, Any],
                                        signing_key: ed25519.Ed25519PrivateKey) -> None:
    assert call(deployment, mint(header, claims, signing_key)).status_code == 200


@pytest.mark.parametrize("algorithm", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["empty", "original"])
def test_alg_none_is_rejected(deployment: Deployment, token: str, header: dict[str, Any], algorithm: str,
                              signature: str) -> None:
    header_segment = encode_segment({**header, "alg": algorithm})
    payload_segment = token.split(".")[1]
    signature_segment = "" if signature == "empty" else token.split(".")[2]

    assert_rejected(call(deployment, f"{header_segment}.{payload_segment}.{signature_segment}"))


def public_key_secrets(deployment: Deployment, kid: str) -> dict[str, bytes]:
    """Return the forms of the server's public key an attacker might try as an HMAC secret."""
    with deployment.client() as client:
        jwk = next(key for key in client.get("/.well-known/jwks.json").json()["keys"] if key["kid"] == kid)
    raw = b64url_decode(jwk["x"])
    public_key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    return {
        "raw": raw,
        "jwk-x": jwk["x"].encode(),
        "pem": public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "der": public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "jwk-json": json.dumps(jwk).encode(),
        "openssh": public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    }


@pytest.mark.parametrize("form", ["raw", "jwk-x", "pem", "der", "jwk-json", "openssh"])
@pytest.mark.parametrize("algorithm", ["HS256", "HS512"])
def test_hmac_with_public_key_is_rejected(deployment: Deployment, header: dict[str, Any],
                                          claims: dict[str, Any], form: str, algorithm: str) -> None:
    secret = public_key_secrets(deployment, header["kid"])[form]
    signing_input = f"{encode_segment({**header, 'alg': algorithm})}.{encode_segment(claims)}"
    digest = hashlib.sha256 if algorithm == "HS256" else hashlib.sha512
    signature = hmac.new(secret, signing_input.encode("ascii"), digest).digest()

    assert_rejected(call(deployment, f"{signing_input}.{b64url_encode(signature)}"))


def test_tampered_subject_is_rejected(deployment: Deployment, token: str, acme: str) -> None:
    other = deployment.seed.user({acme: ["administration.access", "v2.articles"]})
    header_segment, _, signature_segment = token.split(".")
    payload = {**token_payload(token), "sub": other.id}

    assert_rejected(call(deployment, f"{header_segment}.{encode_segment(payload)}.{signature_segment}"))


def test_tampered_expiry_is_rejected(deployment: Deployment, token: str) -> None:
    header_segment, _, signature_segment = token.split(".")
    payload = token_payload(token)
    payload["exp"] += 1

    assert_rejected(call(deployment, f"{header_segment}.{encode_segment(payload)}.{signature_segment}"))


def flip_last_signature_byte(token: str) -> str:
    head, payload, signature = token.split(".")
    raw = bytearray(b64url_decode(signature))
    raw[-1] ^= 0x01
    return f"{head}.{payload}.{b64url_encode(bytes(raw))}"


SIGNATURE_CHANGES: dict[str, Callable[[str], str]] = {
    "truncated": lambda token: token[:-4],
    "one-char-short": lambda token: token[:-1],
    "extended": lambda token: token + "AAAA",
    "empty": lambda token: token.rsplit(".", 1)[0] + ".",
    "bit-flipped": flip_last_signature_byte,
    "zeroed": lambda token: token.rsplit(".", 1)[0] + "." + b64url_encode(bytes(64)),
    "four-segments": lambda token: token + ".AAAA",
    "two-segments": lambda token: token.rsplit(".", 1)[0],
}


@pytest.mark.parametrize("change", sorted(SIGNATURE_CHANGES))
def test_changed_signature_is_rejected(deployment: Deployment, token: str, change: str) -> None:
    changed = SIGNATURE_CHANGES[change](token)
    assert changed != token

    assert_rejected(call(deployment, changed))


def test_standard_base64_signature_is_rejected(deployment: Deployment, header: dict[str, Any],
                                               claims: dict[str, Any],
                                               signing_key: ed25519.Ed25519PrivateKey) -> None:
    # JWS uses the URL-safe alphabet, so only a signature containing '-' or '_' changes in standard base64.
    token = mint(header, claims, signing_key)
    while not {"-", "_"} & set(token.rsplit(".", 1)[1]):
        claims["jti"] = secrets.token_urlsafe(16)
        token = mint(header, claims, signing_key)
    head, signature = token.rsplit(".", 1)
    standard = base64.b64encode(b64url_decode(signature)).decode().rstrip("=")

    assert call(deployment, token).status_code == 200
    assert_rejected(call(deployment, f"{head}.{standard}"))


@pytest.mark.parametrize("kid", [
    "unknown-key-id", "../../../../etc/passwd", "/dev/null", "' OR '1'='1", "x'; DROP TABLE signing_keys; --",
    "", " ", "%00", "a" * 500,
])
def test_odd_kid_is_rejected(deployment: Deployment, header: dict[str, Any], claims: dict[str, Any],
                             signing_key: ed25519.Ed25519PrivateKey, kid: str) -> None:
    assert_rejected(call(deployment, mint({**header, "kid": kid}, claims, signing_key)))


@pytest.mark.parametrize("kid", [None, 1, ["k"], {"kid": "k"}, True])
def test_non_string_kid_is_rejected(deployment: Deployment, header: dict[str, Any], claims: dict[str, Any],
                                    signing_key: ed25519.Ed25519PrivateKey, kid: object) -> None:
    assert_rejected(call(deployment, mint({**header, "kid": kid}, claims, signing_key)))


def test_missing_kid_is_rejected(deployment: Deployment, header: dict[str, Any], claims: dict[str, Any],
                                 signing_key: ed25519.Ed25519PrivateKey) -> None:
    header.pop("kid")

    assert_rejected(call(deployment, mint(header, claims, signing_key)))


def test_odd_kids_leave_server_healthy(deployment: Deployment, token: str) -> None:
    # The SQL and path kids above must not have reached the database or the file system.
    with deployment.client() as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/.well-known/jwks.json").json()["keys"]
    assert call(deployment, token).status_code == 200


def key_selection_headers(public_jwk: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "jku": {"jku": "https://attacker.invalid/jwks.json"},
        "x5u": {"x5u": "https://attacker.invalid/cert.pem"},
        "jwk": {"jwk": public_jwk},
        "x5c": {"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]},
        "x5t": {"x5t": "dGh1bWJwcmludA"},
        "crit": {"crit": ["exp"]},
        "cty": {"cty": "JWT"},
    }


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c", "x5t", "crit", "cty"])
def test_key_selection_header_is_rejected(deployment: Deployment, header: dict[str, Any],
                                          claims: dict[str, Any], signing_key: ed25519.Ed25519PrivateKey,
                                          name: str) -> None:
    # Signed with the real key, so only the extra header parameter can be the reason for a 401.
    public_jwk = json.loads(ed25519_jwk(signing_key.public_key()))
    extra = key_selection_headers(public_jwk)[name]

    assert_rejected(call(deployment, mint({**header, **extra}, claims, signing_key)))


def test_embedded_attacker_jwk_is_rejected(deployment: Deployment, header: dict[str, Any],
                                           claims: dict[str, Any]) -> None:
    attacker_key = ed25519.Ed25519PrivateKey.generate()
    attacker_jwk = json.loads(ed25519_jwk(attacker_key.public_key()))

    assert_rejected(call(deployment, mint({**header, "jwk": attacker_jwk}, claims, attacker_key)))


def ed25519_jwk(public_key: ed25519.Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return json.dumps({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)})


def test_foreign_key_with_our_kid_is_rejected(deployment: Deployment, header: dict[str, Any],
                                              claims: dict[str, Any]) -> None:
    assert_rejected(call(deployment, mint(header, claims, ed25519.Ed25519PrivateKey.generate())))


def test_other_instance_token_is_rejected(deployment: Deployment, other_instance: Deployment) -> None:
    user = other_instance.seed.user({"acme": ["administration.access", "v2.articles"]})
    foreign_token = other_instance.login(user)
    assert call(other_instance, foreign_token).status_code == 200

    assert_rejected(call(deployment, foreign_token))


def test_other_instance_key_with_our_kid(deployment: Deployment, other_instance: Deployment,
                                         header: dict[str, Any], claims: dict[str, Any]) -> None:
    _, foreign_key = other_instance.seed.active_signing_key()

    assert_rejected(call(deployment, mint(header, claims, foreign_key)))


CLAIM_CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "exp-string": lambda claims: claims.update(exp=str(claims["exp"])),
    "exp-float": lambda claims: claims.update(exp=claims["exp"] + 0.5),
    "exp-missing": lambda claims: claims.pop("exp"),
    "exp-null": lambda claims: claims.update(exp=None),
    "exp-bool": lambda claims: claims.update(exp=True),
    "exp-huge": lambda claims: claims.update(exp=10**30),
    "exp-negative": lambda claims: claims.update(exp=-1),
    "exp-past": lambda claims: claims.update(exp=claims["iat"] - 3600, iat=claims["iat"] - 7200,
                                             nbf=claims["iat"] - 7200),
    "iat-string": lambda claims: claims.update(iat=str(claims["iat"])),
    "iat-missing": lambda claims: claims.pop("iat"),
    "iat-future": lambda claims: claims.update(iat=claims["iat"] + 300, nbf=claims["iat"] + 300),
    "iat-future-only": lambda claims: claims.update(iat=claims["iat"] + 300),
    "nbf-missing": lambda claims: claims.pop("nbf"),
    "nbf-future": lambda claims: claims.update(nbf=claims["iat"] + 300),
    "lifetime-too-long": lambda claims: claims.update(exp=claims["iat"] + 86_400 + 3600),
    "lifetime-year": lambda claims: claims.update(exp=claims["iat"] + 365 * 86_400),
    "iss-wrong": lambda claims: claims.update(iss="urn:reflexblue:someone-else"),
    "iss-prefix": lambda claims: claims.update(iss=claims["iss"] + "x"),
    "iss-case": lambda claims: claims.update(iss=claims["iss"].upper()),
    "iss-missing": lambda claims: claims.pop("iss"),
    "iss-list": lambda claims: claims.update(iss=[claims["iss"]]),
    "aud-wrong": lambda claims: claims.update(aud="another-api"),
    "aud-list": lambda claims: claims.update(aud=[claims["aud"]]),
    "aud-list-with-other": lambda claims: claims.update(aud=[claims["aud"], "another-api"]),
    "aud-missing": lambda claims: claims.pop("aud"),
    "sub-missing": lambda claims: claims.pop("sub"),
    "sub-unknown": lambda claims: claims.update(sub="00000000-0000-4000-8000-000000000000"),
    "sub-number": lambda claims: claims.update(sub=1),
    "jti-missing": lambda claims: claims.pop("jti"),
    "cst-missing": lambda claims: claims.pop("cst"),
    "cst-wrong": lambda claims: claims.update(cst="0000000000000000"),
}


@pytest.mark.parametrize("change", sorted(CLAIM_CHANGES))
def test_bad_claims_are_rejected(deployment: Deployment, header: dict[str, Any], claims: dict[str, Any],
                                 signing_key: ed25519.Ed25519PrivateKey, change: str) -> None:
    CLAIM_CHANGES[change](claims)

    assert_rejected(call(deployment, mint(header, claims, signing_key)))


@pytest.mark.parametrize("payload", [[], "claims", 42, None])
def test_non_object_payload_is_rejected(deployment: Deployment, header: dict[str, Any],
                                        signing_key: ed25519.Ed25519PrivateKey, payload: object) -> None:
    assert_rejected(call(deployment, mint(header, payload, signing_key)))


def test_nested_payload_is_rejected(deployment: Deployment, header: dict[str, Any],
                                    signing_key: ed25519.Ed25519PrivateKey) -> None:
    # 1,400 levels still fit in the 4096-byte token limit, so the server's JSON parser receives them.
    nested = "[" * 1400 + "]" * 1400
    token = sign_eddsa(encode_segment(header), b64url_encode(nested.encode()), signing_key)
    assert len(token) < 4096

    assert_rejected(call(deployment, token))


def test_nested_header_is_rejected(deployment: Deployment, claims: dict[str, Any],
                                   signing_key: ed25519.Ed25519PrivateKey) -> None:
    nested_header = b64url_encode(("[" * 1200 + "]" * 1200).encode())
    token = sign_eddsa(nested_header, encode_segment(claims), signing_key)
    assert len(token) < 4096

    assert_rejected(call(deployment, token))


def test_deeply_nested_payload_is_rejected(deployment: Deployment, header: dict[str, Any],
                                           signing_key: ed25519.Ed25519PrivateKey) -> None:
    nested = "[" * 10_000 + "]" * 10_000
    token = sign_eddsa(encode_segment(header), b64url_encode(nested.encode()), signing_key)

    assert_rejected(call(deployment, token))


def test_oversized_token_is_rejected(deployment: Deployment, header: dict[str, Any], claims: dict[str, Any],
                                     signing_key: ed25519.Ed25519PrivateKey) -> None:
    claims["padding"] = "p" * 4096
    token = mint(header, claims, signing_key)
    assert len(token) > 4096

    response = call(deployment, token)

    assert_rejected(response)
    assert response.json()["reason"] == "too_large"


def test_huge_token_is_rejected(deployment: Deployment) -> None:
    response = call(deployment, "a" * 6000 + "." + "b" * 6000 + "." + "c" * 86)

    assert response.status_code in (401, 431)


@pytest.mark.parametrize("value", [
    b"Bearer \xc3\xa9t\xc3\xa9.abc.def",
    b"Bearer \xff\xfe\xfd",
    b"Bearer abc.\x80\x81.def",
])
def test_non_ascii_header_is_rejected(deployment: Deployment, value: bytes) -> None:
    assert_rejected(call(deployment, value))


@pytest.mark.parametrize("value", ["Bearer a b c", "Bearer a.b.c d", "Bearer {\"alg\":\"none\"}", "Bearer a,b,c",
                                   "Bearer ....", "Bearer ...", "Bearer ="])
def test_malformed_bearer_is_rejected(deployment: Deployment, value: str) -> None:
    response = call(deployment, value.encode("ascii"))

    assert response.status_code == 401
