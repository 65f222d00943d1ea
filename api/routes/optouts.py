"""POST /api/admin/opt-outs: a shopper asked not to be messaged. Only the hash is stored."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

from api.auth import AdminAuth
from api.deps import EngineDep, SettingsDep
from api.errors import ApiError
from api.routes.actions import read_json_body
from executor.errors import PhoneError
from executor.phones import PhoneVault, normalize_phone

router = APIRouter()

INSERT_OPT_OUT = text(
    """
    INSERT INTO opt_outs (phone_hash) VALUES (:phone_hash)
    ON CONFLICT (phone_hash) DO NOTHING
    RETURNING phone_hash
    """
)


@router.post("/api/admin/opt-outs")
async def post_opt_out(
    request: Request, _: AdminAuth, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any]:
    body = await read_json_body(request, limit=4096)
    phone = body.get("phone") if isinstance(body, dict) else None
    if not isinstance(phone, str):
        raise ApiError(422, "invalid_input", 'body must be {"phone": "..."}')
    try:
        e164 = normalize_phone(phone)
    except PhoneError as exc:
        raise ApiError(422, "invalid_phone", f"phone: {exc.message}") from None
    phone_hash = PhoneVault.from_settings(settings).hash(e164)
    async with engine.begin() as conn:
        created = (await conn.execute(INSERT_OPT_OUT, {"phone_hash": phone_hash})).first()
    return {"optedOut": True, "alreadyOptedOut": created is None}
