"""GET /api/admin/rollout-config: validation, sendStatus reasons in order, env booleans only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.config import Settings
from executor.db import libpq_url
from executor.metrics import rollout_status, rollout_validation_errors
from tests.conftest import (
    TEST_ADMIN_SECRET,
    TEST_API_KEY,
    TEST_CRON_SECRET,
    TEST_PHONE_HASH_KEY,
    TEST_PII_KEY,
    make_settings,
)
from tests.test_admin_status import ADMIN, admin_client, insert_action, stable_clock

DEVICE = "device-under-test"


def enabled_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "executor_enabled": True,
        "chatea_api_url": "https://chatea.example.test/api",
        "chatea_api_key": TEST_API_KEY,
        "chatea_device_id": DEVICE,
    }
    values.update(overrides)
    return make_settings(db_url, **values)


def set_breaker(db_url: str, state: str, open_for_seconds: float | None) -> None:
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO circuit_breakers (device_id, state, consecutive_failures, open_until)"
            " VALUES (%s, %s, 5, CASE WHEN %s::float8 IS NULL THEN NULL"
            " ELSE now() + make_interval(secs => %s::float8) END)",
            (DEVICE, state, open_for_seconds, open_for_seconds),
        )


def use_quota_today(db_url: str, count: int) -> None:
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        clock = stable_clock(conn)
        for i in range(count):
            insert_action(
                conn,
                status="SENT",
                phone_hash=f"hash-{i}",
                attempts=1,
                executed_at=clock.now - timedelta(seconds=100),
                send_day=clock.today,
            )


async def reason_of(engine: AsyncEngine, settings: Settings) -> tuple[bool, str]:
    send = (await rollout_status(engine, settings))["sendStatus"]
    return send["allowed"], send["reason"]


# ---- reasons, in their order ----------------------------------------------------------------


async def test_ok_when_enabled_valid_closed_and_under_limit(engine: AsyncEngine, clean_db: str):
    assert await reason_of(engine, enabled_settings(clean_db)) == (True, "OK")


async def test_config_invalid_comes_first(engine: AsyncEngine, clean_db: str) -> None:
    # Enabled without provider credentials, breaker open and quota spent: config wins.
    set_breaker(clean_db, "open", 60)
    use_quota_today(clean_db, 1)
    settings = make_settings(clean_db, executor_enabled=True, daily_send_limit=1)
    body = await rollout_status(engine, settings)
    assert body["sendStatus"] == {"allowed": False, "reason": "CONFIG_INVALID"}
    assert body["validation"]["valid"] is False
    errors = body["validation"]["errors"]
    for name in ("CHATEA_API_URL", "CHATEA_API_KEY", "CHATEA_DEVICE_ID"):
        assert any(name in e for e in errors), (name, errors)


async def test_config_invalid_even_when_disabled(engine: AsyncEngine, clean_db: str) -> None:
    settings = make_settings(clean_db, cron_secret="too-short")
    allowed, reason = await reason_of(engine, settings)
    assert (allowed, reason) == (False, "CONFIG_INVALID")
    assert any("CRON_SECRET" in e for e in rollout_validation_errors(settings))


async def test_executor_disabled_before_breaker_and_limit(engine: AsyncEngine, clean_db: str):
    set_breaker(clean_db, "open", 60)
    settings = make_settings(clean_db, daily_send_limit=0)
    body = await rollout_status(engine, settings)
    assert body["validation"] == {"valid": True, "errors": []}
    assert body["sendStatus"] == {"allowed": False, "reason": "EXECUTOR_DISABLED"}


async def test_circuit_open_before_daily_limit(engine: AsyncEngine, clean_db: str) -> None:
    set_breaker(clean_db, "open", 60)
    use_quota_today(clean_db, 2)
    assert await reason_of(engine, enabled_settings(clean_db, daily_send_limit=2)) == (
        False,
        "CIRCUIT_OPEN",
    )


async def test_breaker_past_its_open_window_allows_the_probe(engine: AsyncEngine, clean_db: str):
    set_breaker(clean_db, "open", -5)
    assert await reason_of(engine, enabled_settings(clean_db)) == (True, "OK")


async def test_half_open_breaker_allows_the_probe(engine: AsyncEngine, clean_db: str) -> None:
    set_breaker(clean_db, "half_open", None)
    assert await reason_of(engine, enabled_settings(clean_db)) == (True, "OK")


async def test_breaker_of_another_device_does_not_block(engine: AsyncEngine, clean_db: str):
    set_breaker(clean_db, "open", 60)
    settings = enabled_settings(clean_db, chatea_device_id="another-device")
    assert await reason_of(engine, settings) == (True, "OK")


async def test_daily_limit_reached(engine: AsyncEngine, clean_db: str) -> None:
    use_quota_today(clean_db, 3)
    assert await reason_of(engine, enabled_settings(clean_db, daily_send_limit=3)) == (
        False,
        "DAILY_LIMIT_REACHED",
    )
    assert await reason_of(engine, enabled_settings(clean_db, daily_send_limit=4)) == (True, "OK")


async def test_zero_daily_limit_is_reached_at_once(engine: AsyncEngine, clean_db: str) -> None:
    assert await reason_of(engine, enabled_settings(clean_db, daily_send_limit=0)) == (
        False,
        "DAILY_LIMIT_REACHED",
    )


@pytest.mark.parametrize(
    ("variable", "raw", "fragment"),
    [
        ("pilot_city", ", ,", "PILOT_CITY is set but names nothing"),
        ("pilot_carrier", "\u0301,", "PILOT_CARRIER is set but names nothing"),
        ("pilot_city", "Bogotá,", "PILOT_CITY has an empty entry"),
        ("pilot_carrier", "Servientrega,,Envia", "PILOT_CARRIER has an empty entry"),
    ],
)
async def test_pilot_lists_that_normalize_to_nothing_are_invalid(
    engine: AsyncEngine, clean_db: str, variable: str, raw: str, fragment: str
) -> None:
    body = await rollout_status(engine, enabled_settings(clean_db, **{variable: raw}))
    assert body["sendStatus"] == {"allowed": False, "reason": "CONFIG_INVALID"}
    assert any(fragment in e for e in body["validation"]["errors"]), body["validation"]


async def test_valid_pilot_lists_pass(engine: AsyncEngine, clean_db: str) -> None:
    settings = enabled_settings(clean_db, pilot_city="Bogotá, Medellín", pilot_carrier="Envia")
    body = await rollout_status(engine, settings)
    assert body["validation"] == {"valid": True, "errors": []}
    assert body["config"]["pilotCity"] == ["bogota", "medellin"]
    assert body["config"]["pilotCarrier"] == ["envia"]


# ---- the route ------------------------------------------------------------------------------

SECRETS = (TEST_CRON_SECRET, TEST_ADMIN_SECRET, TEST_API_KEY, TEST_PHONE_HASH_KEY, TEST_PII_KEY)


def test_route_shape_and_env_booleans_only(clean_db: str) -> None:
    settings = enabled_settings(
        clean_db, phone_lookup_url="https://lookup.example.test", phone_lookup_token="tok" * 8
    )
    with admin_client(settings) as client:
        response = client.get("/api/admin/rollout-config", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"config", "validation", "sendStatus", "env"}
    assert set(body["validation"]) == {"valid", "errors"}
    assert set(body["sendStatus"]) == {"allowed", "reason"}
    assert body["sendStatus"] == {"allowed": True, "reason": "OK"}
    assert body["config"] == settings.public_config()
    env = body["env"]
    assert env == settings.env_presence()
    assert all(isinstance(v, bool) for v in env.values())
    assert env["CRON_SECRET"] is True and env["CHATEA_API_KEY"] is True
    for secret in (*SECRETS, "tok" * 8, clean_db):
        assert secret not in response.text


def test_unset_secrets_are_false_and_still_no_values(clean_db: str) -> None:
    settings = make_settings(clean_db, phone_hash_key=None, pii_encryption_key=None)
    with admin_client(settings) as client:
        response = client.get("/api/admin/rollout-config", headers=ADMIN)
    body = response.json()
    assert body["env"]["PHONE_HASH_KEY"] is False
    assert body["env"]["PII_ENCRYPTION_KEY"] is False
    assert body["env"]["CHATEA_API_KEY"] is False
    assert body["sendStatus"] == {"allowed": False, "reason": "EXECUTOR_DISABLED"}
    for secret in SECRETS:
        assert secret not in response.text


def test_invalid_config_errors_never_echo_values(clean_db: str) -> None:
    key = TEST_PHONE_HASH_KEY
    settings = make_settings(
        clean_db, executor_enabled=True, phone_hash_key=key, pii_encryption_key=key
    )
    with admin_client(settings) as client:
        response = client.get("/api/admin/rollout-config", headers=ADMIN)
    body = response.json()
    assert body["sendStatus"]["reason"] == "CONFIG_INVALID"
    assert any("must differ" in e for e in body["validation"]["errors"])
    for secret in SECRETS:
        assert secret not in response.text
