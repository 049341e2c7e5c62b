"""Algorithm attacks: alg none, HMAC keyed with the public key, foreign algorithms, signature tampering.

Every forged token carries the claims of ``vault_owner`` and reads the vault, so a token that got
through would return the vault's data. The tests in tests/e2e/test_forged_tokens.py check the
basic forms on a token's own claims. These go further: every casing with every signature form,
HS384, more key encodings, tokens really signed with RSA and EC keys, Ed25519 signature
malleability and non-canonical base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.e2e.support import b64url_decode, b64url_encode, encode_segment, sign_eddsa

from .attacks import assert_token_rejected, mint_token, signature_bytes, split_token

#: The order of the Ed25519 group (RFC 8032 section 5.1): a signature's S must be below it.
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


@pytest.fixture
def owner_segments(owner_header: dict[str, Any], owner_claims: dict[str, Any]) -> tuple[str, str]:
    return encode_segment(owner_header), encode_segment(owner_claims)


# ---------------------------------------------------------------------------------------------
# alg none


NONE_SPELLINGS = ["none", "None", "NONE", "nOnE"]
NONE_SIGNATURES = {
    "empty": lambda signature: ".",
    "absent": lambda signature: "",
    "garbage": lambda signature: "." + b64url_encode(b"not a signature"),
    "original": lambda signature: "." + signature,
}


@pytest.mark.parametrize("signature_form", sorted(NONE_SIGNATURES))
@pytest.mark.parametrize("algorithm", NONE_SPELLINGS)
def test_alg_none_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str,
                           owner_header: dict[str, Any], owner_claims: dict[str, Any], algorithm: str,
                           signature_form: str) -> None:
    signature = split_token(vault_owner_token)[2]
    unsigned = f"{encode_segment({**owner_header, 'alg': algorithm})}.{encode_segment(owner_claims)}"

    assert_token_rejected(read_vault(unsigned + NONE_SIGNATURES[signature_form](signature)))


@pytest.mark.parametrize("algorithm", NONE_SPELLINGS)
def test_alg_none_without_kid_rejected(read_vault: Callable[..., httpx.Response], owner_claims: dict[str, Any],
                                       algorithm: str) -> None:
    header = {"alg": algorithm, "typ": "JWT"}

    assert_token_rejected(read_vault(f"{encode_segment(header)}.{encode_segment(owner_claims)}."))


@pytest.mark.parametrize("algorithm", [None, "", " none", "none ", "none\u0000", "EdDSA\u0000", ["none"], ["EdDSA"],
                                       {"alg": "EdDSA"}, 0, True], ids=repr)
def test_odd_alg_value_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                algorithm: object) -> None:
    # Signed with the real key, so only the alg value can be the reason for the 401.
    assert_token_rejected(read_vault(mint_token({**owner_header, "alg": algorithm}, owner_claims, private_key)))


def test_missing_alg_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                              owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey) -> None:
    header = {name: value for name, value in owner_header.items() if name != "alg"}

    assert_token_rejected(read_vault(mint_token(header, owner_claims, private_key)))


# ---------------------------------------------------------------------------------------------
# HMAC keyed with the public key (algorithm confusion)


@pytest.fixture(scope="module")
def public_key_encodings(http: httpx.Client, signing_key: tuple[str, ed25519.Ed25519PrivateKey]) -> dict[str, bytes]:
    """Every form of the server's public key that an attacker can copy from the JWKS as an HMAC secret."""
    kid = signing_key[0]
    document = http.get("/.well-known/jwks.json").json()
    jwk = next(key for key in document["keys"] if key["kid"] == kid)
    public_key = ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # RFC 7638 thumbprint input: required members only, sorted, without whitespace.
    thumbprint_input = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"))
    return {
        "raw-32-bytes": b64url_decode(jwk["x"]),
        "pem": pem,
        "pem-without-newline": pem.rstrip(b"\n"),
        "jwks-x": jwk["x"].encode("ascii"),
        "jwk-json": json.dumps(jwk).encode(),
        "jwk-json-compact": json.dumps(jwk, separators=(",", ":")).encode(),
        "jwk-thumbprint-input": thumbprint_input.encode(),
        "jwks-document": json.dumps(document).encode(),
        "kid": kid.encode(),
        "empty": b"",
    }


HMAC_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
KEY_ENCODINGS = ["raw-32-bytes", "pem", "pem-without-newline", "jwks-x", "jwk-json", "jwk-json-compact",
                 "jwk-thumbprint-input", "jwks-document", "kid", "empty"]


