//! Listen addresses: an IP address and port, or a host name and port resolved once at startup.
//!
//! Fly.io wants UDP services bound to `fly-global-services:4433`, a name its resolver maps to the
//! machine's address for UDP; so `quic_listen` and `http_listen` take names as well as addresses.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer};

/// `host:port` as written; `[v6]:port` for IPv6 literals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl ListenAddr {
    pub fn port(&self) -> u16 {
        match self {
            ListenAddr::Ip(a) => a.port(),
            ListenAddr::Name { port, .. } => *port,
        }
    }

    /// The address to bind: the literal, or the first address the name resolves to.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        match self {
            ListenAddr::Ip(a) => Ok(*a),
            ListenAddr::Name { host, port } => {
                let mut addrs = tokio::net::lookup_host((host.as_str(), *port)).await?;
                addrs.next().ok_or_else(|| std::io::Error::other(format!("{host} has no address")))
            }
        }
    }

    /// A URL authority for reaching this address from the same machine: wildcard addresses
    /// become loopback.
    pub fn local_authority(&self) -> String {
        match self {
            ListenAddr::Ip(a) if a.ip().is_unspecified() && a.is_ipv4() => format!("127.0.0.1:{}", a.port()),
            ListenAddr::Ip(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
            other => other.to_string(),
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(a: SocketAddr) -> Self {
        ListenAddr::Ip(a)
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr::Ip(a));
        }
        let bad = || format!("{s:?} is not an address such as \"0.0.0.0:4433\" or \"fly-global-services:4433\"");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let name_ok = (1..=253).contains(&host.len())
            && host.split('.').all(|l| {
                (1..=63).contains(&l.len())
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        // Something that looks like an address but did not parse as one is a typo, not a name.
        let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !name_ok || numeric {
            return Err(bad());
        }
        Ok(ListenAddr::Name { host: host.to_owned(), port })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Ip(a) => a.fmt(f),
            ListenAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_parse() {
        assert_eq!("0.0.0.0:4433".parse::<ListenAddr>().unwrap(), ListenAddr::Ip("0.0.0.0:4433".parse().unwrap()));
        assert_eq!("[::]:8080".parse::<ListenAddr>().unwrap().port(), 8080);
        assert_eq!(
            "fly-global-services:4433".parse::<ListenAddr>().unwrap(),
            ListenAddr::Name { host: "fly-global-services".into(), port: 4433 }
        );
        for bad in ["nowhere", "host:", "host:99999", ":80", "300.1.1.1:80", "a b:80", "-x:80", "::1:80x", ""] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad:?}");
        }
        assert_eq!("0.0.0.0:8080".parse::<ListenAddr>().unwrap().local_authority(), "127.0.0.1:8080");
        assert_eq!("[::]:8080".parse::<ListenAddr>().unwrap().local_authority(), "[::1]:8080");
        assert_eq!("example.net:8080".parse::<ListenAddr>().unwrap().local_authority(), "example.net:8080");
    }

    #[tokio::test]
    async fn names_resolve_at_startup() {
        let a = "localhost:4433".parse::<ListenAddr>().unwrap().resolve().await.unwrap();
        assert!(a.ip().is_loopback() && a.port() == 4433, "{a}");
    }
}
