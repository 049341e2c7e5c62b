"""Key selection attacks: hostile kid values, remote key URLs, embedded keys and crit.

The jku and x5u tests point at a recording HTTP server that this module starts on 127.0.0.1 and
that would serve the attacker's key set. The server must never contact it. Most tokens are
signed twice: with the attacker's own key, as a real attack would be, and with the deployment's
own key, so that the header parameter under test is the only thing wrong with the token.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from tests.e2e.support import b64url_encode

from .attacks import assert_token_rejected, mint_token

#: Seconds to wait for a fetch that a server might start after it has responded.
LATE_FETCH_WAIT = 1.0


class KeyServer:
    """An HTTP server on 127.0.0.1 that serves the attacker's JWK Set and records every request."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.requests: list[str] = []
        body = json.dumps(jwks).encode()
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorded.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="key-server", daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def okp_jwk(public_key: ed25519.Ed25519PublicKey, kid: str | None = None) -> dict[str, Any]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw), "use": "sig", "alg": "EdDSA"}
    if kid is not None:
        jwk["kid"] = kid
    return jwk


@pytest.fixture(scope="module")
def attacker_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def key_server(attacker_key: ed25519.Ed25519PrivateKey,
               signing_key: tuple[str, ed25519.Ed25519PrivateKey]) -> Iterator[KeyServer]:
    """The attacker's key server; it publishes the attacker's key under the deployment's own kid."""
    server = KeyServer({"keys": [okp_jwk(attacker_key.public_key(), signing_key[0])]})
    # The recorder must see a request, or the "never contacted" checks below prove nothing.
    assert httpx.get(server.url("/self-check"), timeout=5).status_code == 200
    assert server.requests == ["/self-check"]
    server.requests.clear()
    yield server
    server.close()


