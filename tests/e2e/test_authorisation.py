"""Permission checks of API v1 and v2, administration listings and GET /api/security/permissions."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from .support import RESOURCES, ApiUser, Deployment, poll, unique_name

PERMISSION_DENIED = "urn:reflexblue:problem:permission-denied"
ADMINISTRATION_ACCESS = {"key": "administration.access", "module": "Administrations",
                         "application": "External API", "permission": "Access to administration"}
V1_ACCESS = {"key": "v1.access", "module": "Integrations", "application": "External API",
             "permission": "External API access"}


def v2_permission(resource: str) -> dict[str, str]:
    return {"key": f"v2.{resource}", "module": "Integrations API V2", "application": "External API",
            "permission": f"Access to {resource.replace('-', ' ')}"}


@pytest.fixture
def user_client(make_user: Callable[..., ApiUser], login: Callable[[ApiUser], str],
                authorised: Callable[[str], httpx.Client]) -> Callable[[dict[str, list[str]]], httpx.Client]:
    """Return a function that seeds a user with the given permissions and opens a client with its token."""

    def open_client(permissions: dict[str, list[str]]) -> httpx.Client:
        return authorised(login(make_user(permissions)))

    return open_client


@pytest.fixture(scope="module")
def articles_and_orders(deployment: Deployment, acme: str) -> str:
    """The token of a user with administration.access, v2.articles and v2.orders in acme."""
    user = deployment.seed.user({acme: ["administration.access", "v2.articles", "v2.orders"]})
    return deployment.login(user)


def missing_keys(response: httpx.Response) -> list[str]:
    return [permission["key"] for permission in response.json().get("missing_permissions", [])]


# -------------------------------------------------------------------------------------------------
# API v1


def test_v1_with_both_permissions_is_200(user_client: Callable[..., httpx.Client], acme: str) -> None:
    client = user_client({acme: ["administration.access", "v1.access"]})

    assert client.get(f"/api/v1/administrations/{acme}/articles").status_code == 200


def test_v1_without_v1_access_is_403(user_client: Callable[..., httpx.Client], acme: str) -> None:
    client = user_client({acme: ["administration.access", "v2.articles"]})

    response = client.get(f"/api/v1/administrations/{acme}/articles")

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == PERMISSION_DENIED


def test_v1_denial_names_v1_access(user_client: Callable[..., httpx.Client], acme: str) -> None:
    client = user_client({acme: ["administration.access"]})

    body = client.get(f"/api/v1/administrations/{acme}/articles").json()

    assert body["missing_permissions"] == [V1_ACCESS]
    assert body["administration"] == acme
    assert "v1.access (Integrations / External API / External API access)" in body["detail"]
    assert f"'{acme}'" in body["detail"]


def test_v1_without_administration_access_is_403(user_client: Callable[..., httpx.Client], acme: str) -> None:
    client = user_client({acme: ["v1.access"]})

    response = client.get(f"/api/v1/administrations/{acme}/articles")

    assert response.status_code == 403
    assert ADMINISTRATION_ACCESS in response.json()["missing_permissions"]
    assert response.json()["administration"] == acme
    assert "administration.access (Administrations / External API / Access to administration)" in \
        response.json()["detail"]


def test_v1_with_v2_permissions_only_is_403(user_client: Callable[..., httpx.Client], acme: str) -> None:
    client = user_client({acme: ["administration.access", *[f"v2.{resource}" for resource in RESOURCES]]})

    response = client.get(f"/api/v1/administrations/{acme}/orders")

    assert response.status_code == 403
    assert missing_keys(response) == ["v1.access"]


@pytest.mark.parametrize("resource", RESOURCES)
def test_v1_reaches_every_resource(deployment: Deployment, acme: str, resource: str) -> None:
    user = deployment.seed.user({acme: ["administration.access", "v1.access"]})

    with deployment.client(deployment.login(user)) as client:
        response = client.get(f"/api/v1/administrations/{acme}/{resource}")

    assert response.status_code == 200


# -------------------------------------------------------------------------------------------------
# API v2


@pytest.mark.parametrize("resource", RESOURCES)
def test_v2_reaches_only_granted_resources(deployment: Deployment, articles_and_orders: str, acme: str,
                                           resource: str) -> None:
    with deployment.client(articles_and_orders) as client:
        response = client.get(f"/api/v2/administrations/{acme}/{resource}")

    if resource in ("articles", "orders"):
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        assert response.json()["missing_permissions"] == [v2_permission(resource)]
        assert response.json()["administration"] == acme


@pytest.mark.parametrize("resource", ["contacts", "webhooks"])
def test_v2_denial_covers_writes(deployment: Deployment, articles_and_orders: str, acme: str,
                                 resource: str) -> None:
    with deployment.client(articles_and_orders) as client:
        created = client.post(f"/api/v2/administrations/{acme}/{resource}", json={"code": "X-1"})
        deleted = client.delete(f"/api/v2/administrations/{acme}/{resource}/some-id")

    assert created.status_code == 403
    assert deleted.status_code == 403


def test_v2_without_administration_access_is_403(user_client: Callable[..., httpx.Client], acme: str) -> None:
    client = user_client({acme: ["v2.articles"]})

    response = client.get(f"/api/v2/administrations/{acme}/articles")

    assert response.status_code == 403
    assert ADMINISTRATION_ACCESS in response.json()["missing_permissions"]


def test_v2_administration_access_alone_is_403(user_client: Callable[..., httpx.Client], acme: str) -> None:
    client = user_client({acme: ["administration.access"]})

    response = client.get(f"/api/v2/administrations/{acme}/articles")

    assert response.status_code == 403
    assert response.json()["missing_permissions"] == [v2_permission("articles")]
    assert "v2.articles (Integrations API V2 / External API / Access to articles)" in response.json()["detail"]


def test_v2_with_v1_access_only_is_403(user_client: Callable[..., httpx.Client], acme: str) -> None:
    client = user_client({acme: ["administration.access", "v1.access"]})

    response = client.get(f"/api/v2/administrations/{acme}/articles")

    assert response.status_code == 403
    assert missing_keys(response) == ["v2.articles"]


def test_role_grants_only_own_administration(user_client: Callable[..., httpx.Client], acme: str,
                                             globex: str) -> None:
    client = user_client({acme: ["administration.access", "v1.access", "v2.articles"]})

    assert client.get(f"/api/v2/administrations/{globex}/articles").status_code == 403
    assert client.get(f"/api/v1/administrations/{globex}/articles").status_code == 403


# -------------------------------------------------------------------------------------------------
# Administration codes cannot be probed


def masked(response: httpx.Response, code: str) -> str:
    return response.text.replace(code, "{code}")


@pytest.mark.parametrize("path", ["/api/v2/administrations/{code}/articles", "/api/v1/administrations/{code}/articles",
                                  "/api/v2/administrations/{code}", "/api/v1/administrations/{code}",
                                  "/api/v2/administrations/{code}/orders/some-record-id"])
def test_unknown_code_matches_no_role(user_client: Callable[..., httpx.Client], acme: str, globex: str,
                                      path: str) -> None:
    client = user_client({acme: ["administration.access", "v1.access", "v2.articles", "v2.orders"]})
    unknown_code = "nosuch"

    existing = client.get(path.format(code=globex))
    unknown = client.get(path.format(code=unknown_code))

    assert existing.status_code == 403
    assert unknown.status_code == 403
    assert masked(existing, globex) == masked(unknown, unknown_code)
    assert existing.headers["content-type"] == unknown.headers["content-type"]


def test_unknown_code_matches_role_without_access(user_client: Callable[..., httpx.Client], acme: str,
                                                  globex: str) -> None:
    # The user has a role in globex, but without administration.access it learns nothing about it.
    client = user_client({acme: ["administration.access", "v2.articles"], globex: ["v2.articles"]})
    unknown_code = "nosuch"

    existing = client.get(f"/api/v2/administrations/{globex}/articles")
    unknown = client.get(f"/api/v2/administrations/{unknown_code}/articles")

    assert existing.status_code == 403
    assert masked(existing, globex) == masked(unknown, unknown_code)


# -------------------------------------------------------------------------------------------------
# Listings


@pytest.fixture
def mixed_access(deployment: Deployment, acme: str, globex: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client whose user has v1 and v2 in acme, v2 only in globex, and no administration.access in a third."""
    third = deployment.seed.administration(unique_name("third"))
    user = deployment.seed.user({
        acme: ["administration.access", "v1.access", "v2.articles"],
        globex: ["administration.access", "v2.orders", "v2.webhooks"],
        third: ["v1.access", "v2.articles"],
    })
    client = deployment.client(deployment.login(user))
    # A new administration may take up to the access refresh interval (0.5 s by default) to reach the server.
    poll(lambda: client.get("/api/security/permissions"), lambda response: third in response.text, timeout=1.5)
    yield client, third
    client.close()


