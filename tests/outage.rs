//! The agent's connection to the aggregator under outages and refusals, on the real binaries over
//! loopback: the present before the backlog after an outage, refusals the agent explains, how fast
//! a restarted aggregator is found again, and what probing an absent one costs.

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use twinwatch_common::time::parse_rfc3339;
use twinwatch_tests::{start_agent, wait_for, Aggregator, Proc, TempDir};

/// The value of `key=N` in a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The lines of a log that contain `text`.
fn lines_with(log: &str, text: &str) -> Vec<String> {
    log.lines().filter(|l| l.contains(text)).map(str::to_owned).collect()
}

/// A log line's timestamp in seconds since the epoch, to the millisecond (the subscriber writes
/// RFC 3339 first).
fn stamp(line: &str) -> f64 {
    let first = line.split_whitespace().next().unwrap_or_default();
    parse_rfc3339(first).unwrap_or_else(|| panic!("no timestamp in {line:?}")) as f64 / 1000.0
}

/// Issue #15, item 1: after an outage on a fast link, the aggregator applies a keyframe of the
/// present before any batch of the backlog. Every backlog batch then arrives behind the live
/// state and is decoded by a backfill chain (`batches_backfilled`), or was already stored (a
/// lost ack: `duplicates`); were any applied as live, the backlog went first.
#[test]
fn after_an_outage_the_present_is_stored_before_the_backlog() {
    let tmp = TempDir::new("outage-live-first");
    let mut agg = Aggregator::start(&tmp.path().join("agg"));
    let dir = tmp.path().join("agent");
    agg.issue("live-first", "dc1", &dir.join("certs"));
    let agent = start_agent(&dir, agg.quic_port, "100ms");
    wait_for("20 stored batches", Duration::from_secs(20), || agg.stored_through("live-first", 20));

    // The outage: the agent keeps sampling into its buffer, 100 ms a batch.
    agg.proc.as_mut().unwrap().kill9();
    std::thread::sleep(Duration::from_secs(4));
    agg.restart();

    let connected = wait_for("the agent to reconnect", Duration::from_secs(20), || {
        lines_with(&agent.log_text(), "connected to aggregator").get(1).cloned()
    });
    let backlog = field(&connected, "backlog_batches").expect("backlog_batches in the connected line");
    assert!(backlog >= 20, "a 4 s outage at 100 ms leaves a backlog: {connected}");
    let resumed = wait_for("the aggregator's view of the reconnect", Duration::from_secs(10), || {
        let log = agg.proc.as_ref().unwrap().log_text();
        lines_with(&log, "agent connected").first().cloned()
    });
    let stored_before = field(&resumed, "stored_through").expect("stored_through in the connected line");
    // The backlog and a few live batches after it, all stored without a hole.
    let (_, counters) = wait_for("the backlog stored", Duration::from_secs(30), || {
        agg.stored_through("live-first", stored_before + backlog + 5)
    });
    let backfilled = counters["batches_backfilled"].as_u64().unwrap();
    let duplicates = counters["duplicates"].as_u64().unwrap();
    assert_eq!(
        backfilled + duplicates,
        backlog,
        "every backlog batch must arrive behind the live keyframe, none applied as live: {counters}"
    );
    assert!(backfilled > 0, "{counters}");
    assert_eq!(counters["unapplied"].as_u64(), Some(0), "{counters}");
}

/// The CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// An agent configured for `aggregator` (host:port) with certificates issued by `agg`.
fn agent_for(agg: &Aggregator, dir: &Path, id: &str, port: u16) -> Proc {
    agg.issue(id, "dc1", &dir.join("certs"));
    start_agent(dir, port, "1s")
}

