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


def _payloads(body):
    """Every job payload in a submit, a batch submit, or a batch job."""
    for job in _jobs(body):
        if not isinstance(job, dict):
            continue
        payload = job.get("payload")
        if isinstance(payload, dict):
            yield payload
            for child in payload.get("children") or []:
                if isinstance(child, dict) and isinstance(child.get("payload"), dict):
                    yield child["payload"]


# A metric query's range must hold at most this many buckets (`max_buckets`).
MAX_BUCKETS = 10_000


def _instant(text):
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def _unanswerable_query(body) -> bool:
    """`start` after `end` (or equal, for an analysis), or more buckets than
    `max_buckets`: limits the MetricQuery and AnalysisRequest descriptions
    state and JSON Schema cannot."""
    if not isinstance(body, dict) or "bucket_seconds" not in body:
        return False
    start, end, bucket = _instant(body.get("start")), _instant(body.get("end")), body.get("bucket_seconds")
    # JSON has one number type: 60.0 is the integer 60.
    if isinstance(bucket, float) and bucket.is_integer():
        bucket = int(bucket)
    if start is None or end is None or not isinstance(bucket, int) or bucket < 1:
        return False
    if start > end:
        return True
    if start == end:
        # An empty range is an empty metric query, but no analysis.
        return "aggregations" not in body
    first = int(start.timestamp()) // bucket
    last = (int(end.timestamp() * 1_000_000) - 1) // 1_000_000 // bucket
    return last - first + 1 > MAX_BUCKETS


@schemathesis.hook
def filter_body(ctx, body):
    """A `run_at` beyond the horizon, a metric query whose range cannot be
    answered, or a string anywhere holding U+0000 (PostgreSQL text cannot),
    is a negative case the schema cannot mark."""
    if _has_nul(body) or _unanswerable_query(body):
        return False
    if any(_unanswerable_query(p) for p in _payloads(body)):
        return False
    return not any(isinstance(job, dict) and _too_far(job.get("run_at")) for job in _jobs(body))


@schemathesis.hook
def filter_query(ctx, query):
    """A cursor is an opaque token the server made; a made-up one is a
    negative case. So is a history range whose start is after its end."""
    if not isinstance(query, dict):
        return True
    if "cursor" in query:
        return False
    start, end = _instant(query.get("start")), _instant(query.get("end"))
    return not (start is not None and end is not None and start > end)


def _version(text):
    if not isinstance(text, str):
        return None
    digits = text.strip().removeprefix("W/").strip('"')
    return int(digits) if digits.isdigit() else None


@schemathesis.hook
def filter_case(ctx, case):
    """Replacing an alert rule or a dashboard names one version: `version`
    in the body or If-Match. Neither, or two that differ, is a 400 the schema
    cannot mark."""
    if case.method.upper() != "PUT" or not case.path.startswith(("/api/v1/alerts/rules/", "/api/v1/dashboards/")):
        return True
    headers = {k.lower(): v for k, v in (case.headers or {}).items()}
    header = _version(headers.get("if-match"))
    body = case.body if isinstance(case.body, dict) else {}
    version = body.get("version")
    if header is None and version is None:
        return False
    return header is None or version is None or header == version


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    return False


@schemathesis.serializer("application/x-protobuf")
def protobuf(ctx, value):
    """Remote-write bodies are bytes (`format: binary`): sent as generated."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()
