"""``uv run python -m bench [--quick] [--only NAME,...]``: run the benchmarks, print the table,
and (full runs) write BENCHMARKS.md with this machine's figures next to the recorded baseline.

``--quick`` uses small sizes so CI keeps the benchmarks working; it never asserts times and
does not rewrite BENCHMARKS.md unless ``--write`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections.abc import Sequence

from bench.common import BenchResult, quiet_logging
from bench.report import (
    BASELINE_PATH,
    MARKDOWN_PATH,
    load_baseline,
    print_table,
    save_baseline,
    write_markdown,
)

# Run order: cheap and noisy-sensitive first, the big history last.
BENCHMARKS = (
    "efficiency",
    "throughput",
    "round_trips",
    "cold_start",
    "memory",
    "admin_load",
    "scaling",
)


def _module(name: str) -> object:
    import importlib

    return importlib.import_module(f"bench.{name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--only", default="", help="comma list of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--write", action="store_true", help="write BENCHMARKS.md (quick too)")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite BENCHMARKS.md from the stored figures (bench/results.json)",
    )
    parser.add_argument(
        "--save-baseline",
        action="store_true",
        help=f"record this run as the 'before' column ({BASELINE_PATH.name})",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    if args.render:
        write_markdown([], load_baseline(), quick=False, total_seconds=None)
        print(f"wrote {MARKDOWN_PATH.name}")
        return 0

    quiet_logging()
    results: list[BenchResult] = []
    failures: list[str] = []
    started = time.monotonic()
    for name in names:
        module = _module(name)
        print(f"--- {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            result: BenchResult = asyncio.run(module.run(args.quick))  # type: ignore[attr-defined]
        except Exception:
            failures.append(name)
            traceback.print_exc()
            print(f"--- {name} FAILED", flush=True)
            continue
        result.seconds = time.monotonic() - t0
        results.append(result)
        print(f"--- {name} done in {result.seconds:.1f}s", flush=True)
        for note in result.notes:
            print(f"    {note}", flush=True)

    # The baseline was measured at full sizes: quick figures are not comparable with it.
    baseline = {} if args.quick else load_baseline()
    print()
    print_table(results, baseline)
    total = time.monotonic() - started
    print(f"\n{len(results)} benchmark(s) in {total:.0f}s" + (" (quick)" if args.quick else ""))
    if args.save_baseline and not args.quick:
        save_baseline(results)
        baseline = load_baseline()
        print(f"baseline recorded in {BASELINE_PATH.relative_to(BASELINE_PATH.parent.parent)}")
    if (args.write or not args.quick) and not args.no_write and not failures:
        write_markdown(results, baseline, quick=args.quick, total_seconds=total)
        print(f"wrote {MARKDOWN_PATH.name}")
    if failures:
        print(f"FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
