"""Helpers of the security attack tests: raw HTTP, hand-built JWTs and the checks every attack shares.

Servers, databases and seeding come from ``tests.e2e.support``. This module adds requests that no
HTTP client library would send, tokens built from raw JSON text, and assertions on the failure
responses that the product contract allows.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.e2e.support import ALL_PERMISSIONS_V2, b64url_decode, b64url_encode, encode_segment, sign_eddsa

#: Every status a failed request may get. Anything else (a 2xx, a 5xx, a 409) fails an attack test.
FAILURE_STATUSES = frozenset({400, 401, 403, 404, 405, 413, 415, 422, 429, 431})
PROBLEM_JSON = "application/problem+json"
LOGIN = "/api/security/login"
RAW_TIMEOUT = 15.0
#: Every permission of the catalogue, for users with full rights in one administration.
FULL_RIGHTS = ["administration.access", "v1.access", *ALL_PERMISSIONS_V2]


# ---------------------------------------------------------------------------------------------
# Raw HTTP over a socket, for requests that httpx normalises or refuses to send


@dataclass(frozen=True)
class RawResponse:
    """A response read from a raw socket: status, headers in arrival order and the decoded body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


def _decode_chunked(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += data[:size]
        data = data[size + 2:]
    return body


def send_raw(port: int, request: bytes, *, source_address: str | None = None) -> RawResponse:
    """Send ``request`` as is to 127.0.0.1:``port`` and read the response until the server closes.

    The request should carry ``Connection: close``. ``source_address`` binds the client end, so a
    test can come from another loopback address such as 127.0.0.2.
    """
    source = (source_address, 0) if source_address else None
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_TIMEOUT, source_address=source) as connection:
        connection.sendall(request)
        received = b""
        while True:
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if ":" in line]
    if any(name.lower() == "transfer-encoding" and "chunked" in value.lower() for name, value in headers):
        body = _decode_chunked(body)
    return RawResponse(status, headers, body)  # type: ignore[arg-type]


def raw_request(port: int, method: str, target: str, headers: list[tuple[str, bytes]] | None = None,
                body: bytes = b"", *, source_address: str | None = None) -> RawResponse:
    """Send one HTTP/1.1 request with exactly the given target and header lines; no normalisation."""
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), f"Host: 127.0.0.1:{port}".encode("ascii")]
    for name, value in headers or []:
        lines.append(name.encode("latin-1") + b": " + value)
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}".encode("ascii"))
    lines.append(b"Connection: close")
    return send_raw(port, b"\r\n".join(lines) + b"\r\n\r\n" + body, source_address=source_address)


# ---------------------------------------------------------------------------------------------
# Tokens built by hand


def segment(text: str | bytes) -> str:
    """Return the base64url segment of a raw JSON text, so duplicates, NaN and odd encodings survive."""
    return b64url_encode(text.encode("utf-8") if isinstance(text, str) else text)


def sign_raw(header_text: str | bytes, payload_text: str | bytes, key: ed25519.Ed25519PrivateKey) -> str:
    """Return a token whose header and payload are the given raw JSON texts, signed with Ed25519."""
    return sign_eddsa(segment(header_text), segment(payload_text), key)


def mint_token(header: dict[str, Any], claims: dict[str, Any], key: ed25519.Ed25519PrivateKey) -> str:
    return sign_eddsa(encode_segment(header), encode_segment(claims), key)


def fresh_claims(claims: dict[str, Any], *, lifetime: int = 3600) -> dict[str, Any]:
    """Return ``claims`` with times around now and a new jti, so each minted token is unique."""
    now = int(time.time())
    return {**claims, "iat": now, "nbf": now, "exp": now + lifetime,
            "jti": b64url_encode(now.to_bytes(8, "big") + time.perf_counter_ns().to_bytes(8, "big"))}


def split_token(token: str) -> tuple[str, str, str]:
    header_segment, payload_segment, signature_segment = token.split(".")
    return header_segment, payload_segment, signature_segment


def signature_bytes(token: str) -> bytes:
    return b64url_decode(token.rsplit(".", 1)[1])


# ---------------------------------------------------------------------------------------------
# Checks


def assert_token_rejected(response: httpx.Response | RawResponse) -> None:
    """Check the 401 that a sent but unacceptable token gets (RFC 6750 ``invalid_token``)."""
    status = response.status_code if isinstance(response, httpx.Response) else response.status
    body = response.text
    assert status == 401, f"expected 401, got {status}: {body[:300]}"
    content_type = response.headers.get("content-type") if isinstance(response, httpx.Response) \
        else response.header("content-type")
    assert content_type == PROBLEM_JSON
    challenge = response.headers.get("www-authenticate") if isinstance(response, httpx.Response) \
        else response.header("www-authenticate")
    assert challenge is not None
    assert challenge.startswith('Bearer realm="reflexblue"')
    assert 'error="invalid_token"' in challenge


def assert_missing_token(response: httpx.Response) -> None:
    """Check the 401 for a request that carries no usable bearer token."""
    assert response.status_code == 401, response.text[:300]
    assert response.json()["reason"] == "missing"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="reflexblue"'


def headers_without_date(headers: httpx.Headers) -> list[tuple[str, str]]:
    return sorted((name.lower(), value) for name, value in headers.items() if name.lower() != "date")
