"""FastAPI dependencies: the process runtime, settings, database engine, schema readiness."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.config import Settings
from executor.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_ready_engine(runtime: RuntimeDep) -> AsyncEngine:
    """The engine of a migrated database; 503 schema_not_ready otherwise."""
    await runtime.ensure_schema()
    return runtime.engine


EngineDep = Annotated[AsyncEngine, Depends(get_ready_engine)]
