//! Name resolution and TCP connects for probes, and the TCP, DNS and TLS-only checks built on them.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::net::TcpStream;
use twinwatch_common::probe::Outcome;

use super::definition::IpPref;
use super::result::ProbeResult;
use super::tls::TlsContext;

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
pub fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// Orders (and filters) addresses by preference.
pub fn arrange(mut addrs: Vec<SocketAddr>, pref: IpPref) -> Vec<SocketAddr> {
    match pref {
        IpPref::Any => {}
        IpPref::Ipv4 => addrs.retain(SocketAddr::is_ipv4),
        IpPref::Ipv6 => addrs.retain(SocketAddr::is_ipv6),
        IpPref::PreferIpv4 => addrs.sort_by_key(|a| !a.is_ipv4()),
        IpPref::PreferIpv6 => addrs.sort_by_key(|a| !a.is_ipv6()),
    }
    addrs.dedup();
    addrs
}

/// Resolves `host` with the system resolver (an IP literal is used as it is), recording the time
/// spent in `result.resolve`. `None` after recording a DNS failure.
pub async fn resolve(host: &str, port: u16, pref: IpPref, result: &mut ProbeResult) -> Option<Vec<SocketAddr>> {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let began = Instant::now();
    let found = match host.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
        Err(_) => tokio::net::lookup_host((host, port)).await.map(|it| it.collect()),
    };
    result.resolve += began.elapsed();
    match found {
        Ok(addrs) => {
            let addrs = arrange(addrs, pref);
            if addrs.is_empty() {
                result.fail(Outcome::DnsFailed, format!("{host}: no address of the wanted family"));
                return None;
            }
            Some(addrs)
        }
        Err(e) => {
            result.fail(Outcome::DnsFailed, format!("{host}: {e}"));
            None
        }
    }
}

/// Connects to the first address that answers. `None` after recording the last failure.
pub async fn connect(addrs: &[SocketAddr], result: &mut ProbeResult) -> Option<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                result.address = Some(*addr);
                return Some(stream);
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    result.address = addrs.last().copied();
    result.fail(Outcome::ConnectFailed, last.unwrap_or_else(|| "no address".into()));
    None
}

/// A TCP probe: resolve and connect.
pub async fn tcp(target: &str, pref: IpPref, result: &mut ProbeResult) {
    let Some((host, port)) = split_host_port(target) else {
        return result.fail(Outcome::ConnectFailed, format!("{target:?} is not host:port"));
    };
    if let Some(addrs) = resolve(host, port, pref, result).await {
        connect(&addrs, result).await;
    }
}

/// A DNS probe: every address the system resolver answers.
pub async fn dns(name: &str, pref: IpPref, result: &mut ProbeResult) {
    if let Some(addrs) = resolve(name, 0, pref, result).await {
        result.answers = addrs.iter().map(SocketAddr::ip).collect();
    }
}

/// A TLS probe: connect and complete the handshake.
pub async fn tls(target: &str, pref: IpPref, context: &TlsContext, result: &mut ProbeResult) {
    let Some((host, port)) = split_host_port(target) else {
        return result.fail(Outcome::ConnectFailed, format!("{target:?} is not host:port"));
    };
    let Some(addrs) = resolve(host, port, pref, result).await else { return };
    let Some(stream) = connect(&addrs, result).await else { return };
    let (handshake, seen) = context.handshake(stream, host).await;
    if let Err(e) = handshake {
        match &seen.invalid {
            Some(reason) => result.fail(Outcome::CertInvalid, reason.clone()),
            None => result.fail(Outcome::TlsFailed, e),
        }
    } else if let Some(reason) = &seen.invalid {
        // Accepted only because the probe is `insecure`: still worth saying why.
        result.detail = reason.clone();
    }
    result.tls = Some(seen);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_and_addresses_order_by_preference() {
        assert_eq!(split_host_port("db.lan:5432"), Some(("db.lan", 5432)));
        assert_eq!(split_host_port("[::1]:443"), Some(("::1", 443)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":80"), None);
        let v4: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:1".parse().unwrap();
        assert_eq!(arrange(vec![v6, v4], IpPref::PreferIpv4), [v4, v6]);
        assert_eq!(arrange(vec![v4, v6], IpPref::PreferIpv6), [v6, v4]);
        assert_eq!(arrange(vec![v4, v6], IpPref::Ipv6), [v6]);
        assert_eq!(arrange(vec![v4, v6], IpPref::Any), [v4, v6]);
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_failure_and_localhost_resolves() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap().to_string();
        drop(closed);
        let mut result = ProbeResult::new(0);
        tcp(&target, IpPref::Any, &mut result).await;
        assert_eq!(result.outcome, Outcome::ConnectFailed, "{}", result.detail);
        assert!(result.detail.contains("refused"), "{}", result.detail);

        let mut result = ProbeResult::new(0);
        dns("localhost", IpPref::Ipv4, &mut result).await;
        assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
        assert!(result.answers.contains(&IpAddr::from([127, 0, 0, 1])));
        // (A name that fails to resolve would send a query off this machine; tests stay on loopback.)
        let mut result = ProbeResult::new(0);
        dns("127.0.0.1", IpPref::Ipv6, &mut result).await;
        assert_eq!(result.outcome, Outcome::DnsFailed);
    }
}
