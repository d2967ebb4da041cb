//! The Prometheus surface under `/prometheus`, as Grafana Mimir lays it out:
//! remote-write at `/prometheus/api/v1/write` ([`write`]). Same bearer
//! token, same tenancy as `/api/v1`.

pub mod write;
