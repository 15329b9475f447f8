//! A userspace UDP impairment relay: loss, delay, jitter, reordering, duplication and blackholes
//! between an agent and the aggregator, since `tc netem` is not available on these machines.
//!
//! The relay listens on one address and forwards each client (source address) through its own
//! upstream socket, as a NAT would, so the aggregator sees the relay's address. What happens to
//! a datagram is decided by [`Impairment::fate`], a pure function of the settings and a seeded
//! random number generator; the threads around it only move bytes and keep time. Every thread
//! polls with a short timeout and ends when the relay is dropped.

use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the path does to datagrams, in both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Fraction dropped, 0 to 1.
    pub loss: f64,
    pub delay: Duration,
    /// Each datagram is delayed by a further random `0..jitter`.
    pub jitter: Duration,
    /// Fraction held back by an extra `delay + jitter`, so later datagrams overtake it.
    pub reorder: f64,
    /// Fraction sent twice.
    pub duplicate: f64,
    /// Drop everything.
    pub blackhole: bool,
}

/// A small seeded generator: the same seed gives the same fates.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..1`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Impairment {
    /// The delays after which copies of one datagram are delivered: none if it is lost.
    pub fn fate(&self, rng: &mut Rng) -> Vec<Duration> {
        if self.blackhole || rng.unit() < self.loss {
            return Vec::new();
        }
        let copies = if rng.unit() < self.duplicate { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                let mut d = self.delay + self.jitter.mul_f64(rng.unit());
                if rng.unit() < self.reorder {
                    d += self.delay + self.jitter + Duration::from_millis(1);
                }
                d
            })
            .collect()
    }
}

/// What the relay has done, both directions together.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub sent: AtomicU64,
}

struct Pending {
    due: Instant,
    order: u64,
    socket: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    // Earliest first from a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

struct Shared {
    settings: Mutex<(Impairment, Rng)>,
    queue: Mutex<(BinaryHeap<Pending>, u64)>,
    wake: Condvar,
    stop: AtomicBool,
    stats: RelayStats,
    /// Bumped by [`Relay::rebind`]: every flow gets a new upstream port, as when a NAT forgets
    /// its bindings.
    generation: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Decides one datagram's fate and queues its copies.
    fn submit(&self, socket: &Arc<UdpSocket>, to: Option<SocketAddr>, bytes: &[u8]) {
        self.stats.received.fetch_add(1, Relaxed);
        let delays = {
            let mut s = self.settings.lock().unwrap_or_else(|e| e.into_inner());
            let (imp, rng) = &mut *s;
            imp.fate(rng)
        };
        if delays.is_empty() {
            self.stats.dropped.fetch_add(1, Relaxed);
            return;
        }
        let now = Instant::now();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for d in delays {
            q.1 += 1;
            let order = q.1;
            q.0.push(Pending { due: now + d, order, socket: socket.clone(), to, bytes: bytes.to_vec() });
        }
        self.wake.notify_one();
    }

