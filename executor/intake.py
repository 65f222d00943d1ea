"""Intake of planned actions (``POST /api/actions``, ``executor enqueue FILE.jsonl``).

Each item is validated on its own; the valid ones are written in one transaction (all or
nothing), phones encrypted into ``recipients``. A repeated idempotency key is a duplicate, not
an error (``ON CONFLICT DO NOTHING``). Errors name the field, never echo a phone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.config import Settings, normalize_scope_item
from executor.errors import InputError, PhoneError
from executor.phones import PhoneVault, normalize_phone

MAX_ITEMS = 1000
MAX_BODY_BYTES = 1024 * 1024
MAX_VARIABLES = 30
MAX_VARIABLE_LENGTH = 500

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
VariableValue = str | int | float | None


class ActionIn(BaseModel):
    """One planned notification as upstream sends it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    guide: ShortText
    trigger: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    city: ShortText
    carrier: ShortText
    variables: dict[str, VariableValue] = Field(default_factory=dict)
    phone: str | None = Field(default=None, max_length=40)
    idempotency_key: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = Field(default=None, alias="idempotencyKey")

    @field_validator("variables")
    @classmethod
    def _bounded_variables(cls, value: dict[str, VariableValue]) -> dict[str, VariableValue]:
        if len(value) > MAX_VARIABLES:
            raise ValueError(f"at most {MAX_VARIABLES} variables")
        for key, item in value.items():
            if not key or len(key) > 64:
                raise ValueError("variable names must be 1 to 64 characters")
            if key.lower() in ("phone", "telefono", "teléfono", "celular", "to"):
                raise ValueError(f"variable {key!r} looks like a phone: send it as 'phone'")
            if isinstance(item, str) and len(item) > MAX_VARIABLE_LENGTH:
                raise ValueError(f"variable {key!r} is longer than {MAX_VARIABLE_LENGTH}")
        return value


@dataclass
class IntakeResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


def describe_item_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in error["loc"]) or "item"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}")
    return "; ".join(parts[:5])


@dataclass(frozen=True)
class _Row:
    index: int
    action: ActionIn
    phone_hash: str | None
    phone_encrypted: bytes | None


def _business_date(settings: Settings, now: datetime) -> str:
    return now.astimezone(settings.timezone).date().isoformat()


def _variables_json(variables: Mapping[str, VariableValue]) -> str:
    return json.dumps(
        {k: (v if v is None or isinstance(v, str) else str(v)) for k, v in variables.items()},
        ensure_ascii=False,
    )


# Upsert of a phone seen at intake: refreshes the retention clock, keeps one row per phone.
UPSERT_RECIPIENTS = text(
    """
    INSERT INTO recipients (phone_hash, phone_encrypted)
    SELECT * FROM unnest(CAST(:hashes AS text[]), CAST(:tokens AS bytea[]))
    ON CONFLICT (phone_hash) DO UPDATE
        SET last_used_at = now(), phone_encrypted = EXCLUDED.phone_encrypted
    """
)

# Insert the batch; a known idempotency key is a duplicate, not an error.
INSERT_ACTIONS = text(
    """
    INSERT INTO actions (idempotency_key, guide, trigger, city, carrier, city_key, carrier_key,
                         variables, phone_hash, expires_at)
    SELECT k, g, t, c, ca, ck, cak, CAST(v AS jsonb), ph,
           now() + make_interval(hours => :ttl_hours)
    FROM unnest(CAST(:keys AS text[]), CAST(:guides AS text[]), CAST(:triggers AS text[]),
                CAST(:cities AS text[]), CAST(:carriers AS text[]), CAST(:city_keys AS text[]),
                CAST(:carrier_keys AS text[]), CAST(:variables AS text[]),
                CAST(:phone_hashes AS text[]))
         AS u(k, g, t, c, ca, ck, cak, v, ph)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
    """
)


async def intake_actions(
    engine: AsyncEngine,
    settings: Settings,
    items: Sequence[Any],
    *,
    now: datetime | None = None,
) -> IntakeResult:
    """Validate every item, write the valid ones atomically, report the rest."""
    if len(items) > MAX_ITEMS:
        raise InputError(f"too many actions: at most {MAX_ITEMS} per request")
    now = now or datetime.now(settings.timezone)
    result = IntakeResult()
    vault: PhoneVault | None = None
    rows: list[_Row] = []
    for index, raw in enumerate(items):
        if not isinstance(raw, Mapping):
            result.rejected.append({"index": index, "error": "item must be a JSON object"})
            continue
        try:
            action = ActionIn.model_validate(raw)
        except ValidationError as exc:
            result.rejected.append({"index": index, "error": describe_item_error(exc)})
            continue
        phone_hash = token = None
        if action.phone is not None:
            try:
                e164 = normalize_phone(action.phone)
            except PhoneError as exc:
                result.rejected.append({"index": index, "error": f"phone: {exc.message}"})
                continue
            vault = vault or PhoneVault.from_settings(settings)
            phone_hash, token = vault.hash(e164), vault.encrypt(e164)
        rows.append(_Row(index, action, phone_hash, token))

    if not rows:
        return result
    keys = [
        r.action.idempotency_key
        or f"{r.action.guide}:{r.action.trigger}:{_business_date(settings, now)}"
        for r in rows
    ]
    recipients = {
        r.phone_hash: r.phone_encrypted for r in rows if r.phone_hash and r.phone_encrypted
    }
    async with engine.begin() as conn:
        if recipients:
            await conn.execute(
                UPSERT_RECIPIENTS,
                {"hashes": list(recipients), "tokens": list(recipients.values())},
            )
        inserted = await conn.execute(
            INSERT_ACTIONS,
            {
                "ttl_hours": settings.action_ttl_hours,
                "keys": keys,
                "guides": [r.action.guide for r in rows],
                "triggers": [r.action.trigger for r in rows],
                "cities": [r.action.city for r in rows],
                "carriers": [r.action.carrier for r in rows],
                "city_keys": [normalize_scope_item(r.action.city) for r in rows],
                "carrier_keys": [normalize_scope_item(r.action.carrier) for r in rows],
                "variables": [_variables_json(r.action.variables) for r in rows],
                "phone_hashes": [r.phone_hash for r in rows],
            },
        )
        result.accepted = len(inserted.fetchall())
    result.duplicates = len(rows) - result.accepted
    return result


def parse_jsonl(lines: Sequence[str]) -> list[Any]:
    """Parse an ``enqueue`` file; raises InputError naming the first bad line."""
    items: list[Any] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except (ValueError, RecursionError):
            raise InputError(f"line {number}: not valid JSON") from None
    return items
