"""Helpers for pipeline tests: a recording fake provider (httpx transport) and action builders."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.config import Settings
from executor.intake import intake_actions
from tests.conftest import TEST_API_KEY, make_settings

PHONES = [f"+5730055501{n:02d}" for n in range(100)]

Responder = Callable[[dict[str, Any]], httpx.Response | Exception]


def ok(_: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"id": "wamid.test"})


@dataclass
class FakeProvider:
    """Records every request that reached 'Chatea'; answers with ``respond``."""

    respond: Responder = ok
    latency: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        body["_idempotency_key"] = request.headers.get("idempotency-key")
        self.requests.append(body)
        if self.latency:
            await asyncio.sleep(self.latency)
        answer = self.respond(body)
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def per_action(self) -> Counter[str]:
        return Counter(r["reference"] for r in self.requests)


def run_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "executor_enabled": True,
        "chatea_api_url": "http://chatea.test",
        "chatea_api_key": TEST_API_KEY,
        "chatea_device_id": "device-1",
    }
    values.update(overrides)
    return make_settings(database_url, **values)


def action(
    guide: str,
    phone: str | None = PHONES[0],
    *,
    trigger: str = "at_office_3d",
    city: str = "Bogotá",
    carrier: str = "Servientrega",
    key: str | None = None,
    variables: dict[str, Any] | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "guide": guide,
        "trigger": trigger,
        "city": city,
        "carrier": carrier,
        "variables": variables
        if variables is not None
        else {
            "numero_de_guia": guide,
            "transportadora": carrier,
            "ciudad_de_destino": city,
            "ultimo_movimiento": "En bodega",
            "fecha_de_ultimo_movimiento": "2026-11-27",
        },
    }
    if phone is not None:
        item["phone"] = phone
    if key is not None:
        item["idempotencyKey"] = key
    return item


async def enqueue(engine: AsyncEngine, settings: Settings, items: list[dict[str, Any]]) -> None:
    result = await intake_actions(engine, settings, items)
    assert not result.rejected, result.rejected


async def statuses(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT guide || '/' || idempotency_key, status FROM actions")
        )
        return {k: v for k, v in rows}


async def status_counts(engine: AsyncEngine) -> Counter[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT status, count(*) FROM actions GROUP BY status"))
        return Counter({k: int(v) for k, v in rows})


async def make_all_due(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE actions SET next_attempt_at = now() - interval '1 second'"
                " WHERE status = 'PLANNED'"
            )
        )


async def age_quota(engine: AsyncEngine, seconds: int) -> None:
    """Move past sends back in time (to free the rolling minute in tests)."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE actions SET executed_at = executed_at - make_interval(secs => :s)"),
            {"s": seconds},
        )
