"""A queue checker in the style of Jepsen's: what went in, what came out, what was lost.

Inputs are three independent records of one scenario:

- the action ids the intake acknowledged (the *enqueues*),
- the final rows of ``actions`` (what the executor believes),
- the sandbox provider's own request log (what really reached "Chatea"; an ``accepted`` entry is
  a delivered message, the *dequeue*).

Figures (each scenario asserts lost == duplicated == unexpected == 0):

lost
    an enqueued action that vanished from the database; or sits in a state that is neither final
    nor a legitimate wait (e.g. SENDING after every lease was recovered); or is SENT although the
    provider never accepted it (a delivery the system claims but that never happened).
duplicated
    a reference the provider accepted more than once, or a request the provider recognised as a
    repeat of an already accepted Idempotency-Key (a resend after delivery).
unexpected
    a request for an id that was never enqueued; a request for an action that was forbidden at
    that moment (outside the pilot scope, to an opted-out recipient, while the kill switch was
    off); or a delivery the database cannot account for (accepted, yet FAILED, SKIPPED_*,
    EXPIRED or PLANNED: the executor lost track of a message and could send it again).
unknown
    actions that ended UNKNOWN (an operator must reconcile them); each scenario bounds this by
    the sends that were really in flight when its fault hit.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FINAL_STATES = frozenset(
    {
        "SENT",
        "FAILED",
        "UNKNOWN",
        "EXPIRED",
        "SKIPPED_DUPLICATE",
        "SKIPPED_RATE_LIMIT",
        "SKIPPED_OPT_OUT",
    }
)
# A delivered message must end as one of these: anything else means the executor forgot it.
DELIVERED_OK = frozenset({"SENT", "UNKNOWN"})


@dataclass(frozen=True)
class Forbidden:
    """Requests that must never happen: by reference, by recipient (sandbox hash) since a time,
    or any request inside a time window (kill switch off)."""

    references: frozenset[str] = frozenset()
    recipients_since: Mapping[str, float] = field(default_factory=dict)
    windows: tuple[tuple[float, float], ...] = ()


@dataclass
class CheckResult:
    enqueued: int
    provider_requests: int
    delivered: int
    unknown: int
    by_status: dict[str, int]
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected)

    def summary(self) -> str:
        lines = [
            f"enqueued={self.enqueued} requests={self.provider_requests} "
            f"delivered={self.delivered} unknown={self.unknown} statuses={self.by_status}",
            f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"unexpected={len(self.unexpected)}",
        ]
        lines += [f"  lost: {x}" for x in self.lost[:20]]
        lines += [f"  duplicated: {x}" for x in self.duplicated[:20]]
        lines += [f"  unexpected: {x}" for x in self.unexpected[:20]]
        return "\n".join(lines)


def check(
    enqueued: Iterable[str],
    final_states: Mapping[str, str],
    requests: Sequence[Mapping[str, Any]],
    *,
    waiting: Iterable[str] = ("PLANNED",),
    forbidden: Forbidden | None = None,
) -> CheckResult:
    """Compare enqueues, final database states and the provider's request log.

    ``final_states`` maps action id -> status; ``requests`` are sandbox log entries (keys
    ``reference``, ``accepted``, ``duplicate``, ``recipient``, ``received_at``). ``waiting`` are
    the non-final states this scenario may legitimately end in.
    """
    ids = [str(i) for i in enqueued]
    id_set = set(ids)
    waiting_ok = frozenset(waiting)
    forbidden = forbidden or Forbidden()
    sends = [r for r in requests if r.get("reference")]
    accepted = Counter(str(r["reference"]) for r in sends if r.get("accepted"))
    repeats = Counter(str(r["reference"]) for r in sends if r.get("duplicate"))
    result = CheckResult(
        enqueued=len(ids),
        provider_requests=len(sends),
        delivered=len(accepted),
        unknown=sum(1 for i in ids if final_states.get(i) == "UNKNOWN"),
        by_status=dict(Counter(final_states.get(i, "<missing>") for i in ids)),
    )
    for action_id in ids:
        status = final_states.get(action_id)
        if status is None:
            result.lost.append(f"{action_id}: vanished from the database")
        elif status not in FINAL_STATES and status not in waiting_ok:
            result.lost.append(f"{action_id}: left in {status}")
        elif status == "SENT" and accepted[action_id] == 0:
            result.lost.append(f"{action_id}: SENT but the provider never accepted it")
    # A request for a reference the provider already accepted is a resend, whatever the answer.
    after_delivery: Counter[str] = Counter()
    delivered_so_far: set[str] = set()
    for entry in sorted(sends, key=lambda r: float(r.get("received_at") or 0.0)):
        reference = str(entry["reference"])
        if reference in delivered_so_far:
            after_delivery[reference] += 1
        if entry.get("accepted"):
            delivered_so_far.add(reference)
    for reference in sorted(set(accepted) | set(repeats) | set(after_delivery)):
        if accepted[reference] > 1 or repeats[reference] or after_delivery[reference]:
            result.duplicated.append(
                f"{reference}: accepted {accepted[reference]}x, "
                f"{after_delivery[reference]} request(s) after delivery"
            )
    for entry in sends:
        reference = str(entry["reference"])
        at = float(entry.get("received_at") or 0.0)
        if reference not in id_set:
            result.unexpected.append(f"{reference}: never enqueued")
        elif reference in forbidden.references:
            result.unexpected.append(f"{reference}: outside the allowed scope")
        recipient = entry.get("recipient")
        since = forbidden.recipients_since.get(str(recipient)) if recipient else None
        if since is not None and at >= since:
            result.unexpected.append(f"{reference}: sent to an opted-out recipient")
        if any(start <= at <= end for start, end in forbidden.windows):
            result.unexpected.append(f"{reference}: sent while sending was disabled")
    for reference in sorted(accepted):
        status = final_states.get(reference)
        if reference in id_set and status not in DELIVERED_OK and status not in (None, "SENDING"):
            result.unexpected.append(f"{reference}: delivered, yet the database says {status}")
    return result


def max_in_window(times: Iterable[float], window: float = 60.0) -> int:
    """The most events in any half-open window (t - window, t]."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# ---- figures for RELIABILITY.md ------------------------------------------------------------


