//! What clients saw per phase, and what was counted at the end.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests clients made in one phase of the schedule.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    pub requests: u64,
    /// Answers other than success (5xx, 409 while a replay is in flight) and
    /// transport errors; each was sent again until answered.
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The slowest request: method and path.
    pub slowest: String,
    pub notes: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Stats {
    phases: Mutex<Vec<Open>>,
}

struct Open {
    name: String,
    began: Instant,
    ended: Option<Instant>,
    requests: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    slowest: (Duration, String),
    notes: Vec<String>,
}

impl Stats {
    pub(crate) fn begin(&self, name: &str) {
        let mut phases = self.phases.lock().unwrap();
        let now = Instant::now();
        if let Some(last) = phases.last_mut() {
            last.ended = Some(now);
        }
        phases.push(Open {
            name: name.to_owned(),
            began: now,
            ended: None,
            requests: 0,
            errors: 0,
            latencies_us: Vec::new(),
            slowest: (Duration::ZERO, String::new()),
            notes: Vec::new(),
        });
    }

    pub(crate) fn note(&self, note: String) {
        if let Some(last) = self.phases.lock().unwrap().last_mut() {
            last.notes.push(note);
        }
    }

    /// One request's outcome, in the phase running when it was answered.
    pub(crate) fn record(&self, ok: bool, latency: Duration, what: impl FnOnce() -> String) {
        let mut phases = self.phases.lock().unwrap();
        if let Some(last) = phases.last_mut() {
            last.requests += 1;
            if !ok {
                last.errors += 1;
            }
            last.latencies_us.push(latency.as_micros() as u64);
            if latency > last.slowest.0 {
                last.slowest = (latency, what());
            }
        }
    }

    pub(crate) fn phases(&self) -> Vec<Phase> {
        let phases = self.phases.lock().unwrap();
        phases
            .iter()
            .map(|p| {
                let mut l = p.latencies_us.clone();
                l.sort_unstable();
                let at = |q: f64| {
                    if l.is_empty() {
                        0.0
                    } else {
                        l[((l.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
                    }
                };
                Phase {
                    name: p.name.clone(),
                    seconds: p
                        .ended
                        .unwrap_or_else(Instant::now)
                        .duration_since(p.began)
                        .as_secs_f64(),
                    requests: p.requests,
                    errors: p.errors,
                    p50_ms: at(0.5),
                    p99_ms: at(0.99),
                    max_ms: at(1.0),
                    slowest: p.slowest.1.clone(),
                    notes: p.notes.clone(),
                }
            })
            .collect()
    }
}

/// The counts. `losses` lists every way the system fell short; empty is a pass.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seconds: f64,
    pub phases: Vec<Phase>,
    pub jobs_accepted: usize,
    pub jobs_succeeded: usize,
    /// Jobs that took a second attempt (their worker was killed mid-job).
    pub jobs_retried: usize,
    pub events_accepted: u64,
    pub events_stored: u64,
    pub exports_accepted: usize,
    pub exports_downloaded: usize,
    pub subscribers: usize,
    pub subscriber_frames: u64,
    pub subscriber_reconnects: u64,
    /// Subscribers on each gateway when the load started.
    pub subscribers_per_gateway: Vec<f64>,
    pub alert_high_phases: usize,
    pub alert_transitions: usize,
    pub alert_firing: usize,
    pub alert_resolved: usize,
    pub webhook_deliveries: usize,
    /// Per replica: peak RSS (KiB) and CPU seconds over the run.
    pub usage: Vec<(String, crate::fleet::Usage)>,
    pub losses: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.losses.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "soak: {:.0} s", self.seconds)?;
        writeln!(
            f,
            "{:<40} {:>7} {:>8} {:>7} {:>8} {:>8} {:>9}  slowest",
            "phase", "seconds", "requests", "errors", "p50 ms", "p99 ms", "max ms"
        )?;
        for p in &self.phases {
            writeln!(
                f,
                "{:<40} {:>7.1} {:>8} {:>7} {:>8.1} {:>8.1} {:>9.1}  {}{}",
                p.name,
                p.seconds,
                p.requests,
                p.errors,
                p.p50_ms,
                p.p99_ms,
                p.max_ms,
                p.slowest,
                if p.notes.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", p.notes.join("; "))
                }
            )?;
        }
        let total: u64 = self.phases.iter().map(|p| p.requests).sum();
        let errors: u64 = self.phases.iter().map(|p| p.errors).sum();
        writeln!(
            f,
            "requests {total}, errors {errors} ({:.3} %)",
            if total == 0 {
                0.0
            } else {
                errors as f64 * 100.0 / total as f64
            }
        )?;
        writeln!(
            f,
            "jobs: {} accepted, {} succeeded ({} on a second attempt)",
            self.jobs_accepted, self.jobs_succeeded, self.jobs_retried
        )?;
        writeln!(
            f,
            "events: {} accepted, {} stored",
            self.events_accepted, self.events_stored
        )?;
        writeln!(
            f,
            "exports: {} accepted, {} downloaded whole",
            self.exports_accepted, self.exports_downloaded
        )?;
        writeln!(
            f,
            "subscribers: {} ({} per gateway at start), {} frames, {} reconnects",
            self.subscribers,
            self.subscribers_per_gateway
                .iter()
                .map(|n| format!("{n:.0}"))
                .collect::<Vec<_>>()
                .join(" + "),
            self.subscriber_frames,
            self.subscriber_reconnects
        )?;
        writeln!(
            f,
            "alerts: {} high phases, {} transitions ({} firing, {} resolved), {} webhook deliveries",
            self.alert_high_phases,
            self.alert_transitions,
            self.alert_firing,
            self.alert_resolved,
            self.webhook_deliveries
        )?;
        for (replica, usage) in &self.usage {
            writeln!(
                f,
                "{replica:<12} peak RSS {:>7.1} MiB, CPU {:>6.1} s ({:.1} % of one core)",
                usage.peak_rss_kib as f64 / 1024.0,
                usage.cpu_seconds,
                usage.cpu_seconds * 100.0 / self.seconds.max(1.0)
            )?;
        }
        if self.losses.is_empty() {
            writeln!(f, "no loss")
        } else {
            writeln!(f, "LOSSES ({}):", self.losses.len())?;
            for loss in self.losses.iter().take(50) {
                writeln!(f, "  {loss}")?;
            }
            Ok(())
        }
    }
}
