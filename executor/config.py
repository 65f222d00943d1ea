"""Settings from the environment (DESIGN §8), validated by pydantic-settings.

Nothing here runs at import time: call :func:`load_settings` when a request, a run or a CLI
command needs the settings. Two kinds of problem are told apart:

- a value that cannot be right (``DAILY_SEND_LIMIT=abc``, a bad time zone, a malformed key)
  raises :class:`~executor.errors.ConfigError` naming the variable;
- a combination that makes sending unsafe (enabled without provider credentials, secrets too
  short) is listed by :meth:`Settings.rollout_problems`; the app still starts so operators can
  see it on ``/api/admin/rollout-config``, and a run refuses to send while any problem remains.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from executor.errors import ConfigError

MIN_SECRET_LENGTH = 16

PositiveInt = Annotated[int, Field(ge=1)]


def normalize_scope_item(value: str) -> str:
    """Case- and accent-insensitive key for pilot matching: ' Bogotá ' -> 'bogota'."""
    decomposed = unicodedata.normalize("NFKD", value.strip().casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.split())


def _split_scope(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [normalize_scope_item(part) for part in raw.split(",")]
    return tuple(sorted({item for item in items if item}))


def _is_fernet_key(raw: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(raw.encode("ascii"))) == 32
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False


class Settings(BaseSettings):
    """Every variable of DESIGN §8. Secrets are ``SecretStr``: never in ``repr`` or logs."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, frozen=True
    )

    executor_enabled: bool = False
    pilot_city: str | None = None
    pilot_carrier: str | None = None
    daily_send_limit: Annotated[int, Field(ge=0)] = 100
    rate_limit_per_minute: Annotated[int, Field(ge=0)] = 20
    rate_limit_per_phone_day: Annotated[int, Field(ge=0)] = 2
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    action_ttl_hours: PositiveInt = 24
    cron_secret: SecretStr | None = None
    admin_secret: SecretStr | None = None
    chatea_api_url: str | None = None
    chatea_api_key: SecretStr | None = None
    chatea_device_id: str | None = None
    chatea_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    chatea_retry_5xx: bool = True
    chatea_concurrency: Annotated[int, Field(ge=1, le=100)] = 5
    run_time_budget_seconds: Annotated[float, Field(gt=0, le=900)] = 50.0
    circuit_breaker_threshold: PositiveInt = 5
    circuit_breaker_reset_seconds: Annotated[float, Field(gt=0)] = 60.0
    phone_hash_key: SecretStr | None = None
    pii_encryption_key: SecretStr | None = None
    pii_retention_days: PositiveInt = 30
    business_timezone: str = "America/Bogota"
    database_url: SecretStr | None = None
    phone_lookup_url: str | None = None
    phone_lookup_token: SecretStr | None = None

    @field_validator("executor_enabled", mode="before")
    @classmethod
    def _kill_switch(cls, value: Any) -> bool:
        # DESIGN §8: anything but "true" is a dry run, never an error.
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() == "true"

    @field_validator(
        "pilot_city",
        "pilot_carrier",
        "chatea_api_url",
        "chatea_device_id",
        "phone_lookup_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator(
        "cron_secret",
        "admin_secret",
        "chatea_api_key",
        "phone_hash_key",
        "pii_encryption_key",
        "database_url",
        "phone_lookup_token",
        mode="before",
    )
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("chatea_api_url", "phone_lookup_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("business_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("is not a known IANA time zone") from exc
        return value

    @field_validator("phone_hash_key", "pii_encryption_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _is_fernet_key(value.get_secret_value()):
            raise ValueError(
                "must be 32 random bytes, urlsafe-base64 encoded (run `executor keygen`)"
            )
        return value

    # ---- derived values -------------------------------------------------------------

    @property
    def pilot_cities(self) -> tuple[str, ...]:
        return _split_scope(self.pilot_city)

    @property
    def pilot_carriers(self) -> tuple[str, ...]:
        return _split_scope(self.pilot_carrier)

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.business_timezone)

    @property
    def lease_seconds(self) -> float:
        # A lease must outlive the send it covers (DESIGN §5).
        return self.chatea_timeout_seconds + 30.0

    @property
    def device_id(self) -> str:
        return self.chatea_device_id or "sandbox"

    def admin_secret_value(self) -> str | None:
        secret = self.admin_secret or self.cron_secret
        return secret.get_secret_value() if secret else None

    def cron_secret_value(self) -> str | None:
        return self.cron_secret.get_secret_value() if self.cron_secret else None

    def rollout_problems(self) -> list[str]:
        """Problems that make sending unsafe. Empty list: the config may send."""
        problems: list[str] = []
        if self.cron_secret is None:
            problems.append("CRON_SECRET is not set: every request is refused")
        elif len(self.cron_secret.get_secret_value()) < MIN_SECRET_LENGTH:
            problems.append(f"CRON_SECRET is shorter than {MIN_SECRET_LENGTH} characters")
        if (
            self.admin_secret is not None
            and len(self.admin_secret.get_secret_value()) < MIN_SECRET_LENGTH
        ):
            problems.append(f"ADMIN_SECRET is shorter than {MIN_SECRET_LENGTH} characters")
        if self.executor_enabled:
            for name, value in (
                ("CHATEA_API_URL", self.chatea_api_url),
                ("CHATEA_API_KEY", self.chatea_api_key),
                ("CHATEA_DEVICE_ID", self.chatea_device_id),
                ("PHONE_HASH_KEY", self.phone_hash_key),
                ("PII_ENCRYPTION_KEY", self.pii_encryption_key),
            ):
                if value is None:
                    problems.append(f"{name} is required when EXECUTOR_ENABLED=true")
        if (
            self.phone_hash_key is not None
            and self.pii_encryption_key is not None
            and self.phone_hash_key.get_secret_value() == self.pii_encryption_key.get_secret_value()
        ):
            problems.append("PHONE_HASH_KEY and PII_ENCRYPTION_KEY must differ")
        return problems

    def public_config(self) -> dict[str, Any]:
        """The non-secret rollout configuration, as shown to operators and stored per run."""
        return {
            "executorEnabled": self.executor_enabled,
            "pilotCity": list(self.pilot_cities),
            "pilotCarrier": list(self.pilot_carriers),
            "dailySendLimit": self.daily_send_limit,
            "rateLimitPerMinute": self.rate_limit_per_minute,
            "rateLimitPerPhoneDay": self.rate_limit_per_phone_day,
            "maxRetries": self.max_retries,
            "actionTtlHours": self.action_ttl_hours,
            "chateaApiUrl": self.chatea_api_url,
            "chateaDeviceId": self.chatea_device_id,
            "chateaTimeoutSeconds": self.chatea_timeout_seconds,
            "chateaRetry5xx": self.chatea_retry_5xx,
            "chateaConcurrency": self.chatea_concurrency,
            "runTimeBudgetSeconds": self.run_time_budget_seconds,
            "circuitBreakerThreshold": self.circuit_breaker_threshold,
            "circuitBreakerResetSeconds": self.circuit_breaker_reset_seconds,
            "piiRetentionDays": self.pii_retention_days,
            "businessTimezone": self.business_timezone,
            "phoneLookupEnabled": self.phone_lookup_url is not None,
        }

    def env_presence(self) -> dict[str, bool]:
        """Which secret variables are set: booleans only, never values."""
        return {
            "CRON_SECRET": self.cron_secret is not None,
            "ADMIN_SECRET": self.admin_secret is not None,
            "CHATEA_API_KEY": self.chatea_api_key is not None,
            "CHATEA_API_URL": self.chatea_api_url is not None,
            "CHATEA_DEVICE_ID": self.chatea_device_id is not None,
            "PHONE_HASH_KEY": self.phone_hash_key is not None,
            "PII_ENCRYPTION_KEY": self.pii_encryption_key is not None,
            "DATABASE_URL": self.database_url is not None,
            "PHONE_LOOKUP_URL": self.phone_lookup_url is not None,
            "PHONE_LOOKUP_TOKEN": self.phone_lookup_token is not None,
        }


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the environment. Raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        messages = []
        for error in exc.errors(include_input=False, include_url=False):
            field = str(error["loc"][0]) if error["loc"] else "settings"
            messages.append(f"{field.upper()}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(messages)) from None
