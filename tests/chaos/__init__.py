"""Chaos suite: the real app in subprocesses, real Postgres, the sandbox provider with faults.

Every scenario ends with :func:`tests.chaos.checker.check` (lost / duplicated / unexpected must
all be 0) and records its figures under ``.data/reliability/``; ``python -m tests.chaos.report``
turns them into RELIABILITY.md's table.
"""
