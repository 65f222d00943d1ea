from __future__ import annotations

import pytest

from executor.config import Settings, load_settings, normalize_scope_item
from executor.errors import ConfigError
from tests.conftest import TEST_PHONE_HASH_KEY, TEST_PII_KEY


def test_defaults_match_design(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.executor_enabled is False
    assert s.pilot_city is None and s.pilot_carrier is None
    assert s.daily_send_limit == 100
    assert s.rate_limit_per_minute == 20
    assert s.rate_limit_per_phone_day == 2
    assert s.max_retries == 3
    assert s.action_ttl_hours == 24
    assert s.chatea_timeout_seconds == 10
    assert s.chatea_retry_5xx is True
    assert s.chatea_concurrency == 5
    assert s.run_time_budget_seconds == 50
    assert s.circuit_breaker_threshold == 5
    assert s.circuit_breaker_reset_seconds == 60
    assert s.pii_retention_days == 30
    assert s.business_timezone == "America/Bogota"
    assert s.database_url is None
    assert s.lease_seconds == 40


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DAILY_SEND_LIMIT", "abc"),
        ("RATE_LIMIT_PER_MINUTE", "-1"),
        ("CHATEA_CONCURRENCY", "0"),
        ("BUSINESS_TIMEZONE", "Mars/Olympus"),
        ("CHATEA_API_URL", "ftp://chatea"),
        ("PHONE_HASH_KEY", "short"),
        ("PII_ENCRYPTION_KEY", "not-base64-!!"),
        ("CHATEA_TIMEOUT_SECONDS", "ten"),
        ("ACTION_TTL_HOURS", "0"),
    ],
)
def test_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert variable in str(info.value)
    # The offending value itself is never echoed (it may be a secret).
    assert value not in str(info.value) or len(value) < 4


@pytest.mark.parametrize("raw", ["true", "TRUE", " True "])
def test_kill_switch_true(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("EXECUTOR_ENABLED", raw)
    assert load_settings().executor_enabled is True


@pytest.mark.parametrize("raw", ["false", "1", "yes", "on", "", "enabled"])
def test_kill_switch_anything_else_is_dry_run(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("EXECUTOR_ENABLED", raw)
    assert load_settings().executor_enabled is False


def test_secrets_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "CRON_SECRET": "cron-secret-value-123456",
        "ADMIN_SECRET": "admin-secret-value-123456",
        "CHATEA_API_KEY": "chatea-key-value-123456",
        "PHONE_HASH_KEY": TEST_PHONE_HASH_KEY,
        "PII_ENCRYPTION_KEY": TEST_PII_KEY,
        "DATABASE_URL": "postgresql://user:db-password-123@host/db",
        "PHONE_LOOKUP_TOKEN": "lookup-token-value-123456",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    text = repr(s) + str(s) + str(s.public_config()) + str(s.env_presence())
    for value in secrets.values():
        assert value not in text
    assert "db-password-123" not in text
    assert all(s.env_presence()[name] for name in secrets)


def test_pilot_lists_are_case_and_accent_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_CITY", " Bogotá , MEDELLÍN,,")
    monkeypatch.setenv("PILOT_CARRIER", "Servientrega")
    s = load_settings()
    assert s.pilot_cities == ("bogota", "medellin")
    assert s.pilot_carriers == ("servientrega",)
    assert normalize_scope_item("  San   Andrés ") == "san andres"


def test_rollout_problems_name_variables() -> None:
    s = Settings(executor_enabled=True, cron_secret="short")
    problems = " ".join(s.rollout_problems())
    for name in ("CRON_SECRET", "CHATEA_API_URL", "CHATEA_API_KEY", "CHATEA_DEVICE_ID"):
        assert name in problems
    ok = Settings(
        cron_secret="x" * 20,
        executor_enabled=True,
        chatea_api_url="https://api.chatea.example",
        chatea_api_key="k" * 20,
        chatea_device_id="dev-1",
        phone_hash_key=TEST_PHONE_HASH_KEY,
        pii_encryption_key=TEST_PII_KEY,
    )
    assert ok.rollout_problems() == []


def test_loading_settings_is_not_done_at_import() -> None:
    import subprocess
    import sys

    # Importing the app with a broken environment must succeed: settings are read lazily.
    code = "import api.index, executor.cli, executor.config; print('ok')"
    env = {"DAILY_SEND_LIMIT": "broken", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
