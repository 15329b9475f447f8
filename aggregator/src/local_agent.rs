//! `[local_agent]`: an agent the aggregator runs beside itself, so that the aggregator's host is
//! one more vantage point (on Fly.io, DC3 probing the same endpoints as the other DCs).
//!
//! The aggregator issues the agent its certificate from its own CA (again when it is missing,
//! names another agent or DC, or expires within [`RENEW_BEFORE_DAYS`]), starts
//! `twinwatch-agent run` with the operator's agent configuration plus a connection of its own
//! (loopback, its certificate, its buffer under `<data_dir>/local-agent`), and starts it again
//! when it exits. The agent then connects over QUIC like any other: **nothing here calls into
//! ingest or the twin**, and the agent is known only by its certificate.
//!
//! The agent never outlives the aggregator. A normal shutdown stops it (SIGTERM, then SIGKILL);
//! for an abnormal end (an abort, a `kill -9`) the kernel sends it SIGTERM as its parent-death
//! signal, set in the child before exec. SIGTERM rather than SIGKILL, so it still makes its
//! buffer durable: the next aggregator's agent ships it. See `spawn` for the thread it is
//! forked from.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use twinwatch_common::backoff::Backoff;
use twinwatch_common::config::{LogFormat, LOG_FORMAT_VAR};
use twinwatch_common::time::now_ms;

use crate::access::audit::{AuditLog, Outcome, Record};
use crate::access::cert_identity;
use crate::access::certs;
use crate::config::LocalAgent;

/// A certificate this close to its end is replaced at the next start.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// Validity of the certificates issued here.
const VALID_DAYS: i64 = 825;
/// A run that lasted this long resets the restart backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// This host's name, cut to what an agent id may hold; `local` when it has none.
pub fn host_name() -> String {
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let id: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).take(64).collect();
    if id.is_empty() {
        "local".into()
    } else {
        id
    }
}

/// Where the agent connects: the QUIC address the aggregator is bound to, or loopback when it
/// is bound to every address.
pub fn connect_address(quic: SocketAddr) -> SocketAddr {
    match quic.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, quic.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, quic.port()).into(),
        _ => quic,
    }
}

/// Whether the certificate at `cert` is one for `agent` in `dc` with more than
/// [`RENEW_BEFORE_DAYS`] left at `now_s` (unix seconds). Unreadable or foreign: no.
pub fn certificate_fits(cert: &Path, agent: &str, dc: &str, now_s: i64) -> bool {
    let Ok(pem) = std::fs::read(cert) else { return false };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem) else { return false };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(&pem.contents) else { return false };
    let named = cert_identity::from_der(&pem.contents).is_ok_and(|i| i.id == agent && i.dc == dc);
    named && parsed.validity().not_after.timestamp() > now_s + RENEW_BEFORE_DAYS * 86_400
}

