"""The schema (DESIGN §4) as SQLAlchemy Core tables.

Migrations in ``executor/migrations`` create exactly this; a test compares the two. Partial
indexes keep "due actions", quota counts and "last 24 h" queries proportional to their result,
not to the history the table holds.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

ACTION_STATUSES = (
    "PLANNED",
    "SENDING",
    "SENT",
    "FAILED",
    "UNKNOWN",
    "SKIPPED_DUPLICATE",
    "SKIPPED_RATE_LIMIT",
    "SKIPPED_OPT_OUT",
    "EXPIRED",
)
# Statuses that may mean a message reached the shopper: they use quota (DESIGN §5).
QUOTA_STATUSES = ("SENDING", "SENT", "UNKNOWN")
_QUOTA_SQL = "status IN ('SENDING', 'SENT', 'UNKNOWN')"

actions = Table(
    "actions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("guide", Text, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("city", Text, nullable=False),
    Column("carrier", Text, nullable=False),
    # Case- and accent-folded copies for pilot matching in SQL.
    Column("city_key", Text, nullable=False),
    Column("carrier_key", Text, nullable=False),
    Column("variables", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("phone_hash", Text, nullable=True),
    Column("status", Text, nullable=False, server_default=text("'PLANNED'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("attempt_id", UUID(as_uuid=True), nullable=True),
    Column("provider_message_id", Text, nullable=True),
    Column("error_code", Text, nullable=True),
    Column("error_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # When the current (last) attempt was claimed for sending; quota windows count from it.
    Column("executed_at", DateTime(timezone=True), nullable=True),
    # Business day (BUSINESS_TIMEZONE) of the last attempt: duplicate and per-phone checks.
    Column("send_day", Date, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in ACTION_STATUSES) + ")",
        name="actions_status_valid",
    ),
    CheckConstraint("NOT (variables ? 'phone')", name="actions_variables_no_phone"),
    # The claim reads due actions in (next_attempt_at, id) order: LIMIT n reads n entries.
    Index(
        "ix_actions_due",
        "next_attempt_at",
        "id",
        postgresql_where=text("status = 'PLANNED'"),
    ),
    Index(
        "ix_actions_planned_expiry",
        "expires_at",
        postgresql_where=text("status = 'PLANNED'"),
    ),
    Index(
        "ix_actions_sending_lease",
        "lease_until",
        postgresql_where=text("status = 'SENDING'"),
    ),
    Index("ix_actions_quota_time", "executed_at", postgresql_where=text(_QUOTA_SQL)),
    # Today's quota (every claim) and today's unique phones (status): index-only counts.
    Index("ix_actions_quota_day", "send_day", "phone_hash", postgresql_where=text(_QUOTA_SQL)),
    Index(
        "ix_actions_quota_phone_day",
        "phone_hash",
        "send_day",
        postgresql_where=text(_QUOTA_SQL),
    ),
    Index(
        "ix_actions_quota_guide_day",
        "guide",
        "trigger",
        "send_day",
        postgresql_where=text(_QUOTA_SQL),
    ),
    Index("ix_actions_updated_at", "updated_at"),
    Index("ix_actions_guide", "guide"),
    # Status route: the UNKNOWN backlog and the last 24 h's failure reasons (index-only).
    Index("ix_actions_unknown", "executed_at", postgresql_where=text("status = 'UNKNOWN'")),
    Index(
        "ix_actions_failures",
        "updated_at",
        postgresql_include=["error_code"],
        postgresql_where=text("status IN ('FAILED', 'UNKNOWN')"),
    ),
)

action_events = Table(
    "action_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "action_id",
        UUID(as_uuid=True),
        ForeignKey("actions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("run_id", UUID(as_uuid=True), nullable=True),
    Column("status", Text, nullable=False),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("error_code", Text, nullable=True),
    Column("detail", Text, nullable=True),
    Column("provider_message_id", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_action_events_action", "action_id", "id"),
    Index("ix_action_events_created_at", "created_at"),
    # The dashboard's hourly sends and failures: index-only over the last 24 h of outcomes.
    Index(
        "ix_action_events_outcomes",
        "created_at",
        postgresql_include=["status"],
        postgresql_where=text("status IN ('SENT', 'FAILED', 'UNKNOWN')"),
    ),
)

recipients = Table(
    "recipients",
    metadata,
    Column("phone_hash", Text, primary_key=True),
    Column("phone_encrypted", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_recipients_last_used_at", "last_used_at"),
)

opt_outs = Table(
    "opt_outs",
    metadata,
    Column("phone_hash", Text, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

RUN_COUNTERS = (
    "planned",
    "sent",
    "would_send",
    "failed_4xx",
    "failed_5xx",
    "failed_precheck",
    "unknown",
    "skipped_duplicate",
    "skipped_rate_limit",
    "skipped_pilot",
    "skipped_opt_out",
    "skipped_circuit_open",
    "expired",
    "remaining_today",
)

executor_runs = Table(
    "executor_runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("status", Text, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("duration_ms", Integer, nullable=True),
    *(Column(name, Integer, nullable=False, server_default=text("0")) for name in RUN_COUNTERS),
    Column("config", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("error_summary", Text, nullable=True),
    CheckConstraint(
        "status IN ('RUNNING', 'SUCCESS', 'PARTIAL', 'FAILED', 'NOOP')",
        name="executor_runs_status_valid",
    ),
    Index("ix_executor_runs_started_at", "started_at"),
    # The one RUNNING run (run lock conflicts, abandoned-run cleanup) without a scan.
    Index("ix_executor_runs_running", "started_at", postgresql_where=text("status = 'RUNNING'")),
)

circuit_breakers = Table(
    "circuit_breakers",
    metadata,
    Column("device_id", Text, primary_key=True),
    Column("state", Text, nullable=False, server_default=text("'closed'")),
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    Column("opened_at", DateTime(timezone=True), nullable=True),
    Column("open_until", DateTime(timezone=True), nullable=True),
    # Half-open: who holds the single probe, and until when (a dead prober frees it).
    Column("probe_until", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "state IN ('closed', 'open', 'half_open')", name="circuit_breakers_state_valid"
    ),
)
