//! The Prometheus surface under `/prometheus`, as Grafana Mimir lays it out:
//! remote-write at `/prometheus/api/v1/write` ([`write`]) and the query API
//! beside it ([`api`]), so a Grafana data source URL is
//! `http://GATEWAY/prometheus`. Same bearer token, same tenancy as `/api/v1`.

pub mod api;
pub mod write;
