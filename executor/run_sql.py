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

# The claim: one statement, one round trip per batch. Under the quota lock (taken by the previous
# statement, so this statement's snapshot sees every earlier claim), it counts the quota used
# today and in the rolling minute, and takes at most least(:slots, what the limits leave) due
# actions inside the pilot scope, oldest due first; SKIP LOCKED lets other claimers pass over
# rows being taken. The lease, a fresh attempt_id and attempts+1 are committed before any HTTP
# call, so a crash can strand only the sends really in flight, and a late finalize can tell it
# lost the lease. Every claim appends its SENDING event.
#
# A run reads the due index from where its previous claim stopped ((:after_at, :after_id),
# the last key it claimed; '-infinity' first): the entries behind it are this run's own claims,
# dead in the partial index until vacuum, and rescanning them made every claim O(sent so far).
# Nothing due is lost by it: retries and new actions are due later than any claimed key, and a
# row skipped while another runner held it is claimed by the next run.
#
# The same statement returns what the per-action rules need for the batch (the RULE_FACTS
# below, and the encrypted phones, whose retention clock it restarts). It reads them from the
# statement's snapshot, in which the claimed rows are still PLANNED: the counts leave the batch
# out by construction. Facts are looked up per phone and per guide of the batch (LATERAL), so
# their cost follows the batch, whatever the planner's statistics say about today's sends.
# Rows are tagged by `kind`:
#   quota      allowance (always one row, even when nothing was claimed)
#   action     a claimed action (id .. next_attempt_at); the caller orders them by
#              (next_attempt_at, id): an ORDER BY here would double the planning time
#   phone      quota already held today by a phone of the batch (phone_hash, n)
#   guide      guide+trigger pairs already sent, sending or unknown today (guide, trigger)
#   opt_out    a phone of the batch that opted out (phone_hash)
#   recipient  an encrypted phone of the batch (phone_hash, phone_encrypted)
_QUOTA = "status IN ('SENDING', 'SENT', 'UNKNOWN')"
_TODAY = "(now() AT TIME ZONE :tz)::date"
CLAIM_DUE_ACTIONS = text(
    f"""
    WITH quota AS (
        -- Each count stops at its limit (LIMIT): a full day costs O(limit), not O(history).
        SELECT greatest(0, least(
            CAST(:slots AS bigint),
            CAST(:daily_limit AS bigint) - (SELECT count(*) FROM (
                SELECT 1 FROM actions WHERE {_QUOTA} AND send_day = {_TODAY}
                LIMIT CAST(:daily_limit AS bigint)) AS d),
            CAST(:minute_limit AS bigint) - (SELECT count(*) FROM (
                SELECT 1 FROM actions
                WHERE {_QUOTA} AND executed_at > now() - interval '60 seconds'
                LIMIT CAST(:minute_limit AS bigint)) AS m)
        )) AS allowance
    ),
    claimed AS (
        UPDATE actions AS a
        SET status = 'SENDING',
            attempt_id = gen_random_uuid(),
            lease_until = now() + make_interval(secs => :lease_seconds),
            attempts = a.attempts + 1,
            executed_at = now(),
            send_day = {_TODAY},
            updated_at = now()
        WHERE a.id IN (
            SELECT id FROM actions
            WHERE {_DUE_IN_SCOPE}
              AND (next_attempt_at, id)
                  > (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid))
            ORDER BY next_attempt_at, id
            LIMIT (SELECT allowance FROM quota)
            FOR UPDATE SKIP LOCKED
        )
        RETURNING a.id, a.attempt_id, a.guide, a.trigger, a.variables, a.phone_hash, a.attempts,
                  a.next_attempt_at
    ),
    audit AS (
        INSERT INTO action_events (action_id, run_id, status, attempt)
        SELECT id, :run_id, 'SENDING', attempts FROM claimed
    ),
    phones AS (
        SELECT DISTINCT phone_hash FROM claimed WHERE phone_hash IS NOT NULL
    ),
    stored AS (
        UPDATE recipients AS r SET last_used_at = now()
        FROM phones WHERE r.phone_hash = phones.phone_hash
        RETURNING r.phone_hash, r.phone_encrypted
    )
    SELECT 'quota' AS kind, NULL::uuid AS id, NULL::uuid AS attempt_id,
           NULL::text AS guide, NULL::text AS trigger, NULL::jsonb AS variables,
           NULL::text AS phone_hash, NULL::integer AS attempts,
           NULL::timestamptz AS next_attempt_at, allowance AS n, NULL::bytea AS phone_encrypted
    FROM quota
    UNION ALL
    SELECT 'action', id, attempt_id, guide, trigger, variables, phone_hash, attempts,
           next_attempt_at, NULL, NULL
    FROM claimed
    UNION ALL
    SELECT 'phone', NULL, NULL, NULL, NULL, NULL, phones.phone_hash, NULL, NULL, used.n, NULL
    FROM phones CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM actions
        WHERE {_QUOTA} AND send_day = {_TODAY} AND phone_hash = phones.phone_hash
    ) AS used
    WHERE used.n > 0
    UNION ALL
    SELECT 'guide', NULL, NULL, guides.guide, used.trigger, NULL, NULL, NULL, NULL, used.n,
           NULL
    FROM (SELECT DISTINCT guide FROM claimed) AS guides CROSS JOIN LATERAL (
        SELECT trigger, count(*) AS n FROM actions
        WHERE {_QUOTA} AND send_day = {_TODAY} AND guide = guides.guide
        GROUP BY trigger
    ) AS used
    UNION ALL
    SELECT 'opt_out', NULL, NULL, NULL, NULL, NULL, phone_hash, NULL, NULL, 1, NULL
    FROM opt_outs WHERE phone_hash IN (SELECT phone_hash FROM phones)
    UNION ALL
    SELECT 'recipient', NULL, NULL, NULL, NULL, NULL, phone_hash, NULL, NULL, NULL,
           phone_encrypted
    FROM stored
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
