"""Claim attacks on tokens signed with the deployment's own private key.

The key is read from the ``signing_keys`` table, as a thief of the database would read it, so the
signature check passes and every claim check is reached. The server must still reject each token
with a 401. The cases are bad time claims in every JSON type, time windows outside the leeway,
wrong issuer and audience spellings, and subjects that are unknown, deleted or of the wrong type.
The last ones are tokens of another deployment with the same issuer, subject id and credential stamp.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import update

from reflexblue.storage import repository
from reflexblue.storage.models import User
from tests.e2e.support import ApiUser, Deployment, b64url_decode, encode_segment, poll, token_header, token_payload

from .attacks import FULL_RIGHTS, assert_token_rejected, fresh_claims, mint_token, sign_raw, split_token

#: The server defaults that the time checks below are relative to.
LEEWAY = 30
LIFETIME = 86_400
#: Seconds beyond the leeway, enough for a slow test machine not to blur the boundary.
MARGIN = 20


def read_with(http: httpx.Client, path: str, token: str) -> httpx.Response:
    """Read ``path`` with ``token``, for positive controls whose 200 is expected."""
    return http.get(path, headers={"Authorization": f"Bearer {token}"})


def raw_claims_text(claims: dict[str, Any], name: str, raw_value: str | None) -> str:
    """Return claims JSON with ``name`` set to the raw JSON text ``raw_value``, or removed when None."""
    others = {key: value for key, value in claims.items() if key != name}
    text = json.dumps(others)
    if raw_value is None:
        return text
    return text[:-1] + f", {json.dumps(name)}: {raw_value}}}"


# ---------------------------------------------------------------------------------------------
# Time claims of every JSON type


def time_values(now: int) -> dict[str, str | None]:
    """Raw JSON texts for a time claim; None removes the claim."""
    return {
        "missing": None,
        "null": "null",
        "string": json.dumps(str(now + 600)),
        "empty-string": '""',
        "float": f"{now + 600}.5",
        "float-whole": f"{now + 600}.0",
        "exponent": "1e20",
        "exponent-small": "1.8e9",
        "huge": "1" + "0" * 20,
        "two-to-63": str(2**63),
        "two-to-53": str(2**53),
        "negative": "-1",
        "negative-large": str(-(2**63)),
        "infinity": "Infinity",
        "minus-infinity": "-Infinity",
        "nan": "NaN",
        "array": f"[{now + 600}]",
        "object": f'{{"value": {now + 600}}}',
        "true": "true",
        "false": "false",
    }


TIME_CASES = ["missing", "null", "string", "empty-string", "float", "float-whole", "exponent", "exponent-small", "huge",
              "two-to-63", "two-to-53", "negative", "negative-large", "infinity", "minus-infinity", "nan", "array",
              "object", "true", "false"]


@pytest.mark.parametrize("case", TIME_CASES)
@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
def test_bad_time_claim_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                 owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey, name: str,
                                 case: str) -> None:
    payload_text = raw_claims_text(owner_claims, name, time_values(int(time.time()))[case])

    assert_token_rejected(read_vault(sign_raw(json.dumps(owner_header), payload_text, private_key)))


# ---------------------------------------------------------------------------------------------
# Time windows


def with_times(claims: dict[str, Any], *, iat: int, nbf: int, exp: int) -> dict[str, Any]:
    return {**claims, "iat": iat, "nbf": nbf, "exp": exp}


def time_window_cases(now: int) -> dict[str, dict[str, int]]:
    """Claim times per case: every one lies outside what the server may accept."""
    return {
        "iat-beyond-leeway": {"iat": now + LEEWAY + MARGIN, "nbf": now + LEEWAY + MARGIN,
                              "exp": now + LEEWAY + MARGIN + 3600},
        "iat-only-beyond-leeway": {"iat": now + LEEWAY + MARGIN, "nbf": now, "exp": now + 3600},
        "nbf-beyond-leeway": {"iat": now, "nbf": now + LEEWAY + MARGIN, "exp": now + 3600},
        "nbf-far-future": {"iat": now, "nbf": now + 10 * 365 * 86_400, "exp": now + 3600},
        "nbf-after-exp": {"iat": now, "nbf": now + 10, "exp": now + 5},
        "nbf-equals-exp": {"iat": now, "nbf": now + 5, "exp": now + 5},
        "nbf-long-before-iat": {"iat": now, "nbf": now - LEEWAY - MARGIN, "exp": now + 3600},
        "exp-beyond-leeway": {"iat": now - 3600, "nbf": now - 3600, "exp": now - LEEWAY - MARGIN},
        "exp-before-iat": {"iat": now, "nbf": now, "exp": now - 1},
        "lifetime-one-second-long": {"iat": now, "nbf": now, "exp": now + LIFETIME + 1},
        "lifetime-decade": {"iat": now, "nbf": now, "exp": now + 10 * 365 * 86_400},
        "lifetime-from-old-iat": {"iat": now - 2 * LIFETIME, "nbf": now - 2 * LIFETIME, "exp": now + 3600},
    }


TIME_WINDOW_CASES = ["iat-beyond-leeway", "iat-only-beyond-leeway", "nbf-beyond-leeway", "nbf-far-future",
                     "nbf-after-exp", "nbf-equals-exp", "nbf-long-before-iat", "exp-beyond-leeway", "exp-before-iat",
                     "lifetime-one-second-long", "lifetime-decade", "lifetime-from-old-iat"]


@pytest.mark.parametrize("case", TIME_WINDOW_CASES)
def test_time_window_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                              owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey, case: str) -> None:
    times = time_window_cases(int(time.time()))[case]

    assert_token_rejected(read_vault(mint_token(owner_header, with_times(owner_claims, **times), private_key)))


def test_times_inside_leeway_accepted(http: httpx.Client, vault_path: str, owner_header: dict[str, Any],
                                      owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey) -> None:
    # Positive controls for the cases above: the same shapes, just inside the limits.
    now = int(time.time())
    inside = {
        "iat-in-leeway": {"iat": now + LEEWAY - MARGIN, "nbf": now + LEEWAY - MARGIN, "exp": now + 3600},
        "exp-in-leeway": {"iat": now - 3600, "nbf": now - 3600, "exp": now - LEEWAY + MARGIN},
        "full-lifetime": {"iat": now, "nbf": now, "exp": now + LIFETIME},
    }
    statuses = {}
    for case, times in inside.items():
        claims = {**with_times(owner_claims, **times), "jti": f"{owner_claims['jti']}-{case}"}
        statuses[case] = read_with(http, vault_path, mint_token(owner_header, claims, private_key)).status_code

    assert statuses == {case: 200 for case in inside}


# ---------------------------------------------------------------------------------------------
# Issuer and audience


def identity_values(ours: str) -> dict[str, str]:
    """Raw JSON texts that are not exactly ``ours``."""
    lookalike = ours.replace("e", "\u0435", 1)  # Cyrillic small ie
    return {
        "other": json.dumps("urn:reflexblue:another-deployment"),
        "substring": json.dumps(ours[:-1]),
        "prefix-only": json.dumps(ours[: len(ours) // 2]),
        "superstring-after": json.dumps(ours + "x"),
        "superstring-before": json.dumps("x" + ours),
        "trailing-slash": json.dumps(ours + "/"),
        "uppercase": json.dumps(ours.upper()),
        "swapped-case": json.dumps(ours.swapcase()),
        "trailing-space": json.dumps(ours + " "),
        "leading-space": json.dumps(" " + ours),
        "trailing-nul": json.dumps(ours + "\u0000"),
        "cyrillic-lookalike": json.dumps(lookalike, ensure_ascii=False),
        "fullwidth": json.dumps("".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in ours),
                                ensure_ascii=False),
        "empty": '""',
        "null": "null",
        "number": "1",
        "list-of-ours": json.dumps([ours]),
        "list-other-then-ours": json.dumps(["another-api", ours]),
        "list-ours-twice": json.dumps([ours, ours]),
        "object": json.dumps({"value": ours}),
        "true": "true",
    }


IDENTITY_CASES = ["other", "substring", "prefix-only", "superstring-after", "superstring-before", "trailing-slash",
                  "uppercase", "swapped-case", "trailing-space", "leading-space", "trailing-nul", "cyrillic-lookalike",
                  "fullwidth", "empty", "null", "number", "list-of-ours", "list-other-then-ours", "list-ours-twice",
                  "object", "true"]


@pytest.mark.parametrize("case", IDENTITY_CASES)
@pytest.mark.parametrize("name", ["iss", "aud"])
def test_wrong_issuer_or_audience_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                           owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey,
                                           name: str, case: str) -> None:
    raw_value = identity_values(owner_claims[name])[case]
    payload_text = raw_claims_text(owner_claims, name, raw_value)

    assert_token_rejected(read_vault(sign_raw(json.dumps(owner_header), payload_text.encode("utf-8"), private_key)))


# ---------------------------------------------------------------------------------------------
# Subjects


def test_unknown_subject_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                  owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey) -> None:
    claims = {**owner_claims, "sub": str(uuid.uuid4())}

    response = read_vault(mint_token(owner_header, claims, private_key))

    assert_token_rejected(response)
    assert response.json()["reason"] == "unknown_user"


@pytest.fixture
def deleted_user(deployment: Deployment, vault: str) -> dict[str, Any]:
    """The claims of a user with every right in the vault who was deleted after logging in."""
    user = deployment.seed.user({vault: FULL_RIGHTS})
    token = deployment.login(user)
    with deployment.seed.database.write() as session:
        repository.delete_user(session, repository.get_user(session, user.username), actor="security-test")
    with deployment.client(token) as client:
        response, _ = poll(lambda: client.get("/api/security/permissions"),
                           lambda response: response.status_code == 401, timeout=2.0)
    assert response.status_code == 401, "the deletion did not reach the server"
    return token_payload(token)


def test_deleted_user_subject_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                       deleted_user: dict[str, Any], private_key: ed25519.Ed25519PrivateKey) -> None:
    # A new token for the deleted user, with its own subject and credential stamp.
    response = read_vault(mint_token(owner_header, fresh_claims(deleted_user), private_key))

    assert_token_rejected(response)
    assert response.json()["reason"] == "unknown_user"


def test_other_user_stamp_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                   owner_claims: dict[str, Any], attacker_token: str,
                                   private_key: ed25519.Ed25519PrivateKey) -> None:
    # The attacker names the owner as subject but has only its own credential stamp.
    claims = {**owner_claims, "cst": token_payload(attacker_token)["cst"]}

    response = read_vault(mint_token(owner_header, claims, private_key))

    assert_token_rejected(response)
    assert response.json()["reason"] == "credentials_changed"


def odd_subjects(owner_id: str) -> dict[str, str]:
    """Raw JSON texts for sub: none is the owner's id, though several resemble it."""
    return {
        "empty": '""',
        "uppercase-id": json.dumps(owner_id.upper()),
        "braced-id": json.dumps("{" + owner_id + "}"),
        "id-with-space": json.dumps(owner_id + " "),
        "id-with-newline": json.dumps(owner_id + "\n"),
        "id-without-dashes": json.dumps(owner_id.replace("-", "")),
        "too-long": json.dumps("u" * 513),
        "sql": json.dumps(f"{owner_id}' OR '1'='1"),
        "like-wildcard": json.dumps(owner_id[:-1] + "%"),
        "nul-inside": json.dumps(owner_id[:8] + "\u0000" + owner_id[9:]),
        "lone-surrogate": '"' + owner_id[:8] + '\\ud800' + owner_id[9:] + '"',
        "number": "12345",
        "list": json.dumps([owner_id]),
        "object": json.dumps({"id": owner_id}),
        "null": "null",
    }


