//! A load generator: a fleet of simulated agents over real QUIC, each with its own certificate
//! from the aggregator's CA, sending what a real agent sends.
//!
//! Each agent samples a [`synthetic`](crate::synthetic) host (its own seed, so no two agents send
//! the same values) plus `probes` HTTP endpoint results every 10 s, encodes one tick per batch
//! with the agent's keyframe interval, and frames it as the agent does: keyframes and deltas in
//! the real proportions. Ticks are spread over the interval, so a thousand agents arrive as a
//! steady stream rather than a burst each second. A batch stays pending until acknowledged and is
//! resent on every new connection, as the agent's buffer does; sampling never waits for the
//! network. Connections can be dropped in bulk, and every agent reconnects with jittered backoff.
//!
//! The fleet counts what it produced and what was acknowledged, per agent, so a test can check
//! the aggregator's ledgers against it exactly once the fleet has drained.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use twinwatch_common::delta::DeltaEncoder;
use twinwatch_common::frame::FrameEncoder;
use twinwatch_common::message::{Batch, Hello, HostInfo, Message};
use twinwatch_common::probe as names;
use twinwatch_common::reader::MessageReader;
use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

use crate::relay::Rng;
use crate::synthetic::Host;

/// The agent's default keyframe interval (`agent/src/config.rs`).
const KEYFRAME_EVERY: u32 = 300;
/// Probe results are new every this many ticks.
const PROBE_EVERY: u64 = 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that has answered nothing for this long while batches wait is replaced by a
/// fresh one, as the agent's standby handshake replaces it (`agent/src/shipper/probing.rs`).
const SILENCE: Duration = Duration::from_secs(4);

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub agents: usize,
    pub interval: Duration,
    /// HTTP endpoints each agent probes (the same endpoints on every agent, so they line up as
    /// vantages of one endpoint).
    pub probes: usize,
    /// Agents are spread over these DCs in turn.
    pub dcs: Vec<String>,
    /// Seeds every agent's host; the same fleet in every run for one seed.
    pub seed: u64,
}

impl FleetConfig {
    pub fn new(agents: usize) -> FleetConfig {
        FleetConfig {
            agents,
            interval: Duration::from_secs(1),
            probes: 2,
            dcs: vec!["dc1".into(), "dc2".into(), "dc3".into()],
            seed: 0x6c6f_6164,
        }
    }
}

/// One agent's certificate, ready to connect.
#[derive(Clone)]
pub struct Enrolled {
    pub id: String,
    pub dc: String,
    client: quinn::ClientConfig,
}

/// Issues a certificate for each of `config.agents` agents (`load-0000`, `load-0001`, ...) from
/// the CA in `ca_dir`, into `dir`.
pub fn enrol(ca_dir: &Path, dir: &Path, config: &FleetConfig) -> Vec<Enrolled> {
    (0..config.agents)
        .map(|i| {
            let id = format!("load-{i:04}");
            let dc = config.dcs[i % config.dcs.len()].clone();
            let out = dir.join(&id);
            std::fs::create_dir_all(&out).expect("agent cert dir");
            let issued = twinwatch_aggregator::access::certs::issue(ca_dir, &id, &dc, 30, &out).expect("issue");
            let client = twinwatch_agent::tls::client_config(&issued.ca, &issued.cert, &issued.key).expect("client");
            Enrolled { id, dc, client }
        })
        .collect()
}

