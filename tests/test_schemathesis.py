"""Property-based tests of the HTTP API from its own OpenAPI document (schemathesis 4).

The app runs in-process (ASGI) on a migrated database with a fake provider as Chatea transport.
Every operation is generated positively and negatively with the admin/cron bearer secret, and
checked for: no 5xx (``not_a_server_error``), responses matching their declared schemas and
status codes, negative data rejected with a 4xx, and ``ignored_auth`` (schemathesis replays each
authenticated request without credentials and with wrong ones: both must be refused).

The app does not declare its bearer auth in OpenAPI (it is a plain dependency), so the test adds
the security scheme to the document it loads, for exactly the routes that must be protected.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
)

from api.app import create_app
from executor.db import normalize_database_url
from executor.runtime import Runtime
from tests.conftest import TEST_CRON_SECRET, create_database, drop_database
from tests.pipeline_helpers import FakeProvider, run_settings

# One secret opens everything here: ADMIN_SECRET falls back to CRON_SECRET.
AUTH = {"Authorization": f"Bearer {TEST_CRON_SECRET}"}
PUBLIC = {"/api/health", "/admin/login", "/admin/logout"}
RUN_RESULT_KEYS = {
    "runId", "status", "dryRun", "startedAt", "finishedAt", "durationMs", "planned", "sent",
    "wouldSend", "failed4xx", "failed5xx", "failedPrecheck", "unknown", "skippedDuplicate",
    "skippedRateLimit", "skippedPilot", "skippedOptOut", "skippedCircuitOpen", "expired",
    "remainingToday",
}  # fmt: skip


def _header(response: Any, name: str) -> str:
    values = response.headers.get(name) or response.headers.get(name.title()) or [""]
    return str(values[0] if isinstance(values, list) else values)


def error_body_contract(ctx: Any, response: Any, case: Any) -> bool | None:
    """DESIGN §7: every JSON error is {"error": code, "message": text}, never a stack trace."""
    if response.status_code < 400:
        return None
    assert "Traceback" not in response.text and 'File "' not in response.text
    if not _header(response, "content-type").startswith("application/json"):
        return None
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
    return True


def run_result_contract(ctx: Any, response: Any, case: Any) -> bool | None:
    """The cron route's 200 is a RunResult with every DESIGN §7 key."""
    if case.path != "/api/cron/run-executor" or response.status_code != 200:
        return None
    body = response.json()
    missing = RUN_RESULT_KEYS - set(body)
    assert not missing, missing
    assert body["status"] in ("SUCCESS", "PARTIAL", "FAILED", "NOOP"), body
    return True


CHECKS = [
    error_body_contract,
    run_result_contract,
    not_a_server_error,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


def test_operation_ids_are_unique() -> None:
    # A GET+POST api_route used to give both methods one operationId (invalid OpenAPI).
    ids = [op["operationId"] for ops in APP.openapi()["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), ids


def with_declared_auth(document: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(document)
    raw.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
    }
    for path, operations in raw["paths"].items():
        if path in PUBLIC:
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
    return raw


# The app is built at import (schemathesis generates the tests from its document at collection
# time); building it opens nothing. The module fixture gives it its database.
APP = create_app(Runtime(run_settings("postgresql://placeholder@127.0.0.1:9/none")))
schema = schemathesis.openapi.from_dict(with_declared_auth(APP.openapi()))
schema.app = APP
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=25,
    allow_extra_parameters=False,
)


@pytest.fixture(scope="module", autouse=True)
def api_database(pg_server_url: str) -> Iterator[str]:
    from executor.migrate import upgrade

    url = create_database(pg_server_url, prefix="executor_schema")
    upgrade(url)
    settings_ = run_settings(normalize_database_url(url), admin_secret=None)
    APP.state.runtime = Runtime(settings_, chatea_transport=FakeProvider().transport)
    yield url
    drop_database(pg_server_url, url)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case: Any) -> None:
    case.call_and_validate(headers=AUTH, checks=CHECKS)
