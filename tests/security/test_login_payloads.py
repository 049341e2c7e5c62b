"""Hostile login bodies: wrong types and operator objects, SQL strings, huge fields, wrong content
types, duplicate members, Unicode usernames, exact passwords, and error bodies that never echo input.

Each test that fails logins uses usernames of its own, so the shared server's per-username
throttle (5 failures) never decides an outcome.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.support import ApiUser, Deployment, unique_name

from .attacks import LOGIN, PROBLEM_JSON, send_raw

#: Statuses of a malformed login body (contract section 3).
MALFORMED_STATUSES = frozenset({400, 413, 415, 422})


def marker() -> str:
    """Return a string that appears nowhere else, to search responses for echoes."""
    return f"Echo{secrets.token_hex(6)}Marker"


def post_login(http: httpx.Client, body: object) -> httpx.Response:
    return http.post(LOGIN, json=body)


def post_raw_login(http: httpx.Client, content: bytes, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return http.post(LOGIN, content=content, headers=headers)


def assert_no_token(response: httpx.Response) -> None:
    assert response.status_code != 200
    assert "token" not in response.json()


@pytest.fixture
def user(deployment: Deployment) -> ApiUser:
    """A fresh active user with a seat, so this test's failures do not throttle another's."""
    return deployment.seed.user()


# ---------------------------------------------------------------------------------------------
# Types and operator objects


FIELD_VALUES: dict[str, object] = {
    "number": 12345,
    "float": 1.5,
    "true": True,
    "false": False,
    "null": None,
    "array": ["value"],
    "empty-array": [],
    "object": {"value": "x"},
    "mongo-ne-null": {"$ne": None},
    "mongo-ne-empty": {"$ne": ""},
    "mongo-gt-empty": {"$gt": ""},
    "mongo-regex": {"$regex": ".*"},
    "mongo-where": {"$where": "return true"},
    "mongo-exists": {"$exists": True},
}


@pytest.mark.parametrize("value", sorted(FIELD_VALUES))
@pytest.mark.parametrize("field", ["username", "password"])
def test_non_string_field_rejected(http: httpx.Client, user: ApiUser, field: str, value: str) -> None:
    # The other field is right, so an operator object that matched anything would log in.
    body: dict[str, object] = {"username": user.username, "password": user.password}
    body[field] = FIELD_VALUES[value]

    response = post_login(http, body)

    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == PROBLEM_JSON
    assert_no_token(response)


def test_operator_objects_in_both_fields_rejected(http: httpx.Client) -> None:
    response = post_login(http, {"username": {"$ne": None}, "password": {"$ne": None}})

    assert response.status_code in (400, 422)
    assert_no_token(response)


@pytest.mark.parametrize("body", ["1", "true", "null", "1.5", '[{"username": "u", "password": "p"}]',
                                  '{"credentials": {"username": "u", "password": "p"}}', '{"username": ["u", "p"]}'],
                         ids=["number", "true", "null", "float", "array-of-credentials", "nested-credentials",
                              "array-username-only"])
def test_non_object_body_rejected(http: httpx.Client, user: ApiUser, body: str) -> None:
    content = body.replace('"u"', json.dumps(user.username)).replace('"p"', json.dumps(user.password))

    response = post_raw_login(http, content.encode())

    assert response.status_code in (400, 422)
    assert_no_token(response)


# ---------------------------------------------------------------------------------------------
# SQL and pattern strings


SQL_USERNAMES = ["' OR '1'='1", "' OR 1=1 --", "admin'--", '" OR ""="', "'; DROP TABLE users; --",
                 "' UNION SELECT password_hash FROM users --", "%", "_", "*", "\\", "' OR username_key LIKE '%"]


@pytest.mark.parametrize("username", SQL_USERNAMES)
def test_sql_username_is_401(http: httpx.Client, user: ApiUser, username: str) -> None:
    # Sent with the real user's password: a query built from the string would find that user.
    response = post_login(http, {"username": f"{username} {secrets.token_hex(3)}", "password": user.password})

    assert response.status_code == 401
    assert response.json()["type"] == "urn:reflexblue:problem:invalid-credentials"


@pytest.mark.parametrize("suffix", ["' --", "'#", "%", "_", "' OR '1'='1"])
def test_real_username_with_sql_suffix_is_401(http: httpx.Client, user: ApiUser, suffix: str) -> None:
    response = post_login(http, {"username": user.username + suffix, "password": user.password})

    assert response.status_code == 401


@pytest.mark.parametrize("password", ["' OR '1'='1", "' OR 1=1 --", "%", "*", '{"$ne": null}'])
def test_sql_password_is_401(http: httpx.Client, user: ApiUser, password: str) -> None:
    response = post_login(http, {"username": user.username, "password": password})

    assert response.status_code == 401


def test_users_table_intact_after_sql(http: httpx.Client, user: ApiUser) -> None:
    post_login(http, {"username": "'; DROP TABLE users; --", "password": "x"})

    assert post_login(http, {"username": user.username, "password": user.password}).status_code == 200


# ---------------------------------------------------------------------------------------------
# Size


@pytest.mark.parametrize("field", ["username", "password"])
def test_one_megabyte_field_is_413(http: httpx.Client, user: ApiUser, field: str) -> None:
    body = {"username": user.username, "password": user.password, field: "x" * 1024 * 1024}

    response = post_login(http, body)

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM_JSON


def test_login_body_limit_is_16_kib(http: httpx.Client) -> None:
    def body_of(size: int) -> bytes:
        skeleton = json.dumps({"username": unique_name("limit"), "password": ""})
        return (skeleton[:-2] + "p" * (size - len(skeleton)) + '"}').encode("ascii")

    at_limit = post_raw_login(http, body_of(16 * 1024))
    over_limit = post_raw_login(http, body_of(16 * 1024 + 1))

    assert at_limit.status_code == 422  # the password is longer than 1024 characters
    assert over_limit.status_code == 413


def test_chunked_huge_body_is_413(deployment: Deployment, user: ApiUser) -> None:
    # No Content-Length: the limit must hold while the body streams in.
    chunk = b"p" * 65536
    body = b'{"username": "' + user.username.encode() + b'", "password": "'
    chunks = [body] + [chunk] * 16 + [b'"}']
    encoded = b"".join(f"{len(part):x}\r\n".encode("ascii") + part + b"\r\n" for part in chunks) + b"0\r\n\r\n"
    request = (f"POST {LOGIN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode("ascii") + encoded

    response = send_raw(deployment.server.port, request)

    assert response.status == 413


# ---------------------------------------------------------------------------------------------
# Content types


WRONG_CONTENT_TYPES = ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
                       "multipart/form-data; boundary=x", "application/xml", "text/json", "application/jsonx",
                       "application/json-seq", "text/html", "application/octet-stream", "json", "", None]


@pytest.mark.parametrize("content_type", WRONG_CONTENT_TYPES, ids=lambda value: repr(value))
def test_wrong_content_type_is_415(http: httpx.Client, user: ApiUser, content_type: str | None) -> None:
    # The body is valid JSON with the right credentials: a browser can send text/plain and form
    # bodies across origins without a preflight, so honouring them would allow login CSRF.
    body = json.dumps({"username": user.username, "password": user.password}).encode()

    response = post_raw_login(http, body, content_type)

    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM_JSON


@pytest.mark.parametrize("charset", ["latin-1", "iso-8859-1", "utf-16", "utf-16-le", "cp1252"])
def test_non_utf8_charset_never_logs_in(http: httpx.Client, deployment: Deployment, charset: str) -> None:
    # The password has non-ASCII characters, so its bytes in the named charset are not UTF-8.
    user = deployment.seed.user(password=f"Paßwörd-é-{secrets.token_hex(4)}")
    body = json.dumps({"username": user.username, "password": user.password}, ensure_ascii=False)
    python_codec = {"latin-1": "latin-1", "iso-8859-1": "latin-1", "utf-16": "utf-16", "utf-16-le": "utf-16-le",
                    "cp1252": "cp1252"}[charset]

    response = post_raw_login(http, body.encode(python_codec), f"application/json; charset={charset}")

    assert response.status_code in (400, 415)
    assert_no_token(response)


# ---------------------------------------------------------------------------------------------
# Duplicate members


def duplicate_bodies(user: ApiUser) -> dict[str, str]:
    username, password = json.dumps(user.username), json.dumps(user.password)
    wrong = json.dumps("wrong-" + user.password)
    return {
        "username-other-then-real": f'{{"username": "nobody", "username": {username}, "password": {password}}}',
        "username-real-then-other": f'{{"username": {username}, "username": "nobody", "password": {password}}}',
        "password-wrong-then-right": f'{{"username": {username}, "password": {wrong}, "password": {password}}}',
        "password-right-then-wrong": f'{{"username": {username}, "password": {password}, "password": {wrong}}}',
        "escaped-name": f'{{"username": {username}, "password": {wrong}, "\\u0070assword": {password}}}',
        "nested-duplicate": f'{{"username": {username}, "password": {password}, "x": {{"a": 1, "a": 2}}}}',
    }


DUPLICATE_CASES = ["username-other-then-real", "username-real-then-other", "password-wrong-then-right",
                   "password-right-then-wrong", "escaped-name", "nested-duplicate"]


@pytest.mark.parametrize("case", DUPLICATE_CASES)
def test_duplicate_member_rejected(http: httpx.Client, user: ApiUser, case: str) -> None:
    response = post_raw_login(http, duplicate_bodies(user)[case].encode("utf-8"))

    assert response.status_code in (400, 422)
    assert_no_token(response)


def test_differently_cased_member_rejected(http: httpx.Client, user: ApiUser) -> None:
    body = {"username": user.username, "password": "wrong", "Password": user.password}

    response = post_login(http, body)

    assert response.status_code in (400, 422)
    assert_no_token(response)


# ---------------------------------------------------------------------------------------------
# Unicode usernames


def login_status(http: httpx.Client, username: str, password: str) -> int:
    return post_login(http, {"username": username, "password": password}).status_code


@pytest.fixture
def make_named_user(deployment: Deployment) -> Callable[[str], ApiUser]:
    """Return a function that seeds a user whose name is the given text plus a unique suffix."""

    def make(name: str) -> ApiUser:
        return deployment.seed.user(username=f"{name}-{secrets.token_hex(3)}")

    return make


def to_fullwidth(text: str) -> str:
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


def to_math_bold(text: str) -> str:
    return "".join(chr(0x1D41A + ord(char) - ord("a")) if "a" <= char <= "z" else char for char in text)


@pytest.mark.parametrize("spelling", ["fullwidth", "math-bold", "upper", "nbsp-around", "ideographic-space-around"])
def test_equivalent_username_logs_in(http: httpx.Client, make_named_user: Callable[[str], ApiUser],
                                     spelling: str) -> None:
    # NFKC, case folding and trimming make these the same username (contract section 2).
    user = make_named_user("equivalent")
    spellings = {
        "fullwidth": to_fullwidth(user.username),
        "math-bold": to_math_bold(user.username),
        "upper": user.username.upper(),
        "nbsp-around": f"\xa0{user.username}\xa0",
        "ideographic-space-around": f"\u3000{user.username}\u3000",
    }

    assert login_status(http, spellings[spelling], user.password) == 200


def test_sharp_s_folds_to_ss(http: httpx.Client, make_named_user: Callable[[str], ApiUser]) -> None:
    with_sharp_s = make_named_user("straße")
    with_ss = make_named_user("strasse")

    assert login_status(http, with_sharp_s.username.upper(), with_sharp_s.password) == 200
    assert login_status(http, with_sharp_s.username.replace("ß", "ss"), with_sharp_s.password) == 200
    assert login_status(http, with_ss.username.replace("ss", "ß"), with_ss.password) == 200
    assert login_status(http, with_ss.username.replace("ss", "ẞ"), with_ss.password) == 200


def test_dotless_i_does_not_match_i(http: httpx.Client, make_named_user: Callable[[str], ApiUser]) -> None:
    # Python's upper() maps 'ı' to 'I', so comparing upper-cased names would wrongly match these.
    user = make_named_user("admin-kit")
    suffix = user.username.removeprefix("admin-kit")

    assert login_status(http, "adm\u0131n-k\u0131t" + suffix, user.password) == 401
    assert login_status(http, "ADM\u0130N-K\u0130T" + suffix, user.password) == 401
    assert login_status(http, "ADMIN-KIT" + suffix, user.password) == 200


def test_i_does_not_match_dotless_i(http: httpx.Client, make_named_user: Callable[[str], ApiUser]) -> None:
    user = make_named_user("k\u0131l\u0131\u00e7")
    suffix = user.username.removeprefix("k\u0131l\u0131\u00e7")

    assert login_status(http, "KIL\u0130\u00c7" + suffix, user.password) == 401
    assert login_status(http, "KILIÇ" + suffix, user.password) == 401
    assert login_status(http, "kilic" + suffix, user.password) == 401
    assert login_status(http, "K\u0131L\u0131\u00c7" + suffix, user.password) == 200


CONFUSABLES = {
    "cyrillic-all": str.maketrans("apex", "\u0430\u0440\u0435\u0445"),
    "cyrillic-one": str.maketrans("a", "\u0430"),
    "greek-omicron": str.maketrans("o", "\u03bf"),
    "zero-width-space": str.maketrans({"-": "\u200b-"}),
    "soft-hyphen": str.maketrans({"-": "\u00ad-"}),
    "non-breaking-hyphen": str.maketrans({"-": "\u2011"}),
}


@pytest.mark.parametrize("confusable", sorted(CONFUSABLES))
def test_confusable_username_is_401(http: httpx.Client, make_named_user: Callable[[str], ApiUser],
                                    confusable: str) -> None:
    user = make_named_user("apex-shop-o")
    lookalike = user.username.translate(CONFUSABLES[confusable])
    assert lookalike != user.username

    assert login_status(http, lookalike, user.password) == 401


def test_latin_does_not_match_cyrillic_user(http: httpx.Client, make_named_user: Callable[[str], ApiUser]) -> None:
    user = make_named_user("\u0430\u0440\u0435\u0445")

    assert login_status(http, user.username.translate(str.maketrans("\u0430\u0440\u0435\u0445", "apex")),
                        user.password) == 401
    assert login_status(http, user.username, user.password) == 200


def test_decomposed_username_matches(http: httpx.Client, make_named_user: Callable[[str], ApiUser]) -> None:
    user = make_named_user("caf\u00e9")

    assert login_status(http, user.username.replace("\u00e9", "e\u0301"), user.password) == 200


# ---------------------------------------------------------------------------------------------
# Passwords are compared exactly


def test_long_password_not_truncated(http: httpx.Client, deployment: Deployment) -> None:
    password = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(1024))
    user = deployment.seed.user(password=password)

    assert login_status(http, user.username, password[:1023]) == 401
    assert login_status(http, user.username, password[:1023] + " ") == 401
    assert login_status(http, user.username, password + " ") != 200
    assert login_status(http, user.username, password) == 200


def test_password_spaces_not_trimmed(http: httpx.Client, deployment: Deployment) -> None:
    password = f"  spaced secret {secrets.token_hex(4)}  "
    user = deployment.seed.user(password=password)

    assert login_status(http, user.username, password.strip()) == 401
    assert login_status(http, user.username, password.rstrip()) == 401
    assert login_status(http, user.username, password.lstrip()) == 401
    assert login_status(http, user.username, password) == 200


def test_password_not_truncated_at_72_bytes(http: httpx.Client, deployment: Deployment) -> None:
    # bcrypt ignores everything after 72 bytes; argon2id must not.
    prefix = "b" * 72
    user = deployment.seed.user(password=prefix + "-right-tail")

    assert login_status(http, user.username, prefix) == 401
    assert login_status(http, user.username, prefix + "-wrong-tail") == 401
    assert login_status(http, user.username, user.password) == 200


def test_password_not_cut_at_nul(http: httpx.Client, deployment: Deployment) -> None:
    user = deployment.seed.user(password=f"before-nul-{secrets.token_hex(4)}\u0000after-nul")

    assert login_status(http, user.username, user.password.split("\u0000")[0]) == 401
    assert login_status(http, user.username, user.password) == 200


def test_password_not_normalised(http: httpx.Client, deployment: Deployment) -> None:
    user = deployment.seed.user(password=f"caf\u00e9-{to_fullwidth('secret')}-{secrets.token_hex(4)}")

    assert login_status(http, user.username, user.password.replace("\u00e9", "e\u0301")) == 401
    assert login_status(http, user.username, user.password.replace(to_fullwidth("secret"), "secret")) == 401
    assert login_status(http, user.username, user.password) == 200


# ---------------------------------------------------------------------------------------------
# Error bodies never echo the submitted values


def echo_cases(secret: str) -> dict[str, tuple[bytes, str | None]]:
    """Request bodies whose every failure path has ``secret`` in a value, with their content types."""
    username = unique_name("echo")
    json_type = "application/json"
    return {
        "invalid-json": (f'{{"username": "{username}", "password": "{secret}"'.encode(), json_type),
        "invalid-utf8": (f'{{"username": "{username}", "password": "{secret}\xff"}}'.encode("latin-1"), json_type),
        "oversized": (json.dumps({"username": username, "password": secret * 2000}).encode(), json_type),
        "text-plain": (json.dumps({"username": username, "password": secret}).encode(), "text/plain"),
        "form": (f"username={username}&password={secret}".encode(), "application/x-www-form-urlencoded"),
        "no-content-type": (json.dumps({"username": username, "password": secret}).encode(), None),
        "duplicate-password": (f'{{"username": "{username}", "password": "{secret}", "password": "{secret}2"}}'
                               .encode(), json_type),
        "duplicate-username": (f'{{"username": "{secret}", "username": "{secret}", "password": "x"}}'.encode(),
                               json_type),
        "username-object": (json.dumps({"username": {"$ne": secret}, "password": "x"}).encode(), json_type),
        "password-array": (json.dumps({"username": username, "password": [secret]}).encode(), json_type),
        "unknown-member-value": (json.dumps({"username": username, "password": "x", "otp": secret}).encode(),
                                 json_type),
        "long-username": (json.dumps({"username": secret * 20, "password": "x"}).encode(), json_type),
        "long-password": (json.dumps({"username": username, "password": secret * 60}).encode(), json_type),
        "control-username": (json.dumps({"username": f"\u001b{secret}", "password": "x"}).encode(), json_type),
        "surrogate-password": (f'{{"username": "{username}", "password": "{secret}\\ud800"}}'.encode(), json_type),
        "empty-username": (json.dumps({"username": "", "password": secret}).encode(), json_type),
        "wrong-credentials": (json.dumps({"username": secret, "password": secret}).encode(), json_type),
        "body-array": (json.dumps([secret, secret]).encode(), json_type),
    }


ECHO_CASES = ["invalid-json", "invalid-utf8", "oversized", "text-plain", "form", "no-content-type", "duplicate-password",
              "duplicate-username", "username-object", "password-array", "unknown-member-value", "long-username",
              "long-password", "control-username", "surrogate-password", "empty-username", "wrong-credentials",
              "body-array"]


@pytest.mark.parametrize("case", ECHO_CASES)
def test_login_error_hides_values(http: httpx.Client, case: str) -> None:
    secret = marker()
    content, content_type = echo_cases(secret)[case]
    assert secret.encode() in content

    response = post_raw_login(http, content, content_type)

    assert response.status_code in MALFORMED_STATUSES | {401}
    assert secret not in response.text
    assert secret not in str(response.headers)


def test_throttled_login_hides_values(http: httpx.Client) -> None:
    secret = marker()
    responses = [post_login(http, {"username": secret, "password": secret}) for _ in range(7)]

    assert responses[-1].status_code == 429
    for response in responses:
        assert secret not in response.text
        assert secret not in str(response.headers)


def test_short_content_length_hides_values(deployment: Deployment) -> None:
    # The Content-Length covers only the start of the body, so the server parses truncated JSON and
    # then the rest as the start of another request. Neither response may contain the rest.
    secret = marker()
    body = json.dumps({"username": "short-length", "password": secret}).encode()
    request = (f"POST {LOGIN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: 20\r\nConnection: close\r\n\r\n").encode("ascii") + body

    response = send_raw(deployment.server.port, request)

    assert response.status == 400
    assert secret not in response.text


# The same rule applies to resource bodies, because the integrator guide promises that error bodies
# never repeat the values sent. Validators tend to quote the input for fields with a fixed set of values.
ENUM_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "dynamic-fields-entity": ("dynamic-fields", {"label": "Colour", "data_type": "text", "entity": None}),
    "dynamic-fields-data-type": ("dynamic-fields", {"label": "Colour", "entity": "articles", "data_type": None}),
    "integrations-kind": ("integrations", {"name": "Shop", "kind": None}),
    "invoices-status": ("invoices", {"relation_code": "R-1", "invoice_date": "2026-01-31", "status": None}),
    "orders-status": ("orders", {"relation_code": "R-1", "order_date": "2026-01-31", "status": None}),
    "delivery-notes-status": ("delivery-notes", {"order_code": "O-1", "delivery_date": "2026-02-02", "status": None}),
    "relations-kind": ("relations", {"name": "Initech", "kind": None}),
}
OTHER_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "articles-code-pattern": ("articles", {"description": "x", "code": None}),
    "articles-price": ("articles", {"code": "A-1", "description": "x", "sales_price": None}),
    "payment-conditions-days": ("payment-conditions", {"code": "P-1", "description": "x", "days": None}),
    "invoices-date": ("invoices", {"code": "I-1", "relation_code": "R-1", "invoice_date": None}),
    "webhooks-url": ("webhooks", {"code": "W-1", "events": ["orders.created"], "url": None}),
    "relations-country": ("relations", {"code": "R-1", "name": "x", "country": None}),
}


@pytest.mark.parametrize("case", sorted(ENUM_FIELDS) + sorted(OTHER_FIELDS))
def test_resource_error_hides_values(http: httpx.Client, home: str, attacker_token: str, case: str) -> None:
    secret = marker()
    resource, body = {**ENUM_FIELDS, **OTHER_FIELDS}[case]
    # None marks the field under test. A code gets a '!' too, because the marker alone is a valid code.
    invalid_value = f"{secret}!" if body.get("code", "") is None else secret
    values = {name: invalid_value if value is None else value for name, value in body.items()}
    body = {"code": unique_name("ECHO"), **values}

    response = http.post(f"/api/v2/administrations/{home}/{resource}", json=body,
                         headers={"Authorization": f"Bearer {attacker_token}"})

    assert response.status_code == 422
    assert secret not in response.text


@pytest.mark.parametrize("field", ["username", "password"])
def test_huge_integer_field_rejected(http: httpx.Client, field: str) -> None:
    # Python refuses to convert integers of more than 4300 digits; that must be a client error.
    other = "password" if field == "username" else "username"
    content = f'{{"{other}": "someone", "{field}": {"9" * 10_000}}}'.encode("ascii")

    response = post_raw_login(http, content)

    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == PROBLEM_JSON


def test_deeply_nested_resource_body_rejected(deployment: Deployment, home: str, attacker_token: str) -> None:
    with deployment.client(attacker_token) as client:
        response = client.post(f"/api/v2/administrations/{home}/articles", content=b"[" * 2000 + b"]" * 2000,
                               headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_JSON
