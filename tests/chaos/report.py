"""``uv run python -m tests.chaos.report``: RELIABILITY.md's tables from the figures the chaos
suite and the mutation checks recorded under ``.data/reliability/`` (the last run of each).

The scenario table goes between the ``chaos-table`` markers of RELIABILITY.md, the mutation
table between the ``mutation-table`` markers. ``--run`` first runs the chaos suite and the state
machine (``pytest tests/chaos tests/test_state_machine.py``); ``--print`` writes nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.chaos.checker import load_figures, results_dir

START = "<!-- chaos-table:start -->"
END = "<!-- chaos-table:end -->"
MUTATIONS_START = "<!-- mutation-table:start -->"
MUTATIONS_END = "<!-- mutation-table:end -->"
ORDER = (
    "kill_after_claim",
    "kill_during_send",
    "kill_after_answer",
    "overlapping_cron",
    "five_runners_no_run_lock",
    "storm_5xx",
    "storm_timeouts_resets_drops",
    "unreachable_then_429",
    "db_terminate_backends",
    "db_unreachable",
    "scope_optout_killswitch",
    "frozen_process_late_finalize",
    "frozen_process_newer_attempt",
    "state_machine",
)
COLUMNS = (
    ("scenario", "Scenario"),
    ("faults_injected", "Faults injected"),
    ("runs", "Runs"),
    ("actions", "Actions"),
    ("provider_requests", "Provider requests"),
    ("delivered", "Delivered"),
    ("duplicated", "Duplicated"),
    ("lost", "Lost"),
    ("unexpected", "Unexpected"),
    ("unknown", "Unknown"),
    ("seconds", "Time (s)"),
)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(rows: list[dict[str, Any]]) -> str:
    rank = {name: i for i, name in enumerate(ORDER)}
    rows = sorted(rows, key=lambda r: (rank.get(r["scenario"], len(ORDER)), r["scenario"]))
    if not rows:
        return "_No figures yet: run `uv run pytest tests/chaos tests/test_state_machine.py`._"
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" if key == "scenario" else "---:" for key, _ in COLUMNS) + "|",
    ]
    for row in rows:
        cells = [f"`{row['scenario']}`"] + [_cell(row.get(key, "")) for key, _ in COLUMNS[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| Scenario | What was done | Faults | Notes |")
    lines.append("|---|---|---|---|")
    for row in rows:
        lines.append(
            f"| `{row['scenario']}` | {_cell(row.get('title', ''))} | "
            f"{_cell(row.get('faults', ''))} | {_cell(row.get('notes', ''))} |"
        )
    versions = sorted({f"PostgreSQL {r.get('postgres')}, Python {r.get('python')}" for r in rows})
    stamps = sorted(str(r.get("recorded_at", "")) for r in rows)
    lines.append("")
    lines.append(
        f"Recorded {stamps[0]} to {stamps[-1]} on {'; '.join(versions)}. "
        "Totals: "
        f"{sum(int(r.get('actions', 0)) for r in rows)} actions, "
        f"{sum(int(r.get('provider_requests', 0)) for r in rows)} provider requests, "
        f"{sum(int(r.get('duplicated', 0)) for r in rows)} duplicated, "
        f"{sum(int(r.get('lost', 0)) for r in rows)} lost, "
        f"{sum(int(r.get('unexpected', 0)) for r in rows)} unexpected."
    )
    return "\n".join(lines)


def render_mutations(directory: Path | None = None) -> str:
    path = (directory or results_dir()) / "mutations.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "_No mutation results yet: run `uv run python -m tests.chaos.mutations`._"
    lines = ["| Mutation (bug reintroduced) | Result | Caught by |", "|---|---|---|"]
    for row in rows:
        caught = row.get("caught_by") or []
        shown = ", ".join(f"`{t.split('::', 1)[-1]}`" for t in caught[:6])
        if len(caught) > 6:
            shown += f" and {len(caught) - 6} more"
        lines.append(f"| `{row['name']}`: {_cell(row['bug'])} | {row['status']} | {shown or '-'} |")
    return "\n".join(lines)


def _replace(text: str, start: str, end: str, table: str, document: Path) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"{document}: the {start} / {end} markers are missing")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table}\n{end}{tail}"


def write(document: Path, table: str, mutations: str) -> None:
    text = document.read_text(encoding="utf-8")
    text = _replace(text, START, END, table, document)
    text = _replace(text, MUTATIONS_START, MUTATIONS_END, mutations, document)
    document.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.report", description=__doc__)
    parser.add_argument("--print", action="store_true", help="print the tables, write nothing")
    parser.add_argument("--run", action="store_true", help="run the chaos suite first")
    parser.add_argument(
        "--document", type=Path, default=Path(__file__).resolve().parents[2] / "RELIABILITY.md"
    )
    args = parser.parse_args(argv)
    if args.run:
        tests = ["tests/chaos", "tests/test_state_machine.py"]
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", *tests])
        if code:
            print(f"the chaos suite failed (exit {code}); the tables show its figures anyway")
    rows = load_figures()
    table = render(rows)
    mutations = render_mutations()
    if args.print:
        print(table + "\n\n" + mutations)
        return 0
    write(args.document, table, mutations)
    print(f"{args.document}: {len(rows)} scenarios and the mutation checks from {results_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