def results_dir() -> Path:
    override = os.environ.get("EXECUTOR_RELIABILITY_DIR")
    root = Path(__file__).resolve().parents[2]
    return Path(override) if override else root / ".data" / "reliability"


@dataclass
class Figures:
    scenario: str
    title: str
    faults: str
    faults_injected: int
    runs: int
    actions: int
    provider_requests: int
    delivered: int
    duplicated: int
    lost: int
    unexpected: int
    unknown: int
    seconds: float
    notes: str = ""
    postgres: str = ""
    python: str = field(default_factory=platform.python_version)
    recorded_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )


def record(
    scenario: str,
    result: CheckResult,
    *,
    title: str,
    faults: str,
    faults_injected: int,
    runs: int,
    started: float,
    postgres: str = "",
    notes: str = "",
) -> Figures:
    """Write one scenario's figures to ``.data/reliability/<scenario>.json``."""
    figures = Figures(
        scenario=scenario,
        title=title,
        faults=faults,
        faults_injected=faults_injected,
        runs=runs,
        actions=result.enqueued,
        provider_requests=result.provider_requests,
        delivered=result.delivered,
        duplicated=len(result.duplicated),
        lost=len(result.lost),
        unexpected=len(result.unexpected),
        unknown=result.unknown,
        seconds=round(time.monotonic() - started, 1),
        notes=notes,
        postgres=postgres,
    )
    directory = results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{scenario}.json"
    path.write_text(json.dumps(asdict(figures), indent=2) + "\n", encoding="utf-8")
    return figures


def load_figures(directory: Path | None = None) -> list[dict[str, Any]]:
    directory = directory or results_dir()
    if not directory.is_dir():
        return []
    rows = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "scenario" in data:
            rows.append(data)
    return rows