/// Issue #15, item 4: an agent whose aggregator does not answer, because its port is closed or
/// because a socket swallows every datagram, spends about what a connected agent spends, far
/// from the 30-40 % of a core it once did. All three run for the same minute, side by side; the
/// blackhole also counts the packets it swallows (QUIC's own resends made about eight a second).
#[test]
fn an_unanswered_agent_costs_no_more_than_a_connected_one() {
    let tmp = TempDir::new("outage-cpu");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let blackhole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hole = blackhole.local_addr().unwrap().port();

    let connected = agent_for(&agg, &tmp.path().join("connected"), "cpu-connected", agg.quic_port);
    let refused = agent_for(&agg, &tmp.path().join("closed"), "cpu-closed", closed);
    let swallowed = agent_for(&agg, &tmp.path().join("blackhole"), "cpu-blackhole", hole);
    wait_for("the connected agent", Duration::from_secs(15), || {
        connected.log_text().contains("connected to aggregator").then_some(())
    });
    // Start counting once each has started, so the start-up's own work is left out.
    let agents = [("connected", &connected), ("closed port", &refused), ("blackhole", &swallowed)];
    for (_, p) in &agents {
        wait_for("the agent to start", Duration::from_secs(15), || {
            p.log_text().contains("agent starting").then_some(())
        });
    }
    let t0 = Instant::now();
    let before: Vec<Duration> = agents.iter().map(|(_, p)| cpu_time(p.pid())).collect();
    // A minute covers the probing windows (30 s each) twice, with the attempts they overlap.
    let window = Duration::from_secs(60);
    // The blackhole counts what it swallows: the packets an unanswered agent spends probing.
    blackhole.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (mut swallowed_packets, mut buf, mut checked) = (0u64, [0u8; 2048], Instant::now());
    while t0.elapsed() < window {
        if blackhole.recv(&mut buf).is_ok() {
            swallowed_packets += 1;
        }
        if checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            for (name, p) in &agents {
                assert!(std::fs::metadata(format!("/proc/{}", p.pid())).is_ok(), "the {name} agent exited");
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let per_second = swallowed_packets as f64 / elapsed;
    eprintln!("the blackhole swallowed {swallowed_packets} packets in {elapsed:.1} s: {per_second:.2} a second");
    // One Initial per attempt and its close, an attempt a second; QUIC's own resends of each
    // pending attempt made it about eight.
    assert!(per_second <= 3.0, "an unanswered agent sent {per_second:.2} packets a second");
    let share: Vec<f64> = agents
        .iter()
        .zip(&before)
        .map(|((_, p), b)| (cpu_time(p.pid()) - *b).as_secs_f64() / elapsed * 100.0)
        .collect();
    eprintln!(
        "agent CPU over {elapsed:.1} s, % of one core: connected {:.2}, closed port {:.2}, blackhole {:.2}",
        share[0], share[1], share[2]
    );
    assert!(!refused.log_text().contains("connected to aggregator"));
    assert!(!swallowed.log_text().contains("connected to aggregator"));
    // Against the connected agent of the same run, with room for a loaded machine: an
    // unanswered agent probes (a packet or two a second) instead of shipping, and keeps its
    // samples on disk. The old probing loop spun at 12 % of a core.
    for (i, (name, _)) in agents.iter().enumerate().skip(1) {
        assert!(
            share[i] <= share[0] * 1.5 && share[i] < 3.0,
            "the agent facing a {name} used {:.2} % of a core, the connected one {:.2} %",
            share[i],
            share[0]
        );
    }
    drop(blackhole);
}

/// Issue #15, item 3: after an aggregator restart (killed, or stopped, down 3.7 s or 9 s, started
/// again) the agent is connected again within a fraction of a second of the aggregator listening.
/// After a kill the agent's connection is not closed. The agent learns of the restart from the
/// stateless reset a packet of that connection draws, or, once the connection has heard nothing
/// for a second, from a fresh handshake the aggregator answers while the old connection stays
/// silent. The 9 s outage is the one that pins the second way: by then the old connection has so
/// much unacknowledged that QUIC lets only its probe packets out, seconds apart, so a reset alone
/// came 6 s late. Measured on the logs, all stamped by the same clock.
#[test]
fn a_restarted_aggregator_is_found_again_within_a_fraction_of_a_second() {
    let tmp = TempDir::new("outage-restart");
    let mut agg = Aggregator::start(&tmp.path().join("agg"));
    let dir = tmp.path().join("agent");
    agg.issue("restart", "dc1", &dir.join("certs"));
    let agent = start_agent(&dir, agg.quic_port, "1s");
    wait_for("the agent connected", Duration::from_secs(20), || agg.stored_through("restart", 2));

    let mut figures = Vec::new();
    // A clean stop closes the connections, so the agent probes with fresh handshakes at once.
    let rounds = [("kill -9", 3.7), ("kill -9", 9.0), ("stop", 3.7), ("kill -9", 3.7), ("kill -9", 9.0), ("stop", 9.0)];
    for (how, down) in rounds {
        let seen = agent.log_text().lines().count();
        let p = agg.proc.as_mut().unwrap();
        if how == "kill -9" {
            p.kill9();
        } else {
            assert!(p.terminate().is_some_and(|s| s.success()), "the aggregator stops cleanly");
        }
        // The outage itself is the thing measured against: real time, not a wait for a condition.
        std::thread::sleep(Duration::from_secs_f64(down));
        agg.restart();
        let log = agg.proc.as_ref().unwrap();
        let (listening, connected) = wait_for("the agent to reconnect", Duration::from_secs(30), || {
            let text = log.log_text();
            let listening = lines_with(&text, "aggregator listening").first().cloned()?;
            let connected = lines_with(&text, "agent connected").first().cloned()?;
            Some((stamp(&listening), stamp(&connected)))
        });
        let took = connected - listening;
        // When the agent learnt that its connection was gone.
        let text = agent.log_text();
        let interrupted = text.lines().skip(seen).find(|l| l.contains("shipping interrupted"));
        let noticed = interrupted.map(|l| stamp(l) - listening);
        figures.push((how, down, took, noticed));
        let why = interrupted.and_then(|l| l.split("shipping interrupted: ").nth(1)).unwrap_or_default();
        eprintln!("{how}, {down} s down: reconnected {took:.3} s after the aggregator listened; {why}");
    }
    // The figures printed are the measurement (README quotes them). The bound leaves room for a
    // loaded machine running other tests beside this one; a reset that waits for QUIC's probe
    // timer misses it by seconds after the 9 s outages.
    for (how, down, took, _) in &figures {
        assert!(*took < 2.5, "after a {how} and {down} s down, the agent took {took:.3} s to reconnect: {figures:?}");
    }
    assert!(figures.iter().all(|f| f.3.is_some()), "the agent logs each interruption: {figures:?}");
}

/// Writes a certificate for `agent` signed by `issuer`, valid from `from` to `until` (unix
/// seconds), and the CA the agent trusts, into `dir/certs`.
fn write_cert(
    dir: &Path,
    agent: &str,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    ca_pem: &str,
    from: i64,
    until: i64,
) {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, agent);
    p.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, "dc1");
    p.not_before = OffsetDateTime::from_unix_timestamp(from).unwrap();
    p.not_after = OffsetDateTime::from_unix_timestamp(until).unwrap();
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    std::fs::write(certs.join("agent.crt"), cert.pem()).unwrap();
    std::fs::write(certs.join("agent.key"), key.serialize_pem()).unwrap();
    std::fs::write(certs.join("ca.crt"), ca_pem).unwrap();
}

