//! The topics a client may subscribe to, named as in `docs/websocket.md`.

/// A topic, always within the subscriber's tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// `job:<id>`: one job.
    Job(String),
    /// `jobs`: every job of the tenant.
    Jobs,
}

impl Topic {
    pub fn parse(name: &str) -> Option<Self> {
        match name.split_once(':') {
            None if name == "jobs" => Some(Topic::Jobs),
            Some(("job", id)) if !id.is_empty() => Some(Topic::Job(id.to_owned())),
            _ => None,
        }
    }

    /// The topic's kind, for metrics labels (never the full name: ids would
    /// explode the series count).
    pub fn kind(&self) -> &'static str {
        match self {
            Topic::Job(_) => "job",
            Topic::Jobs => "jobs",
        }
    }
}

/// What an unknown topic's error says the topics are.
pub const KNOWN: &str = "topics are \"jobs\" and \"job:<id>\"";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse() {
        assert_eq!(Topic::parse("jobs"), Some(Topic::Jobs));
        assert_eq!(Topic::parse("job:0193"), Some(Topic::Job("0193".into())));
        assert_eq!(Topic::parse("job:"), None);
        assert_eq!(Topic::parse("metrics"), None);
        assert_eq!(Topic::parse("jobs:x"), None);
    }
}
