//! Network namespaces for multi-DC tests: one per DC and one for the aggregator, each joined to
//! the test's own namespace by a veth pair, with addresses from 198.18.0.0/15 (the range set
//! aside for network testing). Nothing is routed between namespaces: traffic crosses from one to
//! another only through something the test runs in its own namespace, such as the
//! [`crate::relay::Relay`]. Everything is deleted when the [`Testbed`] is dropped.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::Proc;

const IP: &str = "/usr/sbin/ip";

/// One namespace and its link to the test's namespace.
#[derive(Debug, Clone)]
pub struct Ns {
    pub name: String,
    /// The address inside the namespace.
    pub addr: Ipv4Addr,
    /// The test's end of the link, which the namespace reaches directly.
    pub host_addr: Ipv4Addr,
    host_link: String,
}

/// The namespaces of one test.
pub struct Testbed {
    tag: String,
    spaces: Vec<Ns>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new(IP).args(args).output().map_err(|e| format!("{IP}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A /24 nobody else in this process uses, from the pid and a counter.
fn subnet() -> (u8, u8) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = (std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Relaxed)) % 512;
    (18 + (n / 256) as u8, (n % 256) as u8)
}

impl Testbed {
    /// A test bed named after the test (a short tag: interface names are at most 15 bytes).
    /// Panics, saying why, where namespaces cannot be made (not root, no `ip`).
    pub fn new(tag: &str) -> Testbed {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "network namespace tests need root");
        assert!(Path::new(IP).exists(), "{IP} is missing (package iproute2)");
        // Interface names hold 15 bytes: the tag is short, and a per-process count keeps two test
        // beds of one run apart even when their tags start alike.
        static BEDS: AtomicU32 = AtomicU32::new(0);
        let n = BEDS.fetch_add(1, Relaxed) % 36;
        let n = char::from_digit(n, 36).expect("below 36");
        Testbed { tag: format!("tw{}{n}{}", std::process::id() % 10_000, &tag[..tag.len().min(3)]), spaces: Vec::new() }
    }

    /// Creates a namespace with loopback up and a link to the test's namespace.
    pub fn add(&mut self, name: &str) -> Ns {
        let index = self.spaces.len();
        let ns_name = format!("{}-{name}", self.tag);
        let host_link = format!("{}h{index}", self.tag);
        let ns_link = format!("{}n{index}", self.tag);
        let (b, c) = subnet();
        let host_addr = Ipv4Addr::new(198, b, c, 1);
        let addr = Ipv4Addr::new(198, b, c, 2);
        let ns = Ns { name: ns_name.clone(), addr, host_addr, host_link: host_link.clone() };
        // Recorded first, so a failure half way is still cleaned up.
        self.spaces.push(ns.clone());
        let steps: [Vec<String>; 8] = [
            vec!["netns".into(), "add".into(), ns_name.clone()],
            vec![
                "link".into(),
                "add".into(),
                host_link.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                ns_link.clone(),
            ],
            vec!["link".into(), "set".into(), ns_link.clone(), "netns".into(), ns_name.clone()],
            vec!["addr".into(), "add".into(), format!("{host_addr}/24"), "dev".into(), host_link.clone()],
            vec!["link".into(), "set".into(), host_link.clone(), "up".into()],
            vec![
                "-n".into(),
                ns_name.clone(),
                "addr".into(),
                "add".into(),
                format!("{addr}/24"),
                "dev".into(),
                ns_link.clone(),
            ],
            vec!["-n".into(), ns_name.clone(), "link".into(), "set".into(), ns_link, "up".into()],
            vec!["-n".into(), ns_name.clone(), "link".into(), "set".into(), "lo".into(), "up".into()],
        ];
        for step in &steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            ip(&args).unwrap_or_else(|e| panic!("setting up namespace {ns_name}: {e}"));
        }
        ns
    }

    /// Starts `exe` inside `ns`.
    pub fn spawn(&self, ns: &Ns, exe: &Path, args: &[&str], log: std::path::PathBuf) -> Proc {
        spawn_in(Some(&ns.name), exe, args, log)
    }
}

/// Starts `exe` in the namespace named `ns` (`ip netns exec` replaces itself with `exe`, so the
/// process is `exe` itself), or in the test's own namespace.
pub fn spawn_in(ns: Option<&str>, exe: &Path, args: &[&str], log: std::path::PathBuf) -> Proc {
    let Some(ns) = ns else { return Proc::spawn(exe, args, log) };
    let mut all = vec!["netns", "exec", ns, exe.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    Proc::spawn(Path::new(IP), &all, log)
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in &self.spaces {
            // Deleting the namespace deletes its end of the link, and with it the pair.
            let _ = ip(&["netns", "del", &ns.name]);
            let _ = ip(&["link", "del", &ns.host_link]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    #[test]
    fn a_namespace_reaches_the_test_over_its_link_and_is_gone_after() {
        let name;
        {
            let mut bed = Testbed::new("unit");
            let dc = bed.add("dc1");
            name = dc.name.clone();
            // A UDP echo from inside the namespace to the test's end of the link.
            let socket = UdpSocket::bind(SocketAddr::from((dc.host_addr, 0))).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let to = socket.local_addr().unwrap().to_string();
            let status = Command::new(IP)
                .args([
                    "netns",
                    "exec",
                    &dc.name,
                    "/bin/bash",
                    "-c",
                    &format!("echo hi > /dev/udp/{}/{}", dc.host_addr, &to[to.rfind(':').unwrap() + 1..]),
                ])
                .status()
                .unwrap();
            assert!(status.success());
            let mut buf = [0u8; 8];
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from.ip()), (&b"hi\n"[..], std::net::IpAddr::V4(dc.addr)));
        }
        let list = Command::new(IP).args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name), "namespace removed on drop");
    }
}
