"""fast path indexes: claim in index order, quota and status queries proportional to their result

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 13:20:00.000000

- ix_actions_due gains ``id``: the claim's ``ORDER BY next_attempt_at, id LIMIT n`` reads n
  index entries instead of sorting every due action (all actions enqueued together share one
  next_attempt_at).
- ix_actions_quota_day: the daily quota count (``send_day = today``) of every claim and the
  status route's sends and unique phones today: index-only counts of today's sends instead of
  heap reads of the sending history.
- ix_actions_unknown: the UNKNOWN backlog of the status route.
- ix_actions_failures: top failure reasons of the last 24 h, index-only (error_code included).
- ix_action_events_outcomes: the dashboard's hourly series, index-only (status included).
- ix_executor_runs_running: the RUNNING run looked up by the run lock and the abandoned-run
  cleanup, instead of a scan of the run log.

Plain CREATE INDEX (the migration runs in a transaction): it blocks writes to the table while
it builds, seconds on a pilot-sized table; run it between cron ticks.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_QUOTA = sa.text("status IN ('SENDING', 'SENT', 'UNKNOWN')")


def upgrade() -> None:
    op.drop_index(
        "ix_actions_due", table_name="actions", postgresql_where=sa.text("status = 'PLANNED'")
    )
    op.create_index(
        "ix_actions_due",
        "actions",
        ["next_attempt_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'PLANNED'"),
    )
    op.create_index(
        "ix_actions_quota_day",
        "actions",
        ["send_day", "phone_hash"],
        unique=False,
        postgresql_where=_QUOTA,
    )
    op.create_index(
        "ix_actions_unknown",
        "actions",
        ["executed_at"],
        unique=False,
        postgresql_where=sa.text("status = 'UNKNOWN'"),
    )
    op.create_index(
        "ix_actions_failures",
        "actions",
        ["updated_at"],
        unique=False,
        postgresql_include=["error_code"],
        postgresql_where=sa.text("status IN ('FAILED', 'UNKNOWN')"),
    )
    op.create_index(
        "ix_action_events_outcomes",
        "action_events",
        ["created_at"],
        unique=False,
        postgresql_include=["status"],
        postgresql_where=sa.text("status IN ('SENT', 'FAILED', 'UNKNOWN')"),
    )
    op.create_index(
        "ix_executor_runs_running",
        "executor_runs",
        ["started_at"],
        unique=False,
        postgresql_where=sa.text("status = 'RUNNING'"),
    )


def downgrade() -> None:
    op.drop_index("ix_executor_runs_running", table_name="executor_runs")
    op.drop_index("ix_action_events_outcomes", table_name="action_events")
    op.drop_index("ix_actions_failures", table_name="actions")
    op.drop_index("ix_actions_unknown", table_name="actions")
    op.drop_index("ix_actions_quota_day", table_name="actions")
    op.drop_index("ix_actions_due", table_name="actions")
    op.create_index(
        "ix_actions_due",
        "actions",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'PLANNED'"),
    )
