//! The load generator's writers and the final count.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinSet;

use super::report::{Report, Stats};
use super::subscribers::Subscribers;
use super::{SoakOptions, Stop};
use crate::fleet::Fleet;

const EVENTS_METRIC: &str = "soak.events";
const ALERT_METRIC: &str = "soak.alert";
/// One half of the alert metric's cycle: this long above the threshold,
/// then this long below.
const ALERT_HALF: Duration = Duration::from_secs(10);
/// How long a write is sent again (same key) before the run gives up on it.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// The gateway's API as a frontend calls it, every request timed into the
/// phase it ends in.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    stats: Arc<Stats>,
}

impl Api {
    /// Sends until answered with one of `ok`: a 5xx, a 409 (a replay of a
    /// key still in flight), a 429 or a transport error is sent again with
    /// the same key after 100 ms; anything else is an error.
    pub(crate) async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
        ok: &[u16],
    ) -> anyhow::Result<(u16, Value)> {
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            let began = Instant::now();
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token);
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let (status, text) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.text().await {
                        Ok(text) => (status, text),
                        Err(error) => (0, error.to_string()),
                    }
                }
                Err(error) => (0, error.to_string()),
            };
            let good = ok.contains(&status);
            self.stats.record(good, began.elapsed(), || {
                format!("{method} {} → {status}", path.split('?').next().unwrap_or(path))
            });
            if good {
                return Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
            }
            let again = status == 0 || status == 409 || status == 429 || status >= 500;
            anyhow::ensure!(again, "{method} {path} → {status}: {text}");
            anyhow::ensure!(
                Instant::now() < deadline,
                "{method} {path} unanswered for {ANSWER_WITHIN:?}: {status} {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn bytes(&self, token: &str, path: &str) -> anyhow::Result<Vec<u8>> {
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            let began = Instant::now();
            let response = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token)
                .send()
                .await;
            let body = match response {
                Ok(r) if r.status() == 200 => r.bytes().await.map_err(|e| e.to_string()),
                Ok(r) => Err(format!("{}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            self.stats
                .record(body.is_ok(), began.elapsed(), || format!("GET {path}"));
            match body {
                Ok(bytes) => return Ok(bytes.to_vec()),
                Err(error) => anyhow::ensure!(Instant::now() < deadline, "GET {path}: {error}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Tokens for each tenant's writer, valid for the whole run.
pub(crate) fn token(fleet: &Fleet, tenant: usize, user: &str, lifetime: Duration) -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = crate::tokens::claims(&tenant_name(tenant), user);
    claims["exp"] = json!(now + lifetime.as_secs() as i64 + 3600);
    crate::tokens::sign(&fleet.jwt_secret, &claims)
}

pub(crate) fn tenant_name(tenant: usize) -> String {
    format!("soak-{tenant}")
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("formats")
}

#[derive(Default)]
struct Accepted {
    /// `(tenant, job id)`.
    jobs: Vec<(usize, String)>,
    events: BTreeMap<usize, u64>,
    /// `(tenant, export id)`.
    exports: Vec<(usize, String)>,
    alert_high_phases: usize,
    /// Writes never answered, and answers that were wrong.
    failures: Vec<String>,
}

/// One webhook request the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    delivery: String,
    attempt: String,
    body: Value,
}

pub(crate) struct Load {
    stop: Stop,
    tasks: JoinSet<()>,
    accepted: Arc<Mutex<Accepted>>,
    subscribers: Subscribers,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    rule_id: String,
    api: Api,
    tokens: Vec<String>,
    tenants: usize,
    first_event: OffsetDateTime,
    per_gateway: Vec<f64>,
}

impl Load {
    pub(crate) async fn start(fleet: &Fleet, options: &SoakOptions, stats: Arc<Stats>) -> anyhow::Result<Self> {
        let lifetime = options.duration * 2 + Duration::from_secs(600);
        let api = Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_secs(3))
                .build()?,
            base: fleet.url(""),
            stats,
        };
        let tokens: Vec<String> = (0..options.tenants)
            .map(|t| token(fleet, t, "writer", lifetime))
            .collect();
        let stop = Stop::default();
        let accepted = Arc::new(Mutex::new(Accepted::default()));
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let hook = receiver(deliveries.clone()).await?;
        let (_, rule) = api
            .call(
                &tokens[0],
                Method::POST,
                "/api/v1/alerts/rules",
                Some(&json!({
                    "name": "soak alert", "metric": ALERT_METRIC, "aggregation": "max",
                    "window_seconds": 5, "comparator": "gt", "threshold": 50.0,
                    "webhook": {"url": format!("http://{hook}/hook"), "secret": "a-soak-secret-of-24-chars"},
                })),
                None,
                &[201],
            )
            .await?;
        let rule_id = rule["id"].as_str().unwrap_or_default().to_owned();

        let subscribers = Subscribers::start(fleet, options, lifetime).await?;
        let per_gateway = subscribers_per_gateway(fleet).await;

        let mut tasks = JoinSet::new();
        let first_event = OffsetDateTime::now_utc();
        tasks.spawn(submit_jobs(
            api.clone(),
            tokens.clone(),
            options.jobs_per_second,
            stop.clone(),
            accepted.clone(),
        ));
        tasks.spawn(ingest(
            api.clone(),
            tokens.clone(),
            options.event_batches_per_second,
            options.events_per_batch,
            stop.clone(),
            accepted.clone(),
        ));
        tasks.spawn(toggle_alert(
            api.clone(),
            tokens[0].clone(),
            stop.clone(),
            accepted.clone(),
        ));
        tasks.spawn(export(
            api.clone(),
            tokens.clone(),
            options.export_every,
            stop.clone(),
            accepted.clone(),
        ));
        Ok(Self {
            stop,
            tasks,
            accepted,
            subscribers,
            deliveries,
            rule_id,
            api,
            tokens,
            tenants: options.tenants,
            first_event,
            per_gateway,
        })
    }

    /// Stops the writers, waits for the system to finish what it accepted,
    /// and counts.
    pub(crate) async fn finish(mut self, stats: Arc<Stats>, elapsed: Duration) -> Report {
        let began = Instant::now();
        self.stop.set();
        while self.tasks.join_next().await.is_some() {}
        let accepted = std::mem::take(&mut *self.accepted.lock().unwrap());
        let mut report = Report {
            jobs_accepted: accepted.jobs.len(),
            events_accepted: accepted.events.values().sum(),
            exports_accepted: accepted.exports.len(),
            alert_high_phases: accepted.alert_high_phases,
            subscribers_per_gateway: self.per_gateway.clone(),
            losses: accepted.failures.clone(),
            ..Default::default()
        };

        let stage = |what: &str| eprintln!("soak: counting: {what} ({:.1} s)", began.elapsed().as_secs_f64());
        stage("writers stopped");
        // Jobs: every accepted one reaches a terminal state.
        let finals = self.jobs_final(&accepted.jobs, &mut report).await;
        // Subscribers: every job's every version, then their own findings.
        self.subscribers
            .wait_complete(&accepted.jobs, &finals, Duration::from_secs(90))
            .await;
        self.subscribers
            .stop_and_check(&accepted.jobs, &finals, &mut report)
            .await;
        stage("jobs and subscribers checked");
        // Events.
        let end = OffsetDateTime::now_utc();
        for tenant in 0..self.tenants {
            let want = accepted.events.get(&tenant).copied().unwrap_or(0);
            match self.stored(tenant, self.first_event, end).await {
                Ok(got) => {
                    report.events_stored += got;
                    if got != want {
                        report
                            .losses
                            .push(format!("{}: {want} events accepted, {got} stored", tenant_name(tenant)));
                    }
                }
                Err(error) => report.losses.push(format!("counting events: {error:#}")),
            }
        }
        // Exports.
        for (tenant, id) in &accepted.exports {
            match self.downloaded_whole(*tenant, id).await {
                Ok(()) => report.exports_downloaded += 1,
                Err(error) => report.losses.push(format!("export {id}: {error:#}")),
            }
        }
        stage("events and exports counted");
        // Alerts.
        self.check_alerts(&mut report).await;
        stage("alerts checked");

        report.seconds = elapsed.as_secs_f64();
        report.phases = stats.phases();
        report
    }

    /// Waits until every accepted job is terminal; returns each one's final
    /// version.
    async fn jobs_final(&self, jobs: &[(usize, String)], report: &mut Report) -> HashMap<String, u64> {
        let mut finals = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        for (tenant, id) in jobs {
            loop {
                let answer = self
                    .api
                    .call(
                        &self.tokens[*tenant],
                        Method::GET,
                        &format!("/api/v1/jobs/{id}"),
                        None,
                        None,
                        &[200],
                    )
                    .await;
                let job = match answer {
                    Ok((_, job)) => job,
                    Err(error) => {
                        report.losses.push(format!("job {id}: {error:#}"));
                        break;
                    }
                };
                let status = job["status"].as_str().unwrap_or_default();
                if matches!(status, "succeeded" | "failed" | "cancelled") {
                    if status == "succeeded" {
                        report.jobs_succeeded += 1;
                    } else {
                        report.losses.push(format!("job {id} ended {status}: {job}"));
                    }
                    if job["attempt"].as_i64().unwrap_or(0) > 1 {
                        report.jobs_retried += 1;
                    }
                    finals.insert(id.clone(), job["version"].as_u64().unwrap_or(0));
                    break;
                }
                if Instant::now() > deadline {
                    report
                        .losses
                        .push(format!("job {id} still {status} after the run: {job}"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        finals
    }

    async fn stored(&self, tenant: usize, start: OffsetDateTime, end: OffsetDateTime) -> anyhow::Result<u64> {
        let start = start - time::Duration::minutes(1);
        let end = end + time::Duration::minutes(1);
        let (_, body) = self
            .api
            .call(
                &self.tokens[tenant],
                Method::POST,
                "/api/v1/metrics/query",
                Some(&json!({
                    "metric": EVENTS_METRIC, "aggregations": ["count"],
                    "bucket_seconds": (end - start).whole_seconds(),
                    "start": rfc3339(start), "end": rfc3339(end),
                })),
                None,
                &[200],
            )
            .await?;
        Ok(body["series"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["buckets"].as_array().into_iter().flatten())
            .filter_map(|b| b["count"].as_u64())
            .sum())
    }

    async fn downloaded_whole(&self, tenant: usize, id: &str) -> anyhow::Result<()> {
        let token = &self.tokens[tenant];
        let deadline = Instant::now() + Duration::from_secs(120);
        let export = loop {
            let (_, export) = self
                .api
                .call(token, Method::GET, &format!("/api/v1/exports/{id}"), None, None, &[200])
                .await?;
            match export["status"].as_str() {
                Some("ready") => break export,
                Some("failed") => anyhow::bail!("failed: {export}"),
                _ => {
                    anyhow::ensure!(Instant::now() < deadline, "never ready: {export}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let bytes = self.api.bytes(token, &format!("/api/v1/exports/{id}/download")).await?;
        let size = export["size_bytes"].as_u64().unwrap_or(u64::MAX);
        anyhow::ensure!(bytes.len() as u64 == size, "downloaded {} bytes of {size}", bytes.len());
        let sha = hex::encode(Sha256::digest(&bytes));
        anyhow::ensure!(
            Some(sha.as_str()) == export["sha256"].as_str(),
            "SHA-256 {sha}, export says {}",
            export["sha256"]
        );
        Ok(())
    }

    /// The history of the rule is one chain (each transition starts where the
    /// last ended, versions 1, 2, 3, …), with one firing and one resolved per
    /// high phase; each of them reached the webhook, and no delivery attempt
    /// came twice.
    async fn check_alerts(&self, report: &mut Report) {
        let token = &self.tokens[0];
        // The last low phase resolves the rule; wait for it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let transitions = loop {
            let transitions = match self.history(token).await {
                Ok(t) => t,
                Err(error) => {
                    report.losses.push(format!("alert history: {error:#}"));
                    return;
                }
            };
            // Every high phase fired and resolved (a quiet rule may go on to
            // no_data once the events stop).
            let count = |to: &str| transitions.iter().filter(|t| t["to"] == to).count();
            let settled = count("firing") >= report.alert_high_phases && count("resolved") >= report.alert_high_phases;
            if settled || Instant::now() > deadline {
                break transitions;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        report.alert_transitions = transitions.len();
        report.alert_firing = transitions.iter().filter(|t| t["to"] == "firing").count();
        report.alert_resolved = transitions.iter().filter(|t| t["to"] == "resolved").count();
        for (i, t) in transitions.iter().enumerate() {
            if t["version"].as_u64() != Some(i as u64 + 1) {
                report.losses.push(format!(
                    "alert history: transition {} has version {}",
                    i + 1,
                    t["version"]
                ));
            }
            if i > 0 && transitions[i - 1]["to"] != t["from"] {
                report.losses.push(format!(
                    "alert history: {} → {} follows a transition to {}",
                    t["from"],
                    t["to"],
                    transitions[i - 1]["to"]
                ));
            }
        }
        if report.alert_firing != report.alert_high_phases || report.alert_resolved != report.alert_high_phases {
            report.losses.push(format!(
                "alert history: {} high phases gave {} firing and {} resolved transitions: {:?}",
                report.alert_high_phases,
                report.alert_firing,
                report.alert_resolved,
                transitions
                    .iter()
                    .map(|t| format!("{}→{} at {}", t["from"], t["to"], t["at"]))
                    .collect::<Vec<_>>()
            ));
        }
        // Webhooks: each notifying transition delivered; no attempt twice.
        let deadline = Instant::now() + Duration::from_secs(60);
        let notifying: Vec<&Value> = transitions
            .iter()
            // What the evaluator notifies: entering or leaving firing.
            .filter(|t| t["to"] == "firing" || t["from"] == "firing")
            .collect();
        loop {
            let deliveries = self.deliveries.lock().unwrap().clone();
            let missing: Vec<String> = notifying
                .iter()
                .filter(|t| {
                    !deliveries
                        .iter()
                        .any(|d| d.body["version"] == t["version"] && d.body["to"] == t["to"])
                })
                .map(|t| format!("{}→{} v{}", t["from"], t["to"], t["version"]))
                .collect();
            if missing.is_empty() || Instant::now() > deadline {
                report.webhook_deliveries = deliveries.len();
                for m in &missing {
                    report.losses.push(format!("webhook never delivered: {m}"));
                }
                let mut seen = HashMap::new();
                for d in &deliveries {
                    *seen.entry((d.delivery.clone(), d.attempt.clone())).or_insert(0) += 1;
                }
                for ((delivery, attempt), n) in seen {
                    if n > 1 {
                        report
                            .losses
                            .push(format!("webhook {delivery} attempt {attempt} delivered {n} times"));
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn history(&self, token: &str) -> anyhow::Result<Vec<Value>> {
        let mut transitions = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/alerts/history?rule_id={}&page_size=1000", self.rule_id);
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", urlencode(c)));
            }
            let (_, page) = self.api.call(token, Method::GET, &path, None, None, &[200]).await?;
            transitions.extend(page["transitions"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        transitions.sort_by_key(|t| t["version"].as_u64());
        Ok(transitions)
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn subscribers_per_gateway(fleet: &Fleet) -> Vec<f64> {
    let http = reqwest::Client::new();
    let mut counts = Vec::new();
    for index in [1, 2] {
        let url = format!("http://127.0.0.1:{}/metrics", fleet.replica("gateway", index).port);
        let text = match http.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        counts.push(crate::system::sample(&text, "sextant_gateway_ws_connections"));
    }
    counts
}

/// Calls `write(n)` for n = 1, 2, … every `every` until `stop`, each on a
/// task of its own (a slow answer does not slow the pace); then waits for
/// them all.
async fn paced<F, Fut>(every: Duration, stop: Stop, mut write: F)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tick = tokio::time::interval(every);
    let mut inflight = JoinSet::new();
    let mut n = 0usize;
    while !stop.is_set() {
        tick.tick().await;
        n += 1;
        inflight.spawn(write(n));
    }
    while inflight.join_next().await.is_some() {}
}

/// Jobs at `rate` per second, round the tenants: no-ops, and 5-second sleeps.
async fn submit_jobs(api: Api, tokens: Vec<String>, rate: f64, stop: Stop, accepted: Arc<Mutex<Accepted>>) {
    paced(Duration::from_secs_f64(1.0 / rate), stop, |n| {
        let tenant = n % tokens.len();
        let (api, token, accepted) = (api.clone(), tokens[tenant].clone(), accepted.clone());
        async move {
            let key = format!("soak-job-{n}");
            // Three in ten sleep 5 s: a replica killed mid-job has some
            // running, which its lease hands to another as attempt 2.
            let body = if n % 10 < 3 {
                json!({"kind": "sleep", "payload": {"duration_ms": 5000, "steps": 2}})
            } else {
                json!({"kind": "noop", "payload": {}})
            };
            match api
                .call(
                    &token,
                    Method::POST,
                    "/api/v1/jobs",
                    Some(&body),
                    Some(&key),
                    &[200, 201],
                )
                .await
            {
                Ok((_, job)) => {
                    let id = job["id"].as_str().unwrap_or_default().to_owned();
                    accepted.lock().unwrap().jobs.push((tenant, id));
                }
                Err(error) => accepted.lock().unwrap().failures.push(format!("job {key}: {error:#}")),
            }
        }
    })
    .await;
}

/// Batches of events at `rate` per second, round the tenants.
async fn ingest(api: Api, tokens: Vec<String>, rate: f64, size: usize, stop: Stop, accepted: Arc<Mutex<Accepted>>) {
    paced(Duration::from_secs_f64(1.0 / rate), stop, |n| {
        let tenant = n % tokens.len();
        let (api, token, accepted) = (api.clone(), tokens[tenant].clone(), accepted.clone());
        async move {
            let ts = rfc3339(OffsetDateTime::now_utc());
            let events: Vec<Value> = (0..size)
                .map(|i| json!({"name": EVENTS_METRIC, "ts": ts, "value": i as f64, "labels": {"source": "soak"}}))
                .collect();
            let key = format!("soak-ingest-{n}");
            let body = json!({ "events": events });
            match api
                .call(&token, Method::POST, "/api/v1/events", Some(&body), Some(&key), &[200])
                .await
            {
                Ok((_, answer)) => {
                    let got = answer["accepted"].as_u64().unwrap_or(0);
                    let mut accepted = accepted.lock().unwrap();
                    *accepted.events.entry(tenant).or_insert(0) += got;
                    if got != size as u64 {
                        accepted
                            .failures
                            .push(format!("batch {key}: {got} of {size} accepted: {answer}"));
                    }
                }
                Err(error) => accepted
                    .lock()
                    .unwrap()
                    .failures
                    .push(format!("batch {key}: {error:#}")),
            }
        }
    })
    .await;
}

/// The alert metric: 95 for `ALERT_HALF`, then 5 for as long, a value every
/// 500 ms; it stops after a low half, so the rule ends resolved.
async fn toggle_alert(api: Api, token: String, stop: Stop, accepted: Arc<Mutex<Accepted>>) {
    let mut n = 0usize;
    loop {
        for (value, high) in [(95.0, true), (5.0, false)] {
            if high {
                accepted.lock().unwrap().alert_high_phases += 1;
            }
            let half_began = Instant::now();
            // Once stopping, a high half ends at once and the low half that
            // follows runs whole, so the rule ends resolved.
            while half_began.elapsed() < ALERT_HALF && !(high && stop.is_set()) {
                n += 1;
                let key = format!("soak-alert-{n}");
                let body = json!({"events": [{"name": ALERT_METRIC, "ts": rfc3339(OffsetDateTime::now_utc()),
                                              "value": value, "labels": {"source": "soak"}}]});
                if let Err(error) = api
                    .call(&token, Method::POST, "/api/v1/events", Some(&body), Some(&key), &[200])
                    .await
                {
                    accepted
                        .lock()
                        .unwrap()
                        .failures
                        .push(format!("alert event {key}: {error:#}"));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if stop.is_set() {
            return;
        }
    }
}

/// An analysis of the last two minutes of events and its CSV export, every
/// `every`, round the tenants; the export's id is kept once answered
/// 201/202 (200 is the replay of one of those).
async fn export(api: Api, tokens: Vec<String>, every: Duration, stop: Stop, accepted: Arc<Mutex<Accepted>>) {
    paced(every, stop, |n| {
        let tenant = n % tokens.len();
        let (api, token, accepted) = (api.clone(), tokens[tenant].clone(), accepted.clone());
        async move {
            if let Err(error) = analysis_and_export(&api, &token, tenant, n, &accepted).await {
                accepted.lock().unwrap().failures.push(format!("export {n}: {error:#}"));
            }
        }
    })
    .await;
}

async fn analysis_and_export(
    api: &Api,
    token: &str,
    tenant: usize,
    n: usize,
    accepted: &Mutex<Accepted>,
) -> anyhow::Result<()> {
    let end = OffsetDateTime::now_utc().replace_nanosecond(0)?;
    let start = end - time::Duration::minutes(2);
    let (_, job) = api
        .call(
            token,
            Method::POST,
            "/api/v1/analyses",
            Some(
                &json!({"title": format!("soak {n}"), "start": rfc3339(start), "end": rfc3339(end),
                         "bucket_seconds": 10, "metrics": [EVENTS_METRIC]}),
            ),
            Some(&format!("soak-analysis-{n}")),
            &[200, 202],
        )
        .await?;
    let job_id = job["id"].as_str().unwrap_or_default().to_owned();
    let deadline = Instant::now() + ANSWER_WITHIN;
    let analysis = loop {
        let (_, job) = api
            .call(
                token,
                Method::GET,
                &format!("/api/v1/jobs/{job_id}"),
                None,
                None,
                &[200],
            )
            .await?;
        match job["status"].as_str() {
            Some("succeeded") => break job["result"]["analysis_id"].as_str().unwrap_or_default().to_owned(),
            Some("failed" | "cancelled") => anyhow::bail!("analysis job {job_id}: {job}"),
            _ => {
                anyhow::ensure!(Instant::now() < deadline, "analysis job {job_id} unfinished: {job}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let (_, export) = api
        .call(
            token,
            Method::POST,
            &format!("/api/v1/analyses/{analysis}/exports"),
            Some(&json!({"format": "csv"})),
            Some(&format!("soak-export-{n}")),
            &[200, 201, 202],
        )
        .await?;
    let id = export["id"].as_str().unwrap_or_default().to_owned();
    accepted.lock().unwrap().exports.push((tenant, id));
    Ok(())
}

/// The webhook receiver: takes every request with 204.
async fn receiver(deliveries: Arc<Mutex<Vec<Delivery>>>) -> anyhow::Result<SocketAddr> {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    async fn take(State(deliveries): State<Arc<Mutex<Vec<Delivery>>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        deliveries.lock().unwrap().push(Delivery {
            delivery: header("x-sextant-delivery"),
            attempt: header("x-sextant-attempt"),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        StatusCode::NO_CONTENT
    }
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(take))
        .with_state(deliveries);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
