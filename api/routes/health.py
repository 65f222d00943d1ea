"""GET /api/health: liveness and database reachability; no auth, no details."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import RuntimeDep
from api.errors import error_response
from executor.db import check_database
from executor.errors import ExecutorError

router = APIRouter()


@router.get("/api/health", response_model=None)
async def health(runtime: RuntimeDep) -> dict[str, bool] | JSONResponse:
    try:
        await check_database(runtime.engine)
    except ExecutorError:
        return error_response(503, "database_unavailable", "the database is not reachable")
    return {"ok": True}