/// The agent's first refusal line: it says what happened and names the command that fixes it.
fn refusal_line(agent: &Proc, what: &str) -> String {
    let line = wait_for(&format!("the {what} agent's refusal"), Duration::from_secs(20), || {
        lines_with(&agent.log_text(), "refused").first().cloned()
    });
    assert!(!agent.log_text().contains("connected to aggregator"), "{}", agent.log_text());
    line
}

/// Issue #15, item 2: a revoked agent, one whose certificate comes from another CA, an expired
/// one and one whose identity another connection holds each log what happened and what to do.
#[test]
fn a_refused_agent_says_why_and_what_to_do() {
    let tmp = TempDir::new("outage-refused");
    let agg = Aggregator::start(&tmp.path().join("agg"));

    let revoked_dir = tmp.path().join("revoked");
    agg.issue("retired", "dc1", &revoked_dir.join("certs"));
    let out = agg.cli(&["certs", "revoke", "--agent", "retired", "--reason", "router replaced"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked = start_agent(&revoked_dir, agg.quic_port, "1s");

    // Another CA, made here, signs a plausible certificate; the agent trusts the real CA.
    let ca_pem = std::fs::read_to_string(agg.certs_dir().join("ca.crt")).unwrap();
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other.distinguished_name.push(rcgen::DnType::CommonName, "twinwatch CA");
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other_ca = other.self_signed(&other_key).unwrap();
    let foreign_issuer = rcgen::Issuer::from_ca_cert_pem(&other_ca.pem(), other_key).unwrap();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let foreign_dir = tmp.path().join("foreign");
    write_cert(&foreign_dir, "foreigner", &foreign_issuer, &ca_pem, now - 3600, now + 86_400);
    let foreign = start_agent(&foreign_dir, agg.quic_port, "1s");

    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(agg.certs_dir().join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let expired_dir = tmp.path().join("expired");
    write_cert(&expired_dir, "stale", &issuer, &ca_pem, 1_577_836_800, 1_609_459_200);
    let expired = start_agent(&expired_dir, agg.quic_port, "1s");

    // The same certificate on a second process: the newer takes over, the older is told why.
    let holder_dir = tmp.path().join("holder");
    agg.issue("twice", "dc1", &holder_dir.join("certs"));
    let holder = start_agent(&holder_dir, agg.quic_port, "1s");
    wait_for("the first holder connected", Duration::from_secs(20), || {
        holder.log_text().contains("connected to aggregator").then_some(())
    });
    let copy_dir = tmp.path().join("copy");
    std::fs::create_dir_all(copy_dir.join("certs")).unwrap();
    for f in ["agent.crt", "agent.key", "ca.crt"] {
        std::fs::copy(holder_dir.join("certs").join(f), copy_dir.join("certs").join(f)).unwrap();
    }
    let _copy = start_agent(&copy_dir, agg.quic_port, "1s");

    let line = refusal_line(&revoked, "revoked");
    eprintln!("revoked: {line}");
    assert!(line.contains("revoked") && line.contains("certs issue --agent retired --dc dc1"), "{line}");
    let line = refusal_line(&foreign, "foreign");
    eprintln!("another CA: {line}");
    assert!(line.contains("does not know the CA") && line.contains("certs issue --agent foreigner"), "{line}");
    let line = refusal_line(&expired, "expired");
    eprintln!("expired: {line}");
    assert!(line.contains("expired") && line.contains("certs issue --agent stale"), "{line}");
    let line = wait_for("the first holder told of the takeover", Duration::from_secs(20), || {
        lines_with(&holder.log_text(), "own certificate").first().cloned()
    });
    eprintln!("identity taken: {line}");
    assert!(line.contains("certs issue --agent twice"), "{line}");
}
