"""POST /api/actions: intake of planned actions (DESIGN §7)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import AdminAuth
from api.deps import EngineDep, SettingsDep
from api.errors import ApiError
from executor.intake import MAX_BODY_BYTES, MAX_ITEMS, intake_actions

router = APIRouter()


async def read_json_body(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    """The request's JSON, refusing more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body is larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "body is not valid JSON") from None


@router.post("/api/actions", response_model=None)
async def post_actions(
    request: Request, _: AdminAuth, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any] | JSONResponse:
    body = await read_json_body(request)
    if not isinstance(body, dict) or "actions" not in body:
        raise ApiError(422, "invalid_input", 'body must be an object {"actions": [...]}')
    items = body["actions"]
    if not isinstance(items, list):
        raise ApiError(422, "invalid_input", "actions must be a list")
    if not 1 <= len(items) <= MAX_ITEMS:
        raise ApiError(
            422, "invalid_input", f"actions must hold 1 to {MAX_ITEMS} items, got {len(items)}"
        )
    result = await intake_actions(engine, settings, items)
    payload = result.to_json()
    if result.rejected and not result.accepted and not result.duplicates:
        return JSONResponse(
            status_code=422,
            content={
                "error": "invalid_input",
                "message": f"all {len(items)} actions were rejected",
                **payload,
            },
        )
    return payload
