"""Settings: defaults, parsing of REFLEXBLUE_* variables and validation."""

from __future__ import annotations

import pytest

from reflexblue.domain.errors import ValidationError
from reflexblue.settings import Settings, SettingsError


def test_defaults_token_settings() -> None:
    settings = Settings()

    assert settings.token_lifetime == 86_400
    assert settings.token_leeway == 30
    assert settings.token_algorithm == "EdDSA"
    assert settings.token_audience == "reflexblue-external-api"


def test_defaults_argon2_parameters() -> None:
    settings = Settings()

    assert settings.argon2_memory_cost == 19_456
    assert settings.argon2_time_cost == 2
    assert settings.argon2_parallelism == 1


def test_defaults_database_is_sqlite_file() -> None:
    assert Settings().database_url.startswith("sqlite:///")


def test_defaults_throttle_and_logout() -> None:
    settings = Settings()

    assert settings.throttle_user_failures == 5
    assert settings.throttle_max_delay <= 900
    assert settings.revoke_on_logout is False


def test_defaults_pass_validation() -> None:
    Settings().validate()


def test_from_env_empty_gives_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_ignores_other_variables() -> None:
    assert Settings.from_env({"TOKEN_LIFETIME": "5", "REFLEXBLUE": "x", "PATH": "/bin"}) == Settings()


def test_from_env_reads_every_kind() -> None:
    settings = Settings.from_env(
        {
            "REFLEXBLUE_DATABASE_URL": " postgresql://postgres@127.0.0.1:5432/name ",
            "REFLEXBLUE_TOKEN_LIFETIME": "3600",
            "REFLEXBLUE_TOKEN_LEEWAY": " 60 ",
            "REFLEXBLUE_TOKEN_ALGORITHM": "ES256",
            "REFLEXBLUE_REVOKE_ON_LOGOUT": "true",
            "REFLEXBLUE_ACCESS_REFRESH_INTERVAL": "0.25",
            "REFLEXBLUE_LOG_FORMAT": "text",
        }
    )

    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/name"
    assert settings.token_lifetime == 3600
    assert settings.token_leeway == 60
    assert settings.token_algorithm == "ES256"
    assert settings.revoke_on_logout is True
    assert settings.access_refresh_interval == 0.25
    assert settings.log_format == "text"


@pytest.mark.parametrize(("text", "expected"), [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False),
])
def test_from_env_parses_booleans(text: str, expected: bool) -> None:
    assert Settings.from_env({"REFLEXBLUE_REVOKE_ON_LOGOUT": text}).revoke_on_logout is expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REFLEXBLUE_TOKEN_LEEWAY", "61"),
        ("REFLEXBLUE_TOKEN_LEEWAY", "-1"),
        ("REFLEXBLUE_TOKEN_LIFETIME", "0"),
        ("REFLEXBLUE_TOKEN_LIFETIME", "-5"),
        ("REFLEXBLUE_TOKEN_LIFETIME", "2592001"),
        ("REFLEXBLUE_TOKEN_ALGORITHM", "HS256"),
        ("REFLEXBLUE_TOKEN_ALGORITHM", "none"),
        ("REFLEXBLUE_TOKEN_ALGORITHM", "eddsa"),
        ("REFLEXBLUE_TOKEN_MAX_BYTES", "100"),
        ("REFLEXBLUE_TOKEN_AUDIENCE", "  "),
        ("REFLEXBLUE_ARGON2_MEMORY_COST", "1024"),
        ("REFLEXBLUE_ARGON2_TIME_COST", "0"),
        ("REFLEXBLUE_ARGON2_PARALLELISM", "0"),
        ("REFLEXBLUE_THROTTLE_USER_FAILURES", "4"),
        ("REFLEXBLUE_THROTTLE_ADDRESS_FAILURES", "1"),
        ("REFLEXBLUE_THROTTLE_BASE_DELAY", "0"),
        ("REFLEXBLUE_THROTTLE_MAX_DELAY", "901"),
        ("REFLEXBLUE_THROTTLE_WINDOW", "59"),
        ("REFLEXBLUE_ACCESS_REFRESH_INTERVAL", "2"),
        ("REFLEXBLUE_LOG_FORMAT", "xml"),
    ],
)
def test_invalid_value_names_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})

    assert name in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("REFLEXBLUE_TOKEN_LIFETIME", "one day", "a whole number"),
        ("REFLEXBLUE_TOKEN_LIFETIME", "1.5", "a whole number"),
        ("REFLEXBLUE_TOKEN_LEEWAY", "", "a whole number"),
        ("REFLEXBLUE_ACCESS_REFRESH_INTERVAL", "fast", "a number"),
        ("REFLEXBLUE_REVOKE_ON_LOGOUT", "maybe", "true or false"),
    ],
)
def test_non_number_names_variable_and_type(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})

    message = str(caught.value)
    assert name in message
    assert expected in message