@pytest.mark.parametrize("encoding", KEY_ENCODINGS)
@pytest.mark.parametrize("algorithm", sorted(HMAC_DIGESTS))
def test_hmac_with_public_key_rejected(read_vault: Callable[..., httpx.Response], public_key_encodings: dict[str, bytes],
                                       owner_header: dict[str, Any], owner_claims: dict[str, Any], algorithm: str,
                                       encoding: str) -> None:
    signing_input = f"{encode_segment({**owner_header, 'alg': algorithm})}.{encode_segment(owner_claims)}"
    digest = hmac.new(public_key_encodings[encoding], signing_input.encode("ascii"), HMAC_DIGESTS[algorithm]).digest()

    assert_token_rejected(read_vault(f"{signing_input}.{b64url_encode(digest)}"))


@pytest.mark.parametrize("algorithm", sorted(HMAC_DIGESTS))
def test_hmac_under_eddsa_header_rejected(read_vault: Callable[..., httpx.Response],
                                          public_key_encodings: dict[str, bytes], owner_segments: tuple[str, str],
                                          algorithm: str) -> None:
    # The header names the right algorithm, but the signature is an HMAC with the public key.
    signing_input = ".".join(owner_segments)
    digest = hmac.new(public_key_encodings["pem"], signing_input.encode("ascii"), HMAC_DIGESTS[algorithm]).digest()

    assert_token_rejected(read_vault(f"{signing_input}.{b64url_encode(digest)}"))


# ---------------------------------------------------------------------------------------------
# Other asymmetric algorithms


FOREIGN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K",
                      "Ed25519", "Ed448", "eddsa", "EDDSA", "EdDSA ", "HS256"]


@pytest.mark.parametrize("algorithm", FOREIGN_ALGORITHMS)
def test_foreign_alg_on_real_token_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str,
                                            algorithm: str) -> None:
    header_segment, payload_segment, signature_segment = split_token(vault_owner_token)
    header = json.loads(b64url_decode(header_segment))
    header["alg"] = algorithm

    assert_token_rejected(read_vault(f"{encode_segment(header)}.{payload_segment}.{signature_segment}"))


@pytest.mark.parametrize("algorithm", ["Ed25519", "eddsa", "EDDSA"])
def test_eddsa_alias_with_real_key_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                            owner_claims: dict[str, Any],
                                            private_key: ed25519.Ed25519PrivateKey, algorithm: str) -> None:
    # A valid Ed25519 signature under another algorithm name: only the configured name is accepted.
    assert_token_rejected(read_vault(mint_token({**owner_header, "alg": algorithm}, owner_claims, private_key)))