    /// Sends queued datagrams when they fall due, until stopped.
    fn deliver(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while !self.stop.load(Relaxed) {
            let now = Instant::now();
            match q.0.peek() {
                Some(p) if p.due <= now => {
                    let p = q.0.pop().expect("peeked");
                    drop(q);
                    let sent = match p.to {
                        Some(to) => p.socket.send_to(&p.bytes, to),
                        None => p.socket.send(&p.bytes),
                    };
                    if sent.is_ok() {
                        self.stats.sent.fetch_add(1, Relaxed);
                    }
                    q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                }
                Some(p) => {
                    let wait = p.due - now;
                    q = self
                        .wake
                        .wait_timeout(q, wait.min(Duration::from_millis(100)))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => {
                    q = self.wake.wait_timeout(q, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
    }
}

/// A running relay; stops when dropped.
pub struct Relay {
    pub listen: SocketAddr,
    shared: Arc<Shared>,
}

const POLL: Duration = Duration::from_millis(100);

impl Relay {
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, seed: u64) -> Relay {
        let down = Arc::new(UdpSocket::bind(listen).expect("relay bind"));
        down.set_read_timeout(Some(POLL)).expect("timeout");
        let listen = down.local_addr().expect("relay addr");
        let shared = Arc::new(Shared {
            settings: Mutex::new((Impairment::default(), Rng::new(seed))),
            queue: Mutex::new((BinaryHeap::new(), 0)),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            stats: RelayStats::default(),
            generation: std::sync::atomic::AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || s.deliver());
        let s = shared.clone();
        std::thread::spawn(move || {
            let mut flows: HashMap<(SocketAddr, u64), Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            while !s.stop.load(Relaxed) {
                let Ok((n, from)) = down.recv_from(&mut buf) else { continue };
                let generation = s.generation.load(Relaxed);
                flows.retain(|(_, g), _| *g == generation);
                let up = flows.entry((from, generation)).or_insert_with(|| {
                    let bind: SocketAddr =
                        if upstream.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("addr");
                    let up = Arc::new(UdpSocket::bind(bind).expect("upstream bind"));
                    up.connect(upstream).expect("upstream connect");
                    up.set_read_timeout(Some(POLL)).expect("timeout");
                    let (back, down, s) = (up.clone(), down.clone(), s.clone());
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65_536];
                        while !s.stop.load(Relaxed) && s.generation.load(Relaxed) == generation {
                            if let Ok(n) = back.recv(&mut buf) {
                                s.submit(&down, Some(from), &buf[..n]);
                            }
                        }
                    });
                    up
                });
                let up = up.clone();
                s.submit(&up, None, &buf[..n]);
            }
        });
        Relay { listen, shared }
    }

    /// Changes the impairment from now on (datagrams already queued keep their fate).
    pub fn set(&self, impairment: Impairment) {
        self.shared.settings.lock().unwrap_or_else(|e| e.into_inner()).0 = impairment;
    }

    /// From the next datagram on, each client reaches the upstream from a new port: a NAT
    /// rebinding. Replies to the old port are no longer forwarded.
    pub fn rebind(&self) {
        self.shared.generation.fetch_add(1, Relaxed);
    }

    pub fn stats(&self) -> &RelayStats {
        &self.shared.stats
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        self.shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fates(imp: Impairment, n: usize) -> Vec<Vec<Duration>> {
        let mut rng = Rng::new(42);
        (0..n).map(|_| imp.fate(&mut rng)).collect()
    }

    #[test]
    fn loss_duplication_and_reordering_happen_at_their_rates() {
        let imp = Impairment {
            loss: 0.3,
            delay: Duration::from_millis(300),
            jitter: Duration::from_millis(50),
            reorder: 0.1,
            duplicate: 0.05,
            blackhole: false,
        };
        let all = fates(imp, 20_000);
        let lost = all.iter().filter(|f| f.is_empty()).count() as f64 / 20_000.0;
        assert!((0.28..0.32).contains(&lost), "loss {lost}");
        let kept: Vec<&Vec<Duration>> = all.iter().filter(|f| !f.is_empty()).collect();
        let doubled = kept.iter().filter(|f| f.len() == 2).count() as f64 / kept.len() as f64;
        assert!((0.04..0.06).contains(&doubled), "duplicates {doubled}");
        let delays: Vec<Duration> = kept.iter().flat_map(|f| f.iter().copied()).collect();
        assert!(delays.iter().all(|d| *d >= imp.delay), "never sooner than the delay");
        let held = delays.iter().filter(|d| **d > imp.delay + imp.jitter).count() as f64 / delays.len() as f64;
        assert!((0.08..0.12).contains(&held), "held back to reorder {held}");
        // The same seed, the same fates.
        assert_eq!(fates(imp, 100), fates(imp, 100));
    }

    #[test]
    fn a_blackhole_drops_everything_and_a_clear_path_nothing() {
        let hole = Impairment { blackhole: true, ..Impairment::default() };
        assert!(fates(hole, 1000).iter().all(Vec::is_empty));
        assert!(fates(Impairment::default(), 1000).iter().all(|f| f == &[Duration::ZERO]));
    }

    #[test]
    fn datagrams_cross_the_relay_both_ways_and_a_blackhole_stops_them() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), server.local_addr().unwrap(), 1);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        client.send_to(b"ping", relay.listen).unwrap();
        let (n, via) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_ne!(via, client.local_addr().unwrap(), "the server sees the relay, as behind a NAT");
        server.send_to(b"pong", via).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], relay.listen));

        relay.set(Impairment { blackhole: true, ..Impairment::default() });
        client.send_to(b"lost", relay.listen).unwrap();
        server.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(server.recv_from(&mut buf).is_err(), "nothing crosses a blackhole");
        assert_eq!(relay.stats().dropped.load(Relaxed), 1);
    }
}
