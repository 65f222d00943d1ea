"""Placeholder replaced by the sandbox implementation."""

from __future__ import annotations


def serve_sandbox(
    *, host: str, port: int, latency_ms: int, fail_rate: float, status: int | None
) -> None:
    raise NotImplementedError
