"""The FastAPI application factory. Routes are declared with their full /api/... paths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import actions, admin, cron, dashboard, health, optouts, reconcile
from api.vercel_path import VercelPathMiddleware
from executor import __version__
from executor.logs import configure_logging
from executor.runtime import Runtime


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """Build the app. Settings and the engine are created on first use, not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.runtime.aclose()

    configure_logging()
    app = FastAPI(
        title="WhatsApp Executor",
        version=__version__,
        # A redirect would drop the Authorization header on some clients and confuse crons.
        redirect_slashes=False,
        lifespan=lifespan,
    )
    app.state.runtime = runtime or Runtime()
    install_error_handlers(app)
    # vercel.json rewrites send every route to one function; keep the path the client used.
    app.add_middleware(VercelPathMiddleware)
    app.include_router(health.router)
    app.include_router(cron.router)
    app.include_router(actions.router)
    app.include_router(optouts.router)
    app.include_router(reconcile.router)
    app.include_router(admin.router)
    app.include_router(dashboard.router)
    return app
