//! Outbound HTTP targets that an operator allowed. A service that sends
//! requests to addresses its users name (webhooks) checks each against a
//! configured allow-list of hosts, so that nothing is sent where the
//! operator did not allow it.

use url::Url;

/// A list of allowed targets: `host` (any port) or `host:port`, compared
/// case-insensitively. An empty list allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<(String, Option<u16>)>,
}

impl AllowList {
    /// `Err` names the first entry that is not `host` or `host:port`.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let entries = entries
            .iter()
            .map(|entry| {
                let url = Url::parse(&format!("http://{entry}"))
                    .ok()
                    .filter(|u| u.path() == "/" && u.username().is_empty() && u.query().is_none())
                    .ok_or_else(|| format!("{entry:?} is not host or host:port"))?;
                let host = url.host_str().ok_or_else(|| format!("{entry:?} names no host"))?;
                let port = entry.rsplit_once(':').and(url.port_or_known_default());
                // "[::1]" has a colon but no port.
                let port = if entry.ends_with(']') { None } else { port };
                Ok((host.to_ascii_lowercase(), port))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self { entries })
    }

    /// The URL, if it is http(s), carries no credentials, and its host and
    /// port are allowed; else why not.
    pub fn check(&self, target: &str) -> Result<Url, String> {
        let url = Url::parse(target).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be http or https".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials".into());
        }
        let host = url.host_str().ok_or("names no host")?.to_ascii_lowercase();
        let port = url.port_or_known_default();
        let allowed = self
            .entries
            .iter()
            .any(|(h, p)| *h == host && p.is_none_or(|p| Some(p) == port));
        if !allowed {
            return Err(format!(
                "host {host}{} is not on the allow-list of webhook targets",
                port.map(|p| format!(":{p}")).unwrap_or_default()
            ));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn only_listed_hosts_and_ports_pass() {
        let allow = list(&["hooks.example.com", "127.0.0.1:8080", "[::1]"]);
        assert!(allow.check("https://hooks.example.com/a?b=c").is_ok());
        assert!(allow.check("http://HOOKS.example.com:9999/").is_ok());
        assert!(allow.check("http://127.0.0.1:8080/hook").is_ok());
        assert!(allow.check("http://[::1]:5000/").is_ok());
        assert!(allow.check("http://127.0.0.1:8081/hook").is_err());
        assert!(allow.check("http://127.0.0.1/hook").is_err());
        assert!(allow.check("http://evil.example.com/").is_err());
        assert!(allow.check("http://hooks.example.com.evil.net/").is_err());
        assert!(allow.check("ftp://hooks.example.com/").is_err());
        assert!(allow.check("http://user:pw@hooks.example.com/").is_err());
        assert!(allow.check("hooks.example.com").is_err());
        assert!(AllowList::default().check("http://hooks.example.com/").is_err());
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in ["http://x", "x/y", "a:b:c", ""] {
            assert!(AllowList::parse(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
