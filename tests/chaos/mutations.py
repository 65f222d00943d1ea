"""``uv run python -m tests.chaos.mutations``: does the proof catch the bugs it claims to?

Each mutation reintroduces one bug the design forbids (a finalize without its ``attempt_id``
guard, a rate counter kept in memory, no quota lock, opt-outs ignored...). The tool copies the
working tree to a scratch directory, applies ONE mutation there, runs the reliability tests
against it, and records which tests failed. The working tree itself is never modified, so
nothing can be left mutated and engineers working in parallel never see mutated code.

A mutation whose text no longer matches the code is reported as ``stale`` (the code moved on);
one that no test catches is reported as ``survived``. Results go to
``.data/reliability/mutations.json``; ``python -m tests.chaos.report`` renders them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos.checker import results_dir

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TESTS = (
    "tests/chaos",
    "tests/test_state_machine.py",
    "tests/test_pipeline.py",
    "tests/test_security.py",
    "tests/test_schemathesis.py",
    "tests/test_api_routes.py",
)
IGNORE = shutil.ignore_patterns(
    ".venv", ".data", ".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
    ".hypothesis", "node_modules", ".vercel", "test-artifacts",
)  # fmt: skip


FINALIZE_WHERE = "        FROM v\n        WHERE a.id = v.id"
FINALIZE_GUARD = " AND a.attempt_id = v.attempt_id AND a.status = 'SENDING'\n"
QUOTA_LOCK = '            await self.conn.execute(q.TAKE_QUOTA_LOCK, {"key": q.QUOTA_LOCK_KEY})\n'
CLAIM_CALL = "            rows = await self.conn.execute(\n                q.CLAIM_DUE_ACTIONS,"
ROW_LOCK = "            FOR UPDATE SKIP LOCKED\n"
AFTER_ROW_LOCK = "        )\n        RETURNING a.id, a.attempt_id,"


@dataclass(frozen=True)
class Mutation:
    name: str
    bug: str
    edits: tuple[tuple[str, str, str], ...]  # (file, exact old text, new text)


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "finalize-without-guard",
        "finalize ignores attempt_id and status (a late finalize overwrites a recovered lease)",
        (
            (
                "executor/run_sql.py",
                FINALIZE_WHERE + FINALIZE_GUARD,
                FINALIZE_WHERE + "\n",
            ),
        ),
    ),
    Mutation(
        "finalize-without-attempt-id",
        "finalize checks status SENDING but not the claim's attempt_id",
        (
            (
                "executor/run_sql.py",
                FINALIZE_WHERE + FINALIZE_GUARD,
                FINALIZE_WHERE + " AND a.status = 'SENDING'\n",
            ),
        ),
    ),
    Mutation(
        "in-memory-minute-counter",
        "per-minute limit counted in process memory (this run's sends), not in the database",
        (
            (
                "executor/run.py",
                '"minute_limit": self.settings.rate_limit_per_minute,',
                '"minute_limit": 10**9,',
            ),
            (
                "executor/run.py",
                "slots = 1 if permit.probe else free_slots",
                "slots = max(0, min(1 if permit.probe else free_slots,"
                " self.settings.rate_limit_per_minute - self.counters.sent))",
            ),
        ),
    ),
    Mutation(
        "no-quota-lock",
        "claims count the quota without the quota advisory lock",
        (
            (
                "executor/run.py",
                QUOTA_LOCK + CLAIM_CALL,
                CLAIM_CALL,
            ),
        ),
    ),
    Mutation(
        "no-skip-locked",
        "claim locks rows FOR UPDATE without SKIP LOCKED",
        (
            (
                "executor/run_sql.py",
                ROW_LOCK + AFTER_ROW_LOCK,
                "            FOR UPDATE\n" + AFTER_ROW_LOCK,
            ),
        ),
    ),
    Mutation(
        "no-row-locks-no-quota-lock",
        "claim without FOR UPDATE SKIP LOCKED and without the quota lock",
        (
            (
                "executor/run_sql.py",
                ROW_LOCK + AFTER_ROW_LOCK,
                AFTER_ROW_LOCK,
            ),
            (
                "executor/run.py",
                QUOTA_LOCK + CLAIM_CALL,
                CLAIM_CALL,
            ),
        ),
    ),
    Mutation(
        "opt-out-ignored",
        "opted-out recipients are not skipped",
        (
            (
                "executor/run.py",
                "            if phone_hash in state.opted_out:\n",
                "            if phone_hash in state.opted_out and False:\n",
            ),
        ),
    ),
    Mutation(
        "per-phone-batch-not-counted",
        "the per-phone rule forgets the sends already accepted in the same batch",
        (
            (
                "executor/run.py",
                "        state.phone_counts[action.phone_hash] += 1\n        return None, _Send(",
                "        return None, _Send(",
            ),
        ),
    ),
    Mutation(
        "expired-lease-resent",
        "an expired lease goes back to PLANNED (resent) instead of UNKNOWN",
        (
            (
                "executor/run_sql.py",
                "        SET status = 'UNKNOWN', error_code = 'LEASE_EXPIRED',",
                "        SET status = 'PLANNED', error_code = 'LEASE_EXPIRED',",
            ),
        ),
    ),
    Mutation(
        "read-timeout-retried",
        "a read timeout (request may have been delivered) is retried instead of UNKNOWN",
        (
            (
                "executor/chatea.py",
                '            (httpx.ConnectTimeout, "CONNECT_TIMEOUT"),\n',
                '            (httpx.ReadTimeout, "READ_TIMEOUT"),\n'
                '            (httpx.ConnectTimeout, "CONNECT_TIMEOUT"),\n',
            ),
        ),
    ),
    Mutation(
        "breaker-ignored",
        "the circuit breaker's permit is ignored (sends while open)",
        (
            (
                "executor/run.py",
                "            permit = await self._breaker_permit(breaker)\n"
                "            if not permit.allowed:\n"
                "                return permit, [], [], False\n",
                "            permit = await self._breaker_permit(breaker)\n"
                "            permit = type(permit)(True, False, 'closed', None)\n",
            ),
        ),
    ),
    Mutation(
        "retry-after-ignored",
        "Retry-After is not honoured",
        (
            (
                "executor/run.py",
                "    if retry_after is not None and retry_after > delay:",
                "    if False:",
            ),
        ),
    ),
    Mutation(
        "pilot-city-ignored",
        "the pilot city filter lets every city through",
        (
            (
                "executor/run_sql.py",
                "AND (cardinality(CAST(:cities AS text[])) = 0 OR city_key",
                "AND (cardinality(CAST(:cities AS text[])) >= 0 OR city_key",
            ),
        ),
    ),
    Mutation(
        "dry-run-housekeeping",
        "a dry run also expires actions and recovers leases (writes)",
        (
            (
                "executor/run.py",
                "        if not dry_run:\n            await pipeline.housekeeping()",
                "        if True:\n            await pipeline.housekeeping()",
            ),
        ),
    ),
    Mutation(
        "admin-auth-open",
        "admin routes accept any request",
        (
            (
                "api/auth.py",
                "    if not token_matches(presented, settings.admin_secret_value()):\n",
                "    if False:\n",
            ),
        ),
    ),
    Mutation(
        "business-day-utc",
        "the business day is the UTC date, not Bogotá's",
        (
            (
                "executor/run_sql.py",
                '_TODAY = "(now() AT TIME ZONE :tz)::date"',
                "_TODAY = \"(now() AT TIME ZONE 'UTC' || substr(:tz, 1, 0))::date\"",
            ),
        ),
    ),
)


def apply(tree: Path, mutation: Mutation) -> dict[str, str] | None:
    """Apply every edit (each old text must occur exactly once); return the originals."""
    originals: dict[str, str] = {}
    staged: dict[str, str] = {}
    for file, old, new in mutation.edits:
        current = staged.get(file) or (tree / file).read_text(encoding="utf-8")
        originals.setdefault(file, current)
        if current.count(old) != 1:
            return None
        staged[file] = current.replace(old, new)
    for file, text in staged.items():
        (tree / file).write_text(text, encoding="utf-8")
    return originals


def run_tests(
    tree: Path, tests: list[str], timeout: float, label: str
) -> tuple[list[str], str, float]:
    started = time.monotonic()
    env = dict(os.environ, EXECUTOR_MUTATION_RUN="1")
    env.pop("PYTHONPATH", None)
    if not env.get("DATABASE_URL"):
        # Reuse the working tree's embedded server rather than initdb-ing one in the scratch copy.
        env.setdefault("EXECUTOR_EMBEDDED_PG_DIR", str(REPO / ".data" / "pg"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    found = re.findall(r"^FAILED (.+?)(?: - .*)?$", proc.stdout, flags=re.MULTILINE)
    failed = sorted(set(found))
    tail = "\n".join(proc.stdout.strip().splitlines()[-3:])
    if failed:
        log = results_dir() / "mutation-logs" / f"{label}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout[-200_000:] + proc.stderr[-50_000:], encoding="utf-8")
    return failed, tail, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.mutations", description=__doc__)
    parser.add_argument("--only", action="append", help="run only this mutation (repeatable)")
    parser.add_argument("--tests", nargs="*", default=list(DEFAULT_TESTS))
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.bug}")
        return 0
    out = results_dir() / "mutations.json"
    previous = {}
    if out.exists():
        previous = {r["name"]: r for r in json.loads(out.read_text(encoding="utf-8"))}
    with tempfile.TemporaryDirectory(prefix="executor-mutants-") as scratch:
        tree = Path(scratch) / "tree"
        shutil.copytree(REPO, tree, ignore=IGNORE)
        if not args.no_baseline:
            # The same tests on the unmutated copy must pass, or a "catch" proves nothing.
            failed, tail, seconds = run_tests(tree, args.tests, args.timeout, "baseline")
            print(f"baseline: {failed or 'clean'} in {seconds:.0f} s", flush=True)
            if failed:
                print(tail)
                return 1
        for mutation in chosen:
            originals = apply(tree, mutation)
            record: dict[str, Any] = {"name": mutation.name, "bug": mutation.bug}
            if originals is None:
                record.update(status="stale", caught_by=[], seconds=0)
            else:
                try:
                    failed, tail, seconds = run_tests(tree, args.tests, args.timeout, mutation.name)
                finally:
                    for file, text in originals.items():
                        (tree / file).write_text(text, encoding="utf-8")
                        assert (tree / file).read_text(encoding="utf-8") == text
                record.update(
                    status="caught" if failed else "survived",
                    caught_by=failed,
                    seconds=round(seconds, 1),
                    summary=tail,
                )
            previous[mutation.name] = record
            print(f"{mutation.name}: {record['status']} {record['caught_by']}", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            ordered = [previous[m.name] for m in MUTATIONS if m.name in previous]
            out.write_text(json.dumps(ordered, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
