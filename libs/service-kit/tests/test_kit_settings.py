"""ServiceSettings: secret checks, placeholders, secrets read from files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from service_kit.settings import (
    PLACEHOLDER_SECRETS,
    Environment,
    ServiceSettings,
    secret_required_outside_development,
)


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_")

    service_name = "demo"

    api_secret: SecretStr | None = Field(
        default=None, json_schema_extra=secret_required_outside_development()
    )
    #: A secret that is optional everywhere (no marker).
    optional_secret: SecretStr | None = None
    greeting: str = "hello"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DEMO_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith("DEMO_"):
            monkeypatch.delenv(name)


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "test")
    monkeypatch.setenv("DEMO_API_SECRET", "s3cr3t-value-9f2c")
    monkeypatch.setenv("DEMO_GREETING", "bonjour")
    monkeypatch.setenv("DEMO_LOG_LEVEL", "debug")
    monkeypatch.setenv("DEMO_CLIENT_MAX_ATTEMPTS", "5")
    settings = DemoSettings()
    assert settings.environment is Environment.TEST
    assert settings.api_secret is not None
    assert settings.api_secret.get_secret_value() == "s3cr3t-value-9f2c"
    assert settings.greeting == "bonjour"
    assert settings.log_level == "DEBUG"
    assert settings.client_max_attempts == 5
    assert not settings.is_development


def test_default_environment_is_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_API_SECRET", "s3cr3t-value-9f2c")
    assert DemoSettings().environment is Environment.PRODUCTION


def test_unprefixed_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_SECRET", "s3cr3t-value-9f2c")
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    assert DemoSettings().api_secret is None


@pytest.mark.parametrize("environment", ["production", "test"])
def test_missing_secret_outside_development_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", environment)
    with pytest.raises(ValueError, match="DEMO_API_SECRET is required outside development"):
        DemoSettings()


def test_empty_secret_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "production")
    monkeypatch.setenv("DEMO_API_SECRET", "")
    with pytest.raises(ValueError, match="DEMO_API_SECRET is required"):
        DemoSettings()


def test_missing_secret_allowed_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    settings = DemoSettings()
    assert settings.api_secret is None
    assert settings.is_development


def test_unmarked_secret_may_be_missing_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_API_SECRET", "s3cr3t-value-9f2c")
    settings = DemoSettings()
    assert settings.optional_secret is None
    assert settings.service_secret is None


@pytest.mark.parametrize("environment", ["development", "test", "production"])
@pytest.mark.parametrize("placeholder", ["changeme", "secret", "CHANGEME", " Password ", "todo"])
def test_placeholder_refused_in_every_environment(
    monkeypatch: pytest.MonkeyPatch, environment: str, placeholder: str
) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", environment)
    monkeypatch.setenv("DEMO_API_SECRET", placeholder)
    with pytest.raises(ValueError, match="DEMO_API_SECRET holds a placeholder value"):
        DemoSettings()


def test_placeholder_refused_in_unmarked_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    monkeypatch.setenv("DEMO_OPTIONAL_SECRET", "changeme")
    with pytest.raises(ValueError, match="DEMO_OPTIONAL_SECRET holds a placeholder value"):
        DemoSettings()


def test_placeholder_refused_in_trusted_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    monkeypatch.setenv(
        "DEMO_TRUSTED_SERVICES", json.dumps({"legacy-flask": "changeme", "admin": "r3al-9f2c"})
    )
    with pytest.raises(ValueError, match=r"DEMO_TRUSTED_SERVICES\[LEGACY-FLASK\] holds a place"):
        DemoSettings()


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "production")
    monkeypatch.setenv("DEMO_OPTIONAL_SECRET", "secret")
    with pytest.raises(ValueError, match="DEMO_API_SECRET") as caught:
        DemoSettings()
    assert "DEMO_OPTIONAL_SECRET holds a placeholder value" in str(caught.value)


def test_placeholder_list_is_lowercase() -> None:
    # The comparison lower-cases the value, so an upper-case entry could never match.
    assert all(value == value.lower().strip() for value in PLACEHOLDER_SECRETS)
    assert {"changeme", "secret"} <= PLACEHOLDER_SECRETS


def test_real_secret_containing_a_placeholder_word_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEMO_API_SECRET", "secret-but-long-and-random-81c3")
    settings = DemoSettings()
    assert settings.api_secret is not None
    assert settings.api_secret.get_secret_value() == "secret-but-long-and-random-81c3"


def test_secret_is_not_shown_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_API_SECRET", "s3cr3t-value-9f2c")
    settings = DemoSettings()
    assert "s3cr3t-value-9f2c" not in repr(settings)
    assert "s3cr3t-value-9f2c" not in settings.model_dump_json()


def test_secret_read_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "api_secret"
    secret_file.write_text("  from-a-file-7d1e\n", encoding="utf-8")
    monkeypatch.setenv("DEMO_API_SECRET_FILE", str(secret_file))
    settings = DemoSettings()
    assert settings.api_secret is not None
    assert settings.api_secret.get_secret_value() == "from-a-file-7d1e"


def test_variable_wins_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "api_secret"
    secret_file.write_text("from-a-file-7d1e", encoding="utf-8")
    monkeypatch.setenv("DEMO_API_SECRET", "from-the-env-2b8a")
    monkeypatch.setenv("DEMO_API_SECRET_FILE", str(secret_file))
    settings = DemoSettings()
    assert settings.api_secret is not None
    assert settings.api_secret.get_secret_value() == "from-the-env-2b8a"


def test_placeholder_in_file_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "api_secret"
    secret_file.write_text("changeme\n", encoding="utf-8")
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    monkeypatch.setenv("DEMO_API_SECRET_FILE", str(secret_file))
    with pytest.raises(ValueError, match="DEMO_API_SECRET holds a placeholder value"):
        DemoSettings()


def test_secret_map_read_from_json_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "trusted.json"
    secret_file.write_text(
        json.dumps({"legacy-flask": "flask-secret-5e1a", "admin-django": "django-secret-0c4d"}),
        encoding="utf-8",
    )
    monkeypatch.setenv("DEMO_API_SECRET", "s3cr3t-value-9f2c")
    monkeypatch.setenv("DEMO_TRUSTED_SERVICES_FILE", str(secret_file))
    settings = DemoSettings()
    assert set(settings.trusted_services) == {"legacy-flask", "admin-django"}
    assert all(isinstance(value, SecretStr) for value in settings.trusted_services.values())
    assert settings.trusted_services["legacy-flask"].get_secret_value() == "flask-secret-5e1a"
    assert settings.trusted_services["admin-django"].get_secret_value() == "django-secret-0c4d"


def test_unreadable_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "does-not-exist"
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    monkeypatch.setenv("DEMO_API_SECRET_FILE", str(missing))
    with pytest.raises(ValueError, match="DEMO_API_SECRET_FILE: cannot read") as caught:
        DemoSettings()
    assert str(missing) in str(caught.value)


def test_directory_as_secret_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    monkeypatch.setenv("DEMO_SERVICE_SECRET_FILE", str(tmp_path))
    with pytest.raises(ValueError, match="DEMO_SERVICE_SECRET_FILE: cannot read"):
        DemoSettings()


def test_file_variable_only_for_secret_fields(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    greeting_file = tmp_path / "greeting"
    greeting_file.write_text("from-a-file", encoding="utf-8")
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    monkeypatch.setenv("DEMO_GREETING_FILE", str(greeting_file))
    assert DemoSettings().greeting == "hello"


def test_unknown_log_level_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    monkeypatch.setenv("DEMO_LOG_LEVEL", "chatty")
    with pytest.raises(ValidationError, match="log_level"):
        DemoSettings()


@pytest.mark.parametrize(
    ("name", "value"), [("CLIENT_TIMEOUT_SECONDS", "0"), ("CLIENT_MAX_ATTEMPTS", "0")]
)
def test_client_bounds_enforced(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    monkeypatch.setenv(f"DEMO_{name}", value)
    with pytest.raises(ValidationError, match=name.lower()):
        DemoSettings()


def test_malformed_json_secret_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret_file = tmp_path / "trusted.json"
    secret_file.write_text("{legacy-flask: flask-secret-5e1a", encoding="utf-8")
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    monkeypatch.setenv("DEMO_TRUSTED_SERVICES_FILE", str(secret_file))
    with pytest.raises(ValueError, match="DEMO_TRUSTED_SERVICES_FILE") as caught:
        DemoSettings()
    assert "flask-secret-5e1a" not in str(caught.value)


def test_settings_error_does_not_echo_other_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # One secret is wrong; the error (printed when the service fails to start) must not
    # carry the values of the others.
    monkeypatch.setenv("DEMO_ENVIRONMENT", "production")
    monkeypatch.setenv("DEMO_SERVICE_SECRET", "real-9f2c")
    monkeypatch.setenv("DEMO_TRUSTED_SERVICES", json.dumps({"admin-django": "django-0c4d"}))
    with pytest.raises(ValueError, match="DEMO_API_SECRET is required") as caught:
        DemoSettings()
    message = str(caught.value)
    assert "real-9f2c" not in message
    assert "django-0c4d" not in message


def test_field_error_does_not_echo_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "development")
    monkeypatch.setenv("DEMO_TRUSTED_SERVICES", json.dumps({"admin-django": ["django-0c4d"]}))
    with pytest.raises(ValidationError, match="trusted_services") as caught:
        DemoSettings()
    assert "django-0c4d" not in str(caught.value)


# --- observability switches -------------------------------------------------------------------


def test_drills_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_API_SECRET", "s3cr3t-value-9f2c")
    monkeypatch.setenv("DEMO_DRILLS", "true")
    with pytest.raises(ValueError, match="DEMO_DRILLS must stay off in production"):
        DemoSettings()


@pytest.mark.parametrize("environment", ["development", "test"])
def test_drills_allowed_outside_production(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", environment)
    monkeypatch.setenv("DEMO_API_SECRET", "s3cr3t-value-9f2c")
    monkeypatch.setenv("DEMO_DRILLS", "true")
    assert DemoSettings().drills is True


def test_observability_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "test")
    monkeypatch.setenv("DEMO_API_SECRET", "s3cr3t-value-9f2c")
    settings = DemoSettings()
    assert settings.drills is False
    assert settings.instrumentation is True
    assert settings.db_repeated_query_threshold == 10


@pytest.mark.parametrize(("value", "accepted"), [("1", False), ("2", True), ("10001", False)])
def test_repeated_query_threshold_bounds(
    monkeypatch: pytest.MonkeyPatch, value: str, accepted: bool
) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "test")
    monkeypatch.setenv("DEMO_API_SECRET", "s3cr3t-value-9f2c")
    monkeypatch.setenv("DEMO_DB_REPEATED_QUERY_THRESHOLD", value)
    if accepted:
        assert DemoSettings().db_repeated_query_threshold == int(value)
    else:
        with pytest.raises(ValueError, match="db_repeated_query_threshold"):
            DemoSettings()
