"""argon2id hashing and verification, the password policy and pre-computed hashes."""

from __future__ import annotations

import pytest
from argon2 import Type, extract_parameters

from reflexblue.domain.errors import ValidationError
from reflexblue.security.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    Passwords,
    check_password_hash,
    check_password_policy,
)
from reflexblue.settings import Settings

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(Settings(argon2_memory_cost=8192, argon2_time_cost=1))


@pytest.fixture(scope="module")
def stored_hash(passwords: Passwords) -> str:
    return passwords.hash(PASSWORD)


def test_hash_is_argon2id_phc_string(stored_hash: str) -> None:
    assert stored_hash.startswith("$argon2id$v=19$")


def test_hash_uses_configured_parameters(stored_hash: str) -> None:
    parameters = extract_parameters(stored_hash)

    assert parameters.type is Type.ID
    assert parameters.memory_cost == 8192
    assert parameters.time_cost == 1
    assert parameters.parallelism == 1
    assert parameters.hash_len == 32
    assert parameters.salt_len == 16


def test_hash_uses_default_owasp_parameters() -> None:
    parameters = extract_parameters(Passwords(Settings()).hash(PASSWORD))

    assert (parameters.memory_cost, parameters.time_cost, parameters.parallelism) == (19_456, 2, 1)


def test_hash_is_salted(passwords: Passwords, stored_hash: str) -> None:
    assert passwords.hash(PASSWORD) != stored_hash


def test_hash_does_not_contain_password(stored_hash: str) -> None:
    assert PASSWORD not in stored_hash


def test_verify_accepts_right_password(passwords: Passwords, stored_hash: str) -> None:
    verification = passwords.verify(stored_hash, PASSWORD)

    assert verification.ok
    assert verification.new_hash is None


@pytest.mark.parametrize(
    "attempt",
    [PASSWORD.upper(), PASSWORD + " ", " " + PASSWORD, PASSWORD[:-1], "", "correct horse battery stapl\u0435"],
)
def test_verify_rejects_wrong_password(passwords: Passwords, stored_hash: str, attempt: str) -> None:
    assert not passwords.verify(stored_hash, attempt).ok


def test_verify_unknown_user_fails(passwords: Passwords) -> None:
    assert not passwords.verify(None, PASSWORD).ok


def test_verify_dummy_password_fails(passwords: Passwords) -> None:
    # The dummy hash verified for unknown users must not accept its own password.
    assert not passwords.verify(None, "reflexblue-dummy-password-for-unknown-users").ok


def test_verify_unknown_user_returns_no_hash(passwords: Passwords) -> None:
    assert passwords.verify(None, PASSWORD).new_hash is None


@pytest.mark.parametrize("corrupt", ["", "plain-text", "$argon2id$v=19$m=8192,t=1,p=1$broken", "$2b$12$abcdefghijkl"])
def test_verify_corrupt_hash_fails(passwords: Passwords, corrupt: str) -> None:
    assert not passwords.verify(corrupt, PASSWORD).ok


def test_verify_returns_rehash_when_parameters_changed(stored_hash: str) -> None:
    stronger = Passwords(Settings(argon2_memory_cost=9216, argon2_time_cost=2))

    verification = stronger.verify(stored_hash, PASSWORD)

    assert verification.ok
    assert verification.new_hash is not None
    parameters = extract_parameters(verification.new_hash)
    assert (parameters.memory_cost, parameters.time_cost) == (9216, 2)
    assert stronger.verify(verification.new_hash, PASSWORD) == verification.__class__(ok=True)


def test_verify_wrong_password_returns_no_rehash(stored_hash: str) -> None:
    stronger = Passwords(Settings(argon2_memory_cost=9216, argon2_time_cost=2))

    verification = stronger.verify(stored_hash, "wrong password here")

    assert not verification.ok
    assert verification.new_hash is None


def test_policy_accepts_min_length() -> None:
    password = "Tq7-vRm2#pLw"[:MIN_PASSWORD_LENGTH]

    assert MIN_PASSWORD_LENGTH == 12
    assert check_password_policy(password) == password


def test_policy_accepts_max_length() -> None:
    password = ("Tq7-vRm2#pLw" * MAX_PASSWORD_LENGTH)[:MAX_PASSWORD_LENGTH]

    assert MAX_PASSWORD_LENGTH == 1024
    assert check_password_policy(password) == password


def test_policy_keeps_password_unchanged() -> None:
    password = "  Pässwörd\u00a0mit Leerzeichen  "

    assert check_password_policy(password) == password


@pytest.mark.parametrize("password", ["", "Zq9!pw", "Elev3nChars"])
def test_policy_rejects_short(password: str) -> None:
    with pytest.raises(ValidationError, match="fewer than 12 characters") as caught:
        check_password_policy(password)

    if password:
        assert password not in str(caught.value)


def test_policy_rejects_long() -> None:
    password = "secret-part-" + "y" * MAX_PASSWORD_LENGTH

    with pytest.raises(ValidationError, match="too long") as caught:
        check_password_policy(password)

    assert "secret-part" not in str(caught.value)


@pytest.mark.parametrize("password", [None, 123456789012, b"bytes-password-long", ["list"]])
def test_policy_rejects_non_string(password: object) -> None:
    with pytest.raises(ValidationError, match="must be a string") as caught:
        check_password_policy(password)

    assert str(password) not in str(caught.value)


def test_policy_short_message_omits_password() -> None:
    with pytest.raises(ValidationError) as caught:
        check_password_policy("Hunter2!x")

    assert "Hunter2!x" not in str(caught.value)
    assert "Hunter2!x" not in repr(caught.value)


def test_password_hash_accepts_argon2id(stored_hash: str) -> None:
    assert check_password_hash(stored_hash) == stored_hash


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "plain-text",
        "$argon2i$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2d$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$2b$12$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
        "$argon2id$garbage",
        "$argon2id$v=19$m=x,t=1,p=1$salt$hash",
    ],
)
def test_password_hash_rejects_other_strings(value: object) -> None:
    with pytest.raises(ValidationError, match="invalid password_hash"):
        check_password_hash(value)


def test_outdated_hash_failure_costs_current_time() -> None:
    # A failed check against a hash with cheaper, older parameters must last as long as a check
    # with the current ones, or it would tell such users apart from unknown usernames.
    import time

    from argon2 import PasswordHasher

    current = Passwords(Settings())
    current.warm_up()
    cheap_hash = PasswordHasher(memory_cost=8192, time_cost=1, parallelism=1).hash("old-password-value")
    started = time.perf_counter()
    result = current.verify(cheap_hash, "wrong-password-value")
    elapsed = time.perf_counter() - started

    assert not result.ok
    assert elapsed >= 0.9 * current._reference_seconds
