//! Helpers for end-to-end tests: find the real binaries, start them on loopback ports in
//! temporary directories, talk HTTP to the API, and clean up every process on drop.
//!
//! Every wait is a bounded poll that fails the test with what it last saw.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod backlog;
pub mod bench;
pub mod dist;
pub mod http;
pub mod loadgen;
pub mod netns;
pub mod prometheus;
pub mod prometheus_server;
pub mod readers;
pub mod relay;
pub mod synthetic;
pub mod victoria;
pub mod web;

/// The directory holding this build's binaries (`target/<profile>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/spine-<hash>
    exe.parent().and_then(Path::parent).expect("target directory").to_owned()
}

/// Path to a workspace binary, building the binaries once if they are not there yet.
/// `TWINWATCH_TEST_BIN_DIR` names another directory to take them from, unbuilt (e.g. a build
/// with symbols, to profile the aggregator under a benchmark's load).
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("TWINWATCH_TEST_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    static BUILD: std::sync::Once = std::sync::Once::new();
    let path = target_dir().join(name);
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--bins", "-p", "twinwatch-agent", "-p", "twinwatch-aggregator"]);
        // Cargo runs tests with its own variables set (package name, manifest dir, library
        // path); passed on, some build scripts see a changed environment and rebuild everything.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let ours = name.starts_with("CARGO_") && !matches!(&*name, "CARGO_HOME" | "CARGO_TARGET_DIR");
            if ours || name == "LD_LIBRARY_PATH" || name == "OUT_DIR" {
                build.env_remove(&*name);
            }
        }
        // Benchmarks run from target/release and measure release binaries.
        if target_dir().ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("twinwatch-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback TCP port held by a socket that is bound but never listens: a connection to it is
/// refused, and no other socket can bind it while it is held, except a server that sets
/// `SO_REUSEADDR` (Go's listeners, Rust's std and tokio listeners all do), which can still listen
/// on it. For a port nobody listens on, and for one a client is told of before its server starts.
pub struct ReservedPort(tokio::net::TcpSocket);

impl ReservedPort {
    pub fn new() -> ReservedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("tcp socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind loopback");
        ReservedPort(socket)
    }

    pub fn port(&self) -> u16 {
        self.0.local_addr().expect("bound address").port()
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// `text` without terminal colour codes.
pub fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The address in the field `key` of the first log line containing `needle`: how a server
/// told to listen on port 0 says which port it got (`aggregator listening quic=... http=...`,
/// Go exporters' `msg="Listening on" address=...`, or a JSON line's `"quic":"..."`).
pub fn logged_addr(log: &str, needle: &str, key: &str) -> Option<SocketAddr> {
    let line = strip_ansi(log).lines().find(|l| l.contains(needle))?.to_owned();
    if line.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(&line).ok()?;
        return json.get(key)?.as_str()?.parse().ok();
    }
    let value = line.split_whitespace().find_map(|field| field.strip_prefix(key)?.strip_prefix('='))?;
    value.trim_matches('"').parse().ok()
}

/// A child process killed (SIGKILL) when dropped; its stderr goes to a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(exe: &Path, args: &[&str], log: PathBuf) -> Proc {
        Self::spawn_with_env(exe, args, log, &[])
    }

    /// [`Proc::spawn`] with more environment variables (`TWINWATCH_LOG` among them wins over
    /// the `info` set here).
    pub fn spawn_with_env(exe: &Path, args: &[&str], log: PathBuf, env: &[(&str, &str)]) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(exe)
            .args(args)
            .env("TWINWATCH_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        Proc { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to 10 s for a clean exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log says where the process listens (see [`logged_addr`]); fails at once,
    /// with the log, if the process exits first (a port already taken, say).
    pub fn wait_logged_addr(&mut self, needle: &str, key: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exited = self.child.try_wait().ok().flatten();
            let log = self.log_text();
            if let Some(addr) = logged_addr(&log, needle, key) {
                return addr;
            }
            if let Some(status) = exited {
                panic!("{} exited ({status}) before logging {needle:?}:\n{log}", self.log.display());
            }
            assert!(Instant::now() < deadline, "{} did not log {needle:?} in 30 s:\n{log}", self.log.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The children of `pid`, from every one of its threads.
pub fn children(pid: i32) -> Vec<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect::<Vec<_>>());
    let mut out = Vec::new();
    for task in tasks.unwrap_or_default() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out
}

/// A GET to loopback: `(status, body)`.
pub fn http_get(port: u16, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    http_get_at(SocketAddr::from(([127, 0, 0, 1], port)), path, token)
}

/// A GET to any address with [`http::request`]: `(status, body)`.
pub fn http_get_at(addr: SocketAddr, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    http::request(addr, "GET", path, token, None).map(|a| (a.status, a.body))
}

/// GET returning parsed JSON, or `None` if the request or parse failed or the status was not 200.
pub fn get_json(port: u16, path: &str, token: &str) -> Option<Value> {
    get_json_at(SocketAddr::from(([127, 0, 0, 1], port)), path, token)
}

/// [`get_json`] to any address.
pub fn get_json_at(addr: SocketAddr, path: &str, token: &str) -> Option<Value> {
    match http_get_at(addr, path, Some(token)) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An aggregator with its own data directory, certificates and read token.
pub struct Aggregator {
    pub dir: PathBuf,
    /// The address it listens on: loopback, or its namespace's.
    pub ip: IpAddr,
    /// The network namespace it runs in, if not the test's own.
    pub netns: Option<String>,
    pub quic_port: u16,
    pub http_port: u16,
    pub token: String,
    pub proc: Option<Proc>,
    starts: u32,
    /// What the tests appended to the configuration.
    extra: String,
}

impl Aggregator {
    /// Probe runs this aggregator has seen from host `host`, summed over its endpoints; `None`
    /// before the first.
    pub fn probe_runs(&self, host: &str) -> Option<f64> {
        let label = format!("host=\"{host}\"");
        let total: f64 = self
            .metrics()?
            .iter()
            .filter(|(k, _)| k.starts_with("twinwatch_probe_runs_total{") && k.contains(&label))
            .map(|(_, v)| v)
            .sum();
        (total > 0.0).then_some(total)
    }

    /// The one run of stored sequence numbers `1..=n` of host `id`'s only incarnation, with the
    /// host's ingest counters, once it reaches `at_least`.
    pub fn stored_through(&self, id: &str, at_least: u64) -> Option<(u64, serde_json::Value)> {
        let v = self.get(&format!("/api/v1/hosts/{id}/batches"))?;
        let stored = v["stored"].as_array()?;
        let runs = stored.first()?["runs"].as_array()?;
        let through = match runs.as_slice() {
            [run] if run[0].as_u64() == Some(1) => run[1].as_u64()?,
            _ => return None,
        };
        (stored.len() == 1 && through >= at_least).then(|| (through, v["counters"].clone()))
    }

    /// Prepares certificates and a token in `dir` and starts the aggregator on loopback.
    pub fn start(dir: &Path) -> Aggregator {
        Self::start_at(dir, IpAddr::from([127, 0, 0, 1]), None, "")
    }

    /// On loopback, with `extra` appended to its configuration file.
    pub fn start_with(dir: &Path, extra: &str) -> Aggregator {
        Self::start_at(dir, IpAddr::from([127, 0, 0, 1]), None, extra)
    }

    /// The same, inside a network namespace of a [`netns::Testbed`], on its address there.
    pub fn start_in(dir: &Path, ns: &netns::Ns) -> Aggregator {
        Self::start_at(dir, IpAddr::V4(ns.addr), Some(ns.name.clone()), "")
    }

    fn start_at(dir: &Path, ip: IpAddr, netns: Option<String>, extra: &str) -> Aggregator {
        std::fs::create_dir_all(dir).expect("aggregator dir");
        // Port 0 on the first start: the log says which ports it got, and they go into the
        // configuration for every restart.
        let config = dir.join("aggregator.toml");
        std::fs::write(&config, Self::config_text(dir, ip, 0, 0, extra)).expect("aggregator config");
        let exe = bin("twinwatch-aggregator");
        let cfg = config.to_str().expect("utf-8 path");
        let ok = Command::new(&exe).args(["--config", cfg, "certs", "init"]).status().expect("certs init");
        assert!(ok.success(), "certs init failed");
        let out =
            Command::new(&exe).args(["--config", cfg, "tokens", "create", "--role", "read"]).output().expect("tokens");
        assert!(out.status.success(), "tokens create failed");
        let token = String::from_utf8(out.stdout).expect("utf-8 token").trim().to_owned();
        let mut agg = Aggregator {
            dir: dir.to_owned(),
            ip,
            netns,
            quic_port: 0,
            http_port: 0,
            token,
            proc: None,
            starts: 0,
            extra: extra.to_owned(),
        };
        agg.restart();
        agg
    }

    fn config_text(dir: &Path, ip: IpAddr, quic_port: u16, http_port: u16, extra: &str) -> String {
        format!(
            "data_dir = \"{}\"\nquic_listen = \"{ip}:{quic_port}\"\nhttp_listen = \"{ip}:{http_port}\"\noffline_after = \"30s\"\n{extra}",
            dir.display()
        )
    }

    /// Starts the process with `args` and learns its ports from its log. The first start listens
    /// on port 0 and its ports are written into the configuration; a restart must come back on
    /// them, since agents are configured with the QUIC port. (Between a stop and a restart
    /// another process could take one: the aggregator then exits saying so, and this fails with
    /// its log rather than waiting.)
    fn spawn(&mut self, args: &[&str], log: PathBuf) {
        let mut proc = netns::spawn_in(self.netns.as_deref(), &bin("twinwatch-aggregator"), args, log);
        let quic = proc.wait_logged_addr("aggregator listening", "quic");
        let http = proc.wait_logged_addr("aggregator listening", "http");
        self.proc = Some(proc);
        if self.quic_port == 0 {
            (self.quic_port, self.http_port) = (quic.port(), http.port());
            let config = Self::config_text(&self.dir, self.ip, quic.port(), http.port(), &self.extra);
            std::fs::write(self.dir.join("aggregator.toml"), config).expect("aggregator config");
        }
        assert_eq!((quic, http), (self.quic_addr(), self.http_addr()), "the aggregator came back on other ports");
    }

    /// Starts (again) on the same data directory and ports, and waits until ready.
    pub fn restart(&mut self) {
        self.starts += 1;
        let config = self.dir.join("aggregator.toml");
        let log = self.dir.join(format!("aggregator-{}.log", self.starts));
        let args = ["--config", config.to_str().expect("utf-8"), "run"];
        self.spawn(&args, log);
        let addr = self.http_addr();
        wait_for("aggregator ready", Duration::from_secs(20), || {
            matches!(http_get_at(addr, "/health/ready", None), Ok((200, _))).then_some(())
        });
    }

    /// Restarts with `[http_tls]` using its own server certificate, and waits until it answers
    /// over TLS.
    pub fn restart_with_tls(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.terminate();
        }
        self.extra.push_str("[http_tls]\ncert = \"certs/server.crt\"\nkey = \"certs/server.key\"\n");
        let config = self.dir.join("aggregator.toml");
        let text = Self::config_text(&self.dir, self.ip, self.quic_port, self.http_port, &self.extra);
        std::fs::write(&config, text).expect("aggregator config");
        let args = ["--config", config.to_str().expect("utf-8"), "run"];
        self.spawn(&args, self.dir.join("aggregator-tls.log"));
        let ca = self.certs_dir().join("ca.crt");
        let addr = self.http_addr();
        wait_for("the API over TLS", Duration::from_secs(20), || {
            http::request_tls(addr, "localhost", &ca, "GET", "/health/ready", None).ok().filter(|a| a.status == 200)
        });
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.http_port)
    }

    pub fn quic_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.quic_port)
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        get_json_at(self.http_addr(), path, &self.token)
    }

    /// `/metrics`, parsed: `None` if it did not answer 200, a failed test if it is not valid
    /// exposition.
    pub fn metrics(&self) -> Option<std::collections::BTreeMap<String, f64>> {
        let (status, text) = http_get_at(self.http_addr(), "/metrics", Some(&self.token)).ok()?;
        (status == 200).then(|| prometheus::parse(&text).unwrap_or_else(|e| panic!("/metrics: {e}")))
    }

    /// One series of `/metrics`, by `name{labels}` as exposed.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()?.get(series).copied()
    }

    /// Runs `twinwatch-aggregator --config <its config> <args>` and returns what it did.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let config = self.dir.join("aggregator.toml");
        Command::new(bin("twinwatch-aggregator"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("running twinwatch-aggregator")
    }

    /// Issues an agent certificate from this aggregator's CA into `out`.
    pub fn issue(&self, agent: &str, dc: &str, out: &Path) {
        let config = self.dir.join("aggregator.toml");
        let ok = Command::new(bin("twinwatch-aggregator"))
            .args([
                "--config",
                config.to_str().expect("utf-8"),
                "certs",
                "issue",
                "--agent",
                agent,
                "--dc",
                dc,
                "--out",
            ])
            .arg(out)
            .status()
            .expect("certs issue");
        assert!(ok.success(), "certs issue failed");
    }
}