/// Totals over the fleet.
#[derive(Debug, Default)]
pub struct Counters {
    /// Batches sampled and framed (each one tick).
    pub produced: AtomicU64,
    /// Series values in them.
    pub values: AtomicU64,
    /// Batches acknowledged (each counted once, however often it was sent).
    pub acked: AtomicU64,
    /// Frames written, first sends and resends.
    pub sent: AtomicU64,
    pub resent: AtomicU64,
    pub bytes: AtomicU64,
    /// Connections that reached `Welcome`.
    pub connects: AtomicU64,
    /// Attempts that did not, of which refused by the aggregator as busy.
    pub failed: AtomicU64,
    pub refused_busy: AtomicU64,
    /// Connections that ended after their `Welcome`.
    pub lost: AtomicU64,
    /// Of which given up for [`SILENCE`] while batches waited.
    pub silent: AtomicU64,
    pub keyframe_requests: AtomicU64,
    /// Agents connected now.
    pub connected: AtomicUsize,
    /// Produced to acknowledged, per batch (ms): checkpoint and compaction pauses show here.
    pub ack_ms: std::sync::Mutex<Vec<u32>>,
}

impl Counters {
    /// Takes the produced-to-acknowledged times so far (ms), sorted.
    pub fn take_ack_ms(&self) -> Vec<f64> {
        let mut v: Vec<f64> = std::mem::take(&mut *self.ack_ms.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .map(f64::from)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// One agent's own figures.
#[derive(Debug, Default)]
pub struct AgentCounters {
    pub produced: AtomicU64,
    pub acked: AtomicU64,
    /// Batches waiting for an ack.
    pub pending: AtomicU64,
}

/// A running fleet; dropping it stops every agent.
pub struct Fleet {
    runtime: Option<tokio::runtime::Runtime>,
    pub counters: Arc<Counters>,
    /// Per agent: id, incarnation, its counters.
    pub agents: Vec<(String, u64, Arc<AgentCounters>)>,
    sampling: Arc<AtomicBool>,
    /// Agents that have seen sampling stop: none of them produces another batch.
    sampling_stopped: Arc<AtomicUsize>,
    interval: Duration,
    stop: Arc<Notify>,
    kicks: Vec<Arc<Notify>>,
}

impl Fleet {
    /// Starts every agent, each dialling `addr` (server name `localhost`), on a runtime of its own
    /// with `threads` workers.
    pub fn start(addr: SocketAddr, enrolled: Vec<Enrolled>, config: &FleetConfig, threads: usize) -> Fleet {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .thread_name("loadgen")
            .build()
            .expect("loadgen runtime");
        let counters = Arc::new(Counters::default());
        let sampling = Arc::new(AtomicBool::new(true));
        let sampling_stopped = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(Notify::new());
        let n = enrolled.len().max(1);
        let mut agents = Vec::new();
        let mut kicks = Vec::new();
        // A few client endpoints, as a few hundred hosts behind a few NATs would look.
        let endpoints: Vec<quinn::Endpoint> = runtime.block_on(async {
            (0..n.div_ceil(100))
                .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint"))
                .collect()
        });
        let epoch =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
        for (i, agent) in enrolled.into_iter().enumerate() {
            let incarnation = epoch + i as u64;
            let mine = Arc::new(AgentCounters::default());
            let kick = Arc::new(Notify::new());
            agents.push((agent.id.clone(), incarnation, mine.clone()));
            kicks.push(kick.clone());
            let sim = Sim {
                agent,
                incarnation,
                addr,
                endpoint: endpoints[i % endpoints.len()].clone(),
                host: Host::new(config.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                probes: config.probes,
                interval: config.interval,
                phase: config.interval.mul_f64(i as f64 / n as f64),
                counters: counters.clone(),
                mine,
                sampling: sampling.clone(),
                sampling_stopped: sampling_stopped.clone(),
                stop: stop.clone(),
                kick,
                rng: Rng::new(config.seed.wrapping_add(i as u64)),
            };
            runtime.spawn(sim.run());
        }
        Fleet {
            runtime: Some(runtime),
            counters,
            agents,
            sampling,
            sampling_stopped,
            interval: config.interval,
            stop,
            kicks,
        }
    }

    /// Drops the connections of every `nth` agent (1: all); each reconnects as an agent would.
    pub fn disconnect_every(&self, nth: usize) {
        for kick in self.kicks.iter().step_by(nth.max(1)) {
            kick.notify_one();
        }
    }

    /// Stops sampling and returns once every agent has seen it: no batch is produced from then
    /// on (so what was produced is final), while pending ones are still sent.
    pub fn stop_sampling(&self) {
        self.sampling.store(false, SeqCst);
        let agents = self.agents.len();
        crate::wait_for("every simulated agent stopped sampling", self.interval * 10 + Duration::from_secs(10), || {
            (self.sampling_stopped.load(SeqCst) == agents).then_some(())
        });
    }

    /// Batches produced and not yet acknowledged, over the fleet.
    pub fn pending(&self) -> u64 {
        self.agents.iter().map(|(_, _, c)| c.pending.load(Relaxed)).sum()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.notify_waiters();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// One simulated agent.
struct Sim {
    agent: Enrolled,
    incarnation: u64,
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    host: Host,
    probes: usize,
    interval: Duration,
    phase: Duration,
    counters: Arc<Counters>,
    mine: Arc<AgentCounters>,
    sampling: Arc<AtomicBool>,
    sampling_stopped: Arc<AtomicUsize>,
    stop: Arc<Notify>,
    kick: Arc<Notify>,
    rng: Rng,
}

/// A connection past its `Welcome`.
struct Session {
    conn: quinn::Connection,
    recv: quinn::RecvStream,
    /// Frames for the writer task, which owns the send stream: sampling never waits on it.
    tx: mpsc::UnboundedSender<Arc<[u8]>>,
    reader: MessageReader,
}

impl Sim {
    async fn run(mut self) {
        let mut encoder = DeltaEncoder::new(KEYFRAME_EVERY);
        let mut frames = FrameEncoder::new();
        // Unacknowledged batches by sequence number, as the agent's buffer holds them.
        let mut pending: BTreeMap<u64, (Instant, Arc<[u8]>)> = BTreeMap::new();
        let mut seq = 0u64;
        let mut ticks = tokio::time::interval_at(Instant::now() + self.phase, self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut session: Option<Session> = None;
        let mut heard = Instant::now();
        let mut failures = 0u32;
        let mut dial_at = Instant::now() + self.phase;
        let mut stopped_seen = false;
        let stop = self.stop.clone();
        let stopped = stop.notified();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                // Ticks go on after sampling stops, so each agent sees the stop within an
                // interval and says so; a guard on the branch would leave one mid-tick unseen.
                _ = ticks.tick(), if !stopped_seen => {
                    if !self.sampling.load(SeqCst) {
                        stopped_seen = true;
                        self.sampling_stopped.fetch_add(1, SeqCst);
                        continue;
                    }
                    seq += 1;
                    let sample = self.sample(seq);
                    self.counters.values.fetch_add(sample.metrics.len() as u64, Relaxed);
                    let tick = encoder.encode(&sample);
                    let batch = Batch { incarnation: self.incarnation, seq, ticks: vec![tick] };
                    let frame: Arc<[u8]> = match Message::Batch(batch).to_frame(&mut frames) {
                        Ok(f) => f.to_vec().into(),
                        Err(e) => panic!("framing a batch: {e}"),
                    };
                    self.counters.produced.fetch_add(1, Relaxed);
                    self.mine.produced.fetch_add(1, Relaxed);
                    self.mine.pending.fetch_add(1, Relaxed);
                    if let Some(s) = &session {
                        self.send(s, &frame, false);
                    }
                    pending.insert(seq, (Instant::now(), frame));
                    if session.is_some() && pending.len() > 1 && heard.elapsed() > SILENCE {
                        if let Some(s) = session.take() {
                            s.conn.close(0u32.into(), b"silent");
                            self.counters.connected.fetch_sub(1, Relaxed);
                            self.counters.lost.fetch_add(1, Relaxed);
                            self.counters.silent.fetch_add(1, Relaxed);
                        }
                        dial_at = Instant::now();
                    }
                }
                _ = self.kick.notified(), if session.is_some() => {
                    if let Some(s) = session.take() {
                        s.conn.close(0u32.into(), b"dropped by the load generator");
                        self.counters.connected.fetch_sub(1, Relaxed);
                        self.counters.lost.fetch_add(1, Relaxed);
                    }
                    dial_at = Instant::now() + self.backoff(0);
                }
                read = async { session.as_mut().expect("guarded").recv.read_chunk(64 * 1024, true).await }, if session.is_some() => {
                    let s = session.as_mut().expect("guarded");
                    let ok = match read {
                        Ok(Some(chunk)) => {
                            heard = Instant::now();
                            s.reader.push(&chunk.bytes);
                            self.answers(s, &mut pending, &mut encoder)
                        }
                        _ => false,
                    };
                    if !ok {
                        session = None;
                        self.counters.connected.fetch_sub(1, Relaxed);
                        self.counters.lost.fetch_add(1, Relaxed);
                        dial_at = Instant::now() + self.backoff(0);
                    }
                }
                _ = tokio::time::sleep_until(dial_at), if session.is_none() => {
                    match tokio::time::timeout(CONNECT_TIMEOUT, self.dial()).await {
                        Ok(Ok((mut s, stored_through))) => {
                            failures = 0;
                            heard = Instant::now();
                            self.counters.connects.fetch_add(1, Relaxed);
                            self.counters.connected.fetch_add(1, Relaxed);
                            self.acked(&mut pending, 1, stored_through);
                            for (_, frame) in pending.values() {
                                self.send(&s, frame, true);
                            }
                            // Answers that came with the welcome.
                            if self.answers(&mut s, &mut pending, &mut encoder) {
                                session = Some(s);
                            } else {
                                self.counters.connected.fetch_sub(1, Relaxed);
                                dial_at = Instant::now() + self.backoff(0);
                            }
                        }
                        Ok(Err(busy)) => {
                            self.counters.failed.fetch_add(1, Relaxed);
                            if busy {
                                self.counters.refused_busy.fetch_add(1, Relaxed);
                            }
                            failures += 1;
                            dial_at = Instant::now() + self.backoff(failures);
                        }
                        Err(_) => {
                            self.counters.failed.fetch_add(1, Relaxed);
                            failures += 1;
                            dial_at = Instant::now() + self.backoff(failures);
                        }
                    }
                }
            }
        }
    }

    /// The host's sample at tick `seq`, with the probe results current then.
    fn sample(&mut self, seq: u64) -> Sample {
        let now = twinwatch_common::time::now_ms();
        let mut sample = self.host.sample(now);
        let result = seq / PROBE_EVERY;
        for p in 0..self.probes {
            let key = |name: &str| SeriesKey::new(name).with(names::ENDPOINT, format!("load-http-{p}"));
            let ok = (result + p as u64) % 97 != 0;
            let started = now - (seq % PROBE_EVERY) as i64 * self.interval.as_millis() as i64;
            let phase = |i: u64| Value::Float(((result * 31 + p as u64 * 7 + i) % 50) as f64 / 1000.0);
            let gauge = |name: &str, v: Value| Metric::gauge(key(name), v);
            sample.metrics.push(gauge(names::SUCCESS, Value::Int(ok as i64)));
            sample.metrics.push(gauge(names::DURATION, phase(5)));
            sample.metrics.push(Metric::gauge(key(names::TIMESTAMP), Value::Int(started)).scaled(1e-3));
            sample.metrics.push(Metric::counter(key(names::RUNS), Value::Int(result as i64)));
            sample.metrics.push(gauge(names::HTTP_STATUS, Value::Int(if ok { 200 } else { 503 })));
            for (i, phase_name) in names::PHASES.iter().enumerate() {
                sample
                    .metrics
                    .push(Metric::gauge(key(names::HTTP_DURATION).with("phase", *phase_name), phase(i as u64)));
            }
        }
        sample
    }

    fn send(&self, s: &Session, frame: &Arc<[u8]>, resend: bool) {
        if s.tx.send(frame.clone()).is_ok() {
            self.counters.sent.fetch_add(1, Relaxed);
            self.counters.bytes.fetch_add(frame.len() as u64, Relaxed);
            if resend {
                self.counters.resent.fetch_add(1, Relaxed);
            }
        }
    }

    /// Takes every whole message the session has read; false if the session must end.
    fn answers(
        &self,
        s: &mut Session,
        pending: &mut BTreeMap<u64, (Instant, Arc<[u8]>)>,
        encoder: &mut DeltaEncoder,
    ) -> bool {
        loop {
            match s.reader.next_message() {
                Ok(Some(Message::Ack(ack))) if ack.incarnation == self.incarnation => {
                    self.acked(pending, ack.first_seq, ack.last_seq);
                }
                Ok(Some(Message::KeyframeRequest(_))) => {
                    self.counters.keyframe_requests.fetch_add(1, Relaxed);
                    encoder.request_keyframe();
                }
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    fn acked(&self, pending: &mut BTreeMap<u64, (Instant, Arc<[u8]>)>, first: u64, last: u64) {
        if first > last {
            return;
        }
        let seqs: Vec<u64> = pending.range(first..=last).map(|(s, _)| *s).collect();
        let mut times = Vec::with_capacity(seqs.len());
        for s in &seqs {
            if let Some((born, _)) = pending.remove(s) {
                times.push(born.elapsed().as_millis().min(u32::MAX as u128) as u32);
            }
        }
        self.counters.ack_ms.lock().unwrap_or_else(|e| e.into_inner()).extend(times);
        let n = seqs.len() as u64;
        self.counters.acked.fetch_add(n, Relaxed);
        self.mine.acked.fetch_add(n, Relaxed);
        self.mine.pending.fetch_sub(n, Relaxed);
    }

    /// 200 ms doubling to 5 s, each between half and one and a half times that.
    fn backoff(&mut self, failures: u32) -> Duration {
        let base = Duration::from_millis(200).saturating_mul(1 << failures.min(5)).min(Duration::from_secs(5));
        base.mul_f64(0.5 + self.rng.unit())
    }

    /// Connects, says hello and waits for the welcome; `Err(true)` when refused as busy.
    async fn dial(&self) -> Result<(Session, u64), bool> {
        let busy = |e: &quinn::ConnectionError| matches!(e, quinn::ConnectionError::ConnectionClosed(c) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED);
        let connecting =
            self.endpoint.connect_with(self.agent.client.clone(), self.addr, "localhost").map_err(|_| false)?;
        let conn = connecting.await.map_err(|e| busy(&e))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| busy(&e))?;
        let hello = Hello {
            agent_version: "loadgen".into(),
            incarnation: self.incarnation,
            agent_time_ms: twinwatch_common::time::now_ms(),
            interval_ms: self.interval.as_millis() as u32,
            host: HostInfo {
                hostname: self.agent.id.clone(),
                kernel: "6.1.0".into(),
                os: "Debian GNU/Linux 12".into(),
                arch: "x86_64".into(),
                cpu_count: 8,
                cpu_model: "load generator".into(),
                machine_id: format!("{:032x}", self.incarnation),
                boot_id: format!("{:032x}", self.incarnation ^ 1),
            },
        };
        let frame = Message::Hello(hello).to_frame(&mut FrameEncoder::new()).map_err(|_| false)?.to_vec();
        send.write_all(&frame).await.map_err(|_| false)?;
        let mut reader = MessageReader::new();
        let welcome = loop {
            match reader.next_message() {
                Ok(Some(Message::Welcome(w))) => break w,
                Ok(Some(_)) | Err(_) => return Err(false),
                Ok(None) => {}
            }
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => reader.push(&chunk.bytes),
                Ok(None) => return Err(false),
                Err(quinn::ReadError::ConnectionLost(e)) => return Err(busy(&e)),
                Err(_) => return Err(false),
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Arc<[u8]>>();
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if send.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        Ok((Session { conn, recv, tx, reader }, welcome.stored_through))
    }
}