@pytest.fixture(scope="module")
def attacker_keys() -> dict[str, Any]:
    """Asymmetric private keys an attacker controls, per algorithm family."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "RS": rsa_key,
        "PS": rsa_key,
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "ES512": ec.generate_private_key(ec.SECP521R1()),
        "ES256K": ec.generate_private_key(ec.SECP256K1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }


@pytest.mark.parametrize("algorithm", ["RS256", "RS512", "PS256", "ES256", "ES384", "ES512", "ES256K", "EdDSA"])
def test_attacker_signed_token_rejected(read_vault: Callable[..., httpx.Response], attacker_keys: dict[str, Any],
                                        owner_header: dict[str, Any], owner_claims: dict[str, Any],
                                        algorithm: str) -> None:
    key = attacker_keys.get(algorithm) or attacker_keys[algorithm[:2]]
    token = jwt.encode(owner_claims, key, algorithm=algorithm, headers={"kid": owner_header["kid"], "typ": "JWT"})

    assert_token_rejected(read_vault(token))


# ---------------------------------------------------------------------------------------------
# Tampered signatures


def test_every_bit_flip_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str) -> None:
    head = vault_owner_token.rsplit(".", 1)[0]
    signature = signature_bytes(vault_owner_token)
    statuses = {}
    for position in range(len(signature)):
        for bit in (0x01, 0x80):
            flipped = bytearray(signature)
            flipped[position] ^= bit
            statuses[(position, bit)] = read_vault(f"{head}.{b64url_encode(bytes(flipped))}").status_code

    assert {key: status for key, status in statuses.items() if status != 401} == {}


SIGNATURE_LENGTH_CHANGES: dict[str, Callable[[bytes], bytes]] = {
    "stripped": lambda signature: b"",
    "one-byte-short": lambda signature: signature[:-1],
    "half": lambda signature: signature[:32],
    "one-byte-long": lambda signature: signature + b"\x00",
    "doubled": lambda signature: signature + signature,
    "r-only": lambda signature: signature[:32] + bytes(32),
    "s-only": lambda signature: bytes(32) + signature[32:],
    "swapped-halves": lambda signature: signature[32:] + signature[:32],
    "all-ones": lambda signature: b"\xff" * 64,
}


@pytest.mark.parametrize("change", sorted(SIGNATURE_LENGTH_CHANGES))
def test_reshaped_signature_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str,
                                     change: str) -> None:
    head = vault_owner_token.rsplit(".", 1)[0]
    changed = SIGNATURE_LENGTH_CHANGES[change](signature_bytes(vault_owner_token))

    assert_token_rejected(read_vault(f"{head}.{b64url_encode(changed)}"))


def test_malleated_ed25519_signature_rejected(read_vault: Callable[..., httpx.Response], http: httpx.Client,
                                              vault_path: str, vault_owner_token: str) -> None:
    # S + L verifies in lax Ed25519 implementations. RFC 8032 requires S < L, so it must fail.
    head = vault_owner_token.rsplit(".", 1)[0]
    signature = signature_bytes(vault_owner_token)
    s_value = int.from_bytes(signature[32:], "little") + ED25519_ORDER
    malleated = signature[:32] + s_value.to_bytes(32, "little")

    assert http.get(vault_path, headers={"Authorization": f"Bearer {vault_owner_token}"}).status_code == 200
    assert_token_rejected(read_vault(f"{head}.{b64url_encode(malleated)}"))


def test_spliced_signature_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str,
                                    owner_header: dict[str, Any], owner_claims: dict[str, Any],
                                    attacker_token: str) -> None:
    # Both tokens are valid and share the header, but a signature covers only its own payload.
    owner_head = vault_owner_token.rsplit(".", 1)[0]
    attacker_signature = split_token(attacker_token)[2]
    forged_head = f"{encode_segment(owner_header)}.{encode_segment(owner_claims)}"

    assert_token_rejected(read_vault(f"{owner_head}.{attacker_signature}"))
    assert_token_rejected(read_vault(f"{forged_head}.{split_token(vault_owner_token)[2]}"))


# ---------------------------------------------------------------------------------------------
# Base64 variants of a valid token


def test_padded_signature_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str) -> None:
    # RFC 7515 section 2 encodes every segment without '=' padding. The 64-byte signature has 86
    # characters, so '==' makes it decodable: a second spelling of the same token.
    assert len(split_token(vault_owner_token)[2]) % 4 == 2

    assert_token_rejected(read_vault(vault_owner_token + "=="))


@pytest.mark.parametrize("padding", ["=", "===", "===="])
def test_odd_signature_padding_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str,
                                        padding: str) -> None:
    assert_token_rejected(read_vault(vault_owner_token + padding))


@pytest.mark.parametrize("part", ["header", "payload"])
def test_padded_header_or_payload_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str,
                                           part: str) -> None:
    header_segment, payload_segment, signature_segment = split_token(vault_owner_token)
    padded = {"header": f"{header_segment}==.{payload_segment}", "payload": f"{header_segment}.{payload_segment}=="}

    assert_token_rejected(read_vault(f"{padded[part]}.{signature_segment}"))


def test_noncanonical_signature_bits_rejected(read_vault: Callable[..., httpx.Response],
                                              vault_owner_token: str) -> None:
    # The last of 86 characters carries 2 bits of the signature and 4 unused bits. Setting an
    # unused bit changes the text but not the decoded bytes.
    head, signature = vault_owner_token.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    changed = signature[:-1] + alphabet[last ^ 0b0001]
    assert b64url_decode(changed) == b64url_decode(signature)

    assert_token_rejected(read_vault(f"{head}.{changed}"))


def test_standard_alphabet_payload_rejected(read_vault: Callable[..., httpx.Response], http: httpx.Client,
                                            vault_path: str, owner_header: dict[str, Any],
                                            owner_claims: dict[str, Any],
                                            private_key: ed25519.Ed25519PrivateKey) -> None:
    # Signed with the real key over the standard-alphabet text, so only the alphabet is wrong.
    # Base64 of ASCII JSON contains '-' or '_' only where a '~', '>' or '?' ends a 3-byte group.
    # The header has none of them, so an extra claim of tildes grows until the payload has one.
    header_segment = encode_segment(owner_header)
    for length in range(1, 4):
        payload = json.dumps({**owner_claims, "note": "~" * length}).encode("utf-8")
        if {"-", "_"} & set(b64url_encode(payload)):
            break
    urlsafe_token = sign_eddsa(header_segment, b64url_encode(payload), private_key)
    standard_token = sign_eddsa(header_segment, base64.b64encode(payload).decode("ascii").rstrip("="), private_key)
    assert standard_token != urlsafe_token

    assert http.get(vault_path, headers={"Authorization": f"Bearer {urlsafe_token}"}).status_code == 200
    assert_token_rejected(read_vault(standard_token))