def test_v1_listing_is_exact(mixed_access: tuple[httpx.Client, str], acme: str) -> None:
    client, _ = mixed_access

    response = client.get("/api/v1/administrations")

    assert response.status_code == 200
    assert response.json()["items"] == [{"code": acme, "name": "Acme Wholesale"}]


def test_v2_listing_is_exact(mixed_access: tuple[httpx.Client, str], acme: str, globex: str) -> None:
    client, _ = mixed_access

    items = client.get("/api/v2/administrations").json()["items"]

    assert [item["code"] for item in items] == [acme, globex]


def test_v2_listing_names_permissions(mixed_access: tuple[httpx.Client, str], acme: str, globex: str) -> None:
    client, _ = mixed_access

    items = {item["code"]: item for item in client.get("/api/v2/administrations").json()["items"]}

    assert items[acme]["permissions"] == ["v2.articles"]
    assert items[acme]["resources"] == ["articles"]
    assert sorted(items[globex]["permissions"]) == ["v2.orders", "v2.webhooks"]
    assert items[globex]["name"] == "Globex Retail"


def test_v2_listing_empty_without_roles(user_client: Callable[..., httpx.Client]) -> None:
    client = user_client({})

    response = client.get("/api/v2/administrations")

    assert response.status_code == 200
    assert response.json()["items"] == []


