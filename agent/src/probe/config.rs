//! The `[probes]`, `[[probe]]` and `[[service]]` sections of agent.toml, checked and resolved.
//!
//! ```toml
//! [probes]
//! concurrency = 16        # probes running at once, at most
//! interval = "15s"        # defaults for every probe and service
//! timeout = "5s"
//!
//! [[probe]]
//! name = "app-health"     # the endpoint id: the same on every agent that probes it
//! url = "https://app.example.com/health"
//! expect_status = ["2xx", 301]
//! json = [{ path = "$.status", equals = "ok" }]
//!
//! [[probe]]
//! name = "db"
//! kind = "tcp"            # http (default), tcp, dns, tls
//! target = "10.0.0.5:5432"
//!
//! [[service]]
//! name = "app"            # generated endpoints are `app.<operationId>`
//! base_url = "https://app.example.com"
//! spec_url = "https://app.example.com/openapi.json"   # the default
//! ```
//! Errors name the file, the line of the entry and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use twinwatch_common::config::{Bytes, ConfigError, Span};
use twinwatch_common::probe::valid_id;

use super::definition::{Check, HttpCheck, IpPref, JsonAssert, ProbeDef, StatusMatch};
use super::service::ServiceDef;
use super::tls::TlsContext;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbesFile {
    concurrency: Option<usize>,
    interval: Option<Span>,
    timeout: Option<Span>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StatusItem {
    Code(u16),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    path: String,
    equals: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFile {
    name: String,
    kind: Option<String>,
    url: Option<String>,
    target: Option<String>,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    interval: Option<Span>,
    timeout: Option<Span>,
    jitter: Option<Span>,
    expect_status: Option<Vec<StatusItem>>,
    follow_redirects: Option<bool>,
    max_redirects: Option<u32>,
    ip: Option<String>,
    #[serde(default)]
    body_matches: Vec<String>,
    #[serde(default)]
    body_not_matches: Vec<String>,
    #[serde(default)]
    json: Vec<JsonFile>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    body_limit: Option<Bytes>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    name: String,
    base_url: String,
    spec_url: Option<String>,
    interval: Option<Span>,
    timeout: Option<Span>,
    jitter: Option<Span>,
    refresh: Option<Span>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    ip: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    violations_fail: Option<bool>,
}

/// Everything the prober runs.
#[derive(Clone, Default)]
pub struct ProbeSettings {
    pub concurrency: usize,
    pub probes: Vec<ProbeDef>,
    pub services: Vec<ServiceDef>,
}

impl std::fmt::Debug for ProbeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let probes: Vec<&str> = self.probes.iter().map(|p| p.id.as_str()).collect();
        let services: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("ProbeSettings")
            .field("concurrency", &self.concurrency)
            .field("probes", &probes)
            .field("services", &services)
            .finish()
    }
}

impl ProbeSettings {
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty() && self.services.is_empty()
    }
}

/// Where an entry is, for errors.
struct At<'a> {
    path: &'a Path,
    text: &'a str,
    section: &'static str,
    start: usize,
}

impl At<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: Some(self.text[..self.start.min(self.text.len())].matches('\n').count() + 1),
            key: format!("{}.{key}", self.section),
            message: message.into(),
        }
    }
}

fn ip(at: &At, text: Option<&str>) -> Result<IpPref, ConfigError> {
    text.map_or(Ok(IpPref::Any), |t| {
        IpPref::parse(t).ok_or_else(|| at.err("ip", "one of any, ipv4, ipv6, prefer-ipv4, prefer-ipv6"))
    })
}

fn tls(at: &At, base: &Path, ca_file: Option<&Path>, insecure: bool) -> Result<TlsContext, ConfigError> {
    let ca = ca_file.map(|p| if p.is_absolute() { p.to_owned() } else { base.join(p) });
    TlsContext::new(ca.as_deref(), insecure).map_err(|e| at.err("ca_file", e.to_string()))
}

