//! Dashboards: JSON ⇄ the analytics service's protobuf, for the
//! `/api/v1/dashboards…` routes.

use serde::Deserialize;
use serde_json::{Value, json};
use sextant_proto::analytics::v1 as pb;

use super::metrics::{AggregationName, Filter, aggregation_name, filter_json, query_message, seconds};
use super::rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PanelKindName {
    Line,
    Area,
    Bar,
    Stat,
}

impl PanelKindName {
    fn pb(self) -> pb::PanelKind {
        match self {
            Self::Line => pb::PanelKind::Line,
            Self::Area => pb::PanelKind::Area,
            Self::Bar => pb::PanelKind::Bar,
            Self::Stat => pb::PanelKind::Stat,
        }
    }
}

fn kind_name(kind: i32) -> &'static str {
    match pb::PanelKind::try_from(kind).unwrap_or_default() {
        pb::PanelKind::Line => "line",
        pb::PanelKind::Area => "area",
        pb::PanelKind::Bar => "bar",
        pb::PanelKind::Stat => "stat",
        pb::PanelKind::Unspecified => "unknown",
    }
}

/// A panel's query: a metric query without its range (the dashboard's applies).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanelQuery {
    pub metric: String,
    pub aggregations: Vec<AggregationName>,
    pub bucket_seconds: u64,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub group_by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanelBody {
    #[serde(default)]
    pub title: String,
    pub kind: PanelKindName,
    pub query: PanelQuery,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// A dashboard as a client writes it (`POST`, and `PUT` with `version`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardBody {
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub range_seconds: u64,
    #[serde(default)]
    pub panels: Vec<PanelBody>,
    /// Only on `PUT`: the version the change was made from.
    #[serde(default)]
    pub version: Option<u64>,
}

impl DashboardBody {
    /// The spec; `Err` names what the service could not tell apart (an
    /// empty `group_by`).
    pub fn spec(&self) -> Result<pb::DashboardSpec, String> {
        let panels = self
            .panels
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.query.group_by.as_deref() == Some("") {
                    return Err(format!(
                        "panels[{i}].query.group_by must name a label, or be null to group nothing"
                    ));
                }
                Ok(pb::Panel {
                    title: p.title.clone(),
                    kind: p.kind.pb() as i32,
                    query: Some(query_message(
                        &p.query.metric,
                        &p.query.aggregations,
                        p.query.bucket_seconds,
                        &p.query.filters,
                        p.query.group_by.as_deref(),
                        None,
                    )),
                    x: p.x,
                    y: p.y,
                    width: p.width,
                    height: p.height,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(pb::DashboardSpec {
            title: self.title.clone(),
            description: self.description.clone(),
            range: Some(seconds(self.range_seconds)),
            panels,
        })
    }
}

fn panel_json(p: &pb::Panel) -> Value {
    let q = p.query.clone().unwrap_or_default();
    json!({
        "title": p.title,
        "kind": kind_name(p.kind),
        "query": {
            "metric": q.metric,
            "aggregations": q
                .aggregations
                .iter()
                .map(|a| aggregation_name(pb::Aggregation::try_from(*a).unwrap_or_default()))
                .collect::<Vec<_>>(),
            "bucket_seconds": q.bucket.map_or(0, |b| b.seconds),
            "filters": q.filters.iter().map(filter_json).collect::<Vec<_>>(),
            "group_by": if q.group_by.is_empty() { Value::Null } else { Value::from(q.group_by) },
        },
        "x": p.x,
        "y": p.y,
        "width": p.width,
        "height": p.height,
    })
}

pub fn dashboard_json(d: &pb::Dashboard) -> Value {
    let spec = d.spec.clone().unwrap_or_default();
    json!({
        "id": d.id,
        "title": spec.title,
        "description": spec.description,
        "range_seconds": spec.range.map_or(0, |r| r.seconds),
        "panels": spec.panels.iter().map(panel_json).collect::<Vec<_>>(),
        "version": d.version,
        "created_at": rfc3339(&d.created_at),
        "updated_at": rfc3339(&d.updated_at),
    })
}