@pytest.fixture(scope="module")
def attacker_certificate(attacker_key: ed25519.Ed25519PrivateKey) -> x509.Certificate:
    """A self-signed certificate for the attacker's key, as an x5c or x5u header would carry."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reflexblue signing key")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(attacker_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(attacker_key, None)
    )


@pytest.fixture(params=["attacker-key", "own-key"])
def signer(request: pytest.FixtureRequest, attacker_key: ed25519.Ed25519PrivateKey,
           private_key: ed25519.Ed25519PrivateKey) -> ed25519.Ed25519PrivateKey:
    return attacker_key if request.param == "attacker-key" else private_key


def rejection_reason(response: httpx.Response) -> str:
    assert_token_rejected(response)
    return str(response.json()["reason"])


# ---------------------------------------------------------------------------------------------
# kid


def odd_kids(own_kid: str, key_server_url: str) -> dict[str, object]:
    return {
        "unknown": "no-such-key-id",
        "empty": "",
        "null": None,
        "number": 1,
        "zero": 0,
        "float": 1.5,
        "true": True,
        "false": False,
        "array": [own_kid],
        "empty-array": [],
        "object": {"kid": own_kid},
        "path-traversal": "../../etc/passwd",
        "absolute-path": "/etc/passwd",
        "sql-or": "' OR 1=1 --",
        "sql-union": "x' UNION SELECT private_key FROM signing_keys --",
        "like-wildcard": "%",
        "glob": "*",
        "nul": "\u0000",
        "own-with-nul": own_kid + "\u0000",
        "own-with-space": own_kid + " ",
        "own-with-newline": own_kid + "\n",
        "own-uppercase": own_kid.upper(),
        "own-lowercase": own_kid.lower(),
        "own-prefix": own_kid[:-1],
        "url": key_server_url,
    }


KID_CASES = ["unknown", "empty", "null", "number", "zero", "float", "true", "false", "array", "empty-array", "object",
             "path-traversal", "absolute-path", "sql-or", "sql-union", "like-wildcard", "glob", "nul", "own-with-nul",
             "own-with-space", "own-with-newline", "own-uppercase", "own-lowercase", "own-prefix", "url"]


@pytest.mark.parametrize("case", KID_CASES)
def test_odd_kid_rejected(read_vault: Callable[..., httpx.Response], key_server: KeyServer,
                          owner_header: dict[str, Any], owner_claims: dict[str, Any],
                          signer: ed25519.Ed25519PrivateKey, case: str) -> None:
    kid = odd_kids(owner_header["kid"], key_server.url("/kid"))[case]
    if case.startswith("own-") and kid == owner_header["kid"]:
        pytest.skip("this kid has no letters to change")

    reason = rejection_reason(read_vault(mint_token({**owner_header, "kid": kid}, owner_claims, signer)))

    assert reason in ("unknown_key", "malformed")
    assert key_server.requests == []


def test_10kb_kid_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                           owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey) -> None:
    kid = owner_header["kid"] + "k" * 10 * 1024

    assert rejection_reason(read_vault(mint_token({**owner_header, "kid": kid}, owner_claims, private_key))) \
        == "too_large"


def test_odd_kids_leave_keys_intact(http: httpx.Client, vault_path: str, vault_owner_token: str) -> None:
    # The SQL and path kids above must not have changed or locked the key table.
    with_token = {"Authorization": f"Bearer {vault_owner_token}"}

    assert http.get("/readyz").status_code == 200
    assert len(http.get("/.well-known/jwks.json").json()["keys"]) >= 1
    assert http.get(vault_path, headers=with_token).status_code == 200


# ---------------------------------------------------------------------------------------------
# Remote key URLs: jku and x5u


def remote_key_headers(server: KeyServer) -> dict[str, dict[str, Any]]:
    return {
        "jku": {"jku": server.url("/jwks.json")},
        "jku-https-lookalike": {"jku": server.url("/.well-known/jwks.json")},
        "x5u": {"x5u": server.url("/cert.pem")},
        "jku-and-x5u": {"jku": server.url("/both/jwks.json"), "x5u": server.url("/both/cert.pem")},
        "jku-without-kid": {"jku": server.url("/nokid/jwks.json"), "kid": None},
        "kid-is-url": {"kid": server.url("/kid.json")},
    }


@pytest.mark.parametrize("case", ["jku", "jku-https-lookalike", "x5u", "jku-and-x5u", "jku-without-kid", "kid-is-url"])
def test_remote_key_url_not_fetched(read_vault: Callable[..., httpx.Response], key_server: KeyServer,
                                    owner_header: dict[str, Any], owner_claims: dict[str, Any],
                                    signer: ed25519.Ed25519PrivateKey, case: str) -> None:
    header = {**owner_header, **remote_key_headers(key_server)[case]}
    header = {name: value for name, value in header.items() if value is not None}

    assert_token_rejected(read_vault(mint_token(header, owner_claims, signer)))
    assert key_server.requests == []


# ---------------------------------------------------------------------------------------------
# Keys carried in the token: jwk, x5c, x5t


def embedded_key_headers(attacker_key: ed25519.Ed25519PrivateKey, certificate: x509.Certificate,
                         own_kid: str) -> dict[str, dict[str, Any]]:
    der = certificate.public_bytes(serialization.Encoding.DER)
    chain = [base64.b64encode(der).decode("ascii")]
    public_jwk = okp_jwk(attacker_key.public_key())
    return {
        "jwk-with-own-kid": {"jwk": public_jwk},
        "jwk-without-kid": {"jwk": public_jwk, "kid": None},
        "jwk-naming-own-kid": {"jwk": {**public_jwk, "kid": own_kid}},
        "jwk-as-key-set": {"jwk": {"keys": [public_jwk]}},
        "x5c": {"x5c": chain},
        "x5c-without-kid": {"x5c": chain, "kid": None},
        "x5c-with-thumbprint": {"x5c": chain, "x5t#S256": b64url_encode(hashlib.sha256(der).digest())},
        "x5t": {"x5t": b64url_encode(hashlib.sha1(der).digest())},
    }


EMBEDDED_CASES = ["jwk-with-own-kid", "jwk-without-kid", "jwk-naming-own-kid", "jwk-as-key-set", "x5c",
                  "x5c-without-kid", "x5c-with-thumbprint", "x5t"]


@pytest.mark.parametrize("case", EMBEDDED_CASES)
def test_embedded_key_rejected(read_vault: Callable[..., httpx.Response], key_server: KeyServer,
                               attacker_key: ed25519.Ed25519PrivateKey, attacker_certificate: x509.Certificate,
                               owner_header: dict[str, Any], owner_claims: dict[str, Any],
                               signer: ed25519.Ed25519PrivateKey, case: str) -> None:
    extra = embedded_key_headers(attacker_key, attacker_certificate, owner_header["kid"])[case]
    header = {name: value for name, value in {**owner_header, **extra}.items() if value is not None}

    assert_token_rejected(read_vault(mint_token(header, owner_claims, signer)))
    assert key_server.requests == []


# ---------------------------------------------------------------------------------------------
# crit and other header parameters this server does not accept


CRIT_HEADERS: dict[str, dict[str, Any]] = {
    "unknown-extension": {"crit": ["x-reflexblue-policy"], "x-reflexblue-policy": "allow-all"},
    "unknown-extension-absent": {"crit": ["x-reflexblue-policy"]},
    "lists-exp": {"crit": ["exp"]},
    "lists-alg": {"crit": ["alg"]},
    "empty-list": {"crit": []},
    "string": {"crit": "exp"},
    "b64-false": {"crit": ["b64"], "b64": False},
    "null": {"crit": None},
}


@pytest.mark.parametrize("case", sorted(CRIT_HEADERS))
def test_crit_header_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                              owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey, case: str) -> None:
    # Signed with the real key: only the crit parameter can be the reason for the 401.
    token = mint_token({**owner_header, **CRIT_HEADERS[case]}, owner_claims, private_key)

    assert rejection_reason(read_vault(token)) == "malformed"


UNEXPECTED_HEADERS: dict[str, dict[str, Any]] = {
    "b64-false-without-crit": {"b64": False},
    "zip": {"zip": "DEF"},
    "enc": {"enc": "A256GCM"},
    "cty-jwt": {"cty": "JWT"},
    "url": {"url": "https://attacker.invalid/"},
    "nonce": {"nonce": "n-0S6_WzA2Mj"},
    "svt": {"svt": ["eyJhbGciOiJub25lIn0"]},
    "x5t-s256": {"x5t#S256": "dGh1bWJwcmludA"},
    "typ-lowercase": {"typ": "jwt"},
    "typ-access-token": {"typ": "at+jwt"},
    "typ-missing": {"typ": None},
}


@pytest.mark.parametrize("case", sorted(UNEXPECTED_HEADERS))
def test_unexpected_header_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                    owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                    case: str) -> None:
    header = {name: value for name, value in {**owner_header, **UNEXPECTED_HEADERS[case]}.items() if value is not None}

    assert_token_rejected(read_vault(mint_token(header, owner_claims, private_key)))


def test_no_key_url_contacted_later(key_server: KeyServer) -> None:
    # Runs after the tests above in file order: a fetch started in the background would show now.
    time.sleep(LATE_FETCH_WAIT)

    assert key_server.requests == []