def test_base_delay_above_max_delay_rejected() -> None:
    with pytest.raises(SettingsError, match="REFLEXBLUE_THROTTLE_BASE_DELAY"):
        Settings.from_env({"REFLEXBLUE_THROTTLE_BASE_DELAY": "120", "REFLEXBLUE_THROTTLE_MAX_DELAY": "60"})


def test_leeway_limit_sixty_accepted() -> None:
    assert Settings.from_env({"REFLEXBLUE_TOKEN_LEEWAY": "60"}).token_leeway == 60


def test_validate_checks_direct_construction() -> None:
    with pytest.raises(SettingsError, match="REFLEXBLUE_TOKEN_LEEWAY"):
        Settings(token_leeway=61).validate()


def test_settings_error_is_validation_error() -> None:
    assert issubclass(SettingsError, ValidationError)


def test_secret_key_not_in_repr() -> None:
    settings = Settings(secret_key="s3cr3t-value-never-shown")

    assert "s3cr3t-value-never-shown" not in repr(settings)
    assert "secret_key" not in repr(settings)


def test_env_secret_key_hidden() -> None:
    settings = Settings.from_env({"REFLEXBLUE_SECRET_KEY": "another-s3cr3t"})

    assert settings.secret_key == "another-s3cr3t"
    assert "another-s3cr3t" not in repr(settings)


def test_invalid_value_message_not_leaking_secret() -> None:
    # A bad value of another variable is echoed, but the secret key never is.
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REFLEXBLUE_SECRET_KEY": "hidden-s3cr3t", "REFLEXBLUE_TOKEN_LEEWAY": "99"})

    assert "hidden-s3cr3t" not in str(caught.value)


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(AttributeError):
        settings.token_lifetime = 1  # type: ignore[misc]


def test_defaults_database_pool_and_timeout() -> None:
    settings = Settings()

    assert settings.database_pool_size == 10
    assert settings.database_timeout == 5.0


def test_from_env_reads_database_pool_and_timeout() -> None:
    settings = Settings.from_env({"REFLEXBLUE_DATABASE_POOL_SIZE": "25", "REFLEXBLUE_DATABASE_TIMEOUT": "2.5"})

    assert settings.database_pool_size == 25
    assert settings.database_timeout == 2.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REFLEXBLUE_DATABASE_POOL_SIZE", "0"),
        ("REFLEXBLUE_DATABASE_POOL_SIZE", "501"),
        ("REFLEXBLUE_DATABASE_TIMEOUT", "0.5"),
        ("REFLEXBLUE_DATABASE_TIMEOUT", "601"),
    ],
)
def test_invalid_database_setting_names_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})

    assert name in str(caught.value)


# ------------------------------------------------------------------------------------------------
# Redis and metrics


def test_defaults_redis_off_metrics_on() -> None:
    settings = Settings()

    assert settings.redis_url == ""
    assert settings.redis_prefix == "reflexblue:"
    assert settings.metrics is True
    assert settings.metrics_port == 0


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:secret@cache:6380/1", "unix:///run/redis.sock"])
def test_redis_url_valid_forms_accepted(url: str) -> None:
    assert Settings.from_env({"REFLEXBLUE_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("url", ["http://:secret@cache:6379", "redis://:secret@", "secret@cache:6379",
                                 "redis://:secret@[::1"])
def test_redis_url_invalid_rejected_without_echo(url: str) -> None:
    with pytest.raises(SettingsError, match="invalid REFLEXBLUE_REDIS_URL") as caught:
        Settings.from_env({"REFLEXBLUE_REDIS_URL": url})

    assert "secret" not in str(caught.value)


def test_redis_url_not_in_repr() -> None:
    assert "secret" not in repr(Settings(redis_url="redis://:secret@cache:6379/0"))


@pytest.mark.parametrize("prefix", ["", "has space:", "x" * 101, "tab\tinside:"])
def test_redis_prefix_invalid_rejected(prefix: str) -> None:
    with pytest.raises(SettingsError, match="REFLEXBLUE_REDIS_PREFIX"):
        Settings.from_env({"REFLEXBLUE_REDIS_PREFIX": prefix})


@pytest.mark.parametrize("port", ["-1", "65536"])
def test_metrics_port_out_of_range_rejected(port: str) -> None:
    with pytest.raises(SettingsError, match="REFLEXBLUE_METRICS_PORT"):
        Settings.from_env({"REFLEXBLUE_METRICS_PORT": port})


def test_metrics_switch_read_from_env() -> None:
    assert Settings.from_env({"REFLEXBLUE_METRICS": "false"}).metrics is False
