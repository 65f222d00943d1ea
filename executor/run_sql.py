"""Named SQL of the run pipeline, kept together (DESIGN §5).

Conventions: the database clock (``now()``) decides every time window, so limits hold across
instances whatever their clocks say; business days are ``(now() AT TIME ZONE :tz)::date``;
"quota" statuses are SENDING, SENT and UNKNOWN (a message that may have been delivered).
"""

from __future__ import annotations

from sqlalchemy import text

# Two 64-bit advisory lock keys: the run lock (one run at a time, held for the whole run on its
# own connection) and the quota lock (held only while a claim counts and takes its rows, so
# concurrent claimers - even with the run lock bypassed - can never overshoot a limit).
RUN_LOCK_KEY = 7_220_300_001
QUOTA_LOCK_KEY = 7_220_300_002

TRY_RUN_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")
TAKE_QUOTA_LOCK = text("SELECT pg_advisory_xact_lock(:key)")

# While the run holds its lock connection idle in a transaction, the server must not cut it.
SET_LOCK_SESSION_IDLE_TIMEOUT = text(
    "SELECT set_config('idle_in_transaction_session_timeout', :ms, true)"
)

RUNNING_RUN = text(
    """
    SELECT id FROM executor_runs
    WHERE status = 'RUNNING'
    ORDER BY started_at DESC
    LIMIT 1
    """
)

INSERT_RUN = text(
    """
    INSERT INTO executor_runs (id, status, dry_run, started_at, config)
    VALUES (:id, 'RUNNING', :dry_run, now(), CAST(:config AS jsonb))
    RETURNING started_at
    """
)

# A RUNNING row older than any run can last belongs to a process that died.
CLOSE_ABANDONED_RUNS = text(
    """
    UPDATE executor_runs
    SET status = 'FAILED', finished_at = now(),
        error_summary = 'run did not finish: the process died or was stopped'
    WHERE status = 'RUNNING' AND id <> :run_id
      AND started_at < now() - make_interval(secs => :max_run_seconds)
    """
)

FINISH_RUN = text(
    """
    UPDATE executor_runs
    SET status = :status, finished_at = now(), duration_ms = :duration_ms,
        planned = :planned, sent = :sent, would_send = :would_send,
        failed_4xx = :failed_4xx, failed_5xx = :failed_5xx, failed_precheck = :failed_precheck,
        unknown = :unknown, skipped_duplicate = :skipped_duplicate,
        skipped_rate_limit = :skipped_rate_limit, skipped_pilot = :skipped_pilot,
        skipped_opt_out = :skipped_opt_out, skipped_circuit_open = :skipped_circuit_open,
        expired = :expired, remaining_today = :remaining_today, error_summary = :error_summary
    WHERE id = :run_id
    RETURNING finished_at
    """
)

# PLANNED actions past their TTL never leave: EXPIRED, with an audit event, in one statement.
EXPIRE_ACTIONS = text(
    """
    WITH expired AS (
        UPDATE actions
        SET status = 'EXPIRED', error_code = 'EXPIRED',
            error_reason = 'not sent before ACTION_TTL_HOURS', updated_at = now()
        WHERE status = 'PLANNED' AND expires_at <= now()
        RETURNING id, attempts
    )
    INSERT INTO action_events (action_id, run_id, status, attempt, error_code, detail)
    SELECT id, :run_id, 'EXPIRED', attempts, 'EXPIRED', 'not sent before ACTION_TTL_HOURS'
    FROM expired
    RETURNING action_id
    """
)

# A lease past its end means the process died mid-send: the message may have gone out, so the
# action becomes UNKNOWN (for an operator to reconcile) and is never sent again automatically.
RECOVER_EXPIRED_LEASES = text(
    """
    WITH lost AS (
        UPDATE actions
        SET status = 'UNKNOWN', error_code = 'LEASE_EXPIRED',
            error_reason = 'the sending process stopped before recording the outcome',
            lease_until = NULL, updated_at = now()
        WHERE status = 'SENDING' AND lease_until < now()
        RETURNING id, attempts
    )
    INSERT INTO action_events (action_id, run_id, status, attempt, error_code, detail)
    SELECT id, :run_id, 'UNKNOWN', attempts, 'LEASE_EXPIRED',
           'lease expired: outcome unknown, not resent'
    FROM lost
    RETURNING action_id
    """
)

