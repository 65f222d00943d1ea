"""Bearer-token auth (DESIGN §7): constant-time compare on bytes, fail closed.

An unset secret, or one shorter than 16 characters, refuses every request. Every refusal has the
same body, whatever was wrong, so a client learns nothing from it.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from api.deps import SettingsDep
from api.errors import ApiError
from executor.config import MIN_SECRET_LENGTH

UNAUTHORIZED_MESSAGE = "missing or invalid credentials"
ADMIN_COOKIE = "executor_admin"


def _unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", UNAUTHORIZED_MESSAGE)


def bearer_token(request: Request) -> bytes | None:
    """The raw token bytes of an ``Authorization: Bearer`` header, or None."""
    # Read the raw header bytes: a non-ASCII header must be a 401, never a decode error.
    for name, value in request.scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            token = token.strip()
            return token or None
    return None


def token_matches(presented: bytes | None, secret: str | None) -> bool:
    if secret is None or len(secret) < MIN_SECRET_LENGTH or presented is None:
        return False
    return hmac.compare_digest(presented, secret.encode("utf-8"))


def require_cron(request: Request, settings: SettingsDep) -> None:
    if not token_matches(bearer_token(request), settings.cron_secret_value()):
        raise _unauthorized()


def require_admin(request: Request, settings: SettingsDep) -> None:
    presented = bearer_token(request)
    if presented is None:
        # The dashboard's login form sets this cookie (HttpOnly, SameSite=Strict).
        cookie = request.cookies.get(ADMIN_COOKIE)
        presented = cookie.encode("utf-8") if cookie else None
    if not token_matches(presented, settings.admin_secret_value()):
        raise _unauthorized()


CronAuth = Annotated[None, Depends(require_cron)]
AdminAuth = Annotated[None, Depends(require_admin)]
