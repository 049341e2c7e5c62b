"""The password policy beyond length: common passwords, simple patterns and the username, on every path."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reflexblue.cli.main import cli
from reflexblue.demo import DEMO_USERS
from reflexblue.domain.errors import ValidationError
from reflexblue.provisioning.reader import ProvisioningError, parse_spec
from reflexblue.security.passwords import (
    COMMON_PASSWORDS_FILE,
    MIN_PASSWORD_LENGTH,
    check_password_policy,
    common_passwords,
)

STRONG = "Tq7-vRm2#pLw-9xe"

Run = Callable[..., Result]


def rejection(password: str, username: str | None = None) -> str:
    """Return the policy's message for ``password``; fail when the policy accepts it."""
    with pytest.raises(ValidationError) as caught:
        check_password_policy(password, username=username)
    return str(caught.value)


# ------------------------------------------------------------------------------------------------
# The shipped list


def test_common_list_ships_as_package_data() -> None:
    text = resources.files("reflexblue.security").joinpath(COMMON_PASSWORDS_FILE).read_text(encoding="utf-8")

    assert text.startswith("# ")
    assert "scripts/common_passwords.py" in text.split("\n\n")[0]


def test_common_list_has_thousands_of_entries() -> None:
    assert len(common_passwords()) > 3000


def test_common_list_entries_reach_min_length() -> None:
    too_short = [password for password in common_passwords() if len(password) < MIN_PASSWORD_LENGTH]

    assert too_short == []


def test_common_list_is_in_package_data_patterns() -> None:
    pyproject = (Path(__file__).parents[3] / "pyproject.toml").read_text(encoding="utf-8")

    assert '"security/*.txt"' in pyproject


# ------------------------------------------------------------------------------------------------
# Common passwords and simple patterns


@pytest.mark.parametrize(
    "password",
    ["password1234", "123456789012", "qwertyuiop12", "1qaz2wsx3edc", "qwerty123456", "changeme1234",
     "iloveyou1234", "administrator", "letmein12345", "correcthorsebatterystaple", "monkey123456"],
)
def test_policy_rejects_common_password(password: str) -> None:
    assert "too common" in rejection(password)


def test_policy_common_check_ignores_case() -> None:
    assert "too common" in rejection("PassWord1234")


def test_policy_common_check_uses_nfkc() -> None:
    fullwidth = "ｐａｓｓｗｏｒｄ１２３４"

    assert "too common" in rejection(fullwidth)


@pytest.mark.parametrize(
    "password",
    ["x" * 12, "Z" * 1024, "abababababab", "abcabcabcabcabc", "1234123412341", "!?!?!?!?!?!?"],
)
def test_policy_rejects_repeated_unit(password: str) -> None:
    assert "too simple" in rejection(password)


@pytest.mark.parametrize("password", ["abcdefghijklmn", "NOPQRSTUVWXYZ", "876543210987", "zyxwvutsrqpo"])
def test_policy_rejects_character_run(password: str) -> None:
    assert "too simple" in rejection(password)


@pytest.mark.parametrize(
    "password",
    [STRONG, "correct-horse-battery", "change-me-now", "ab" * 6 + "c", "abcde" * 3, "Pässwörter sind lang"],
)
def test_policy_accepts_uncommon_password(password: str) -> None:
    assert check_password_policy(password) == password


def test_policy_checks_length_before_list() -> None:
    message = rejection("password1")

    assert str(MIN_PASSWORD_LENGTH) in message
    assert "common" not in message


# ------------------------------------------------------------------------------------------------
# The username


def test_policy_rejects_password_equal_to_username() -> None:
    assert "contains the username" in rejection("shop-api-connector", username="shop-api-connector")


def test_policy_rejects_password_containing_username() -> None:
    assert "contains the username" in rejection("my-Shop-API-2024-secret", username="shop-api")


def test_policy_username_check_uses_nfkc() -> None:
    assert "contains the username" in rejection("xx-shop-api-9-yy", username="ｓｈｏｐ-ａｐｉ")


def test_policy_allows_short_username_inside() -> None:
    assert check_password_policy("my-api-key-9Xq7", username="api") == "my-api-key-9Xq7"


