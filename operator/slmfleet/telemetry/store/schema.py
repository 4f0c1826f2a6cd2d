"""Tables of the decision store, written once for both dialects.

``{real}``, ``{json}``, ``{serial}`` are the dialect's type names. Times are Unix
seconds (double precision); booleans are integers. Feedback rows go with their
decision (ON DELETE CASCADE) when retention deletes it; cases are kept.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

TABLES = (
    """
CREATE TABLE IF NOT EXISTS decisions (
    request_id TEXT PRIMARY KEY,
    ts {real} NOT NULL,
    policy TEXT NOT NULL,
    status INTEGER NOT NULL,
    route TEXT,
    route_source TEXT,
    tier TEXT,
    target TEXT,
    accepted INTEGER NOT NULL,
    truncated INTEGER NOT NULL,
    cost_usd {real} NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    tokens_reasoning INTEGER NOT NULL,
    latency_ms {real} NOT NULL,
    case_id TEXT,
    record {json} NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts)",
    "CREATE INDEX IF NOT EXISTS decisions_policy_ts ON decisions (policy, ts)",
    """
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT PRIMARY KEY REFERENCES decisions (request_id) ON DELETE CASCADE,
    rating {real},
    label TEXT,
    answer TEXT,
    outcome TEXT,
    source TEXT NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS feedback_updated ON feedback (updated_at)",
    """
CREATE TABLE IF NOT EXISTS cases (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    policy TEXT NOT NULL,
    request_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at {real} NOT NULL,
    sla_due_at {real} NOT NULL,
    sla_breached INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL,
    payload {json} NOT NULL,
    claimed_by TEXT,
    lease_until {real},
    resolved_by TEXT,
    resolved_at {real},
    answer TEXT,
    label TEXT,
    note TEXT,
    webhook_state TEXT NOT NULL DEFAULT 'none',
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_next_at {real}
)""",
    "CREATE INDEX IF NOT EXISTS cases_queue_status ON cases (queue, status, created_at)",
    "CREATE INDEX IF NOT EXISTS cases_request ON cases (request_id)",
    "CREATE INDEX IF NOT EXISTS cases_resolved ON cases (resolved_at)",
    "CREATE INDEX IF NOT EXISTS cases_webhook ON cases (webhook_state, webhook_next_at)",
    """
CREATE TABLE IF NOT EXISTS case_events (
    id {serial} PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    at {real} NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail {json} NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS case_events_case ON case_events (case_id, id)",
    """
CREATE TABLE IF NOT EXISTS slmfleet_schema (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)""",
)