PURGE_RECIPIENTS = text(
    """
    DELETE FROM recipients
    WHERE last_used_at < now() - make_interval(days => :retention_days)
    """
)

# The pilot filter, shared by every query that selects due work. Empty arrays mean "no limit".
_DUE_IN_SCOPE = """
    status = 'PLANNED' AND next_attempt_at <= now() AND expires_at > now()
    AND (cardinality(CAST(:cities AS text[])) = 0 OR city_key = ANY(CAST(:cities AS text[])))
    AND (cardinality(CAST(:carriers AS text[])) = 0
         OR carrier_key = ANY(CAST(:carriers AS text[])))
"""

COUNT_DUE = text(
    f"""
    SELECT
        count(*) FILTER (WHERE {_DUE_IN_SCOPE}) AS in_scope,
        count(*) AS due
    FROM actions
    WHERE status = 'PLANNED' AND next_attempt_at <= now() AND expires_at > now()
    """
)

COUNT_DUE_IN_SCOPE = text(f"SELECT count(*) FROM actions WHERE {_DUE_IN_SCOPE}")

# Quota used, by the database clock: today (business day of sending) and the rolling minute.
QUOTA_USED = text(
    """
    SELECT
        (SELECT count(*) FROM actions
         WHERE status IN ('SENDING', 'SENT', 'UNKNOWN')
           AND send_day = (now() AT TIME ZONE :tz)::date) AS used_today,
        (SELECT count(*) FROM actions
         WHERE status IN ('SENDING', 'SENT', 'UNKNOWN')
           AND executed_at > now() - interval '60 seconds') AS used_minute
    """
)

# The claim: one statement. Under the quota lock, it takes at most :limit due actions inside
# the pilot scope, oldest due first; SKIP LOCKED lets other claimers pass over rows being taken.
# The lease, a fresh attempt_id and attempts+1 are committed before any HTTP call, so a crash
# can strand only the sends really in flight, and a late finalize can tell it lost the lease.
CLAIM_DUE_ACTIONS = text(
    f"""
    WITH claimed AS (
        UPDATE actions AS a
        SET status = 'SENDING',
            attempt_id = gen_random_uuid(),
            lease_until = now() + make_interval(secs => :lease_seconds),
            attempts = a.attempts + 1,
            executed_at = now(),
            send_day = (now() AT TIME ZONE :tz)::date,
            updated_at = now()
        WHERE a.id IN (
            SELECT id FROM actions
            WHERE {_DUE_IN_SCOPE}
            ORDER BY next_attempt_at, id
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
        )
        RETURNING a.id, a.attempt_id, a.guide, a.trigger, a.variables, a.phone_hash, a.attempts,
                  a.next_attempt_at
    ),
    audit AS (
        INSERT INTO action_events (action_id, run_id, status, attempt)
        SELECT id, :run_id, 'SENDING', attempts FROM claimed
    )
    SELECT * FROM claimed ORDER BY next_attempt_at, id
    """
)

# Dry run: the same selection, read-only, one page at a time (keyset on next_attempt_at, id).
SELECT_DUE_PAGE = text(
    f"""
    SELECT id, guide, trigger, variables, phone_hash, attempts, next_attempt_at
    FROM actions
    WHERE {_DUE_IN_SCOPE}
      AND (next_attempt_at, id) > (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid))
    ORDER BY next_attempt_at, id
    LIMIT :limit
    """
)

