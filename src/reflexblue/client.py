"""A small httpx client for integrators: logs in, renews the token in time, and retries once on 401.

    from reflexblue.client import Client

    with Client("http://127.0.0.1:8080", "shop-api", "change-me-now") as api:
        page = api.get("/api/v2/administrations/acme/articles", params={"limit": 50}).json()

The token is renewed ``renew_before`` seconds before it expires (its ``exp`` is read from the
token itself), and once more if the server returns 401 anyway (token revoked, password changed,
server keys rotated and retired). Other errors raise :class:`ApiError` carrying the RFC 9457
problem body.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

__all__ = ["ApiError", "Client"]


class ApiError(Exception):
    """An error response of the API, with its status and problem details."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        try:
            self.problem: dict[str, Any] = response.json()
        except ValueError:
            self.problem = {"title": response.reason_phrase, "status": response.status_code}
        self.retry_after = response.headers.get("Retry-After")
        detail = self.problem.get("detail") or self.problem.get("title") or response.reason_phrase
        super().__init__(f"{response.status_code}: {detail}")


def _expiry(token: str) -> float:
    """Read ``exp`` from a token without verifying it: the client only needs to know when to renew."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])


class Client:
    """A synchronous API client that keeps a valid token; safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        renew_before: float = 300.0,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._username = username
        self._password = password
        self._renew_before = renew_before
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out and close the connection pool."""
        if self._token is not None:
            try:
                self._http.post("/api/security/logout", headers={"Authorization": f"Bearer {self._token}"})
            except httpx.HTTPError:
                pass
        self._http.close()

    def login(self) -> str:
        """Log in now and return the new token; raises ApiError (e.g. 401, 403, 429)."""
        response = self._http.post("/api/security/login", json={"username": self._username, "password": self._password})
        if response.status_code != 200:
            raise ApiError(response)
        token = response.json()["token"]
        self._token, self._expires_at = token, _expiry(token)
        return token

    def token(self) -> str:
        """Return a token valid for at least ``renew_before`` more seconds, logging in when needed."""
        with self._lock:
            if self._token is None or time.time() >= self._expires_at - self._renew_before:
                return self.login()
            return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send an authenticated request; returns 2xx responses and raises ApiError for the rest."""
        response = self._send(method, path, self.token(), **kwargs)
        if response.status_code == 401:
            with self._lock:
                self._token = None
            response = self._send(method, path, self.token(), **kwargs)
        if response.status_code >= 400:
            raise ApiError(response)
        return response

    def _send(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {token}"}
        return self._http.request(method, path, headers=headers, **kwargs)

    def items(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Yield every record of a collection, following ``next_cursor`` from page to page."""
        cursor: str | None = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            page = self.get(path, params=query).json()
            yield from page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)