def test_policy_without_username_skips_username_check() -> None:
    assert check_password_policy("shop-api-secret-9Xq7") == "shop-api-secret-9Xq7"


# ------------------------------------------------------------------------------------------------
# Messages never contain the password


@pytest.mark.parametrize(
    ("password", "username"),
    [("Password1234", None), ("SecretSecret", None), ("abcdefghijklmnop", None), ("zz-shop-api-Secret", "shop-api")],
)
def test_policy_message_omits_password(password: str, username: str | None) -> None:
    message = rejection(password, username)

    assert password not in message
    assert password.lower() not in message.lower()


# ------------------------------------------------------------------------------------------------
# Paths that set passwords: provisioning, the CLI and the demo


def test_demo_passwords_pass_policy() -> None:
    for user in DEMO_USERS:
        assert check_password_policy(user.password, username=user.username) == user.password


def test_provisioning_rejects_common_password() -> None:
    document = {"users": [{"username": "shop-api", "password": "Password1234"}]}

    with pytest.raises(ProvisioningError) as caught:
        parse_spec(document, "users.json")

    message = str(caught.value)
    assert message.startswith('users.json: users[0] ("shop-api"): password too common')
    assert "Password1234" not in message


def test_provisioning_rejects_password_with_username() -> None:
    document = {"users": [{"username": "Shop-API", "password": "shop-api-Secret-77"}]}

    with pytest.raises(ProvisioningError) as caught:
        parse_spec(document, "users.json")

    message = str(caught.value)
    assert 'users[0] ("Shop-API")' in message
    assert "contains the username" in message
    assert "shop-api-Secret-77" not in message


def test_provisioning_accepts_other_users_name() -> None:
    document = {"users": [{"username": "shop-api", "password": "edi-link-Secret-77"},
                          {"username": "edi-link", "password": "shop-api-Secret-77"}]}

    spec = parse_spec(document, "users.json")

    assert [user.username for user in spec.users] == ["shop-api", "edi-link"]


@pytest.fixture
def run_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Invoke ``reflexblue --database-url URL ARGS...`` in-process on a new SQLite file."""
    monkeypatch.setenv("REFLEXBLUE_ARGON2_MEMORY_COST", "8192")
    monkeypatch.setenv("REFLEXBLUE_ARGON2_TIME_COST", "1")
    monkeypatch.delenv("REFLEXBLUE_DATABASE_URL", raising=False)
    url = f"sqlite:///{tmp_path}/cli.db"

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--database-url", url, *args], input=input)

    return invoke


def test_cli_create_rejects_common_password(run_cli: Run) -> None:
    result = run_cli("users", "create", "shop-api", "--password-stdin", input="Qwerty123456\n")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: password too common")
    assert "Qwerty123456" not in result.output


def test_cli_create_rejects_password_with_username(run_cli: Run) -> None:
    result = run_cli("users", "create", "shop-api", "--password-stdin", input="Shop-API-Secret-77\n")

    assert result.exit_code == 1
    assert "contains the username" in result.stderr


def test_cli_create_prompt_rejects_common_password(run_cli: Run) -> None:
    answers = "Password1234\n" + f"{STRONG}\n{STRONG}\n"

    result = run_cli("users", "create", "shop-api", input=answers)

    assert result.exit_code == 0, result.output
    assert "too common" in result.stderr
    assert "Password1234" not in result.output


def test_cli_set_password_rejects_password_with_username(run_cli: Run) -> None:
    assert run_cli("users", "create", "shop-api", "--password-stdin", input=f"{STRONG}\n").exit_code == 0

    result = run_cli("users", "set-password", "SHOP-API", "--password-stdin", input="new-shop-api-secret\n")

    assert result.exit_code == 1
    assert "contains the username" in result.stderr


def test_cli_set_password_accepts_strong_password(run_cli: Run) -> None:
    assert run_cli("users", "create", "shop-api", "--password-stdin", input=f"{STRONG}\n").exit_code == 0

    result = run_cli("users", "set-password", "shop-api", "--password-stdin", input="another-long-passphrase\n")

    assert result.exit_code == 0, result.output
    assert "another-long-passphrase" not in result.output
