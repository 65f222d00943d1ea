"""The path restoring middleware behind vercel.json's rewrites (api/vercel_path.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from api.app import create_app
from api.vercel_path import (
    MAX_PATH_LENGTH,
    PATH_PARAM,
    VercelPathMiddleware,
    is_acceptable_path,
    restore_original_path,
    split_path_param,
)
from executor.config import Settings
from executor.runtime import Runtime


def _scope(path: str, query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [],
    }


def test_param_name_is_the_one_vercel_json_uses() -> None:
    assert PATH_PARAM == "__path"


def test_split_keeps_other_items_byte_for_byte() -> None:
    query, values = split_path_param(b"dryRun=true&__path=%2Fapi%2Fhealth&guide=A%2BB&x")
    assert query == b"dryRun=true&guide=A%2BB&x"
    assert values == ["/api/health"]


def test_split_decodes_an_encoded_key_and_a_literal_plus() -> None:
    query, values = split_path_param(b"%5F%5Fpath=/api/a+b&a=1")
    assert query == b"a=1"
    assert values == ["/api/a+b"]


def test_split_without_the_param_changes_nothing() -> None:
    assert split_path_param(b"dryRun=true") == (b"dryRun=true", [])
    assert split_path_param(b"") == (b"", [])


def test_split_marks_an_undecodable_value() -> None:
    query, values = split_path_param(b"__path=%FF%FE&b=2")
    assert query == b"b=2"
    assert values == [None]


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/api/health", True),
        ("/admin", True),
        ("api/health", False),
        ("//evil.example/x", False),
        ("/api/\nhealth", False),
        ("/api/\x7f", False),
        ("/" + "a" * MAX_PATH_LENGTH, False),
        ("", False),
    ],
)
def test_acceptable_paths(path: str, ok: bool) -> None:
    assert is_acceptable_path(path) is ok


def test_function_path_gets_the_original_path_back() -> None:
    scope = _scope("/api/index", b"__path=%2Fapi%2Fcron%2Frun-executor&dryRun=true")
    restored = restore_original_path(scope)
    assert restored["path"] == "/api/cron/run-executor"
    assert restored["raw_path"] == b"/api/cron/run-executor"
    assert restored["query_string"] == b"dryRun=true"
    # The caller's scope is not mutated.
    assert scope["path"] == "/api/index"


def test_original_path_is_kept_and_the_param_dropped() -> None:
    # What `vercel dev` does (and Vercel): original path, destination query merged in.
    scope = _scope("/api/health", b"__path=%2Fapi%2Fhealth")
    restored = restore_original_path(scope)
    assert restored["path"] == "/api/health"
    assert restored["query_string"] == b""


def test_param_never_moves_a_request_off_a_real_route() -> None:
    restored = restore_original_path(_scope("/api/health", b"__path=%2Fapi%2Fadmin%2Fx"))
    assert restored["path"] == "/api/health"


def test_raw_path_is_percent_encoded() -> None:
    restored = restore_original_path(_scope("/api/index", b"__path=%2Fapi%2Fa%20b"))
    assert restored["path"] == "/api/a b"
    assert restored["raw_path"] == b"/api/a%20b"


@pytest.mark.parametrize(
    "query",
    [
        b"__path=%2Fapi%2Fhealth&__path=%2Fapi%2Fadmin%2Fx",  # ambiguous
        b"__path=%2F%2Fevil.example",
        b"__path=api%2Fhealth",
        b"__path=%2Fapi%0Ahealth",
        b"__path=%FF",
    ],
)
def test_doubtful_values_are_dropped_not_applied(query: bytes) -> None:
    restored = restore_original_path(_scope("/api/index", query))
    assert restored["path"] == "/api/index"
    assert b"__path" not in restored["query_string"]


def test_scope_without_the_param_is_returned_as_is() -> None:
    scope = _scope("/api/index", b"a=1")
    assert restore_original_path(scope) is scope


def _echo_app() -> FastAPI:
    app = FastAPI(redirect_slashes=False)
    app.add_middleware(VercelPathMiddleware)

    @app.api_route("/api/{rest:path}", methods=["GET", "POST"])
    async def api(request: Request) -> dict[str, Any]:
        return {"path": request.url.path, "query": dict(request.query_params)}

    @app.get("/admin")
    async def admin(request: Request) -> dict[str, Any]:
        return {"path": request.url.path, "query": dict(request.query_params)}

    return app


@pytest.mark.parametrize(
    ("target", "expected_path"),
    [
        # The function sees the original path (Vercel, `vercel dev`).
        ("/api/cron/run-executor?__path=%2Fapi%2Fcron%2Frun-executor&dryRun=true", None),
        ("/admin?__path=%2Fadmin", None),
        # The function sees the rewritten path.
        ("/api/index?__path=%2Fapi%2Fcron%2Frun-executor&dryRun=true", "/api/cron/run-executor"),
        ("/api/index?__path=%2Fadmin", "/admin"),
        ("/api/index.py?__path=%2Fapi%2Fhealth", "/api/health"),
        # Local runs (uvicorn, tests) have no rewrite at all.
        ("/api/health?dryRun=true", None),
    ],
)
async def test_every_route_works_either_way(target: str, expected_path: str | None) -> None:
    transport = httpx.ASGITransport(app=_echo_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(target)
    assert response.status_code == 200
    body = response.json()
    assert body["path"] == (expected_path or target.partition("?")[0])
    assert PATH_PARAM not in body["query"]
    if "dryRun=true" in target:
        assert body["query"] == {"dryRun": "true"}


def test_create_app_installs_the_middleware() -> None:
    app = create_app(Runtime(settings=Settings()))
    assert VercelPathMiddleware in [getattr(m, "cls", None) for m in app.user_middleware]


async def test_rewritten_cron_request_reaches_the_cron_route() -> None:
    # No CRON_SECRET and no Authorization header: the cron route answers 401 before any
    # database access, which proves the request was routed to it and not to a 404.
    app = create_app(Runtime(settings=Settings()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        rewritten = await client.get("/api/index?__path=%2Fapi%2Fcron%2Frun-executor")
        bare = await client.get("/api/index")
    assert rewritten.status_code == 401
    assert rewritten.json()["error"] == "unauthorized"
    assert bare.status_code == 404
    assert bare.json()["error"] == "not_found"
