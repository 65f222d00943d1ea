"""The Chatea sandbox: strict validation, idempotency, faults, control API, CLI subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from executor.chatea import ChateaClient, Permanent, SendResult, Sent, Transient, Unknown
from executor.sandbox import RemoteSandbox, SandboxHandle, recipient_hash, start_sandbox

API_KEY = "sandbox-key-0123456789abcdef"
PHONE = "+573001234567"
OTHER_PHONE = "+573109876543"
PHONE_FRAGMENTS = (PHONE, PHONE.lstrip("+"), "3001234567", OTHER_PHONE, "3109876543")


@pytest.fixture(scope="module")
def module_sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox(api_key=API_KEY) as handle:
        yield handle


@pytest.fixture
def sandbox(module_sandbox: SandboxHandle) -> SandboxHandle:
    module_sandbox.reset()
    return module_sandbox


@pytest.fixture
def http(sandbox: SandboxHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=5, trust_env=False) as client:
        yield client


@pytest.fixture
async def chatea(sandbox: SandboxHandle) -> AsyncIterator[ChateaClient]:
    async with ChateaClient(
        api_url=sandbox.url,
        api_key=API_KEY,
        device_id="sandbox-device",
        timeout_seconds=0.5,
        concurrency=4,
        connect_backoff_seconds=0.001,
    ) as client:
        yield client


def body(
    *,
    to: str = PHONE,
    template: str = "at_office_3d",
    params: list[str] | None = None,
    reference: str = "ref-1",
) -> dict[str, Any]:
    texts = ["700123", "TCC", "Cali"] if params is None else params
    return {
        "device_id": "sandbox-device",
        "to": to,
        "reference": reference,
        "template": {
            "name": template,
            "language": "es",
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": t} for t in texts]}
            ],
        },
    }


def headers(key: str | None = "key-1", token: str | None = API_KEY) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if key is not None:
        h["Idempotency-Key"] = key
    return h


def assert_no_phone(text: str) -> None:
    for fragment in PHONE_FRAGMENTS:
        assert fragment not in text


async def send(chatea: ChateaClient, action_id: str, to: str = PHONE) -> SendResult:
    return await chatea.send_template(
        action_id=action_id, to=to, template="at_office_3d", parameters=["700123", "TCC", "Cali"]
    )


# ---- validation ------------------------------------------------------------------------------


def test_success(http: httpx.Client, sandbox: SandboxHandle) -> None:
    r = http.post("/messages", json=body(), headers=headers())
    assert r.status_code == 200
    data = r.json()
    assert data["status"] == "queued"
    assert data["id"].startswith("wamid.")
    int(data["id"].removeprefix("wamid."), 16)
    assert sandbox.stats()["accepted"] == 1


@pytest.mark.parametrize(
    "authorization", [None, f"Bearer {API_KEY}x", "Bearer", f"Basic {API_KEY}"]
)
def test_401_without_or_with_wrong_bearer(http: httpx.Client, authorization: str | None) -> None:
    h = headers(token=None)
    if authorization is not None:
        h["Authorization"] = authorization
    r = http.post("/messages", json=body(), headers=h)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


def test_any_bearer_accepted_without_configured_key() -> None:
    with start_sandbox() as sb, httpx.Client(base_url=sb.url, trust_env=False) as http:
        assert http.post("/messages", json=body(), headers=headers(token="any")).status_code == 200
        assert http.post("/messages", json=body(), headers=headers(token=None)).status_code == 401


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({**body(), "device_id": None}, "invalid_request"),
        ({k: v for k, v in body().items() if k != "device_id"}, "invalid_request"),
        (body(to="3001234567"), "invalid_recipient"),
        (body(to="+0573001234567"), "invalid_recipient"),
        (body(to="+57 300 123 4567"), "invalid_recipient"),
        (body(template="unknown_template"), "template_not_found"),
        (body(params=["700123", "TCC"]), "parameter_count"),
        (body(params=["700123", "TCC", "Cali", "extra"]), "parameter_count"),
        (body(params=["700123", "TCC", "  "]), "invalid_parameter"),
        ({**body(), "template": "at_office_3d"}, "invalid_request"),
        ([1, 2, 3], "invalid_request"),
    ],
)
def test_400_on_invalid_message(
    http: httpx.Client, sandbox: SandboxHandle, payload: Any, code: str
) -> None:
    r = http.post("/messages", content=json.dumps(payload), headers=headers())
    assert r.status_code == 400
    assert r.json()["error"]["code"] == code
    assert_no_phone(r.text)
    assert sandbox.stats()["accepted"] == 0


def test_400_on_invalid_json(http: httpx.Client) -> None:
    r = http.post("/messages", content=b"{not json", headers=headers())
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_400_without_idempotency_key(http: httpx.Client) -> None:
    r = http.post("/messages", json=body(), headers=headers(key=None))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "idempotency_key_required"


def test_415_without_json_content_type(http: httpx.Client) -> None:
    h = headers()
    h["Content-Type"] = "text/plain"
    r = http.post("/messages", content=json.dumps(body()), headers=h)
    assert r.status_code == 415


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert http.get("/nope").status_code == 404
    assert http.get("/messages").status_code == 405
    assert http.get("/health").json() == {"ok": True}


def test_validation_runs_before_faults(http: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.configure(status=503)
    assert http.post("/messages", json=body(to="bad"), headers=headers()).status_code == 400
    assert http.post("/messages", json=body(), headers=headers(token="x")).status_code == 401


# ---- idempotency -----------------------------------------------------------------------------


def test_repeated_key_returns_same_id_and_counts_duplicate(
    http: httpx.Client, sandbox: SandboxHandle
) -> None:
    first = http.post("/messages", json=body(), headers=headers(key="k-1")).json()["id"]
    second = http.post("/messages", json=body(), headers=headers(key="k-1")).json()["id"]
    third = http.post("/messages", json=body(), headers=headers(key="k-2")).json()["id"]
    assert first == second != third
    stats = sandbox.stats()
    assert stats["accepted"] == 2
    assert stats["duplicates"] == 1
    assert stats["duplicate_keys"] == ["k-1"]
    assert stats["per_recipient"] == {recipient_hash(PHONE): 2}
    assert [r["accepted"] for r in sandbox.requests()] == [True, False, True]


def test_same_key_for_a_different_message_is_409(http: httpx.Client) -> None:
    assert http.post("/messages", json=body(), headers=headers(key="k")).status_code == 200
    r = http.post("/messages", json=body(to=OTHER_PHONE), headers=headers(key="k"))
    assert r.status_code == 409
    assert_no_phone(r.text)


def test_failed_send_does_not_reserve_the_key(http: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.configure(script=["503"])
    assert http.post("/messages", json=body(), headers=headers(key="k")).status_code == 503
    assert http.post("/messages", json=body(), headers=headers(key="k")).status_code == 200
    stats = sandbox.stats()
    assert stats["accepted"] == 1 and stats["duplicates"] == 0


# ---- faults through the real client ----------------------------------------------------------


async def test_client_end_to_end(chatea: ChateaClient, sandbox: SandboxHandle) -> None:
    result = await send(chatea, "action-1")
    assert isinstance(result, Sent)
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("wamid.")
    replay = await send(chatea, "action-1")
    assert replay == result
    (first, second) = sandbox.requests()
    assert first["idempotency_key"] == first["reference"] == "action-1"
    assert first["template"] == "at_office_3d"
    assert first["recipient"] == recipient_hash(PHONE)
    assert first["status"] == 200 and first["accepted"] is True
    assert second["accepted"] is False
    assert first["parameters"] == ["700123", "TCC", "Cali"]


async def test_fixed_503(chatea: ChateaClient, sandbox: SandboxHandle) -> None:
    sandbox.configure(status=503)
    result = await send(chatea, "a")
    assert isinstance(result, Transient)
    assert result.code == "HTTP_503"
    assert result.retry_after is None
    assert sandbox.stats()["by_status"] == {"503": 1}
    assert sandbox.stats()["accepted"] == 0


async def test_429_with_retry_after(chatea: ChateaClient, sandbox: SandboxHandle) -> None:
    sandbox.configure(status=429, retry_after=7)
    result = await send(chatea, "a")
    assert isinstance(result, Transient)
    assert result.code == "HTTP_429"
    assert result.retry_after == 7.0


async def test_fail_rate_one_always_503(chatea: ChateaClient, sandbox: SandboxHandle) -> None:
    sandbox.configure(fail_rate=1.0)
    results = [await send(chatea, f"a{i}") for i in range(3)]
    assert all(isinstance(r, Transient) and r.status_code == 503 for r in results)


async def test_hang_is_unknown(chatea: ChateaClient, sandbox: SandboxHandle) -> None:
    sandbox.configure(mode="hang")
    result = await send(chatea, "a")  # the client's timeout is 0.5 s
    assert isinstance(result, Unknown)
    assert result.code == "READ_TIMEOUT"
    (record,) = sandbox.requests()
    assert record["status"] == "hang" and record["accepted"] is False


async def test_drop_is_unknown(chatea: ChateaClient, sandbox: SandboxHandle) -> None:
    sandbox.configure(mode="drop")
    result = await send(chatea, "a")
    assert isinstance(result, Unknown)
    assert sandbox.stats()["accepted"] == 0
    assert sandbox.stats()["by_status"] == {"drop": 1}


async def test_reset_is_unknown(chatea: ChateaClient, sandbox: SandboxHandle) -> None:
    sandbox.configure(mode="reset")
    result = await send(chatea, "a")
    assert isinstance(result, Unknown)
    assert result.code in ("CONNECTION_RESET", "PROTOCOL_ERROR")


async def test_drop_after_accept_is_unknown_but_accepted(
    chatea: ChateaClient, sandbox: SandboxHandle
) -> None:
    sandbox.configure(mode="drop_after_accept")
    result = await send(chatea, "a")
    assert isinstance(result, Unknown)
    stats = sandbox.stats()
    assert stats["accepted"] == 1
    assert stats["per_recipient"] == {recipient_hash(PHONE): 1}
    (record,) = sandbox.requests()
    assert record["status"] == "drop" and record["accepted"] is True


async def test_script_is_consumed_in_order(chatea: ChateaClient, sandbox: SandboxHandle) -> None:
    sandbox.configure(script=["ok", "503", "drop", "429:3", "400"])
    results = [await send(chatea, f"a{i}") for i in range(6)]
    assert isinstance(results[0], Sent)
    assert isinstance(results[1], Transient) and results[1].status_code == 503
    assert isinstance(results[2], Unknown)
    assert isinstance(results[3], Transient) and results[3].retry_after == 3.0
    assert isinstance(results[4], Permanent) and results[4].status_code == 400
    assert isinstance(results[5], Sent)  # script exhausted: back to normal
    assert [r["status"] for r in sandbox.requests()] == [200, 503, "drop", 429, 400, 200]


async def test_concurrent_sends(chatea: ChateaClient, sandbox: SandboxHandle) -> None:
    sandbox.configure(latency_ms=50)
    results = await asyncio.gather(
        *(send(chatea, f"c{i}", to=PHONE if i % 2 else OTHER_PHONE) for i in range(12))
    )
    assert all(isinstance(r, Sent) for r in results)
    stats = sandbox.stats()
    assert stats["accepted"] == 12
    assert stats["per_recipient"] == {recipient_hash(PHONE): 6, recipient_hash(OTHER_PHONE): 6}


# ---- control API -----------------------------------------------------------------------------


def test_control_endpoints(http: httpx.Client, sandbox: SandboxHandle) -> None:
    r = http.post("/_sandbox/config", json={"status": 503, "retry_after": 2})
    assert r.status_code == 200
    assert r.json()["status"] == 503
    assert http.get("/_sandbox/config").json()["retry_after"] == 2
    r = http.post("/messages", json=body(), headers=headers())
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert http.post("/_sandbox/config", json={"mode": "explode"}).status_code == 400
    assert http.post("/_sandbox/config", json={"nope": 1}).status_code == 400
    assert http.post("/_sandbox/config", json={"fail_rate": 2}).status_code == 400
    stats = http.get("/_sandbox/stats").json()
    assert stats == {
        "requests": 1,
        "accepted": 0,
        "by_status": {"503": 1},
        "per_recipient": {},
        "duplicates": 0,
        "duplicate_keys": [],
    }
    (record,) = http.get("/_sandbox/requests").json()
    assert isinstance(record["received_at"], float)
    assert record["status"] == 503
    assert http.post("/_sandbox/reset").status_code == 200
    assert http.get("/_sandbox/stats").json()["requests"] == 0
    assert http.get("/_sandbox/config").json()["status"] is None
    assert http.post("/messages", json=body(), headers=headers()).status_code == 200


def test_no_phone_in_any_response(http: httpx.Client, sandbox: SandboxHandle) -> None:
    texts = []
    for script in (["ok"], ["drop_after_accept"], ["503"], ["ok"]):
        sandbox.configure(script=script)
        with contextlib.suppress(httpx.HTTPError):  # drop_after_accept has no response
            texts.append(http.post("/messages", json=body(), headers=headers(key="k")).text)
    texts.append(http.post("/messages", json=body(to=OTHER_PHONE), headers=headers()).text)
    texts.append(http.post("/messages", json=body(to="+57300"), headers=headers()).text)
    texts.append(http.get("/_sandbox/stats").text)
    texts.append(http.get("/_sandbox/requests").text)
    texts.append(json.dumps(sandbox.stats()) + json.dumps(sandbox.requests()))
    for text in texts:
        assert_no_phone(text)
    assert recipient_hash(PHONE) in texts[-1]


def test_recipient_hash() -> None:
    assert recipient_hash(PHONE) == hashlib.sha256(PHONE.encode()).hexdigest()[:16]
    assert len(recipient_hash(PHONE)) == 16


def test_invalid_start_faults_are_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        start_sandbox(mode="sideways")


def test_keep_alive_connection_is_reused(http: httpx.Client, sandbox: SandboxHandle) -> None:
    for i in range(5):
        assert http.post("/messages", json=body(), headers=headers(key=f"k{i}")).status_code == 200
    assert sandbox.stats()["accepted"] == 5


# ---- `executor sandbox` as a real process ----------------------------------------------------


def _executor_command() -> list[str]:
    script = Path(sys.executable).parent / "executor"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "executor.cli"]


async def test_cli_subprocess_answers_a_send(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SANDBOX_")}
    proc = subprocess.Popen(
        [*_executor_command(), "sandbox", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        line = lines.get(timeout=30)
        assert "http://127.0.0.1:" in line, line
        url = line.split("listening on ", 1)[1].split()[0]
        async with ChateaClient(
            api_url=url, api_key="any-key", device_id="dev", timeout_seconds=5, concurrency=1
        ) as client:
            result = await client.send_template(
                action_id="cli-1",
                to=PHONE,
                template="no_movement_48h",
                parameters=["700123", "TCC", "En reparto", "2024-05-02"],
            )
        assert isinstance(result, Sent)
        remote = RemoteSandbox(url)
        try:
            assert remote.stats()["accepted"] == 1
            remote.configure(status=503)
            assert http_status(url) == 503
            remote.reset()
            assert remote.stats()["requests"] == 0
        finally:
            remote.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert_no_phone(err)


def http_status(url: str) -> int:
    with httpx.Client(base_url=url, trust_env=False) as http:
        return http.post("/messages", json=body(), headers=headers(key="x")).status_code
