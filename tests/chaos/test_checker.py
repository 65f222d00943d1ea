"""The checker itself: it must see every kind of anomaly it is meant to count."""

from __future__ import annotations

from typing import Any

from tests.chaos.checker import Forbidden, check, max_in_window


def req(
    ref: str, at: float, *, accepted: bool = True, status: Any = 200, **kw: Any
) -> dict[str, Any]:
    return {"reference": ref, "received_at": at, "accepted": accepted, "status": status, **kw}


def test_clean_history_is_clean() -> None:
    result = check(
        ["a", "b", "c", "d"],
        {"a": "SENT", "b": "UNKNOWN", "c": "FAILED", "d": "PLANNED"},
        [req("a", 1), req("b", 2), req("c", 3, accepted=False, status=400)],
    )
    assert result.ok and result.unknown == 1 and result.delivered == 2, result.summary()


def test_lost() -> None:
    result = check(
        ["a", "b", "c", "d"],
        {"a": "SENT", "b": "SENDING", "d": "PLANNED"},
        [],
        waiting=(),
    )
    assert len(result.lost) == 4, result.summary()  # SENT unaccepted, SENDING, vanished, PLANNED


def test_duplicated() -> None:
    result = check(
        ["a", "b", "c"],
        {"a": "SENT", "b": "SENT", "c": "UNKNOWN"},
        [
            req("a", 1),
            req("a", 2),  # accepted twice
            req("b", 3),
            req("b", 4, accepted=False, duplicate=True),  # the provider recognised a repeat
            req("c", 5, status="drop"),
            req("c", 6, accepted=False, status=503),  # resent after delivery
        ],
    )
    assert len(result.duplicated) == 3 and not result.lost, result.summary()


def test_unexpected() -> None:
    forbidden = Forbidden(
        references=frozenset({"b"}), recipients_since={"r1": 10.0}, windows=((20.0, 30.0),)
    )
    result = check(
        ["a", "b", "c", "d", "e"],
        {"a": "SENT", "b": "SENT", "c": "SENT", "d": "SENT", "e": "FAILED"},
        [
            req("zzz", 1),  # never enqueued
            req("a", 2),
            req("b", 3),  # outside scope
            req("c", 11, recipient="r1"),  # opted out at 10
            req("d", 25),  # kill switch off
            req("e", 40),  # delivered, yet FAILED
        ],
        forbidden=forbidden,
    )
    assert len(result.unexpected) == 5, result.summary()


def test_max_in_window() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0, 10, 59.9, 60, 120]) == 3  # (0, 60] holds 10, 59.9, 60
    assert max_in_window([0, 60, 120]) == 1
