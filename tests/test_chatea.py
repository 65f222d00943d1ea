"""The Chatea client: wire format and the classification table of DESIGN §6 (mocked with respx)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx

import executor.chatea as chatea_module
from executor.chatea import (
    ChateaClient,
    Permanent,
    SendResult,
    Sent,
    Transient,
    Unknown,
    build_payload,
    parse_retry_after,
)
from executor.errors import ConfigError
from tests.conftest import TEST_API_KEY, make_settings

API_URL = "https://chatea.example.test/v1"
DEVICE_ID = "device-7788"
PHONE = "+573001234567"
ACTION_ID = "4f6f0c2e-8a53-4f0b-9a49-5e0a1c2b3d4e"
PARAMS = ["700123456789", "Servientrega", "En reparto", "2024-05-02"]


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API_URL, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def client() -> AsyncIterator[ChateaClient]:
    async with ChateaClient(
        api_url=API_URL,
        api_key=TEST_API_KEY,
        device_id=DEVICE_ID,
        timeout_seconds=5,
        concurrency=3,
        connect_backoff_seconds=0.001,
    ) as c:
        yield c


async def send(client: ChateaClient, *, to: str = PHONE) -> SendResult:
    return await client.send_template(
        action_id=ACTION_ID, to=to, template="no_movement_48h", parameters=PARAMS
    )


# ---- the request on the wire -----------------------------------------------------------------


async def test_golden_request(router: respx.MockRouter, client: ChateaClient) -> None:
    route = router.post("/messages").mock(return_value=httpx.Response(200, json={"id": "w1"}))
    await send(client)
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == "https://chatea.example.test/v1/messages"
    assert request.headers["Authorization"] == f"Bearer {TEST_API_KEY}"
    assert request.headers["Idempotency-Key"] == ACTION_ID
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "device_id": DEVICE_ID,
        "to": PHONE,
        "reference": ACTION_ID,
        "template": {
            "name": "no_movement_48h",
            "language": "es",
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "700123456789"},
                        {"type": "text", "text": "Servientrega"},
                        {"type": "text", "text": "En reparto"},
                        {"type": "text", "text": "2024-05-02"},
                    ],
                }
            ],
        },
    }


def test_build_payload_keeps_parameter_order() -> None:
    payload = build_payload(
        device_id="d", action_id="a", to=PHONE, template="at_office_3d", parameters=["3", "1", "2"]
    )
    texts = [p["text"] for p in payload["template"]["components"][0]["parameters"]]
    assert texts == ["3", "1", "2"]


async def test_trailing_slash_in_url_is_ignored(router: respx.MockRouter) -> None:
    route = router.post("/messages").mock(return_value=httpx.Response(200, json={"id": "w"}))
    async with ChateaClient(
        api_url=API_URL + "/", api_key="k" * 20, device_id="d", timeout_seconds=1, concurrency=1
    ) as c:
        assert isinstance(await send(c), Sent)
    assert route.call_count == 1


# ---- 2xx ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected_id"),
    [
        (200, {"id": "wamid.abc", "status": "queued"}, "wamid.abc"),
        (201, {"messageId": "m-42"}, "m-42"),
        (202, {"status": "queued"}, None),
        (200, {"id": ""}, None),
        (200, ["not", "an", "object"], None),
    ],
)
async def test_2xx_is_sent(
    router: respx.MockRouter,
    client: ChateaClient,
    status: int,
    body: object,
    expected_id: str | None,
) -> None:
    router.post("/messages").mock(return_value=httpx.Response(status, json=body))
    assert await send(client) == Sent(provider_message_id=expected_id, status_code=status)


@pytest.mark.parametrize("content", [b"<html>ok</html>", b"", b"{broken json"])
async def test_2xx_with_invalid_body_is_still_sent(
    router: respx.MockRouter, client: ChateaClient, content: bytes
) -> None:
    router.post("/messages").mock(return_value=httpx.Response(200, content=content))
    assert await send(client) == Sent(provider_message_id=None, status_code=200)


async def test_204_is_sent(router: respx.MockRouter, client: ChateaClient) -> None:
    router.post("/messages").mock(return_value=httpx.Response(204))
    assert await send(client) == Sent(provider_message_id=None, status_code=204)


# ---- 4xx ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
async def test_4xx_is_permanent(
    router: respx.MockRouter, client: ChateaClient, status: int
) -> None:
    route = router.post("/messages").mock(
        return_value=httpx.Response(
            status, json={"error": {"code": "bad", "message": "recipient not on WhatsApp"}}
        )
    )
    result = await send(client)
    assert isinstance(result, Permanent)
    assert result.code == f"HTTP_{status}"
    assert result.status_code == status
    assert "recipient not on WhatsApp" in result.reason
    assert route.call_count == 1


async def test_408_is_transient(router: respx.MockRouter, client: ChateaClient) -> None:
    route = router.post("/messages").mock(return_value=httpx.Response(408))
    result = await send(client)
    assert result == Transient(
        code="HTTP_408", reason="HTTP 408", retry_after=None, status_code=408
    )
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("7", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("soon", None),
        ("-3", None),
        ("", None),
    ],
)
async def test_429_retry_after(
    router: respx.MockRouter, client: ChateaClient, header: str | None, expected: float | None
) -> None:
    headers = {} if header is None else {"Retry-After": header}
    route = router.post("/messages").mock(return_value=httpx.Response(429, headers=headers))
    result = await send(client)
    assert isinstance(result, Transient)
    assert result.code == "HTTP_429"
    assert result.status_code == 429
    assert result.retry_after == expected
    assert route.call_count == 1  # never retried in-call


async def test_429_retry_after_http_date(router: respx.MockRouter, client: ChateaClient) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    router.post("/messages").mock(
        return_value=httpx.Response(
            429, headers={"Retry-After": format_datetime(when, usegmt=True)}
        )
    )
    result = await send(client)
    assert isinstance(result, Transient)
    assert result.retry_after is not None
    assert 60 < result.retry_after <= 120


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    now = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 02 May 2024 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("Thu, 02 May 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 99 Foo 2024 12:00:30 GMT", now=now) is None


# ---- 5xx ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_transient(
    router: respx.MockRouter, client: ChateaClient, status: int
) -> None:
    route = router.post("/messages").mock(
        return_value=httpx.Response(status, text="upstream exploded")
    )
    result = await send(client)
    assert isinstance(result, Transient)
    assert result.code == f"HTTP_{status}"
    assert result.status_code == status
    assert result.retry_after is None
    assert "upstream exploded" in result.reason
    assert route.call_count == 1  # a 5xx is never retried in-call


async def test_503_with_retry_after(router: respx.MockRouter, client: ChateaClient) -> None:
    router.post("/messages").mock(return_value=httpx.Response(503, headers={"Retry-After": "30"}))
    result = await send(client)
    assert isinstance(result, Transient)
    assert result.retry_after == 30.0


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_without_retry_is_unknown(router: respx.MockRouter, status: int) -> None:
    route = router.post("/messages").mock(return_value=httpx.Response(status))
    async with ChateaClient(
        api_url=API_URL,
        api_key=TEST_API_KEY,
        device_id=DEVICE_ID,
        timeout_seconds=5,
        concurrency=1,
        retry_5xx=False,
    ) as c:
        result = await send(c)
    assert isinstance(result, Unknown)
    assert result.code == f"HTTP_{status}"
    assert result.status_code == status
    assert route.call_count == 1


async def test_redirect_is_unknown(router: respx.MockRouter, client: ChateaClient) -> None:
    router.post("/messages").mock(
        return_value=httpx.Response(307, headers={"Location": "https://elsewhere.test/"})
    )
    result = await send(client)
    assert isinstance(result, Unknown)
    assert result.code == "HTTP_307"


# ---- transport errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (httpx.ConnectError("connection refused"), "CONNECT_ERROR"),
        (httpx.ConnectTimeout("connect timed out"), "CONNECT_TIMEOUT"),
        (httpx.PoolTimeout("no free connection"), "POOL_TIMEOUT"),
    ],
)
async def test_request_not_sent_is_transient_after_in_call_retries(
    router: respx.MockRouter, client: ChateaClient, error: Exception, code: str
) -> None:
    route = router.post("/messages").mock(side_effect=error)
    result = await send(client)
    assert isinstance(result, Transient)
    assert result.code == code
    assert result.status_code is None
    assert result.retry_after is None
    assert route.call_count == 3  # first try + connect_retries=2


async def test_connect_error_then_success_is_sent(
    router: respx.MockRouter, client: ChateaClient
) -> None:
    route = router.post("/messages").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json={"id": "w-2"})]
    )
    assert await send(client) == Sent(provider_message_id="w-2", status_code=200)
    assert route.call_count == 2
    # The retry is the same request: same idempotency key.
    keys = {call.request.headers["Idempotency-Key"] for call in route.calls}
    assert keys == {ACTION_ID}


async def test_connect_retries_zero_means_one_call(router: respx.MockRouter) -> None:
    route = router.post("/messages").mock(side_effect=httpx.ConnectError("refused"))
    async with ChateaClient(
        api_url=API_URL,
        api_key=TEST_API_KEY,
        device_id=DEVICE_ID,
        timeout_seconds=5,
        concurrency=1,
        connect_retries=0,
    ) as c:
        result = await send(c)
    assert isinstance(result, Transient)
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (httpx.ReadTimeout("read timed out"), "READ_TIMEOUT"),
        (httpx.WriteTimeout("write timed out"), "WRITE_TIMEOUT"),
        (httpx.ReadError("[Errno 104] Connection reset by peer"), "CONNECTION_RESET"),
        (httpx.WriteError("broken pipe"), "WRITE_ERROR"),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "PROTOCOL_ERROR",
        ),
        (httpx.CloseError("close failed"), "TRANSPORT_ERROR"),
        (httpx.ProxyError("proxy said no"), "TRANSPORT_ERROR"),
    ],
)
async def test_request_maybe_sent_is_unknown_and_not_retried(
    router: respx.MockRouter, client: ChateaClient, error: Exception, code: str
) -> None:
    route = router.post("/messages").mock(side_effect=error)
    result = await send(client)
    assert isinstance(result, Unknown)
    assert result.code == code
    assert result.status_code is None
    assert route.call_count == 1


async def test_overall_deadline_is_unknown(
    router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A provider that trickles bytes defeats per-read timeouts; the whole call has a deadline.
    monkeypatch.setattr(chatea_module, "DEADLINE_SLACK_SECONDS", 0.0)

    async def never_answers(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    router.post("/messages").mock(side_effect=never_answers)
    async with ChateaClient(
        api_url=API_URL,
        api_key=TEST_API_KEY,
        device_id=DEVICE_ID,
        timeout_seconds=0.05,
        concurrency=1,
    ) as c:
        result = await send(c)
    assert isinstance(result, Unknown)
    assert result.code == "DEADLINE_EXCEEDED"


async def test_invalid_recipient_is_never_sent(
    router: respx.MockRouter, client: ChateaClient
) -> None:
    route = router.post("/messages").mock(return_value=httpx.Response(200))
    result = await send(client, to="3001234567")
    assert isinstance(result, Permanent)
    assert result.code == "INVALID_RECIPIENT"
    assert "3001234567" not in result.reason
    assert route.call_count == 0


# ---- no phone, no key --------------------------------------------------------------------------


LEAKY_TEXT = f"bad recipient {PHONE} (573001234567) for key {TEST_API_KEY} " + "x" * 400


@pytest.mark.parametrize(
    "mock",
    [
        {"return_value": httpx.Response(400, json={"error": {"message": LEAKY_TEXT}})},
        {"return_value": httpx.Response(422, json={"message": LEAKY_TEXT})},
        {"return_value": httpx.Response(503, text=LEAKY_TEXT)},
        {"return_value": httpx.Response(429, json={"detail": LEAKY_TEXT})},
        {"side_effect": httpx.ReadError(LEAKY_TEXT)},
        {"side_effect": httpx.ConnectError(LEAKY_TEXT)},
        {"side_effect": httpx.RemoteProtocolError(LEAKY_TEXT)},
    ],
)
async def test_reasons_and_logs_never_contain_phone_or_key(
    router: respx.MockRouter,
    client: ChateaClient,
    caplog: pytest.LogCaptureFixture,
    mock: dict[str, object],
) -> None:
    router.post("/messages").mock(**mock)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG):
        result = await send(client)
    assert not isinstance(result, Sent)
    assert len(result.reason) <= chatea_module.MAX_REASON_LENGTH
    assert "bad recipient" in result.reason  # the provider's text is kept...
    for secret in (PHONE, "3001234567", TEST_API_KEY):
        assert secret not in result.reason  # ...without the phone or the key
        assert secret not in repr(result)
    logged = caplog.text + "".join(str(r.msg) for r in caplog.records)
    assert "chatea.request_failed" in logged
    for secret in (PHONE, "3001234567", TEST_API_KEY):
        assert secret not in logged


async def test_success_logs_never_contain_phone_or_key(
    router: respx.MockRouter, client: ChateaClient, caplog: pytest.LogCaptureFixture
) -> None:
    router.post("/messages").mock(return_value=httpx.Response(200, json={"id": "w"}))
    with caplog.at_level(logging.DEBUG):
        await send(client)
    logged = caplog.text + "".join(str(r.msg) for r in caplog.records)
    for secret in (PHONE, "3001234567", TEST_API_KEY):
        assert secret not in logged


# ---- construction ------------------------------------------------------------------------------


def test_from_settings_names_missing_variables() -> None:
    with pytest.raises(ConfigError) as info:
        ChateaClient.from_settings(make_settings())
    for name in ("CHATEA_API_URL", "CHATEA_API_KEY", "CHATEA_DEVICE_ID"):
        assert name in info.value.message
    with pytest.raises(ConfigError) as info:
        ChateaClient.from_settings(
            make_settings(chatea_api_url=API_URL, chatea_api_key=TEST_API_KEY)
        )
    assert "CHATEA_DEVICE_ID" in info.value.message
    assert "CHATEA_API_URL" not in info.value.message


async def test_from_settings_uses_settings(router: respx.MockRouter) -> None:
    route = router.post("/messages").mock(return_value=httpx.Response(500))
    settings = make_settings(
        chatea_api_url=API_URL,
        chatea_api_key=TEST_API_KEY,
        chatea_device_id=DEVICE_ID,
        chatea_retry_5xx=False,
    )
    async with ChateaClient.from_settings(settings) as c:
        result = await send(c)
    assert isinstance(result, Unknown)  # CHATEA_RETRY_5XX=false
    assert json.loads(route.calls.last.request.content)["device_id"] == DEVICE_ID


def test_api_key_with_spaces_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CHATEA_API_KEY") as info:
        ChateaClient(
            api_url=API_URL, api_key="has a space", device_id="d", timeout_seconds=1, concurrency=1
        )
    assert "has a space" not in info.value.message