/// Writes an agent config in `dir` (certificates expected in `dir/certs`) and starts the agent.
pub fn start_agent(dir: &Path, quic_port: u16, interval: &str) -> Proc {
    std::fs::create_dir_all(dir).expect("agent dir");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "aggregator = \"127.0.0.1:{quic_port}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"{interval}\"\n[buffer]\nflush_interval = \"100ms\"\n",
            dir.display()
        ),
    )
    .expect("agent config");
    Proc::spawn(&bin("twinwatch-agent"), &["--config", config.to_str().expect("utf-8"), "run"], dir.join("agent.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_refuses_connections_and_other_binds_but_lets_its_server_listen() {
        let reserved = ReservedPort::new();
        let addr = SocketAddr::from(([127, 0, 0, 1], reserved.port()));
        let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        // std's listener sets SO_REUSEADDR, as the servers the tests start do.
        let server = std::net::TcpListener::bind(addr).expect("a server listens on the reserved port");
        assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok());
        drop(server);
    }

    #[test]
    fn addresses_are_read_from_our_log_lines_text_or_json_and_from_go_exporters() {
        let ours = "2026-01-01T00:00:00Z  \x1b[32mINFO\x1b[0m twinwatch_aggregator: aggregator listening \
                    quic=127.0.0.1:4433 http=127.0.0.1:8080 scheme=\"http\"\n";
        assert_eq!(logged_addr(ours, "aggregator listening", "http"), Some(SocketAddr::from(([127, 0, 0, 1], 8080))));
        assert_eq!(logged_addr(ours, "aggregator listening", "quic"), Some(SocketAddr::from(([127, 0, 0, 1], 4433))));
        let go = "ts=x level=info msg=\"Listening on\" address=127.0.0.1:44519\n";
        assert_eq!(logged_addr(go, "msg=\"Listening on\"", "address").map(|a| a.port()), Some(44519));
        assert_eq!(logged_addr(go, "aggregator listening", "http"), None);
        let json = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","message":"aggregator listening","quic":"127.0.0.1:4433","http":"127.0.0.1:8080"}"#;
        assert_eq!(logged_addr(json, "aggregator listening", "http"), Some(SocketAddr::from(([127, 0, 0, 1], 8080))));
    }
}
