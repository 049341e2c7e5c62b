"""Transport attacks: how the token travels. Scheme spellings, whitespace, other schemes, tokens
outside the Authorization header, two Authorization headers and comma-joined tokens.

The contract takes the token only from ``Authorization: Bearer <token>``, with the scheme in any
letter case. A token anywhere else is ignored, so the request gets the 401 for a missing token.
Requests whose exact bytes matter go over a raw socket, because httpx merges or normalises them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.support import Deployment, unique_name

from .attacks import assert_missing_token, assert_token_rejected, raw_request


@pytest.fixture(scope="module")
def home_path(home: str) -> str:
    return f"/api/v2/administrations/{home}/articles"


def forged(token: str) -> str:
    """Return ``token`` with a changed signature: well formed, but invalid."""
    head, signature = token.rsplit(".", 1)
    return f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"


# ---------------------------------------------------------------------------------------------
# Scheme and whitespace


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEARER", "Bearer"])
def test_scheme_casing_keeps_checks(http: httpx.Client, home_path: str, attacker_token: str, scheme: str) -> None:
    # Any casing is accepted, and a bad token under any casing is still checked, not ignored.
    valid = http.get(home_path, headers={"Authorization": f"{scheme} {attacker_token}"})
    invalid = http.get(home_path, headers={"Authorization": f"{scheme} {forged(attacker_token)}"})

    assert valid.status_code == 200
    assert_token_rejected(invalid)


#: Authorization values and the statuses allowed for them. RFC 6750 section 2.1 reads
#: "Bearer" 1*SP b64token; the HTTP layer removes spaces and tabs around the whole value.
WHITESPACE_CASES: dict[str, tuple[str, frozenset[int]]] = {
    "two-spaces": ("Bearer  {token}", frozenset({200})),
    "many-spaces": ("Bearer" + " " * 40 + "{token}", frozenset({200})),
    "leading-space": (" Bearer {token}", frozenset({200})),
    "trailing-spaces": ("Bearer {token}   ", frozenset({200})),
    "trailing-tab": ("Bearer {token}\t", frozenset({200})),
    "tab-separator": ("Bearer\t{token}", frozenset({401})),
    "space-then-tab": ("Bearer \t{token}", frozenset({200, 401})),
    "no-separator": ("Bearer{token}", frozenset({401})),
    "scheme-only": ("Bearer", frozenset({401})),
    "scheme-and-space": ("Bearer ", frozenset({401})),
    "nbsp-separator": ("Bearer\xa0{token}", frozenset({400, 401})),
}


@pytest.mark.parametrize("case", sorted(WHITESPACE_CASES))
def test_scheme_whitespace_handled(deployment: Deployment, home_path: str, attacker_token: str, case: str) -> None:
    template, allowed = WHITESPACE_CASES[case]
    value = template.format(token=attacker_token).encode("latin-1")

    response = raw_request(deployment.server.port, "GET", home_path, [("Authorization", value)])

    assert response.status in allowed, response.text[:300]


OTHER_SCHEMES = ["Basic", "Token", "JWT", "Digest", "MAC", "Negotiate", "HOBA", "DPoP", "Bearer-Token", "XBearer",
                 "Bearer2", "Bearer:", "OAuth", "AWS4-HMAC-SHA256"]


@pytest.mark.parametrize("scheme", OTHER_SCHEMES)
def test_other_scheme_ignored(http: httpx.Client, home_path: str, attacker_token: str, scheme: str) -> None:
    response = http.get(home_path, headers={"Authorization": f"{scheme} {attacker_token}"})

    assert_missing_token(response)


def test_basic_credentials_ignored(http: httpx.Client, home_path: str, attacker_token: str) -> None:
    # Some clients put a token in the password of Basic authentication.
    for credentials in (f"token:{attacker_token}", f"{attacker_token}:", f"Bearer:{attacker_token}"):
        encoded = base64.b64encode(credentials.encode("ascii")).decode("ascii")

        assert_missing_token(http.get(home_path, headers={"Authorization": f"Basic {encoded}"}))


# ---------------------------------------------------------------------------------------------
# The token outside the Authorization header


@pytest.mark.parametrize("parameter", ["access_token", "token", "bearer", "jwt", "authorization", "id_token"])
@pytest.mark.parametrize("form", ["plain", "with-scheme"])
def test_query_token_ignored(http: httpx.Client, home_path: str, attacker_token: str, parameter: str,
                             form: str) -> None:
    value = attacker_token if form == "plain" else f"Bearer {attacker_token}"

    assert_missing_token(http.get(home_path, params={parameter: value}))


def test_query_token_does_not_rescue_bad_header(http: httpx.Client, home_path: str, attacker_token: str) -> None:
    response = http.get(home_path, params={"access_token": attacker_token},
                        headers={"Authorization": f"Bearer {forged(attacker_token)}"})

    assert_token_rejected(response)


TOKEN_HEADERS = ["X-Access-Token", "X-Auth-Token", "X-Authorization", "X-Forwarded-Authorization",
                 "X-Original-Authorization", "X-Amzn-Oidc-Accesstoken", "X-Api-Key", "Authentication",
                 "Proxy-Authorization", "X-Forwarded-Access-Token", "X-Jwt-Assertion"]


@pytest.mark.parametrize("name", TOKEN_HEADERS)
def test_other_header_token_ignored(http: httpx.Client, home_path: str, attacker_token: str, name: str) -> None:
    assert_missing_token(http.get(home_path, headers={name: f"Bearer {attacker_token}"}))
    assert_missing_token(http.get(home_path, headers={name: attacker_token}))


@pytest.mark.parametrize("cookie", ["access_token", "token", "jwt", "session", "Authorization", "Bearer", "auth"])
def test_cookie_token_ignored(http: httpx.Client, home_path: str, attacker_token: str, cookie: str) -> None:
    assert_missing_token(http.get(home_path, headers={"Cookie": f"{cookie}={attacker_token}"}))
    assert_missing_token(http.get(home_path, headers={"Cookie": f'{cookie}="Bearer {attacker_token}"'}))


def body_forms(token: str) -> dict[str, tuple[bytes, str]]:
    """Request bodies that carry the token, with their content types."""
    article = {"code": unique_name("BODY"), "description": "sent with the token in the body"}
    boundary = "reflexblue-boundary"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"access_token\"\r\n\r\n{token}\r\n"
                 f"--{boundary}--\r\n").encode("ascii")
    return {
        "form": (f"access_token={token}&code={article['code']}&description=x".encode("ascii"),
                 "application/x-www-form-urlencoded"),
        "json-member": (json.dumps({**article, "access_token": token}).encode(), "application/json"),
        "json-authorization": (json.dumps({**article, "Authorization": f"Bearer {token}"}).encode(),
                               "application/json"),
        "multipart": (multipart, f"multipart/form-data; boundary={boundary}"),
    }


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
@pytest.mark.parametrize("form", ["form", "json-member", "json-authorization", "multipart"])
def test_body_token_ignored(http: httpx.Client, home_path: str, attacker_token: str, method: str,
                            form: str) -> None:
    content, content_type = body_forms(attacker_token)[form]
    path = home_path if method == "POST" else f"{home_path}/00000000-0000-4000-8000-000000000000"

    response = http.request(method, path, content=content, headers={"Content-Type": content_type})

    assert_missing_token(response)


def test_body_token_creates_nothing(http: httpx.Client, home_path: str, attacker_token: str) -> None:
    def count() -> int:
        listed = http.get(home_path, params={"limit": 1000}, headers={"Authorization": f"Bearer {attacker_token}"})
        assert listed.status_code == 200
        return len(listed.json()["items"])

    before = count()
    for content, content_type in body_forms(attacker_token).values():
        http.post(home_path, content=content, headers={"Content-Type": content_type})

    assert count() == before


# ---------------------------------------------------------------------------------------------
# Two Authorization headers, and two tokens in one header


def two_header_cases(attacker_token: str, owner_token: str) -> dict[str, list[tuple[str, bytes]]]:
    def bearer(token: str) -> bytes:
        return f"Bearer {token}".encode("ascii")

    return {
        "attacker-then-owner": [("Authorization", bearer(attacker_token)), ("Authorization", bearer(owner_token))],
        "owner-then-attacker": [("Authorization", bearer(owner_token)), ("Authorization", bearer(attacker_token))],
        "owner-then-garbage": [("Authorization", bearer(owner_token)), ("Authorization", b"Bearer garbage")],
        "garbage-then-owner": [("Authorization", b"Bearer garbage"), ("Authorization", bearer(owner_token))],
        "owner-twice": [("Authorization", bearer(owner_token)), ("Authorization", bearer(owner_token))],
        "empty-then-owner": [("Authorization", b""), ("Authorization", bearer(owner_token))],
        "owner-then-empty": [("Authorization", bearer(owner_token)), ("Authorization", b"")],
        "basic-then-owner": [("Authorization", b"Basic dXNlcjpwYXNz"), ("Authorization", bearer(owner_token))],
        "mixed-case-names": [("authorization", bearer(attacker_token)), ("AUTHORIZATION", bearer(owner_token))],
        "three-headers": [("Authorization", bearer(attacker_token)), ("Authorization", bearer(owner_token)),
                          ("Authorization", bearer(attacker_token))],
    }


TWO_HEADER_CASES = ["attacker-then-owner", "owner-then-attacker", "owner-then-garbage", "garbage-then-owner",
                    "owner-twice", "empty-then-owner", "owner-then-empty", "basic-then-owner", "mixed-case-names",
                    "three-headers"]


@pytest.mark.parametrize("target", ["vault", "home"])
@pytest.mark.parametrize("case", TWO_HEADER_CASES)
def test_two_authorization_headers_rejected(deployment: Deployment, vault_path: str, home_path: str,
                                            vault_record: dict[str, Any], attacker_token: str,
                                            vault_owner_token: str, case: str, target: str) -> None:
    headers = two_header_cases(attacker_token, vault_owner_token)[case]
    path = vault_path if target == "vault" else home_path

    response = raw_request(deployment.server.port, "GET", path, headers)

    assert response.status in (400, 401)
    assert vault_record["code"] not in response.text
    assert '"items"' not in response.text


def comma_joined(first: str, second: str) -> dict[str, str]:
    return {
        "bearer-comma-space": f"Bearer {first}, Bearer {second}",
        "bearer-comma": f"Bearer {first},Bearer {second}",
        "tokens-comma-space": f"Bearer {first}, {second}",
        "tokens-comma": f"Bearer {first},{second}",
        "bearer-twice-space": f"Bearer {first} Bearer {second}",
        "basic-comma-bearer": f"Basic dXNlcjpwYXNz, Bearer {second}",
        "bearer-semicolon": f"Bearer {first}; Bearer {second}",
    }


COMMA_CASES = ["bearer-comma-space", "bearer-comma", "tokens-comma-space", "tokens-comma", "bearer-twice-space",
               "basic-comma-bearer", "bearer-semicolon"]


@pytest.mark.parametrize("order", ["attacker-first", "owner-first"])
@pytest.mark.parametrize("case", COMMA_CASES)
def test_comma_joined_tokens_rejected(read_vault: Callable[..., httpx.Response], attacker_token: str,
                                      vault_owner_token: str, case: str, order: str) -> None:
    first, second = ((attacker_token, vault_owner_token) if order == "attacker-first"
                     else (vault_owner_token, attacker_token))

    response = read_vault(comma_joined(first, second)[case].encode("ascii"))

    assert response.status_code == 401
    assert response.json()["reason"] in ("malformed", "missing")
