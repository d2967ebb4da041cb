//! Data migrations: events written by an older schema read back the same.

use std::borrow::Cow;

use serde_json::Value;
use sextant_jobs::store;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A database of its own, dropped at the end; `None` when tests are skipped.
struct Scratch {
    admin_url: String,
    name: String,
    url: String,
}

impl Scratch {
    async fn new() -> Option<Self> {
        let admin_url = std::env::var("SEXTANT_TEST_DATABASE_URL").ok()?;
        let name = format!("jobs_migration_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        Some(Self {
            admin_url,
            name,
            url: url.to_string(),
        })
    }

    async fn drop(self) {
        let mut admin = PgConnection::connect(&self.admin_url).await.unwrap();
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        admin.execute(drop.as_str()).await.unwrap();
    }
}

fn timestamp(value: &Value) -> Option<OffsetDateTime> {
    value.as_str().map(|s| OffsetDateTime::parse(s, &Rfc3339).unwrap())
}

#[tokio::test]
async fn events_written_as_documents_read_back_the_same_as_columns() {
    let Some(scratch) = Scratch::new().await else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "set SEXTANT_TEST_DATABASE_URL"
        );
        return;
    };
    let pool = PgPool::connect(&scratch.url).await.unwrap();
    let all = sqlx::migrate!("./migrations");

    // The schema before `0010_typed_events.sql`, and changes of every shape
    // recorded by its trigger: a plain and a keyed job, a start with
    // progress, a success with a result, a failed attempt scheduled again.
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = Cow::Owned(all.migrations.iter().filter(|m| m.version < 10).cloned().collect());
    before.run(&pool).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO jobs (id, tenant, kind, status, payload, priority, max_attempts, timeout_ms, run_at, idempotency_key) \
         SELECT gen_random_uuid(), 'acme', 'noop', 'queued', '{\"n\": 1}', g % 10, 3, 30000, now(), \
                CASE WHEN g % 2 = 0 THEN 'key-' || g END \
           FROM generate_series(1, 6) g; \
         UPDATE jobs SET status = 'running', attempt = 1, started_at = now(), progress = '{\"done\": 1}', \
                lease_owner = 'w', lease_expires_at = now() + interval '1 minute', version = version + 1, updated_at = now(); \
         INSERT INTO job_attempts (job_id, attempt, worker, finished_at, error_code, error_message) \
         SELECT id, 1, 'w', now(), 'boom', 'it broke' FROM jobs WHERE idempotency_key IS NOT NULL; \
         UPDATE jobs SET status = 'succeeded', finished_at = now(), result = '{\"rows\": [1, 2]}', \
                lease_owner = NULL, lease_expires_at = NULL, version = version + 1, updated_at = now() \
          WHERE idempotency_key IS NULL; \
         UPDATE jobs SET status = 'scheduled', run_at = now() + interval '1 minute', lease_owner = NULL, \
                lease_expires_at = NULL, version = version + 1, updated_at = now() \
          WHERE idempotency_key IS NOT NULL;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let documents: Vec<(i64, Value, Option<Value>)> =
        sqlx::query_as("SELECT seq, job, errors FROM job_events ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(documents.len(), 18, "6 jobs, 3 changes each");

    all.run(&pool).await.unwrap();

    let mut read = 0;
    for job_id in documents
        .iter()
        .map(|d| d.1["id"].as_str().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let events = store::job_events(&pool, job_id.parse().unwrap(), 0).await.unwrap();
        assert_eq!(events.len(), 3);
        for event in events {
            let (_, doc, errors) = documents.iter().find(|d| d.0 == event.seq).unwrap();
            let job = &event.job;
            assert_eq!(job.id.to_string(), doc["id"].as_str().unwrap());
            assert_eq!(job.tenant, "acme");
            assert_eq!(job.kind, doc["kind"].as_str().unwrap());
            assert_eq!(job.status, doc["status"].as_str().unwrap());
            assert_eq!(i64::from(job.priority), doc["priority"].as_i64().unwrap());
            assert_eq!(i64::from(job.attempt), doc["attempt"].as_i64().unwrap());
            assert_eq!(i64::from(job.max_attempts), doc["max_attempts"].as_i64().unwrap());
            assert_eq!(job.timeout_ms, doc["timeout_ms"].as_i64().unwrap());
            assert_eq!(job.idempotency_key.as_deref(), doc["idempotency_key"].as_str());
            assert_eq!(job.parent_id, None);
            assert_eq!(job.failure_policy, doc["failure_policy"].as_str().unwrap());
            assert_eq!(Some(job.created_at), timestamp(&doc["created_at"]));
            assert_eq!(Some(job.run_at), timestamp(&doc["run_at"]));
            assert_eq!(job.started_at, timestamp(&doc["started_at"]));
            assert_eq!(job.finished_at, timestamp(&doc["finished_at"]));
            assert_eq!(Some(job.updated_at), timestamp(&doc["updated_at"]));
            assert_eq!(job.progress.as_ref(), Some(&doc["progress"]).filter(|v| !v.is_null()));
            assert_eq!(job.result.as_ref(), Some(&doc["result"]).filter(|v| !v.is_null()));
            assert_eq!(job.cancel_requested, doc["cancel_requested"].as_bool().unwrap());
            assert_eq!(job.version, doc["version"].as_i64().unwrap());
            assert_eq!(event.version, job.version);
            assert_eq!(event.errors, *errors);
            read += 1;
        }
    }
    assert_eq!(read, 18);
    // The kept events carry what the documents did: a result, progress, errors.
    assert_eq!(documents.iter().filter(|d| d.2.is_some()).count(), 3);

    pool.close().await;
    scratch.drop().await;
}
