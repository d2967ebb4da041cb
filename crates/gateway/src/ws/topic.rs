//! The topics a client may subscribe to, named as in `docs/websocket.md`.

use std::sync::Arc;

use crate::convert::metrics::WatchSpec;

/// A topic, always within the subscriber's tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// `job:<id>`: one job.
    Job(String),
    /// `jobs`: every job of the tenant.
    Jobs,
    /// `metric:<query>`: a live metric query over a trailing window.
    Metric(Arc<WatchSpec>),
    /// `alerts`: the instances of every alert rule of the tenant.
    Alerts,
    /// `alert:<rule id>`: the instances of one alert rule.
    Alert(String),
}

/// Why a subscribe op names no topic.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such topic (`not_found`).
    Unknown,
    /// A topic, but its query is malformed (`invalid_argument`).
    Invalid(String),
}

impl Topic {
    /// The topic a subscribe op names, and its canonical name (the one its
    /// frames carry). A metric query comes as `query` with the topic
    /// `metric`, or written into the name (`metric:{…}`) as `subscribed` returned it.
    pub fn parse(name: &str, query: Option<serde_json::Value>) -> Result<(Self, String), Refusal> {
        let spec = match (name.split_once(':'), query) {
            (None, None) if name == "jobs" => return Ok((Topic::Jobs, name.to_owned())),
            (None, None) if name == "alerts" => return Ok((Topic::Alerts, name.to_owned())),
            (Some(("alert", id)), None) if !id.is_empty() => {
                return Ok((Topic::Alert(id.to_owned()), name.to_owned()));
            }
            (Some(("job", id)), None) if !id.is_empty() => return Ok((Topic::Job(id.to_owned()), name.to_owned())),
            (None, Some(query)) if name == "metric" => serde_json::from_value::<WatchSpec>(query),
            (Some(("metric", json)), None) => serde_json::from_str::<WatchSpec>(json),
            (_, Some(_)) => {
                return Err(Refusal::Invalid("only the topic \"metric\" takes a query".into()));
            }
            _ => return Err(Refusal::Unknown),
        };
        let spec = spec
            .map_err(|e| Refusal::Invalid(format!("invalid metric query: {e}")))?
            .canonical();
        spec.check()
            .map_err(|e| Refusal::Invalid(format!("invalid metric query: {e}")))?;
        let name = spec.name();
        Ok((Topic::Metric(Arc::new(spec)), name))
    }

    /// The topic's kind, for metrics labels (never the full name: ids would
    /// explode the series count).
    pub fn kind(&self) -> &'static str {
        match self {
            Topic::Job(_) => "job",
            Topic::Jobs => "jobs",
            Topic::Metric(_) => "metric",
            Topic::Alerts => "alerts",
            Topic::Alert(_) => "alert",
        }
    }
}

/// What an unknown topic's error says the topics are.
pub const KNOWN: &str =
    "topics are \"jobs\", \"job:<id>\", \"metric\" (with a query), \"alerts\" and \"alert:<rule id>\"";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse() {
        let parse = |name: &str| Topic::parse(name, None).map(|(t, _)| t);
        assert_eq!(parse("jobs"), Ok(Topic::Jobs));
        assert_eq!(parse("job:0193"), Ok(Topic::Job("0193".into())));
        assert_eq!(parse("alerts"), Ok(Topic::Alerts));
        assert_eq!(parse("alert:0193"), Ok(Topic::Alert("0193".into())));
        assert_eq!(parse("alert:"), Err(Refusal::Unknown));
        assert_eq!(parse("job:"), Err(Refusal::Unknown));
        assert_eq!(parse("metrics"), Err(Refusal::Unknown));
        assert_eq!(parse("jobs:x"), Err(Refusal::Unknown));
        assert!(matches!(parse("metric"), Err(Refusal::Unknown)));
        assert!(matches!(parse("metric:{}"), Err(Refusal::Invalid(_))));
    }

    #[test]
    fn a_metric_query_has_one_name_however_it_is_written() {
        let query = serde_json::json!({
            "metric": "cpu", "aggregations": ["avg", "p95"], "bucket_seconds": 60, "window_seconds": 900,
            "filters": [{"label": "region", "op": "in", "values": ["b", "a", "b"]},
                        {"label": "host", "op": "neq", "values": ["x"]}],
            "group_by": "host",
        });
        let (topic, name) = Topic::parse("metric", Some(query)).unwrap();
        assert!(matches!(topic, Topic::Metric(_)));
        assert_eq!(
            name,
            r#"metric:{"metric":"cpu","aggregations":["avg","p95"],"bucket_seconds":60,"window_seconds":900,"filters":[{"label":"host","op":"neq","values":["x"]},{"label":"region","op":"in","values":["a","b"]}],"group_by":"host"}"#
        );
        let name_again = Topic::parse(&name, None).unwrap().1;
        assert_eq!(name_again, name);
        assert!(matches!(
            Topic::parse("jobs", Some(serde_json::json!({}))),
            Err(Refusal::Invalid(_))
        ));
    }
}
