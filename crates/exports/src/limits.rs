//! Per-user rate limits on creating exports: `limit` a minute per user and
//! class (single exports, batch exports), as a GCRA whose state is one row
//! in PostgreSQL, taken under a row lock in the creating transaction. So the
//! limit holds however many gateways and exports replicas there are, and a
//! refused or replayed (idempotent) request takes nothing.
//!
//! The answer carries the IETF RateLimit header fields (draft 6) as gRPC
//! metadata, which the gateway passes on as HTTP headers; a refusal also
//! carries the seconds after which the next request is let through.

use std::time::Duration;

// The answer's metadata keys are the shared wire names: the gateway copies
// the `ratelimit-*` ones to headers of the same names, and the retry-after
// one to `Retry-After`.
use sextant_common::error::RETRY_AFTER_METADATA as RETRY_AFTER;
use sextant_common::error::rate_limit::{LIMIT, POLICY, REMAINING, RESET};
use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The window the limit is counted over.
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Export,
    Batch,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Self::Export => "export",
            Self::Batch => "batch",
        }
    }
}

/// Where a user stands after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the whole quota is back.
    pub reset: u64,
    /// Set when the request was refused: seconds until one is let through.
    pub retry_after: Option<u64>,
}

impl Quota {
    pub fn apply(&self, metadata: &mut MetadataMap) {
        let mut put = |key: &'static str, value: String| {
            if let Ok(value) = AsciiMetadataValue::try_from(value) {
                metadata.insert(key, value);
            }
        };
        put(LIMIT, self.limit.to_string());
        put(REMAINING, self.remaining.to_string());
        put(RESET, self.reset.to_string());
        put(POLICY, format!("{};w={}", self.limit, WINDOW.as_secs()));
        if let Some(seconds) = self.retry_after {
            put(RETRY_AFTER, seconds.to_string());
        }
    }
}

fn ceil_seconds(d: time::Duration) -> u64 {
    let micros = d.whole_microseconds().max(0);
    u64::try_from((micros + 999_999) / 1_000_000).unwrap_or(u64::MAX)
}

/// The GCRA step: with theoretical arrival time `tat` at `now`, is one more
/// request let through, and what is the new `tat`?
fn step(tat: OffsetDateTime, now: OffsetDateTime, limit: u32) -> (Quota, Option<OffsetDateTime>) {
    let window = time::Duration::try_from(WINDOW).expect("a minute fits");
    let interval = window / limit.max(1);
    let tat = tat.max(now);
    let next = tat + interval;
    if next - now > window {
        let quota = Quota {
            limit,
            remaining: 0,
            reset: ceil_seconds(tat - now),
            retry_after: Some(ceil_seconds(next - window - now).max(1)),
        };
        return (quota, None);
    }
    let left = window - (next - now);
    let remaining = u32::try_from(left.whole_microseconds() / interval.whole_microseconds().max(1)).unwrap_or(0);
    let quota = Quota {
        limit,
        remaining,
        reset: ceil_seconds(next - now),
        retry_after: None,
    };
    (quota, Some(next))
}

/// Takes one request of `class` from the user's quota in `tx`: `Ok` when it
/// is let through, `Err` (with the wait) when it is refused.
pub async fn take(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    user: &str,
    class: Class,
    limit: u32,
) -> Result<Result<Quota, Quota>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO export_rate_limits (tenant, user_id, class, tat) VALUES ($1, $2, $3, '-infinity')
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(user)
    .bind(class.name())
    .execute(&mut **tx)
    .await?;
    let (tat, now): (OffsetDateTime, OffsetDateTime) = sqlx::query_as(
        "SELECT greatest(tat, '1970-01-01'::timestamptz), clock_timestamp() FROM export_rate_limits
         WHERE tenant = $1 AND user_id = $2 AND class = $3 FOR UPDATE",
    )
    .bind(tenant)
    .bind(user)
    .bind(class.name())
    .fetch_one(&mut **tx)
    .await?;
    let (quota, next) = step(tat, now, limit);
    let Some(next) = next else { return Ok(Err(quota)) };
    sqlx::query("UPDATE export_rate_limits SET tat = $4 WHERE tenant = $1 AND user_id = $2 AND class = $3")
        .bind(tenant)
        .bind(user)
        .bind(class.name())
        .bind(next)
        .execute(&mut **tx)
        .await?;
    Ok(Ok(quota))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_at_once_then_one_every_six_seconds() {
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut tat = OffsetDateTime::UNIX_EPOCH;
        for i in 0..10 {
            let (quota, next) = step(tat, start, 10);
            assert_eq!(quota.remaining, 9 - i, "request {i}");
            tat = next.expect("let through");
        }
        let (refused, next) = step(tat, start, 10);
        assert_eq!((refused.remaining, refused.retry_after, next), (0, Some(6), None));
        assert_eq!(refused.reset, 60);
        let later = start + time::Duration::seconds(6);
        let (quota, next) = step(tat, later, 10);
        assert!(next.is_some(), "after Retry-After the next one is let through");
        assert_eq!(quota.remaining, 0);
        let (_, early) = step(tat, later - time::Duration::milliseconds(1), 10);
        assert!(early.is_none(), "not a moment before");
    }
}
