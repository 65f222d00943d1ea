"""Server-rendered HTML of the operator dashboard (``GET /admin``) and its login form.

Self-contained: inline CSS and an inline SVG chart, no script, no external asset, so it works
offline and under a strict Content-Security-Policy. Every value is escaped with ``html.escape``.

Every figure carries ``data-metric="<path>"`` (the path of the value in the JSON of
``/api/admin/executor-status``; ``rollout.<path>`` for ``/api/admin/rollout-config``;
``hourly.<i>.<key>`` for the chart) and ``data-value`` (the raw JSON value), so tests and
scrapers can compare the page with the API.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from executor.metrics import DAY_LABELS, METRIC_LABELS

# Sent with every dashboard response (page, login form, error page).
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

NOT_AVAILABLE = "—"

_CSS = """
:root { --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1f2328; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 12px 24px; display: flex; gap: 16px;
         align-items: center; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0 16px 0 0; }
header .meta { color: #d0d7de; }
header form { margin-left: auto; }
main { padding: 16px 24px 48px; max-width: 1440px; margin: 0 auto; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px;
          margin: 0 0 16px; }
section h2 { font-size: 15px; margin: 0 0 10px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; }
.cols > section { margin: 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
.card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
td.num, th.num { text-align: right; }
.scroll { overflow-x: auto; }
table.runs th, table.runs td { padding: 3px 5px; font-size: 12px; }
table.runs td.time { white-space: nowrap; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
         font-size: 12px; background: #eaeef2; }
.badge.ok { background: #dafbe1; color: var(--ok); }
.badge.bad { background: #ffebe9; color: var(--bad); }
.badge.warn { background: #fff8c5; color: var(--warn); }
.muted { color: var(--muted); }
.pos { color: var(--ok); } .neg { color: var(--bad); }
ul.errors { color: var(--bad); margin: 4px 0; }
button { font: inherit; padding: 4px 12px; border-radius: 6px; border: 1px solid var(--line);
         background: #f6f8fa; cursor: pointer; }
svg text { font: 10px system-ui, sans-serif; fill: #57606a; }
.login { max-width: 360px; margin: 12vh auto; }
.login input { width: 100%; padding: 6px 8px; font: inherit; margin: 6px 0 12px;
               border: 1px solid var(--line); border-radius: 6px; }
"""

_BADGE_CLASSES = {
    "SUCCESS": "ok",
    "NOOP": "",
    "PARTIAL": "warn",
    "RUNNING": "warn",
    "FAILED": "bad",
    "closed": "ok",
    "half_open": "warn",
    "open": "bad",
    "OK": "ok",
    "EXECUTOR_DISABLED": "warn",
    "DAILY_LIMIT_REACHED": "warn",
    "CIRCUIT_OPEN": "bad",
    "CONFIG_INVALID": "bad",
}


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


# Keys whose values are ISO 8601 UTC timestamps: shown as "2024-05-01 04:30:00".
TIME_KEYS = frozenset(
    {"lastRunAt", "periodStart", "periodEnd", "openUntil", "startedAt", "finishedAt"}
)


def short_time(value: str) -> str:
    """'2024-05-01T04:30:00.123456Z' -> '2024-05-01 04:30:00' (UTC, to the second)."""
    return value.replace("T", " ")[:19]


def format_value(
    value: Any, *, signed: bool = False, percent: bool = False, time: bool = False
) -> str:
    """How a figure is shown: integers plain, rates as percentages, None as a dash."""
    if value is None:
        return NOT_AVAILABLE
    if time and isinstance(value, str):
        return short_time(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if percent and isinstance(value, int | float):
        text = f"{value * 100:.2f}"
        unit = " pp" if signed else "%"
        return (f"+{text}" if signed and value > 0 else text) + unit
    if isinstance(value, int | float):
        return f"+{value}" if signed and value > 0 else str(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or NOT_AVAILABLE
    return str(value)


def metric(
    path: str,
    value: Any,
    *,
    signed: bool = False,
    percent: bool = False,
    tag: str = "span",
    css: str = "",
) -> str:
    """One figure with its stable data-metric path and raw data-value."""
    classes = css
    if signed and isinstance(value, int | float) and not isinstance(value, bool) and value:
        classes = f"{css} {'pos' if value > 0 else 'neg'}".strip()
    class_attr = f' class="{esc(classes)}"' if classes else ""
    raw = json.dumps(value, ensure_ascii=False)
    time = path.rsplit(".", 1)[-1] in TIME_KEYS
    if time and isinstance(value, str):
        class_attr += f' title="{esc(value)}"'
    shown = format_value(value, signed=signed, percent=percent, time=time)
    return (
        f'<{tag} data-metric="{esc(path)}" data-value="{esc(raw)}"{class_attr}>{esc(shown)}</{tag}>'
    )


def badge(path: str, value: Any) -> str:
    css = "badge " + _BADGE_CLASSES.get(str(value), "")
    return metric(path, value, css=css.strip())


def _page(title: str, body: str, *, refresh: bool = False) -> str:
    refresh_tag = '<meta http-equiv="refresh" content="60">' if refresh else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"{refresh_tag}<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def render_login(error: str | None = None) -> str:
    """The sign-in form; it POSTs the secret in the body, never in a URL."""
    alert = f'<p class="badge bad" role="alert">{esc(error)}</p>' if error else ""
    body = (
        '<main><section class="login"><h2>WhatsApp Executor — operator sign-in</h2>'
        f"{alert}"
        '<form method="post" action="/admin/login" autocomplete="off">'
        '<label for="secret">Admin secret</label>'
        '<input id="secret" name="secret" type="password" required autofocus '
        'autocomplete="current-password">'
        '<button type="submit">Sign in</button></form>'
        '<p class="muted">Or send <code>Authorization: Bearer &lt;ADMIN_SECRET&gt;</code>.</p>'
        "</section></main>"
    )
    return _page("Sign in — WhatsApp Executor", body)


def render_error(title: str, message: str) -> str:
    body = (
        f'<main><section><h2>{esc(title)}</h2><p role="alert">{esc(message)}</p>'
        '<p><a href="/admin">Retry</a></p></section></main>'
    )
    return _page(title, body)


# ---- dashboard pieces -----------------------------------------------------------------------


def _card(label: str, value_html: str) -> str:
    return (
        f'<div class="card"><div class="label">{esc(label)}</div>'
        f'<div class="value">{value_html}</div></div>'
    )


def _local_hour(iso: str | None, tz: ZoneInfo | None) -> str:
    if not iso:
        return ""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if tz is not None:
        moment = moment.astimezone(tz)
    return moment.strftime("%H:00")


def _zone(name: Any) -> ZoneInfo | None:
    try:
        return ZoneInfo(str(name))
    except (ValueError, KeyError, OSError):
        return None


def render_chart(hourly: Sequence[Mapping[str, Any]], tz_name: Any = None) -> str:
    """Inline SVG: sends (green) and failures (red) per hour, oldest hour left."""
    tz = _zone(tz_name) if tz_name else None
    width, height = 760, 220
    left, right, top, bottom = 36, 8, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(hourly), 1)
    peak = max([1, *(int(h["sent"]) for h in hourly), *(int(h["failed"]) for h in hourly)])
    slot = plot_w / n
    bar = max(slot / 2 - 2, 1)
    parts = [
        f'<svg role="img" aria-label="Sends and failures per hour, last 24 hours" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg" data-chart="hourly">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
        'stroke="#d0d7de"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for i, bucket in enumerate(hourly):
        sent, failed = int(bucket["sent"]), int(bucket["failed"])
        x = left + i * slot + 1
        label = _local_hour(bucket.get("hour"), tz)
        for offset, count, color, key in (
            (0.0, sent, "#2da44e", "sent"),
            (bar + 1, failed, "#cf222e", "failed"),
        ):
            h = plot_h * count / peak
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{color}" data-metric="hourly.{i}.{key}" '
                f'data-value="{count}"><title>{esc(label)} {esc(key)}: {count}</title></rect>'
            )
        if i % 3 == 0 or i == n - 1:
            parts.append(
                f'<text x="{x + bar:.1f}" y="{height - 10}" text-anchor="middle">'
                f"{esc(label)}</text>"
            )
    parts.append("</svg>")
    total_sent = sum(int(h["sent"]) for h in hourly)
    total_failed = sum(int(h["failed"]) for h in hourly)
    legend = (
        '<p class="muted"><span style="color:#2da44e">■</span> sent '
        f'(<span data-metric="hourly.totalSent" data-value="{total_sent}">{total_sent}</span>) '
        '<span style="color:#cf222e">■</span> failed or unknown '
        f'(<span data-metric="hourly.totalFailed" data-value="{total_failed}">{total_failed}'
        f"</span>) · hours in {esc(tz_name or 'UTC')}</p>"
    )
    return "".join(parts) + legend


_RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("planned", "Planned"),
    ("sent", "Sent"),
    ("wouldSend", "Would send"),
    ("failed4xx", "4xx"),
    ("failed5xx", "5xx"),
    ("failedPrecheck", "Pre-check"),
    ("unknown", "Unknown"),
    ("skippedDuplicate", "Dup."),
    ("skippedRateLimit", "Rate lim."),
    ("skippedPilot", "Pilot"),
    ("skippedOptOut", "Opt-out"),
    ("skippedCircuitOpen", "Breaker"),
    ("expired", "Expired"),
    ("remainingToday", "Left today"),
)


def _metrics_section(metrics: Mapping[str, Any]) -> str:
    cards = [
        _card(
            "Success rate",
            metric("metrics24h.successRate", metrics.get("successRate"), percent=True),
        )
    ]
    cards += [
        _card(label, metric(f"metrics24h.{key}", metrics.get(key))) for key, label in METRIC_LABELS
    ]
    period = (
        f'<p class="muted">From {metric("metrics24h.periodStart", metrics.get("periodStart"))}'
        f" to {metric('metrics24h.periodEnd', metrics.get('periodEnd'))} UTC; runs started"
        " in the window; dry runs count only in runs and would-send.</p>"
    )
    grid = "".join(cards)
    return f'<section><h2>Last 24 hours</h2><div class="grid">{grid}</div>{period}</section>'


def _days_section(status: Mapping[str, Any]) -> str:
    today, yesterday, delta = status["today"], status["yesterday"], status["delta"]
    rows = [
        "<tr><th>Business day</th>"
        f'<th class="num">Today {metric("today.date", today.get("date"))}</th>'
        f'<th class="num">Yesterday {metric("yesterday.date", yesterday.get("date"))}</th>'
        '<th class="num">Δ</th></tr>'
    ]
    for key, label in DAY_LABELS:
        rows.append(
            f"<tr><td>{esc(label)}</td>"
            f'<td class="num">{metric(f"today.{key}", today.get(key))}</td>'
            f'<td class="num">{metric(f"yesterday.{key}", yesterday.get(key))}</td>'
            f'<td class="num">{metric(f"delta.{key}", delta.get(key), signed=True)}</td></tr>'
        )
    rows.append(
        "<tr><td>Success rate</td>"
        f'<td class="num">{metric("today.successRate", today.get("successRate"), percent=True)}'
        "</td>"
        '<td class="num">'
        f"{metric('yesterday.successRate', yesterday.get('successRate'), percent=True)}</td>"
        '<td class="num">'
        f"{metric('delta.successRate', delta.get('successRate'), percent=True, signed=True)}"
        "</td></tr>"
    )
    return (
        "<section><h2>Today vs yesterday</h2>"
        f'<div class="scroll"><table>{"".join(rows)}</table></div></section>'
    )


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(
        f'<tr><td>{esc(label)}</td><td class="num">{value}</td></tr>' for label, value in rows
    )
    return f"<table>{body}</table>"


def _stats_section(stats: Mapping[str, Any]) -> str:
    breaker, queue, limiter = stats["circuitBreaker"], stats["queue"], stats["rateLimiter"]
    b = "stats.circuitBreaker"
    q = "stats.queue"
    r = "stats.rateLimiter"
    breaker_html = _kv_table(
        [
            ("State", badge(f"{b}.state", breaker.get("state"))),
            (
                "Consecutive failures",
                metric(f"{b}.consecutiveFailures", breaker.get("consecutiveFailures")),
            ),
            ("Open until (UTC)", metric(f"{b}.openUntil", breaker.get("openUntil"))),
        ]
    )
    queue_html = _kv_table(
        [
            ("Planned", metric(f"{q}.planned", queue.get("planned"))),
            ("Due now", metric(f"{q}.due", queue.get("due"))),
            ("Retry scheduled", metric(f"{q}.retryScheduled", queue.get("retryScheduled"))),
            ("Unknown (needs review)", metric(f"{q}.unknown", queue.get("unknown"))),
            (
                "Oldest planned (s)",
                metric(f"{q}.oldestPlannedAgeSeconds", queue.get("oldestPlannedAgeSeconds")),
            ),
        ]
    )
    limiter_html = _kv_table(
        [
            ("Sent today", metric(f"{r}.sentToday", limiter.get("sentToday"))),
            ("Remaining today", metric(f"{r}.remainingToday", limiter.get("remainingToday"))),
            ("Sent this minute", metric(f"{r}.sentThisMinute", limiter.get("sentThisMinute"))),
            (
                "Remaining this minute",
                metric(f"{r}.remainingThisMinute", limiter.get("remainingThisMinute")),
            ),
            (
                "Unique phones today",
                metric(f"{r}.uniquePhonesToday", limiter.get("uniquePhonesToday")),
            ),
        ]
    )
    return (
        '<div class="cols">'
        f"<section><h2>Circuit breaker</h2>{breaker_html}</section>"
        f"<section><h2>Queue</h2>{queue_html}</section>"
        f"<section><h2>Rate limiter</h2>{limiter_html}</section>"
        "</div>"
    )


def _reasons_section(reasons: Sequence[Mapping[str, Any]]) -> str:
    if not reasons:
        body = '<p class="muted">No failed or unknown actions in the last 24 hours.</p>'
    else:
        rows = "".join(
            f"<tr><td>{metric(f'topFailureReasons.{i}.reason', item.get('reason'))}</td>"
            f'<td class="num">{metric(f"topFailureReasons.{i}.count", item.get("count"))}</td>'
            "</tr>"
            for i, item in enumerate(reasons)
        )
        body = f'<table><tr><th>Reason</th><th class="num">Actions</th></tr>{rows}</table>'
    return f"<section><h2>Top failure reasons (24 h)</h2>{body}</section>"


def _runs_section(runs: Sequence[Mapping[str, Any]]) -> str:
    if not runs:
        return '<section><h2>Recent runs</h2><p class="muted">No run yet.</p></section>'
    head = (
        "<tr><th>Started (UTC)</th><th>Finished (UTC)</th><th>Status</th><th>Dry</th>"
        '<th class="num">ms</th>'
        + "".join(f'<th class="num">{esc(label)}</th>' for _, label in _RUN_COLUMNS)
        + "<th>Error</th></tr>"
    )
    rows = []
    for i, run in enumerate(runs):
        p = f"recentRuns.{i}"
        cells = [
            f'<td class="time" title="run {esc(run.get("runId"))}">'
            f"{metric(f'{p}.startedAt', run.get('startedAt'))}</td>",
            f'<td class="time">{metric(f"{p}.finishedAt", run.get("finishedAt"))}</td>',
            f"<td>{badge(f'{p}.status', run.get('status'))}</td>",
            f"<td>{metric(f'{p}.dryRun', run.get('dryRun'))}</td>",
            f'<td class="num">{metric(f"{p}.durationMs", run.get("durationMs"))}</td>',
        ]
        cells += [
            f'<td class="num">{metric(f"{p}.{key}", run.get(key))}</td>' for key, _ in _RUN_COLUMNS
        ]
        cells.append(f"<td>{metric(f'{p}.errorSummary', run.get('errorSummary'))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        "<section><h2>Recent runs</h2>"
        f'<div class="scroll"><table class="runs">{head}{"".join(rows)}</table></div></section>'
    )


def _rollout_section(rollout: Mapping[str, Any]) -> str:
    validation = rollout["validation"]
    send = rollout["sendStatus"]
    errors = validation.get("errors") or []
    errors_html = (
        '<ul class="errors">'
        + "".join(
            f"<li>{metric(f'rollout.validation.errors.{i}', e)}</li>" for i, e in enumerate(errors)
        )
        + "</ul>"
        if errors
        else ""
    )
    config_rows = [
        (key, metric(f"rollout.config.{key}", value))
        for key, value in (rollout.get("config") or {}).items()
    ]
    env_rows = [
        (
            name,
            metric(
                f"rollout.env.{name}",
                is_set,
                css="badge ok" if is_set else "badge",
            ),
        )
        for name, is_set in (rollout.get("env") or {}).items()
    ]
    summary = _kv_table(
        [
            ("Sending allowed", metric("rollout.sendStatus.allowed", send.get("allowed"))),
            ("Reason", badge("rollout.sendStatus.reason", send.get("reason"))),
            ("Configuration valid", metric("rollout.validation.valid", validation.get("valid"))),
        ]
    )
    return (
        "<section><h2>Rollout configuration</h2>"
        f'<div class="cols"><div>{summary}{errors_html}</div>'
        f"<div><h2>Settings</h2>{_kv_table(config_rows)}</div>"
        f"<div><h2>Secrets and provider variables (set?)</h2>{_kv_table(env_rows)}</div></div>"
        "</section>"
    )


def render_dashboard(
    status: Mapping[str, Any],
    hourly: Sequence[Mapping[str, Any]],
    rollout: Mapping[str, Any],
) -> str:
    """The whole dashboard page from the JSON of executor-status and rollout-config."""
    last = status["status"]
    metrics = status["metrics24h"]
    tz_name = (status.get("config") or {}).get("businessTimezone")
    header = (
        "<header><h1>WhatsApp Executor</h1>"
        f"<span>Sending: {badge('rollout.sendStatus.reason', rollout['sendStatus']['reason'])}"
        "</span>"
        f'<span class="meta">Last run: {metric("status.lastRunAt", last.get("lastRunAt"))} '
        f"{badge('status.lastRunStatus', last.get('lastRunStatus'))} "
        f'<span class="muted">{metric("status.lastRunId", last.get("lastRunId"))}</span></span>'
        '<form method="post" action="/admin/logout"><button type="submit">Sign out</button>'
        "</form></header>"
    )
    chart = (
        "<section><h2>Sends and failures per hour (24 h)</h2>"
        f"{render_chart(hourly, tz_name)}</section>"
    )
    body = (
        header
        + "<main>"
        + _metrics_section(metrics)
        + chart
        + _days_section(status)
        + _stats_section(status["stats"])
        + '<div class="cols">'
        + _reasons_section(status.get("topFailureReasons") or [])
        + "</div>"
        + _runs_section(status.get("recentRuns") or [])
        + _rollout_section(rollout)
        + f'<p class="muted">Generated at {esc(short_time(str(metrics.get("periodEnd"))))} UTC'
        " (database clock). "
        "The page refreshes every minute.</p>" + "</main>"
    )
    return _page("WhatsApp Executor — dashboard", body, refresh=True)
