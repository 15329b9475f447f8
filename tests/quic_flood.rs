//! The QUIC edge under a flood, with the real binaries on loopback: garbage datagrams and forged
//! QUIC Initials from the test process are counted on `/metrics` and cost the aggregator's log
//! a few lines, while a real agent connects and ships.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use twinwatch_tests::{start_agent, wait_for, Aggregator, TempDir};

/// Datagrams a second, half of them forged Initials, half garbage.
const RATE: u32 = 5_000;
const FLOOD: Duration = Duration::from_secs(10);
/// What the aggregator may write to its log while flooded.
const LOG_BUDGET: u64 = 20 * 1024;

/// xorshift64*: random enough bytes, with no dependency.
struct Rng(u64);

impl Rng {
    fn step(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> usize {
        (self.step() % n) as usize
    }

    /// Appends `n` random bytes.
    fn append(&mut self, out: &mut Vec<u8>, n: usize) {
        out.extend((0..n).map(|_| self.step() as u8));
    }
}

/// A datagram that looks like a client's first QUIC v1 packet (long header, Initial type,
/// connection ids, no token, a length, padded to 1,200 bytes) but whose protected payload is
/// random: it reaches the handshake and fails to authenticate.
fn forged_initial(rng: &mut Rng) -> Vec<u8> {
    let mut d = vec![0xc0 | rng.below(4) as u8, 0, 0, 0, 1];
    let dcid = 8 + rng.below(13);
    d.push(dcid as u8);
    rng.append(&mut d, dcid);
    let scid = rng.below(21);
    d.push(scid as u8);
    rng.append(&mut d, scid);
    d.push(0); // no token
    let rest = 1200 - d.len() - 2;
    d.extend_from_slice(&(0x4000 | rest as u16).to_be_bytes());
    rng.append(&mut d, rest);
    d
}

/// Random bytes of random length. The first byte's top bit is clear, so it reads as a short
/// header naming a connection id the aggregator never issued: a long header of an unknown
/// version would instead be a fair question, which quinn answers with version negotiation.
fn garbage(rng: &mut Rng) -> Vec<u8> {
    let mut d = Vec::new();
    let len = 1 + rng.below(1400);
    rng.append(&mut d, len);
    d[0] &= 0x7f;
    d
}

/// Sends `RATE` datagrams a second for `FLOOD`; returns (forged Initials, garbage) sent.
fn flood(target: std::net::SocketAddr) -> (u64, u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut forged, mut junk) = (0, 0);
    let tick = Duration::from_millis(10);
    let per_tick = RATE / 100;
    let start = Instant::now();
    let mut ticks = 0;
    while start.elapsed() < FLOOD {
        for i in 0..per_tick {
            // A full socket buffer drops datagrams on loopback as on any link; they are not
            // counted as sent.
            if i % 2 == 0 {
                if socket.send_to(&forged_initial(&mut rng), target).is_ok() {
                    forged += 1;
                }
            } else if socket.send_to(&garbage(&mut rng), target).is_ok() {
                junk += 1;
            }
        }
        ticks += 1;
        // Paced by the clock, so a slow tick is caught up, not added to the flood's length.
        if let Some(ahead) = (start + tick * ticks).checked_duration_since(Instant::now()) {
            std::thread::sleep(ahead);
        }
    }
    (forged, junk)
}

fn stored_through(agg: &Aggregator, host: &str) -> Option<u64> {
    let v = agg.get(&format!("/api/v1/hosts/{host}/batches"))?;
    v["stored"].as_array()?.last()?["runs"].as_array()?.last()?[1].as_u64()
}

#[test]
fn a_flood_of_garbage_and_forged_initials_is_counted_in_a_few_log_lines_while_agents_ship() {
    let tmp = TempDir::new("quic-flood");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let agent_dir = tmp.path().join("agent");
    agg.issue("steady", "dc1", &agent_dir.join("certs"));
    let log = agg.proc.as_ref().expect("running").log.clone();
    let log_bytes = || std::fs::metadata(&log).map_or(0, |m| m.len());
    let before = log_bytes();

    let target = agg.quic_addr();
    let flooding = std::thread::spawn(move || flood(target));
    let bad_initial = "twinwatch_quic_refused_total{reason=\"bad_initial\"}";
    let malformed = "twinwatch_quic_malformed_datagrams_total";
    wait_for("the flood counted", Duration::from_secs(10), || {
        (agg.metric(bad_initial)? > 0.0 && agg.metric(malformed)? > 0.0).then_some(())
    });

    // A real agent, started under the flood, connects and ships.
    let _agent = start_agent(&agent_dir, agg.quic_port, "200ms");
    wait_for("the agent's batches stored", Duration::from_secs(60), || {
        stored_through(&agg, "steady").filter(|n| *n >= 5)
    });
    let connected_during_flood = !flooding.is_finished();
    let (forged, junk) = flooding.join().expect("flood thread");
    let flood_log = log_bytes() - before;

    // And goes on shipping after it.
    let after_flood = stored_through(&agg, "steady").expect("stored batches");
    wait_for("the agent still shipping", Duration::from_secs(30), || {
        stored_through(&agg, "steady").filter(|n| *n >= after_flood + 5)
    });

    let (refused, dropped) = (agg.metric(bad_initial).unwrap() as u64, agg.metric(malformed).unwrap() as u64);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let firsts = text.lines().filter(|l| l.contains("more like it are counted")).count();
    eprintln!(
        "sent {forged} forged Initials and {junk} garbage datagrams; counted {refused} bad_initial, \
         {dropped} malformed; log grew {flood_log} bytes ({firsts} first-of-kind lines); \
         agent connected during the flood: {connected_during_flood}"
    );
    assert!(flood_log < LOG_BUDGET, "the flood wrote {flood_log} bytes to the log:\n{text}");
    assert!(firsts <= 4, "one line per kind of refusal, not per refusal:\n{text}");
    // Of random Initials, quinn drops about three in four before any handshake, unseen and at
    // no cost: their reserved header bits, once unmasked, are not zero. Loopback also drops what
    // the aggregator's socket buffer cannot hold.
    assert!(refused > forged / 20 && refused <= forged, "{refused} of {forged} forged Initials counted");
    assert!(dropped > junk / 10 && dropped <= junk, "{dropped} of {junk} garbage datagrams counted");
    assert!(text.contains("agent refused: handshake: ") && text.contains("datagram dropped: "), "{text}");
}
