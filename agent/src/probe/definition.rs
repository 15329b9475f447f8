//! What one probe checks, fully resolved from the configuration: no defaults left to apply.

use std::sync::Arc;
use std::time::Duration;

use super::openapi::ResponseValidator;
use super::tls::TlsContext;

/// One probe: an endpoint id, a schedule and a check.
#[derive(Clone)]
pub struct ProbeDef {
    /// The endpoint id, the same on every agent that probes it (see `common::probe::valid_id`).
    pub id: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Each run starts up to this long after its slot, at random.
    pub jitter: Duration,
    pub check: Check,
    /// Extra labels of `twinwatch_probe_info` (`service`, `operation`, `method`, `path`).
    pub info: Vec<(String, String)>,
}

impl ProbeDef {
    pub fn kind(&self) -> &'static str {
        match self.check {
            Check::Http(_) => "http",
            Check::Tcp { .. } => "tcp",
            Check::Dns { .. } => "dns",
            Check::Tls { .. } => "tls",
        }
    }

    /// What the probe is pointed at, as the configuration names it.
    pub fn target(&self) -> &str {
        match &self.check {
            Check::Http(h) => &h.url,
            Check::Tcp { target, .. } | Check::Dns { name: target, .. } | Check::Tls { target, .. } => target,
        }
    }
}

#[derive(Clone)]
pub enum Check {
    Http(Box<HttpCheck>),
    /// Resolve and connect to `host:port`.
    Tcp {
        target: String,
        ip: IpPref,
    },
    /// Resolve a name with the system resolver; every answer address is reported.
    Dns {
        name: String,
        ip: IpPref,
    },
    /// Connect and complete a TLS handshake, nothing more.
    Tls {
        target: String,
        ip: IpPref,
        tls: TlsContext,
    },
}

/// Which address family to use when a name has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpPref {
    /// In the order the resolver returns them (which honours `/etc/gai.conf`).
    #[default]
    Any,
    Ipv4,
    Ipv6,
    PreferIpv4,
    PreferIpv6,
}

impl IpPref {
    pub fn parse(text: &str) -> Option<IpPref> {
        Some(match text {
            "any" => IpPref::Any,
            "ipv4" => IpPref::Ipv4,
            "ipv6" => IpPref::Ipv6,
            "prefer-ipv4" => IpPref::PreferIpv4,
            "prefer-ipv6" => IpPref::PreferIpv6,
            _ => return None,
        })
    }
}

/// A status the probe accepts: one code, or a whole class (`2xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    Class(u16),
}

impl StatusMatch {
    pub fn parse(text: &str) -> Option<StatusMatch> {
        let text = text.trim();
        if text.len() == 3 && text[1..].eq_ignore_ascii_case("xx") {
            let class = text[..1].parse::<u16>().ok().filter(|c| (1..=5).contains(c))?;
            return Some(StatusMatch::Class(class));
        }
        text.parse::<u16>().ok().filter(|c| (100..=599).contains(c)).map(StatusMatch::Code)
    }

    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(c) => c == status,
            StatusMatch::Class(c) => status / 100 == c,
        }
    }
}

/// A JSONPath assertion on a JSON response body.
#[derive(Clone)]
pub struct JsonAssert {
    pub path: serde_json_path::JsonPath,
    /// The path as written, for messages.
    pub text: String,
    /// Every node the path selects must equal this; `None`: at least one node must exist.
    pub equals: Option<serde_json::Value>,
}

#[derive(Clone)]
pub struct HttpCheck {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Accepted statuses of the final response; empty means 2xx.
    pub expect_status: Vec<StatusMatch>,
    pub follow_redirects: bool,
    pub max_redirects: u32,
    pub ip: IpPref,
    /// The body must match every one of these.
    pub body_matches: Vec<regex::Regex>,
    /// The body must match none of these.
    pub body_not_matches: Vec<regex::Regex>,
    pub json: Vec<JsonAssert>,
    /// Bytes of body read at most; the rest is not read and counts as a failure.
    pub body_limit: usize,
    pub tls: TlsContext,
    /// For probes generated from an OpenAPI spec: the operation's response schemas.
    pub validator: Option<Arc<ResponseValidator>>,
    /// Whether a schema violation fails the probe or is only reported.
    pub violations_fail: bool,
}

impl HttpCheck {
    /// A plain GET of `url` expecting 2xx, following redirects, with no assertions.
    pub fn get(url: String, tls: TlsContext) -> Self {
        HttpCheck {
            url,
            method: "GET".into(),
            headers: Vec::new(),
            body: None,
            expect_status: Vec::new(),
            follow_redirects: true,
            max_redirects: 10,
            ip: IpPref::Any,
            body_matches: Vec::new(),
            body_not_matches: Vec::new(),
            json: Vec::new(),
            body_limit: 10 << 20,
            tls,
            validator: None,
            violations_fail: true,
        }
    }

    /// Whether the body must be kept in memory after it is read.
    pub fn needs_body(&self) -> bool {
        !self.body_matches.is_empty()
            || !self.body_not_matches.is_empty()
            || !self.json.is_empty()
            || self.validator.is_some()
    }

    pub fn accepts(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            return (200..300).contains(&status);
        }
        self.expect_status.iter().any(|m| m.matches(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_matches_codes_and_classes() {
        assert_eq!(StatusMatch::parse("2xx"), Some(StatusMatch::Class(2)));
        assert_eq!(StatusMatch::parse("3XX"), Some(StatusMatch::Class(3)));
        assert_eq!(StatusMatch::parse("301"), Some(StatusMatch::Code(301)));
        assert_eq!(StatusMatch::parse("6xx"), None);
        assert_eq!(StatusMatch::parse("99"), None);
        assert!(StatusMatch::Class(3).matches(302) && !StatusMatch::Class(3).matches(200));
    }
}
