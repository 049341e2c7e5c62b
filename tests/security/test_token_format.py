"""Malformed tokens: segment counts, non-JSON and non-object parts, deep nesting, duplicate
members, oversized tokens, non-UTF-8 bytes, whitespace inside the token and decorated tokens.

Tokens whose parts are only odd in their format are signed with the deployment's own key, so the
parser is reached and nothing but the format can cause the 401. Deeply nested JSON of thousands
of levels does not fit the default 4096-byte token limit, so a second server of this module
accepts tokens of up to 64 KiB, the maximum of REFLEXBLUE_TOKEN_MAX_BYTES.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.e2e.support import (
    ApiUser,
    Deployment,
    b64url_encode,
    encode_segment,
    sign_eddsa,
    token_header,
    token_payload,
    unique_name,
)

from .attacks import (
    FAILURE_STATUSES,
    FULL_RIGHTS,
    assert_token_rejected,
    fresh_claims,
    raw_request,
    segment,
    sign_raw,
    split_token,
)

#: The largest REFLEXBLUE_TOKEN_MAX_BYTES the settings accept, and the default.
MAX_TOKEN_BYTES = 65_536
DEFAULT_TOKEN_BYTES = 4096


@dataclass
class Roomy:
    """A server that accepts 64 KiB tokens, with a user, its token, a readable path and the signing key."""

    deployment: Deployment
    user: ApiUser
    token: str
    path: str
    private_key: ed25519.Ed25519PrivateKey

    def read(self, token: str | bytes) -> httpx.Response:
        authorization = token if isinstance(token, bytes) else f"Bearer {token}".encode("ascii")
        with self.deployment.client() as client:
            return client.get(self.path, headers={"Authorization": authorization})


@pytest.fixture(scope="module")
def roomy(launch: Callable[..., Deployment]) -> Iterator[Roomy]:
    deployment = launch({"REFLEXBLUE_TOKEN_MAX_BYTES": str(MAX_TOKEN_BYTES)})
    code = deployment.seed.administration(unique_name("roomy"))
    user = deployment.seed.user({code: FULL_RIGHTS})
    token = deployment.login(user)
    _, private_key = deployment.seed.active_signing_key()
    yield Roomy(deployment, user, token, f"/api/v2/administrations/{code}/articles", private_key)
    deployment.stop()


# ---------------------------------------------------------------------------------------------
# Segments


SEGMENT_CASES: dict[str, Callable[[str, str, str], str]] = {
    "one-segment-header": lambda h, p, s: h,
    "one-segment-joined": lambda h, p, s: h + p + s,
    "two-segments": lambda h, p, s: f"{h}.{p}",
    "four-segments": lambda h, p, s: f"{h}.{p}.{s}.{s}",
    "five-segments": lambda h, p, s: f"{h}.{p}.{s}.{h}.{p}",
    "five-segments-jwe-shape": lambda h, p, s: f"{h}..{p}.{s}.{s[:22]}",
    "trailing-dot": lambda h, p, s: f"{h}.{p}.{s}.",
    "leading-dot": lambda h, p, s: f".{h}.{p}.{s}",
    "empty-header": lambda h, p, s: f".{p}.{s}",
    "empty-payload": lambda h, p, s: f"{h}..{s}",
    "empty-signature": lambda h, p, s: f"{h}.{p}.",
    "only-dots": lambda h, p, s: "..",
    "three-dots": lambda h, p, s: "...",
    "doubled-dot": lambda h, p, s: f"{h}..{p}.{s}",
}


@pytest.mark.parametrize("case", sorted(SEGMENT_CASES))
def test_segment_shape_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str, case: str) -> None:
    assert_token_rejected(read_vault(SEGMENT_CASES[case](*split_token(vault_owner_token))))


# ---------------------------------------------------------------------------------------------
# Header and payload that are not JSON objects, signed with the real key


def not_json_texts(document: dict[str, Any]) -> dict[str, str]:
    text = json.dumps(document)
    return {
        "plain-text": "not json at all",
        "empty": "",
        "open-brace": "{",
        "trailing-comma": text[:-1] + ",}",
        "single-quotes": text.replace('"', "'"),
        "comment": "/* x */" + text,
        "trailing-garbage": text + " x",
        "two-objects": text + text,
        "unquoted-keys": "{" + ",".join(f"{key}:{json.dumps(value)}" for key, value in document.items()) + "}",
    }


NOT_JSON_CASES = ["plain-text", "empty", "open-brace", "trailing-comma", "single-quotes", "comment", "trailing-garbage",
                  "two-objects", "unquoted-keys"]


@pytest.mark.parametrize("case", NOT_JSON_CASES)
def test_non_json_header_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                  owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                  case: str) -> None:
    header_text = not_json_texts(owner_header)[case]

    assert_token_rejected(read_vault(sign_raw(header_text, json.dumps(owner_claims), private_key)))


@pytest.mark.parametrize("case", NOT_JSON_CASES)
def test_non_json_payload_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                   owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                   case: str) -> None:
    payload_text = not_json_texts(owner_claims)[case]

    assert_token_rejected(read_vault(sign_raw(json.dumps(owner_header), payload_text, private_key)))


def non_object_values(document: dict[str, Any]) -> dict[str, object]:
    return {
        "array": [],
        "array-of-object": [document],
        "string": "EdDSA",
        "number": 42,
        "float": 1.5,
        "null": None,
        "true": True,
        "false": False,
        "wrapped": {"claims": document},
    }


NON_OBJECT_CASES = ["array", "array-of-object", "string", "number", "float", "null", "true", "false", "wrapped"]


@pytest.mark.parametrize("case", NON_OBJECT_CASES)
def test_non_object_header_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                    owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                    case: str) -> None:
    header_text = json.dumps(non_object_values(owner_header)[case])

    assert_token_rejected(read_vault(sign_raw(header_text, json.dumps(owner_claims), private_key)))


@pytest.mark.parametrize("case", ["array-of-object", "float", "true", "false", "wrapped"])
def test_non_object_payload_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                     owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                     case: str) -> None:
    # tests/e2e covers [], a string, a number and null as the payload.
    payload_text = json.dumps(non_object_values(owner_claims)[case])

    assert_token_rejected(read_vault(sign_raw(json.dumps(owner_header), payload_text, private_key)))


# ---------------------------------------------------------------------------------------------
# Deep nesting


def nested(kind: str, depth: int) -> str:
    """Return JSON text nested ``depth`` levels deep, of arrays or of objects."""
    if kind == "arrays":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "0" + "}" * depth


@pytest.mark.parametrize("kind", ["arrays", "objects"])
def test_nested_header_member_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                       owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                       kind: str) -> None:
    # Inside an otherwise valid header and within the 4096-byte limit, so the JSON parser gets it.
    depth = 1300 if kind == "arrays" else 420
    header_text = json.dumps(owner_header)[:-1] + ', "x": ' + nested(kind, depth) + "}"
    token = sign_raw(header_text, json.dumps(owner_claims), private_key)
    assert len(token) <= DEFAULT_TOKEN_BYTES

    assert_token_rejected(read_vault(token))


@pytest.mark.parametrize("kind", ["arrays", "objects"])
def test_nested_claim_rejected_or_ignored(http: httpx.Client, vault_path: str, owner_header: dict[str, Any],
                                          owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                          kind: str) -> None:
    depth = 1300 if kind == "arrays" else 420
    payload_text = json.dumps(owner_claims)[:-1] + ', "x": ' + nested(kind, depth) + "}"
    token = sign_raw(json.dumps(owner_header), payload_text, private_key)
    assert len(token) <= DEFAULT_TOKEN_BYTES

    # The token carries the owner's real claims, and unknown claims are ignored, so a parser that
    # copes with the depth may accept it. Either way the server must respond, now and afterwards.
    assert http.get(vault_path, headers={"Authorization": f"Bearer {token}"}).status_code in (200, 401)
    assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize("kind", ["arrays", "objects"])
@pytest.mark.parametrize("part", ["whole-header", "header-member", "whole-payload", "claim"])
def test_thousands_of_levels_rejected(roomy: Roomy, kind: str, part: str) -> None:
    header = token_header(roomy.token)
    claims = fresh_claims(token_payload(roomy.token))
    depth = 20_000 if kind == "arrays" else 5_000
    deep = nested(kind, depth)
    texts = {
        "whole-header": (deep, json.dumps(claims)),
        "header-member": (json.dumps(header)[:-1] + ', "x": ' + deep + "}", json.dumps(claims)),
        "whole-payload": (json.dumps(header), deep),
        "claim": (json.dumps(header), json.dumps(claims)[:-1] + ', "x": ' + deep + "}"),
    }
    token = sign_raw(*texts[part], roomy.private_key)
    assert len(token) <= MAX_TOKEN_BYTES

    response = roomy.read(token)

    assert_token_rejected(response)
    assert roomy.read(roomy.token).status_code == 200


# ---------------------------------------------------------------------------------------------
# Duplicate members


def duplicate_header(header: dict[str, Any], name: str, first: object, last: object) -> str:
    """Return header JSON text with member ``name`` twice: ``first`` at the start, ``last`` at the end."""
    others = ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in header.items() if key != name)
    return f"{{{json.dumps(name)}: {json.dumps(first)}, {others}, {json.dumps(name)}: {json.dumps(last)}}}"


@pytest.mark.parametrize("order", ["none-first", "none-last"])
@pytest.mark.parametrize("signature", ["empty", "original", "attacker"])
def test_duplicate_alg_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str,
                                owner_header: dict[str, Any], order: str, signature: str) -> None:
    # The attacker has no private key of the deployment: no header with two alg values may pass.
    first, last = ("none", "EdDSA") if order == "none-first" else ("EdDSA", "none")
    header_segment = segment(duplicate_header(owner_header, "alg", first, last))
    payload_segment = split_token(vault_owner_token)[1]
    signatures = {
        "empty": "",
        "original": split_token(vault_owner_token)[2],
        "attacker": b64url_encode(ed25519.Ed25519PrivateKey.generate().sign(
            f"{header_segment}.{payload_segment}".encode("ascii"))),
    }

    assert_token_rejected(read_vault(f"{header_segment}.{payload_segment}.{signatures[signature]}"))


def test_duplicate_alg_none_last_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                          owner_claims: dict[str, Any],
                                          private_key: ed25519.Ed25519PrivateKey) -> None:
    # Even signed with the real key this fails, because a parser that keeps the last member reads "none".
    header_text = duplicate_header(owner_header, "alg", "EdDSA", "none")

    assert_token_rejected(read_vault(sign_raw(header_text, json.dumps(owner_claims), private_key)))


def duplicate_claims_text(claims: dict[str, Any], name: str, first: object, last: object) -> str:
    others = ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in claims.items() if key != name)
    return f"{{{json.dumps(name)}: {json.dumps(first)}, {others}, {json.dumps(name)}: {json.dumps(last)}}}"


def outcome(response: httpx.Response) -> tuple[int, str]:
    """Return the status and, for a 401, the rejection reason: what a duplicate may change."""
    return response.status_code, response.json().get("reason", "") if response.status_code == 401 else ""


def duplicate_claim_cases(owner_claims: dict[str, Any], attacker_id: str) -> dict[str, tuple[str, object, object]]:
    return {
        "sub-owner-then-attacker": ("sub", owner_claims["sub"], attacker_id),
        "sub-attacker-then-owner": ("sub", attacker_id, owner_claims["sub"]),
        "exp-valid-then-expired": ("exp", owner_claims["exp"], owner_claims["iat"] - 3600),
        "exp-expired-then-valid": ("exp", owner_claims["iat"] - 3600, owner_claims["exp"]),
        "aud-ours-then-other": ("aud", owner_claims["aud"], "another-api"),
        "iss-ours-then-other": ("iss", owner_claims["iss"], "urn:reflexblue:another"),
        "cst-wrong-then-right": ("cst", "0000000000000000", owner_claims["cst"]),
    }


DUPLICATE_CLAIM_CASES = ["sub-owner-then-attacker", "sub-attacker-then-owner", "exp-valid-then-expired",
                         "exp-expired-then-valid", "aud-ours-then-other", "iss-ours-then-other", "cst-wrong-then-right"]


@pytest.mark.parametrize("case", DUPLICATE_CLAIM_CASES)
def test_duplicate_claim_never_uses_first(http: httpx.Client, vault_path: str, owner_header: dict[str, Any],
                                          owner_claims: dict[str, Any], attacker: ApiUser,
                                          private_key: ed25519.Ed25519PrivateKey, case: str) -> None:
    # RFC 7519 section 4 allows rejecting duplicates or keeping the last one. The token must behave
    # like one of those two, never like the first member, which another parser might keep.
    name, first, last = duplicate_claim_cases(owner_claims, attacker.id)[case]
    header_text = json.dumps(owner_header)
    duplicate = sign_raw(header_text, duplicate_claims_text(owner_claims, name, first, last), private_key)
    last_only = sign_raw(header_text, json.dumps({**owner_claims, name: last}), private_key)

    def read(token: str) -> httpx.Response:
        return http.get(vault_path, headers={"Authorization": f"Bearer {token}"})

    assert outcome(read(duplicate)) in {(401, "malformed"), (401, "invalid_claims"), outcome(read(last_only))}


# ---------------------------------------------------------------------------------------------
# Size


def padded_token(header: dict[str, Any], claims: dict[str, Any], key: ed25519.Ed25519PrivateKey, size: int) -> str:
    """Return a valid token of exactly ``size`` bytes, filled with an extra claim."""
    claims = {**claims, "pad": ""}
    token = sign_eddsa(encode_segment(header), encode_segment(claims), key)
    for length in range((size - len(token)) * 3 // 4 - 4, (size - len(token)) * 3 // 4 + 4):
        claims["pad"] = "p" * max(length, 0)
        token = sign_eddsa(encode_segment(header), encode_segment(claims), key)
        if len(token) == size:
            return token
    raise AssertionError(f"no padding gives a token of {size} bytes")


def test_token_at_size_limit_accepted(http: httpx.Client, vault_path: str, owner_header: dict[str, Any],
                                      owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey) -> None:
    token = padded_token(owner_header, owner_claims, private_key, DEFAULT_TOKEN_BYTES)

    assert http.get(vault_path, headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize("size", [DEFAULT_TOKEN_BYTES + 1, DEFAULT_TOKEN_BYTES + 4, 16 * 1024, 64 * 1024])
def test_oversized_token_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                  owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                  size: int) -> None:
    response = read_vault(padded_token(owner_header, owner_claims, private_key, size))

    assert_token_rejected(response)
    assert response.json()["reason"] == "too_large"


def test_roomy_limit_is_exact(roomy: Roomy) -> None:
    claims = fresh_claims(token_payload(roomy.token))
    header = token_header(roomy.token)
    at_limit = padded_token(header, claims, roomy.private_key, MAX_TOKEN_BYTES)
    over_limit = padded_token(header, fresh_claims(claims), roomy.private_key, MAX_TOKEN_BYTES + 1)

    assert roomy.read(at_limit).status_code == 200
    assert_token_rejected(roomy.read(over_limit))
    assert roomy.read(over_limit).json()["reason"] == "too_large"


@pytest.mark.parametrize("server", ["shared", "roomy"])
def test_one_megabyte_token_rejected(deployment: Deployment, roomy: Roomy, vault_path: str, vault_owner_token: str,
                                     server: str) -> None:
    # The HTTP layer may refuse a 1 MB header line itself: any failure status is fine, never 200 or 5xx.
    header_segment, payload_segment, signature_segment = split_token(vault_owner_token)
    token = f"{header_segment}.{payload_segment}{'A' * 1024 * 1024}.{signature_segment}"
    port = deployment.server.port if server == "shared" else roomy.deployment.server.port

    response = raw_request(port, "GET", vault_path, [("Authorization", b"Bearer " + token.encode("ascii"))])

    assert response.status in FAILURE_STATUSES
    assert 400 <= response.status < 500


# ---------------------------------------------------------------------------------------------
# Bytes that are not UTF-8, or JSON that is not UTF-8


@pytest.mark.parametrize("raw_bytes", [b"\x80", b"\xff\xfe", b"\xc3\xa9", b"\xc0\xae", b"\xed\xa0\x80"],
                         ids=["continuation", "utf16-bom", "e-acute", "overlong-dot", "surrogate"])
@pytest.mark.parametrize("position", ["header", "signature"])
def test_non_utf8_bytes_in_token_rejected(deployment: Deployment, vault_path: str, vault_owner_token: str,
                                          raw_bytes: bytes, position: str) -> None:
    header_segment, payload_segment, signature_segment = (part.encode("ascii")
                                                          for part in split_token(vault_owner_token))
    if position == "header":
        token = header_segment[:10] + raw_bytes + header_segment[10:] + b"." + payload_segment + b"." + signature_segment
    else:
        token = header_segment + b"." + payload_segment + b"." + signature_segment + raw_bytes

    response = raw_request(deployment.server.port, "GET", vault_path, [("Authorization", b"Bearer " + token)])

    assert response.status in (400, 401)
    assert response.status == 400 or response.json()["reason"] == "malformed"


def encoded_json(text: str, encoding: str) -> bytes:
    """Return ``text`` in ``encoding``; "invalid-utf-8" puts a lone 0xE9 byte before the closing '"}'."""
    if encoding == "utf-8-bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8")
    if encoding == "invalid-utf-8":
        assert text.endswith('"}')
        return text.encode("utf-8")[:-2] + b'\xe9"}'
    return text.encode(encoding)


#: Encodings a JSON parser may detect on its own. The header holds only ASCII, so Latin-1 would
#: not change it; the payload carries an "é" and is also tried in Latin-1 and invalid UTF-8.
HEADER_ENCODINGS = ["utf-16", "utf-16-le", "utf-32", "utf-8-bom"]
PAYLOAD_ENCODINGS = [*HEADER_ENCODINGS, "latin-1", "invalid-utf-8"]


@pytest.mark.parametrize("encoding", HEADER_ENCODINGS)
def test_non_utf8_header_json_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                       owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                       encoding: str) -> None:
    # RFC 7515 section 5.2 requires UTF-8 JSON. Signed with the real key, so only the encoding is wrong.
    header_bytes = encoded_json(json.dumps(owner_header), encoding)

    assert_token_rejected(read_vault(sign_raw(header_bytes, json.dumps(owner_claims), private_key)))


@pytest.mark.parametrize("encoding", PAYLOAD_ENCODINGS)
def test_non_utf8_payload_json_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                        owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                        encoding: str) -> None:
    payload_text = json.dumps({**owner_claims, "note": "é"}, ensure_ascii=False)
    payload_bytes = encoded_json(payload_text, encoding)

    assert_token_rejected(read_vault(sign_raw(json.dumps(owner_header), payload_bytes, private_key)))


# ---------------------------------------------------------------------------------------------
# Whitespace inside the token, and decorated tokens


INNER_WHITESPACE = {
    "space": b" ",
    "tab": b"\t",
    "two-spaces": b"  ",
    "vertical-tab": b"\x0b",
    "form-feed": b"\x0c",
    "nul": b"\x00",
    "bare-lf": b"\n",
    "bare-cr": b"\r",
    "obs-fold": b"\r\n ",
    "obs-fold-tab": b"\r\n\t",
}


@pytest.mark.parametrize("where", ["in-header", "before-dot", "in-signature"])
@pytest.mark.parametrize("whitespace", sorted(INNER_WHITESPACE))
def test_whitespace_inside_token_rejected(deployment: Deployment, vault_path: str, vault_owner_token: str,
                                          whitespace: str, where: str) -> None:
    token = vault_owner_token.encode("ascii")
    first_dot = token.index(b".")
    cut = {"in-header": 12, "before-dot": first_dot, "in-signature": len(token) - 10}[where]
    value = b"Bearer " + token[:cut] + INNER_WHITESPACE[whitespace] + token[cut:]

    response = raw_request(deployment.server.port, "GET", vault_path, [("Authorization", value)])

    assert response.status in (400, 401), response.text[:300]


def decorated_values(token: str) -> dict[str, str]:
    return {
        "double-quotes": f'Bearer "{token}"',
        "single-quotes": f"Bearer '{token}'",
        "angle-brackets": f"Bearer <{token}>",
        "parentheses": f"Bearer ({token})",
        "bearer-twice": f"Bearer Bearer {token}",
        "bearer-colon": f"Bearer: {token}",
        "bearer-equals": f"Bearer={token}",
        "key-value": f"Bearer token={token}",
        "quoted-key-value": f'Bearer token="{token}"',
        "semicolon": f"Bearer {token};",
        "comma": f"Bearer {token},",
        "token-twice": f"Bearer {token} {token}",
        "json": f'Bearer {{"token": "{token}"}}',
        "percent-encoded-dots": "Bearer " + token.replace(".", "%2E"),
        "backslash": f"Bearer {token}\\",
        "no-scheme-space": f"Bearer{token}",
    }


DECORATED_CASES = ["double-quotes", "single-quotes", "angle-brackets", "parentheses", "bearer-twice", "bearer-colon",
                   "bearer-equals", "key-value", "quoted-key-value", "semicolon", "comma", "token-twice", "json",
                   "percent-encoded-dots", "backslash", "no-scheme-space"]


@pytest.mark.parametrize("case", DECORATED_CASES)
def test_decorated_token_rejected(read_vault: Callable[..., httpx.Response], vault_owner_token: str,
                                  case: str) -> None:
    response = read_vault(decorated_values(vault_owner_token)[case].encode("ascii"))

    assert response.status_code == 401
    assert response.json()["reason"] in ("malformed", "missing")


@pytest.mark.parametrize("token", ["a" * 5000, "a." * 2500], ids=["one-segment", "many-segments"])
def test_oversized_malformed_token_reports_size(deployment: Deployment, token: str) -> None:
    # The size limit applies before any parsing, so the reason is the size, whatever the shape.
    with deployment.client(token) as client:
        response = client.get("/api/v2/administrations")

    assert response.status_code == 401
    assert response.json()["reason"] == "too_large"
