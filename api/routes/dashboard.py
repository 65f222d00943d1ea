"""``GET /admin``: the operator dashboard (HTML), with a cookie login for browsers.

Auth is the admin routes' own (:func:`api.auth.require_admin`): a bearer header, or the
``executor_admin`` cookie set by ``POST /admin/login``. Without it the page answers 401 with the
sign-in form. The secret travels only in a POST body and an HttpOnly, SameSite=Strict cookie
(Secure over https), never in a URL.
"""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import DBAPIError

from api.auth import ADMIN_COOKIE, require_admin, token_matches
from api.dashboard_page import SECURITY_HEADERS, render_dashboard, render_error, render_login
from api.deps import RuntimeDep, SettingsDep
from api.errors import ApiError
from executor.config import Settings
from executor.errors import ExecutorError
from executor.logs import get_logger
from executor.metrics import executor_status, hourly_series, rollout_status

router = APIRouter()
log = get_logger("api.dashboard")

COOKIE_MAX_AGE_SECONDS = 3600
MAX_LOGIN_BODY_BYTES = 4096
LOGIN_FAILED_MESSAGE = "Sign-in failed: the secret is not valid."


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=dict(SECURITY_HEADERS))


def _redirect_to_dashboard() -> RedirectResponse:
    # Relative and fixed: nothing from the request (and never the secret) goes into Location.
    return RedirectResponse("/admin", status_code=303, headers=dict(SECURITY_HEADERS))


def _is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        ADMIN_COOKIE, path="/", secure=_is_https(request), httponly=True, samesite="strict"
    )


def _authorized(request: Request, settings: Settings) -> bool:
    try:
        require_admin(request, settings)
    except ApiError:
        return False
    return True


@router.get("/admin", response_class=HTMLResponse)
async def dashboard(request: Request, runtime: RuntimeDep, settings: SettingsDep) -> Response:
    if not _authorized(request, settings):
        response = _html(render_login(), status_code=401)
        if ADMIN_COOKIE in request.cookies:
            # A stale cookie (the secret was rotated): drop it.
            _clear_cookie(response, request)
        return response
    try:
        await runtime.ensure_schema()
        engine = runtime.engine
        status = await executor_status(engine, settings)
        hourly = await hourly_series(engine)
        rollout = await rollout_status(engine, settings)
    except ExecutorError as exc:
        log.warning("dashboard.unavailable", error=exc.code)
        return _html(render_error("Dashboard unavailable", exc.message), status_code=503)
    except DBAPIError as exc:
        log.warning("dashboard.unavailable", error_type=type(exc).__name__)
        return _html(
            render_error("Dashboard unavailable", "the database is not reachable"),
            status_code=503,
        )
    return _html(render_dashboard(status, hourly, rollout))


async def _read_form_secret(request: Request) -> str | None:
    """The ``secret`` field of a small urlencoded form body; None if absent or oversized."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY_BYTES:
            return None
    try:
        fields = urllib.parse.parse_qs(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=10
        )
    except (UnicodeDecodeError, ValueError):
        return None
    values = fields.get("secret")
    return values[0] if values and len(values) == 1 else None


@router.post("/admin/login", response_class=HTMLResponse)
async def login(request: Request, settings: SettingsDep) -> Response:
    secret = await _read_form_secret(request)
    expected = settings.admin_secret_value()
    if secret is None or not token_matches(secret.encode("utf-8"), expected):
        log.info("dashboard.login_failed")
        return _html(render_login(LOGIN_FAILED_MESSAGE), status_code=401)
    # The cookie holds exactly what the bearer header would: require_admin checks it the same way.
    response = _redirect_to_dashboard()
    response.set_cookie(
        ADMIN_COOKIE,
        secret,
        max_age=COOKIE_MAX_AGE_SECONDS,
        path="/",
        secure=_is_https(request),
        httponly=True,
        samesite="strict",
    )
    log.info("dashboard.login")
    return response


@router.post("/admin/logout", response_class=HTMLResponse)
async def logout(request: Request) -> Response:
    response = _redirect_to_dashboard()
    _clear_cookie(response, request)
    return response
