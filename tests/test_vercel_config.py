"""vercel.json agrees with the app and its settings (no build needed; see test_vercel_bundle)."""

from __future__ import annotations

import json
import re
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from packaging.specifiers import SpecifierSet

from api.vercel_path import FUNCTION_PATHS, PATH_PARAM
from executor.config import Settings

ROOT = Path(__file__).resolve().parent.parent
VERCEL_JSON: dict[str, Any] = json.loads((ROOT / "vercel.json").read_text())
FUNCTION = VERCEL_JSON["functions"]["api/index.py"]
CRON_PATH = "/api/cron/run-executor"
# Public routes of DESIGN §7 that must reach the function.
PUBLIC_PATHS = (
    "/api/health",
    "/api/cron/run-executor",
    "/api/actions",
    "/api/admin/executor-status",
    "/api/admin/rollout-config",
    "/api/admin/actions",
    "/api/admin/opt-outs",
    "/admin",
)


def _default(field: str) -> float:
    value = Settings.model_fields[field].default
    assert isinstance(value, int | float)
    return float(value)


def _substitute(template: str, match: re.Match[str]) -> str:
    return re.sub(r"\$(\d+)", lambda ref: match.group(int(ref.group(1))), template)


def _rewrite(path: str) -> tuple[str, dict[str, list[str]]] | None:
    """Where vercel.json's rewrites send ``path``: (destination path, its query)."""
    for rule in VERCEL_JSON.get("rewrites", []):
        source: str = rule["source"]
        # Only plain paths and unnamed "(.*)" groups are used (named params would add query
        # parameters of their own).
        assert re.fullmatch(r"(/[\w.-]*|/\(\.\*\))+", source), source
        pattern = re.escape(source).replace(re.escape("(.*)"), "(.*)")
        match = re.fullmatch(pattern, path)
        if match:
            dest = _substitute(rule["destination"], match)
            dest_path, _, query = dest.partition("?")
            return dest_path, urllib.parse.parse_qs(query)
    return None


def test_framework_preset_is_pinned_to_other() -> None:
    # Vercel proposes the FastAPI preset (fastapi is in pyproject.toml); that preset accepts no
    # `functions` entry, so no maxDuration. `"framework": null` overrides the dashboard.
    assert "framework" in VERCEL_JSON
    assert VERCEL_JSON["framework"] is None


def test_max_duration_covers_a_whole_run() -> None:
    # A run stops claiming after RUN_TIME_BUDGET_SECONDS; a send already started may take up
    # to CHATEA_TIMEOUT_SECONDS more; then finalizing and the run log need a margin.
    budget = _default("run_time_budget_seconds")
    timeout = _default("chatea_timeout_seconds")
    max_duration = FUNCTION["maxDuration"]
    assert isinstance(max_duration, int)
    assert max_duration >= budget + timeout + 15
    # Hobby (Fluid compute) allows up to 300 s; Pro up to 800 s.
    assert max_duration <= 300


def test_cron_targets_the_run_route_daily() -> None:
    crons = VERCEL_JSON["crons"]
    assert [c["path"] for c in crons] == [CRON_PATH]
    fields = crons[0]["schedule"].split()
    assert len(fields) == 5
    minute, hour, day, month, weekday = fields
    # Hobby accepts only schedules that fire at most once a day.
    assert minute.isdigit() and 0 <= int(minute) <= 59
    assert hour.isdigit() and 0 <= int(hour) <= 23
    assert (day, month, weekday) == ("*", "*", "*")


@pytest.mark.parametrize("path", PUBLIC_PATHS)
def test_public_paths_are_rewritten_to_the_function(path: str) -> None:
    rewritten = _rewrite(path)
    assert rewritten is not None, f"{path} does not reach the function"
    dest_path, query = rewritten
    assert dest_path in FUNCTION_PATHS
    assert query == {PATH_PARAM: [path]}


def _declared_paths(routes: list[Any]) -> list[str]:
    paths: list[str] = []
    for route in routes:
        if isinstance(route, APIRoute):
            paths.append(route.path)
        # FastAPI >= 0.165 includes routers lazily: the routes stay on the original router.
        included = getattr(route, "original_router", None)
        if included is not None:
            paths.extend(_declared_paths(included.routes))
    return paths


def test_every_declared_route_is_reachable_on_vercel() -> None:
    from api.index import app

    declared = _declared_paths(app.router.routes)
    assert "/api/health" in declared
    unreachable = [p for p in declared if _rewrite(p.replace("{", "x").replace("}", "")) is None]
    assert unreachable == []


def test_function_bundle_excludes_only_non_runtime_files() -> None:
    excluded = FUNCTION.get("excludeFiles", "")
    for kept in ("api", "executor", "pyproject.toml", "uv.lock"):
        assert kept not in re.split(r"[{},/*]+", excluded)


def test_static_output_holds_no_source() -> None:
    # With the "Other" preset every non-api file would be served as static, unless public/
    # exists: then only public/ is. Keep it free of anything but public assets.
    public = ROOT / "public"
    files = [p for p in public.rglob("*") if p.is_file()]
    assert files, "public/ must exist (else the repository would be served as static files)"
    assert all(p.suffix in {".txt", ".ico", ".png", ".svg", ".html"} for p in files), files


def test_requires_python_gives_vercel_python_312() -> None:
    # Vercel picks its default (3.12) first when requires-python allows it; vercel-runtime
    # itself needs 3.12+. The suite runs on 3.11 and 3.12.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = SpecifierSet(project["requires-python"])
    assert "3.12" in spec
    assert "3.11" in spec