SUBJECT_CASES = ["empty", "uppercase-id", "braced-id", "id-with-space", "id-with-newline", "id-without-dashes",
                 "too-long", "sql", "like-wildcard", "nul-inside", "lone-surrogate", "number", "list", "object", "null"]


@pytest.mark.parametrize("case", SUBJECT_CASES)
def test_odd_subject_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                              owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey, case: str) -> None:
    payload_text = raw_claims_text(owner_claims, "sub", odd_subjects(owner_claims["sub"])[case])

    assert_token_rejected(read_vault(sign_raw(json.dumps(owner_header), payload_text, private_key)))


@pytest.mark.parametrize("name", ["jti", "cst"])
@pytest.mark.parametrize("raw_value", ['""', "null", "1", "[]", json.dumps("j" * 513)],
                         ids=["empty", "null", "number", "array", "too-long"])
def test_odd_jti_or_stamp_rejected(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                   owner_claims: dict[str, Any], private_key: ed25519.Ed25519PrivateKey, name: str,
                                   raw_value: str) -> None:
    payload_text = raw_claims_text(owner_claims, name, raw_value)

    assert_token_rejected(read_vault(sign_raw(json.dumps(owner_header), payload_text, private_key)))


@pytest.fixture(scope="module")
def revoking(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """A deployment that revokes the presented token on logout, so a jti is written to the database."""
    deployment = launch({"REFLEXBLUE_REVOKE_ON_LOGOUT": "true"})
    yield deployment
    deployment.stop()


@pytest.mark.parametrize("raw_jti", ['"jti-\\u0000-nul"', '"jti-\\ud800-surrogate"', json.dumps("j" * 100)],
                         ids=["nul", "lone-surrogate", "100-characters"])
def test_odd_jti_logout_is_handled(revoking: Deployment, raw_jti: str) -> None:
    # A jti is an opaque string of up to 512 characters, so the server may accept these tokens.
    # Logging them out stores the jti, which must end in 204 and a revoked token, not in a database error.
    user = revoking.seed.user()
    real_token = revoking.login(user)
    _, private_key = revoking.seed.active_signing_key()
    payload_text = raw_claims_text(fresh_claims(token_payload(real_token)), "jti", raw_jti)
    token = sign_raw(json.dumps(token_header(real_token)), payload_text, private_key)

    with revoking.client(token) as client:
        before = client.get("/api/security/permissions").status_code
        logout = client.post("/api/security/logout").status_code
        after = client.get("/api/security/permissions").status_code

    assert before in (200, 401)
    assert logout == 204
    assert after == 401


def test_permission_claims_ignored(read_vault: Callable[..., httpx.Response], owner_header: dict[str, Any],
                                   attacker_token: str, vault: str, private_key: ed25519.Ed25519PrivateKey) -> None:
    # The token proves who the caller is; claims that name rights must not grant any.
    claims = {
        **fresh_claims(token_payload(attacker_token)),
        "permissions": {vault: FULL_RIGHTS},
        "roles": [{"administration": vault, "permissions": FULL_RIGHTS}],
        "administrations": [vault],
        "scope": " ".join(FULL_RIGHTS),
        "admin": True,
        "external_seat": True,
    }

    response = read_vault(mint_token(owner_header, claims, private_key))

    assert response.status_code == 403
    assert response.json()["type"] == "urn:reflexblue:problem:permission-denied"


# ---------------------------------------------------------------------------------------------
# Another deployment


@dataclass
class Twin:
    """A second deployment whose issuer, and one user's id and credential stamp, equal ours."""

    deployment: Deployment
    path: str
    token: str


@pytest.fixture(scope="module")
def twin(launch: Callable[..., Deployment], vault: str, vault_owner: ApiUser, vault_owner_token: str) -> Iterator[Twin]:
    owner_claims = token_payload(vault_owner_token)
    deployment = launch({"REFLEXBLUE_TOKEN_ISSUER": owner_claims["iss"]})
    deployment.seed.administration(vault)
    user = deployment.seed.user()
    with deployment.seed.database.write() as session:
        session.execute(update(User).where(User.id == user.id)
                        .values(id=owner_claims["sub"], credential_stamp=owner_claims["cst"]))
    with deployment.seed.database.write() as session:
        twin_user = repository.get_user(session, user.username)
        role = repository.create_role(session, vault, "twin role", actor="security-test")
        repository.set_role_permissions(session, role, FULL_RIGHTS, actor="security-test")
        repository.assign(session, twin_user, role, actor="security-test")
    token = deployment.login(user)
    yield Twin(deployment, f"/api/v2/administrations/{vault}/articles", token)
    deployment.stop()


def test_twin_token_differs_only_in_key(twin: Twin, vault_owner_token: str) -> None:
    ours, theirs = token_payload(vault_owner_token), token_payload(twin.token)

    assert {name: theirs[name] for name in ("iss", "aud", "sub", "cst")} == \
        {name: ours[name] for name in ("iss", "aud", "sub", "cst")}
    assert token_header(twin.token)["kid"] != token_header(vault_owner_token)["kid"]
    with twin.deployment.client(twin.token) as client:
        assert client.get(twin.path).status_code == 200


def test_twin_token_rejected(read_vault: Callable[..., httpx.Response], twin: Twin) -> None:
    response = read_vault(twin.token)

    assert_token_rejected(response)
    assert response.json()["reason"] == "unknown_key"


def test_twin_token_with_our_kid_rejected(read_vault: Callable[..., httpx.Response], twin: Twin,
                                          owner_header: dict[str, Any]) -> None:
    _, payload_segment, signature_segment = split_token(twin.token)
    header = {**json.loads(b64url_decode(split_token(twin.token)[0])), "kid": owner_header["kid"]}

    response = read_vault(f"{encode_segment(header)}.{payload_segment}.{signature_segment}")

    assert_token_rejected(response)
    assert response.json()["reason"] == "bad_signature"


def test_our_token_rejected_by_twin(twin: Twin, vault_owner_token: str) -> None:
    with twin.deployment.client() as client:
        plain = client.get(twin.path, headers={"Authorization": f"Bearer {vault_owner_token}"})
        header = {**token_header(vault_owner_token), "kid": token_header(twin.token)["kid"]}
        _, payload_segment, signature_segment = split_token(vault_owner_token)
        swapped = client.get(twin.path, headers={
            "Authorization": f"Bearer {encode_segment(header)}.{payload_segment}.{signature_segment}"})

    assert_token_rejected(plain)
    assert_token_rejected(swapped)
