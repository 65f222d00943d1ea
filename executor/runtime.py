"""What one process needs to serve requests and runs: settings and a database engine.

Both are built on first use, never at import time, and then kept for the life of the process
(on Vercel, one warm function instance).
"""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.config import Settings, load_settings
from executor.db import check_schema, create_async_db_engine, resolve_database_url


class Runtime:
    def __init__(
        self,
        settings: Settings | None = None,
        engine: AsyncEngine | None = None,
        chatea_transport: httpx.AsyncBaseTransport | None = None,
    ):
        # A transport seam: tests and the playbook check route HTTP to a fake or the sandbox.
        self.chatea_transport = chatea_transport
        self._settings = settings
        self._engine = engine
        self._database_url: str | None = None
        self._schema_checked = False

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def database_url(self) -> str:
        if self._database_url is None:
            if self._engine is not None:
                self._database_url = self._engine.url.render_as_string(hide_password=False)
            else:
                self._database_url = resolve_database_url(self.settings)
        return self._database_url

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = create_async_db_engine(self.database_url)
        return self._engine

    async def ensure_schema(self) -> None:
        """Raise SchemaNotReady on an unmigrated database; checked once per process."""
        if not self._schema_checked:
            await check_schema(self.engine)
            self._schema_checked = True

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
