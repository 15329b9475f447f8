//! One `[[remote_write]]` section of the aggregator's configuration, and its checks.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use twinwatch_common::config::{Bytes, Span};

/// Where to send every stored sample, as Prometheus remote write 1.0.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Names the queue (`remote_write/<name>` in the store) and the `remote` metrics label.
    pub name: String,
    /// The receiver, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// Past this the oldest queued samples are dropped (default 256 MiB).
    #[serde(default = "default_max_queue_bytes")]
    pub max_queue_bytes: Bytes,
    /// Samples per request at most (default 2000).
    #[serde(default = "default_max_samples_per_send")]
    pub max_samples_per_send: usize,
    /// One request, connection included (default 30 s).
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    pub bearer_token: Option<String>,
    pub basic_auth: Option<BasicAuth>,
    /// Extra request headers, such as Mimir's `X-Scope-OrgID`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

fn default_max_queue_bytes() -> Bytes {
    Bytes(256 << 20)
}

fn default_max_samples_per_send() -> usize {
    2000
}

fn default_timeout() -> Span {
    Span(Duration::from_secs(30))
}

/// Headers the sender sets itself; a configured one would contradict the protocol.
const RESERVED_HEADERS: [&str; 5] =
    ["content-encoding", "content-type", "x-prometheus-remote-write-version", "user-agent", "content-length"];

/// A section that cannot be used: the key (`remote_write.url`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl RemoteWriteConfig {
    /// A section for `url` with every default, for tests and programs that build one in code.
    pub fn new(name: &str, url: &str) -> RemoteWriteConfig {
        RemoteWriteConfig {
            name: name.to_owned(),
            url: url.to_owned(),
            max_queue_bytes: default_max_queue_bytes(),
            max_samples_per_send: default_max_samples_per_send(),
            timeout: default_timeout(),
            bearer_token: None,
            basic_auth: None,
            headers: BTreeMap::new(),
        }
    }

    /// The URL, if it is an http or https one.
    pub fn parsed_url(&self) -> Result<reqwest::Url, Invalid> {
        let invalid = |message: String| Invalid { key: "remote_write.url".into(), message };
        let url = reqwest::Url::parse(&self.url).map_err(|e| invalid(format!("{:?}: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!("{:?} is not an http:// or https:// URL", self.url)));
        }
        Ok(url)
    }

    fn check(&self) -> Result<(), Invalid> {
        let invalid = |key: &str, message: String| Invalid { key: format!("remote_write.{key}"), message };
        if self.name.is_empty() || self.name.chars().any(char::is_control) {
            return Err(invalid("name", format!("{:?} is not a usable name", self.name)));
        }
        self.parsed_url()?;
        if self.max_samples_per_send == 0 {
            return Err(invalid("max_samples_per_send", "must be at least 1".into()));
        }
        if self.timeout.0.is_zero() {
            return Err(invalid("timeout", "must be more than 0".into()));
        }
        if self.bearer_token.is_some() && self.basic_auth.is_some() {
            return Err(invalid("bearer_token", format!("{:?} has both bearer_token and basic_auth", self.name)));
        }
        for (name, value) in &self.headers {
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("headers", format!("{name:?} is not a header name")))?;
            if RESERVED_HEADERS.contains(&header.as_str()) || header == reqwest::header::AUTHORIZATION {
                return Err(invalid("headers", format!("{name:?} is set by the sender or its auth keys")));
            }
            reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| invalid("headers", format!("the value of {name:?} is not a header value")))?;
        }
        Ok(())
    }
}

/// Checks every section and that no two share a name.
pub fn validate(configs: &[RemoteWriteConfig]) -> Result<(), Invalid> {
    let mut names = HashSet::new();
    for c in configs {
        c.check()?;
        if !names.insert(c.name.as_str()) {
            return Err(Invalid {
                key: "remote_write.name".into(),
                message: format!("two [[remote_write]] sections are named {:?}", c.name),
            });
        }
    }
    Ok(())
}

/// Secrets stay out of logs: the token and password show as `***`.
impl fmt::Debug for RemoteWriteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteWriteConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("max_samples_per_send", &self.max_samples_per_send)
            .field("timeout", &self.timeout)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("basic_auth", &self.basic_auth)
            .field("headers", &self.headers)
            .finish()
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth").field("username", &self.username).field("password", &"***").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_url_auth_and_headers() {
        let ok = RemoteWriteConfig::new("a", "https://mimir.example/api/v1/push");
        assert_eq!(validate(std::slice::from_ref(&ok)), Ok(()));
        let key = |configs: &[RemoteWriteConfig]| validate(configs).unwrap_err().key;
        assert_eq!(key(&[ok.clone(), ok.clone()]), "remote_write.name");
        assert_eq!(key(&[RemoteWriteConfig::new("b", "not a url")]), "remote_write.url");
        assert_eq!(key(&[RemoteWriteConfig::new("b", "ftp://x/")]), "remote_write.url");
        assert_eq!(key(&[RemoteWriteConfig::new("", "http://x/")]), "remote_write.name");
        let mut both = ok.clone();
        both.bearer_token = Some("t".into());
        both.basic_auth = Some(BasicAuth { username: "u".into(), password: "p".into() });
        assert_eq!(key(&[both.clone()]), "remote_write.bearer_token");
        assert!(!format!("{both:?}").contains("\"t\"") && !format!("{both:?}").contains("\"p\""));
        for (name, value) in [("X Bad", "v"), ("Content-Type", "text/plain"), ("X-Scope-OrgID", "a\nb")] {
            let mut h = ok.clone();
            h.headers.insert(name.into(), value.into());
            assert_eq!(key(&[h]), "remote_write.headers", "{name}");
        }
        let mut h = ok;
        h.headers.insert("X-Scope-OrgID".into(), "tenant-1".into());
        assert_eq!(validate(&[h]), Ok(()));
    }
}
