"""Benchmarks of issue 7 (performance): ``uv run python -m bench`` (see BENCHMARKS.md)."""