/// Runs the local agent until `shutdown`, restarting it with backoff when it exits. `dir` holds
/// its certificate and buffer; `quic` is where the aggregator listens. The agent writes to the
/// aggregator's stderr, so it logs in the aggregator's `log_format` (an inherited
/// `TWINWATCH_LOG_FORMAT` already says the same).
pub async fn supervise(
    local: LocalAgent,
    certs_dir: PathBuf,
    dir: PathBuf,
    quic: SocketAddr,
    audit: AuditLog,
    log_format: LogFormat,
    mut shutdown: watch::Receiver<bool>,
) {
    let binary = match &local.binary {
        Some(b) => b.clone(),
        None => match std::env::current_exe() {
            Ok(exe) => exe.with_file_name("twinwatch-agent"),
            Err(e) => {
                tracing::error!("local agent: cannot find this program's directory: {e}");
                return;
            }
        },
    };
    let agent_certs = dir.join("certs");
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    while !*shutdown.borrow() {
        if !certificate_fits(&agent_certs.join("agent.crt"), &local.id, &local.dc, now_ms() / 1000) {
            let issued = certs::issue(&certs_dir, &local.id, &local.dc, VALID_DAYS, &agent_certs);
            let (outcome, detail) = match &issued {
                Ok(i) => (Outcome::Ok, format!("dc {}, serial {}, local agent", local.dc, i.serial)),
                Err(e) => (Outcome::Failed, e.to_string()),
            };
            let record = Record::new(now_ms(), "aggregator", "local", "certs.issue", &local.id, outcome);
            if let Err(e) = audit.append(&record.with_detail(detail)) {
                tracing::warn!("local agent: {e}: its certificate is not in the audit log");
            }
            if let Err(e) = issued {
                tracing::error!("local agent: issuing its certificate: {e}");
            }
        }
        let started = Instant::now();
        let mut command = tokio::process::Command::new(&binary);
        command
            .arg("--config")
            .arg(&local.config)
            .arg("run")
            .arg("--aggregator")
            .arg(connect_address(quic).to_string())
            .arg("--server-name")
            .arg("localhost")
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--certs")
            .arg(&agent_certs)
            .kill_on_drop(true);
        if std::env::var_os(LOG_FORMAT_VAR).is_none() {
            command.env(LOG_FORMAT_VAR, log_format.as_str());
        }
        match spawn(command).await {
            Ok(mut child) => {
                tracing::info!(agent = %local.id, dc = %local.dc, pid = child.id(), "local agent started");
                tokio::select! {
                    status = child.wait() => {
                        tracing::warn!(agent = %local.id, "local agent exited: {status:?}");
                    }
                    _ = stopped(&mut shutdown) => {
                        stop(&mut child).await;
                        return;
                    }
                }
            }
            Err(e) => tracing::error!("local agent: starting {}: {e}", binary.display()),
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        let delay = backoff.next_delay(twinwatch_common::backoff::unit_random());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// What the spawning thread is asked: a command to start in a runtime, and where to answer.
type Request = (tokio::runtime::Handle, tokio::process::Command, oneshot::Sender<io::Result<tokio::process::Child>>);

/// The spawning thread's queue. The sender held here keeps the thread waiting for as long as
/// the process lives.
static SPAWNER: Mutex<Option<mpsc::Sender<Request>>> = Mutex::new(None);

/// Starts `command` with SIGTERM as its parent-death signal, forked from a thread that lasts as
/// long as the process.
///
/// The kernel sends the parent-death signal when the *thread* that forked the child ends, not
/// its process. A tokio worker is not such a thread: `block_in_place` hands a worker's role to
/// a new thread and lets the old one retire, and blocking-pool threads end when idle. So the
/// fork happens on a thread of our own that never returns.
async fn spawn(mut command: tokio::process::Command) -> io::Result<tokio::process::Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid), and no
    // allocation: the error is a raw OS error.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The aggregator may have died before the signal was set: then it is never sent.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (answer, answered) = oneshot::channel();
    spawner()?
        .send((tokio::runtime::Handle::current(), command, answer))
        .map_err(|_| io::Error::other("the local agent's spawning thread has ended"))?;
    answered.await.map_err(|_| io::Error::other("the local agent's spawning thread has ended"))?
}

/// The spawning thread's queue, starting the thread on first use.
fn spawner() -> io::Result<mpsc::Sender<Request>> {
    let mut spawner = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sender) = &*spawner {
        return Ok(sender.clone());
    }
    let (sender, requests) = mpsc::channel::<Request>();
    std::thread::Builder::new().name("local-agent-spawn".into()).spawn(move || {
        for (runtime, mut command, answer) in requests {
            // tokio reaps the child through the runtime's signal driver.
            let _runtime = runtime.enter();
            let _ = answer.send(command.spawn());
        }
    })?;
    *spawner = Some(sender.clone());
    Ok(sender)
}

/// Resolves once `shutdown` turns true (or its sender is gone), holding no borrow of it.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// SIGTERM, then SIGKILL if it has not gone within five seconds.
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_to_loopback_when_bound_to_every_address() {
        assert_eq!(connect_address("0.0.0.0:4433".parse().unwrap()), "127.0.0.1:4433".parse().unwrap());
        assert_eq!(connect_address("[::]:4433".parse().unwrap()), "[::1]:4433".parse().unwrap());
        assert_eq!(connect_address("172.19.0.2:4433".parse().unwrap()), "172.19.0.2:4433".parse().unwrap());
    }

    #[test]
    fn a_certificate_fits_only_its_agent_and_dc_while_it_has_time_left() {
        let dir = std::env::temp_dir().join(format!("twinwatch-local-agent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        certs::init(&dir.join("ca"), &[], false).unwrap();
        certs::issue(&dir.join("ca"), "fly", "dc3", 90, &dir.join("agent")).unwrap();
        let cert = dir.join("agent/agent.crt");
        let now = now_ms() / 1000;
        assert!(certificate_fits(&cert, "fly", "dc3", now));
        assert!(!certificate_fits(&cert, "fly", "dc2", now));
        assert!(!certificate_fits(&cert, "other", "dc3", now));
        // 90 days of validity: within the renewal window 61 days from now.
        assert!(!certificate_fits(&cert, "fly", "dc3", now + 61 * 86_400));
        assert!(!certificate_fits(&dir.join("agent/missing.crt"), "fly", "dc3", now));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