fn headers(at: &At, map: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, ConfigError> {
    for (name, value) in map {
        hyper::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| at.err("headers", format!("{name:?} is not a header name")))?;
        hyper::header::HeaderValue::from_str(value)
            .map_err(|_| at.err("headers", format!("the value of {name:?} is not a header value")))?;
    }
    Ok(map.clone().into_iter().collect())
}

fn regexes(at: &At, key: &str, list: &[String]) -> Result<Vec<regex::Regex>, ConfigError> {
    list.iter().map(|r| regex::Regex::new(r).map_err(|e| at.err(key, e.to_string()))).collect()
}

/// Resolves the probe sections of `path` (whose text is `text`).
pub fn resolve(
    path: &Path,
    text: &str,
    defaults: &ProbesFile,
    probes: Vec<Spanned<ProbeFile>>,
    services: Vec<Spanned<ServiceFile>>,
) -> Result<ProbeSettings, ConfigError> {
    let base = path.parent().unwrap_or(Path::new("/"));
    let interval = defaults.interval.map_or(Duration::from_secs(15), |s| s.0.max(Duration::from_secs(1)));
    let timeout = defaults.timeout.map_or(Duration::from_secs(5), |s| s.0);
    let mut ids = BTreeSet::new();
    let mut settings = ProbeSettings { concurrency: defaults.concurrency.unwrap_or(16).max(1), ..Default::default() };
    let timing = |i: Option<Span>, t: Option<Span>, j: Option<Span>| {
        let interval = i.map_or(interval, |s| s.0.max(Duration::from_secs(1)));
        let timeout = t.map_or(timeout, |s| s.0).min(interval).max(Duration::from_millis(10));
        let jitter = j.map_or((interval / 10).min(Duration::from_secs(1)), |s| s.0.min(interval / 2));
        (interval, timeout, jitter)
    };

    for spanned in probes {
        let at = At { path, text, section: "probe", start: spanned.span().start };
        let p = spanned.into_inner();
        if !valid_id(&p.name) {
            return Err(at.err("name", "1 to 128 of A-Z a-z 0-9 . _ : -"));
        }
        if !ids.insert(p.name.clone()) {
            return Err(at.err("name", format!("{:?} is used twice", p.name)));
        }
        let (interval, timeout, jitter) = timing(p.interval, p.timeout, p.jitter);
        let kind = p.kind.as_deref().unwrap_or("http");
        let ip = ip(&at, p.ip.as_deref())?;
        let target = || p.target.clone().ok_or_else(|| at.err("target", format!("a {kind} probe needs a target")));
        let check = match kind {
            "http" => {
                let url = p.url.clone().ok_or_else(|| at.err("url", "an http probe needs a url"))?;
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.parse::<hyper::Uri>().is_err() {
                    return Err(at.err("url", format!("{url:?} is not an http:// or https:// URL")));
                }
                let method = p.method.clone().unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
                if hyper::Method::from_bytes(method.as_bytes()).is_err() {
                    return Err(at.err("method", format!("{method:?} is not an HTTP method")));
                }
                let mut expect_status = Vec::new();
                for item in p.expect_status.iter().flatten() {
                    let parsed = match item {
                        StatusItem::Code(c) => StatusMatch::parse(&c.to_string()),
                        StatusItem::Text(t) => StatusMatch::parse(t),
                    };
                    expect_status
                        .push(parsed.ok_or_else(|| at.err("expect_status", "a status code or a class like 2xx"))?);
                }
                let mut json = Vec::new();
                for j in &p.json {
                    let parsed =
                        serde_json_path::JsonPath::parse(&j.path).map_err(|e| at.err("json", e.to_string()))?;
                    let equals = j
                        .equals
                        .as_ref()
                        .map(serde_json::to_value)
                        .transpose()
                        .map_err(|e| at.err("json", e.to_string()))?;
                    json.push(JsonAssert { path: parsed, text: j.path.clone(), equals });
                }
                Check::Http(Box::new(HttpCheck {
                    url,
                    method,
                    headers: headers(&at, &p.headers)?,
                    body: p.body.clone(),
                    expect_status,
                    follow_redirects: p.follow_redirects.unwrap_or(true),
                    max_redirects: p.max_redirects.unwrap_or(10),
                    ip,
                    body_matches: regexes(&at, "body_matches", &p.body_matches)?,
                    body_not_matches: regexes(&at, "body_not_matches", &p.body_not_matches)?,
                    json,
                    body_limit: p.body_limit.map_or(10 << 20, |b| b.0 as usize),
                    tls: tls(&at, base, p.ca_file.as_deref(), p.insecure)?,
                    validator: None,
                    violations_fail: true,
                }))
            }
            "tcp" => Check::Tcp { target: target()?, ip },
            "dns" => Check::Dns { name: target()?, ip },
            "tls" => Check::Tls { target: target()?, ip, tls: tls(&at, base, p.ca_file.as_deref(), p.insecure)? },
            other => return Err(at.err("kind", format!("{other:?}: one of http, tcp, dns, tls"))),
        };
        if matches!(check, Check::Tcp { .. } | Check::Tls { .. }) {
            let t = p.target.as_deref().unwrap_or_default();
            if super::net::split_host_port(t).is_none() {
                return Err(at.err("target", format!("{t:?} is not host:port")));
            }
        }
        settings.probes.push(ProbeDef { id: p.name, interval, timeout, jitter, check, info: Vec::new() });
    }

    for spanned in services {
        let at = At { path, text, section: "service", start: spanned.span().start };
        let s = spanned.into_inner();
        if !valid_id(&s.name) || s.name.len() > 27 {
            return Err(at.err("name", "1 to 27 of A-Z a-z 0-9 . _ : -"));
        }
        if !ids.insert(s.name.clone()) {
            return Err(at.err("name", format!("{:?} is used twice", s.name)));
        }
        if s.base_url.parse::<hyper::Uri>().map_or(true, |u| u.scheme().is_none()) {
            return Err(at.err("base_url", format!("{:?} is not an http:// or https:// URL", s.base_url)));
        }
        let spec_url =
            s.spec_url.clone().unwrap_or_else(|| format!("{}/openapi.json", s.base_url.trim_end_matches('/')));
        let (interval, timeout, jitter) =
            timing(s.interval.or(Some(Span(interval.max(Duration::from_secs(30))))), s.timeout, s.jitter);
        settings.services.push(ServiceDef {
            ip: ip(&at, s.ip.as_deref())?,
            tls: tls(&at, base, s.ca_file.as_deref(), s.insecure)?,
            name: s.name,
            base_url: s.base_url,
            spec_url,
            interval,
            timeout,
            jitter,
            refresh: s.refresh.map_or(Duration::from_secs(600), |r| r.0.max(Duration::from_secs(1))),
            headers: headers(&at, &s.headers)?,
            violations_fail: s.violations_fail.unwrap_or(true),
        });
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;
    use std::time::Duration;

    use super::super::definition::{Check, IpPref, StatusMatch};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("a.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_with_defaults_and_overrides() {
        let c = parse(
            r#"
[probes]
concurrency = 4
interval = "10s"

[[probe]]
name = "app"
url = "https://app.example.com/health"
expect_status = ["2xx", 301]
json = [{ path = "$.status", equals = "ok" }, { path = "$.version" }]
body_matches = ["ok"]
ip = "prefer-ipv4"

[[probe]]
name = "db"
kind = "tcp"
target = "10.0.0.5:5432"
interval = "1m"
timeout = "2s"

[[probe]]
name = "resolver"
kind = "dns"
target = "example.com"

[[probe]]
name = "cert"
kind = "tls"
target = "[::1]:443"

[[service]]
name = "pets"
base_url = "https://pets.example.com/api/"
headers = { Authorization = "Bearer x" }
"#,
        )
        .unwrap();
        let p = &c.probes;
        assert_eq!(p.concurrency, 4);
        assert_eq!(p.probes.len(), 4);
        let app = &p.probes[0];
        assert_eq!(
            (app.interval, app.timeout, app.jitter),
            (Duration::from_secs(10), Duration::from_secs(5), Duration::from_secs(1))
        );
        let Check::Http(h) = &app.check else { panic!("http") };
        assert_eq!(h.expect_status, [StatusMatch::Class(2), StatusMatch::Code(301)]);
        assert_eq!((h.json.len(), h.json[0].equals.clone()), (2, Some(serde_json::json!("ok"))));
        assert_eq!(h.ip, IpPref::PreferIpv4);
        assert!(h.follow_redirects && h.accepts(301) && !h.accepts(302));
        let db = &p.probes[1];
        assert_eq!((db.kind(), db.interval, db.timeout), ("tcp", Duration::from_secs(60), Duration::from_secs(2)));
        assert_eq!((p.probes[2].kind(), p.probes[3].kind()), ("dns", "tls"));
        let s = &p.services[0];
        assert_eq!(s.spec_url, "https://pets.example.com/api/openapi.json");
        assert_eq!((s.interval, s.refresh), (Duration::from_secs(30), Duration::from_secs(600)));
        assert_eq!(s.headers, [("Authorization".to_owned(), "Bearer x".to_owned())]);
    }

    #[test]
    fn mistakes_name_their_line_and_key() {
        let cases = [
            ("[[probe]]\nname = \"a b\"\nurl = \"http://x/\"\n", "a.toml:1: key `probe.name`"),
            ("[[probe]]\nname = \"a\"\nkind = \"icmp\"\ntarget = \"x\"\n", "a.toml:1: key `probe.kind`"),
            ("[[probe]]\nname = \"a\"\n", "a.toml:1: key `probe.url`"),
            ("[[probe]]\nname = \"a\"\nurl = \"ftp://x/\"\n", "a.toml:1: key `probe.url`"),
            ("[[probe]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"nohost\"\n", "a.toml:1: key `probe.target`"),
            (
                "\n[[probe]]\nname = \"a\"\nurl = \"http://x/\"\nbody_matches = [\"(\"]\n",
                "a.toml:2: key `probe.body_matches`",
            ),
            (
                "[[probe]]\nname = \"a\"\nurl = \"http://x/\"\njson = [{ path = \"status\" }]\n",
                "a.toml:1: key `probe.json`",
            ),
            (
                "[[probe]]\nname = \"a\"\nurl = \"http://x/\"\nexpect_status = [\"7xx\"]\n",
                "a.toml:1: key `probe.expect_status`",
            ),
            (
                "[[probe]]\nname = \"a\"\nurl = \"http://x/\"\n[[probe]]\nname = \"a\"\nurl = \"http://y/\"\n",
                "a.toml:4: key `probe.name`",
            ),
            (
                "[[probe]]\nname = \"a\"\nurl = \"http://x/\"\nca_file = \"/nonexistent.pem\"\n",
                "a.toml:1: key `probe.ca_file`",
            ),
            ("[[probe]]\nname = \"a\"\nurl = \"http://x/\"\nurls = \"http://x/\"\n", "a.toml:4: key `urls`"),
            ("[[service]]\nname = \"p\"\nbase_url = \"pets\"\n", "a.toml:1: key `service.base_url`"),
            (
                "[[probe]]\nname = \"a\"\nurl = \"http://x/\"\nheaders = { \"a b\" = \"1\" }\n",
                "a.toml:1: key `probe.headers`",
            ),
            (
                "[[service]]\nname = \"p\"\nbase_url = \"http://x\"\nheaders = { A = \"\\n\" }\n",
                "a.toml:1: key `service.headers`",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }
}
