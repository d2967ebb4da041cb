"""Schemathesis hooks for the contract test (`tests-e2e/tests/e2e/openapi_fuzz.rs`).

Only constraints that JSON Schema cannot state live here, each documented in
the OpenAPI document's descriptions; everything else comes from the document.
"""

from datetime import datetime, timedelta, timezone

import schemathesis

# `run_at` may be at most 30 days ahead: a limit relative to now.
RUN_AT_HORIZON = timedelta(days=30) - timedelta(minutes=5)


def _too_far(run_at) -> bool:
    if not isinstance(run_at, str):
        return False
    try:
        at = datetime.fromisoformat(run_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    if at.tzinfo is None:
        return False
    return at > datetime.now(timezone.utc) + RUN_AT_HORIZON


def _jobs(body):
    if isinstance(body, dict) and isinstance(body.get("jobs"), list):
        return body["jobs"]
    return [body]


@schemathesis.hook
def filter_body(ctx, body):
    """A `run_at` beyond the horizon, or a string anywhere holding U+0000
    (PostgreSQL text cannot), is a negative case the schema cannot mark."""
    if _has_nul(body):
        return False
    return not any(isinstance(job, dict) and _too_far(job.get("run_at")) for job in _jobs(body))


@schemathesis.hook
def filter_query(ctx, query):
    """A cursor is an opaque token the server made; a made-up one is a negative case."""
    return not (isinstance(query, dict) and "cursor" in query)


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    return False