# What the per-action rules need for a batch, in one round trip: quota already held today by the
# batch's phones and guide+trigger pairs (outside the batch), and which phones opted out.
RULE_FACTS = text(
    """
    SELECT 'phone' AS kind, phone_hash AS k1, NULL AS k2, count(*) AS n
    FROM actions
    WHERE status IN ('SENDING', 'SENT', 'UNKNOWN') AND send_day = (now() AT TIME ZONE :tz)::date
      AND phone_hash = ANY(CAST(:hashes AS text[])) AND NOT (id = ANY(CAST(:ids AS uuid[])))
    GROUP BY phone_hash
    UNION ALL
    SELECT 'guide', guide, trigger, count(*)
    FROM actions
    WHERE status IN ('SENDING', 'SENT', 'UNKNOWN') AND send_day = (now() AT TIME ZONE :tz)::date
      AND guide = ANY(CAST(:guides AS text[])) AND NOT (id = ANY(CAST(:ids AS uuid[])))
    GROUP BY guide, trigger
    UNION ALL
    SELECT 'opt_out', phone_hash, NULL, 1
    FROM opt_outs
    WHERE phone_hash = ANY(CAST(:hashes AS text[]))
    """
)

# Encrypted phones of a batch; touching last_used_at restarts their retention clock.
FETCH_RECIPIENTS = text(
    """
    UPDATE recipients SET last_used_at = now()
    WHERE phone_hash = ANY(CAST(:hashes AS text[]))
    RETURNING phone_hash, phone_encrypted
    """
)

SET_PHONE_HASH = text(
    """
    UPDATE actions SET phone_hash = :phone_hash
    WHERE id = :id AND attempt_id = :attempt_id
    """
)

# Finalize many actions at once. Each row is guarded by its attempt_id: a row that does not
# match lost its lease (another process recovered it) and is left alone - never resent.
# Every status change appends its audit event in the same statement.
FINALIZE_ACTIONS = text(
    """
    WITH v AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:attempt_ids AS uuid[]), CAST(:statuses AS text[]),
            CAST(:delays AS double precision[]), CAST(:codes AS text[]),
            CAST(:reasons AS text[]), CAST(:provider_ids AS text[]), CAST(:details AS text[])
        ) AS v(id, attempt_id, status, delay, code, reason, provider_id, detail)
    ),
    done AS (
        UPDATE actions AS a
        SET status = v.status,
            lease_until = NULL,
            attempt_id = CASE WHEN v.status = 'PLANNED' THEN NULL ELSE a.attempt_id END,
            next_attempt_at = CASE WHEN v.status = 'PLANNED'
                                   THEN now() + make_interval(secs => v.delay)
                                   ELSE a.next_attempt_at END,
            attempts = CASE WHEN v.status IN ('SKIPPED_DUPLICATE', 'SKIPPED_RATE_LIMIT',
                                              'SKIPPED_OPT_OUT')
                            THEN a.attempts - 1 ELSE a.attempts END,
            provider_message_id = COALESCE(v.provider_id, a.provider_message_id),
            error_code = v.code,
            error_reason = v.reason,
            updated_at = now()
        FROM v
        WHERE a.id = v.id AND a.attempt_id = v.attempt_id AND a.status = 'SENDING'
        RETURNING a.id, a.status, a.attempts, a.error_code, a.provider_message_id, v.detail
    )
    INSERT INTO action_events (action_id, run_id, status, attempt, error_code, detail,
                               provider_message_id)
    SELECT id, :run_id, status, attempts, error_code, detail, provider_message_id FROM done
    RETURNING action_id
    """
)

# Claimed but never sent (the breaker opened, the run failed before the send): back to PLANNED
# as if never claimed, so nothing is stranded and no attempt is consumed.
RELEASE_CLAIMS = text(
    """
    WITH released AS (
        UPDATE actions AS a
        SET status = 'PLANNED', lease_until = NULL, attempt_id = NULL,
            attempts = a.attempts - 1, updated_at = now()
        FROM unnest(CAST(:ids AS uuid[]), CAST(:attempt_ids AS uuid[])) AS v(id, attempt_id)
        WHERE a.id = v.id AND a.attempt_id = v.attempt_id AND a.status = 'SENDING'
        RETURNING a.id, a.attempts
    )
    INSERT INTO action_events (action_id, run_id, status, attempt, detail)
    SELECT id, :run_id, 'PLANNED', attempts, :detail FROM released
    RETURNING action_id
    """
)