def test_administration_detail_v2(mixed_access: tuple[httpx.Client, str], globex: str) -> None:
    client, _ = mixed_access

    response = client.get(f"/api/v2/administrations/{globex}")

    assert response.status_code == 200
    assert response.json()["code"] == globex
    assert sorted(response.json()["resources"]) == ["orders", "webhooks"]


def test_security_permissions_describes_user(mixed_access: tuple[httpx.Client, str]) -> None:
    client, _ = mixed_access

    body = client.get("/api/security/permissions").json()

    assert body["external_seat"] is True
    assert body["active"] is True
    assert body["username"].startswith("api-user-")


def test_security_permissions_per_administration(mixed_access: tuple[httpx.Client, str], acme: str,
                                                 globex: str) -> None:
    client, third = mixed_access

    response = client.get("/api/security/permissions")
    reports = {report["administration"]: report for report in response.json()["administrations"]}

    assert response.status_code == 200
    assert reports[acme]["v1"]["allowed"] is True
    assert reports[acme]["v2"]["resources"] == ["articles"]
    assert reports[globex]["v1"]["allowed"] is False
    assert reports[globex]["v1"]["missing"] == ["v1.access"]
    assert sorted(reports[globex]["v2"]["resources"]) == ["orders", "webhooks"]
    assert reports[third]["v2"]["resources"] == []
    assert "administration.access" in reports[third]["v2"]["missing"]


def test_security_permissions_name_triples(mixed_access: tuple[httpx.Client, str], acme: str) -> None:
    client, _ = mixed_access

    reports = client.get("/api/security/permissions").json()["administrations"]
    acme_report = next(report for report in reports if report["administration"] == acme)

    assert ADMINISTRATION_ACCESS in acme_report["permissions"]
    assert V1_ACCESS in acme_report["permissions"]
    assert v2_permission("articles") in acme_report["permissions"]


def test_security_permissions_needs_token(client: httpx.Client) -> None:
    response = client.get("/api/security/permissions")

    assert response.status_code == 401


# -------------------------------------------------------------------------------------------------
# External seat


SEAT_CALLS = [
    ("GET", "/api/v1/administrations"),
    ("GET", "/api/v2/administrations"),
    ("GET", "/api/v1/administrations/acme"),
    ("GET", "/api/v2/administrations/acme"),
    ("GET", "/api/v1/administrations/acme/articles"),
    ("GET", "/api/v2/administrations/acme/articles"),
    ("POST", "/api/v2/administrations/acme/articles"),
    ("GET", "/api/v2/administrations/acme/articles/some-id"),
    ("PUT", "/api/v2/administrations/acme/articles/some-id"),
    ("PATCH", "/api/v2/administrations/acme/articles/some-id"),
    ("DELETE", "/api/v2/administrations/acme/articles/some-id"),
    ("GET", "/api/v2/administrations/nosuch/articles"),
    ("GET", "/api/security/permissions"),
]


def test_seatless_user_is_403_everywhere(deployment: Deployment, acme: str) -> None:
    user = deployment.seed.user({acme: ["administration.access", "v1.access", "v2.articles"]})
    token = deployment.login(user)
    deployment.seed.unlink_seat(user.username)

    with deployment.client(token) as client:
        poll(lambda: client.get("/api/v2/administrations"), lambda response: response.status_code == 403,
             timeout=1.5)
        responses = {(method, path): client.request(method, path, json={"code": "A-1", "description": "x"})
                     for method, path in SEAT_CALLS}

    for call, response in responses.items():
        assert response.status_code == 403, call
        assert response.json()["type"] == "urn:reflexblue:problem:no-external-seat", call


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_new_administration_detail_at_once(deployment: Deployment, version: str) -> None:
    # The JWKS request makes the server refresh its caches now, so the next refresh is 0.5 s away and
    # the steps below, which take a few tens of milliseconds, run before it.
    with deployment.client() as client:
        client.get("/.well-known/jwks.json")
    code = deployment.seed.administration(unique_name("fresh"))
    user = deployment.seed.user({code: ["administration.access", "v1.access", "v2.articles"]})

    with deployment.client(deployment.login(user)) as client:
        response = client.get(f"/api/{version}/administrations/{code}")

    assert response.status_code == 200
    assert response.json()["code"] == code
