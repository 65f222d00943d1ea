"""Old history for the scaling benchmarks, generated in SQL (generate_series), never row by row.

Actions are spread over the last 30 days with realistic outcomes (mostly SENT, some FAILED,
UNKNOWN, SKIPPED_*, EXPIRED), each with its audit events; ``executor_runs`` gets one row per
25 actions (a per-minute cron over 30 days for 1 M actions). Values derive from hashes of the
row number, so a given size always produces the same data. Each step's rows are written in time
order, as a live table's are (heap order follows time within a step).
"""

from __future__ import annotations

from bench.common import sql_script

TZ = "America/Bogota"

# bucket = hash(g) mod 1000 decides the outcome; age = hash(g*7) mod 30 days.
_ACTIONS = """
INSERT INTO actions (id, idempotency_key, guide, trigger, city, carrier, city_key, carrier_key,
                     variables, phone_hash, status, attempts, next_attempt_at, attempt_id,
                     provider_message_id, error_code, error_reason, created_at, updated_at,
                     executed_at, send_day, expires_at)
SELECT gen_random_uuid(),
       'HIST' || g || ':' || h.trigger,
       'HIST' || g,
       h.trigger,
       'Bogotá', 'Servientrega', 'bogota', 'servientrega',
       jsonb_build_object('numero_de_guia', 'HIST' || g, 'transportadora', 'Servientrega',
                          'ciudad_de_destino', 'Bogotá'),
       md5('phone' || (g % 50000)) || md5('salt' || (g % 50000)),
       h.status,
       CASE WHEN h.status IN ('EXPIRED', 'SKIPPED_DUPLICATE', 'SKIPPED_RATE_LIMIT',
                              'SKIPPED_OPT_OUT') THEN 0 ELSE 1 END,
       h.created_at,
       CASE WHEN h.status IN ('SENT', 'FAILED', 'UNKNOWN') THEN gen_random_uuid() END,
       CASE WHEN h.status = 'SENT' THEN 'wamid.hist' || g END,
       CASE h.status WHEN 'FAILED' THEN (ARRAY['HTTP_400', 'INVALID_PHONE', 'NO_PHONE',
                                               'HTTP_503'])[1 + g % 4]
                     WHEN 'UNKNOWN' THEN 'READ_TIMEOUT'
                     WHEN 'SKIPPED_DUPLICATE' THEN 'DUPLICATE'
                     WHEN 'SKIPPED_RATE_LIMIT' THEN 'PHONE_DAILY_LIMIT'
                     WHEN 'SKIPPED_OPT_OUT' THEN 'OPT_OUT'
                     WHEN 'EXPIRED' THEN 'EXPIRED' END,
       CASE WHEN h.status NOT IN ('SENT') THEN 'historical outcome' END,
       h.created_at,
       CASE WHEN h.status = 'EXPIRED' THEN h.created_at + interval '24 hours'
            ELSE h.created_at + interval '2 seconds' END,
       CASE WHEN h.status <> 'EXPIRED' THEN h.created_at + interval '1 second' END,
       CASE WHEN h.status <> 'EXPIRED'
            THEN ((h.created_at + interval '1 second') AT TIME ZONE '{tz}')::date END,
       h.created_at + interval '24 hours'
FROM generate_series({start}, {stop}) AS g
CROSS JOIN LATERAL (
    SELECT CASE WHEN g % 2 = 0 THEN 'at_office_3d' ELSE 'no_movement_48h' END AS trigger,
           -- ages from 5 minutes to 30 days: nothing lands in the rolling minute
           now() - interval '5 minutes'
               - make_interval(secs => (abs(hashint8(g * 7)) % 2591000)::double precision)
               AS created_at,
           CASE WHEN b < 800 THEN 'SENT' WHEN b < 860 THEN 'FAILED' WHEN b < 880 THEN 'UNKNOWN'
                WHEN b < 920 THEN 'SKIPPED_DUPLICATE' WHEN b < 950 THEN 'SKIPPED_RATE_LIMIT'
                WHEN b < 960 THEN 'SKIPPED_OPT_OUT' ELSE 'EXPIRED' END AS status
    FROM (SELECT abs(hashint8(g)) % 1000 AS b) AS bucket
) AS h
ORDER BY h.created_at  -- rows land in time order, as a live table's do
"""

# A SENDING event for every attempt, then the outcome (expired actions only have the outcome).
_EVENTS = """
INSERT INTO action_events (action_id, run_id, status, attempt, error_code, detail,
                           provider_message_id, created_at)
SELECT a.id, NULL, e.status, a.attempts,
       CASE WHEN e.status = 'SENDING' THEN NULL ELSE a.error_code END,
       NULL, CASE WHEN e.status = 'SENT' THEN a.provider_message_id END,
       CASE WHEN e.status = 'SENDING' THEN a.executed_at ELSE a.updated_at END
FROM actions AS a
CROSS JOIN LATERAL (
    SELECT 'SENDING' AS status WHERE a.status IN ('SENT', 'FAILED', 'UNKNOWN')
    UNION ALL SELECT a.status
) AS e
WHERE a.guide LIKE 'HIST%' AND substr(a.guide, 5)::bigint BETWEEN {start} AND {stop}
ORDER BY 8
"""

_RUNS = """
INSERT INTO executor_runs (id, status, dry_run, started_at, finished_at, duration_ms, planned,
                           sent, failed_4xx, failed_5xx, failed_precheck, unknown,
                           skipped_duplicate, skipped_rate_limit, remaining_today, config)
SELECT gen_random_uuid(),
       CASE WHEN r % 50 = 0 THEN 'PARTIAL' WHEN r % 7 = 0 THEN 'NOOP' ELSE 'SUCCESS' END,
       r % 97 = 0,
       t, t + interval '3 seconds', 3000, 25, 20, 1, 1, 0, 0, 1, 1, 80, '{{}}'::jsonb
FROM generate_series({start}, {stop}) AS r
CROSS JOIN LATERAL (
    SELECT now() - interval '2 minutes'
           - make_interval(secs => (abs(hashint8(r * 13)) % 2591000)::double precision) AS t
) AS s
ORDER BY t
"""


def grow_history(database_url: str, start: int, stop: int) -> None:
    """Add historical actions numbered start..stop (inclusive), their events and runs."""
    if stop < start:
        return
    run_start, run_stop = start // 25 + 1, stop // 25
    statements = [
        _ACTIONS.format(start=start, stop=stop, tz=TZ),
        _EVENTS.format(start=start, stop=stop),
    ]
    if run_stop >= run_start:
        statements.append(_RUNS.format(start=run_start, stop=run_stop))
    # Steady state after a bulk load: autovacuum would analyze; do it now for stable plans.
    statements.append("VACUUM ANALYZE actions, action_events, executor_runs, recipients")
    sql_script(database_url, statements)
