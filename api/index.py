"""Vercel entry point: the FastAPI ``app``. Building it reads no setting and opens no connection."""

from api.app import create_app

app = create_app()
