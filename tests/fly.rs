//! The Fly.io build context as `cargo xtask dist` lays it out: its files agree with each other
//! (ports, the volume, the UDP bind address Fly requires), and its entrypoint, run with the
//! static binaries beside it, creates the CA on a fresh volume, starts the aggregator, and the
//! aggregator's `[local_agent]` reports as the DC3 vantage, probing a local website; killed, the
//! local agent is started again; a second boot keeps the CA.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use twinwatch_tests::dist::{self, run_ok};
use twinwatch_tests::web::Web;
use twinwatch_tests::{children, get_json, http_get, wait_for, Proc, TempDir};

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn port_of(listen: &str) -> i64 {
    listen.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {listen}"))
}

#[test]
fn the_fly_files_agree_with_each_other() {
    let fly = dist::dir().join("fly");
    let app = read_toml(&fly.join("fly.toml"));
    let agg = read_toml(&fly.join("aggregator.toml"));

    // QUIC: a UDP service on the same port inside and out, bound to fly-global-services.
    let udp = app["services"].as_array().unwrap().iter().find(|s| s["protocol"].as_str() == Some("udp")).expect("udp");
    let quic_listen = agg["quic_listen"].as_str().unwrap();
    assert!(quic_listen.starts_with("fly-global-services:"), "{quic_listen}");
    assert_eq!(udp["internal_port"].as_integer(), Some(port_of(quic_listen)));
    assert_eq!(udp["ports"][0]["port"].as_integer(), Some(port_of(quic_listen)), "UDP keeps its port through Fly");
    // The API: the HTTP service's port is the aggregator's.
    let http = &app["http_service"];
    assert_eq!(http["internal_port"].as_integer(), Some(port_of(agg["http_listen"].as_str().unwrap())));
    assert_eq!(http["checks"][0]["path"].as_str(), Some("/health/ready"));
    // Never stopped, one machine, the store on the volume.
    for service in [http, udp] {
        assert_eq!(service["auto_stop_machines"].as_str(), Some("off"), "{service}");
        assert_eq!(service["min_machines_running"].as_integer(), Some(1), "{service}");
    }
    assert_eq!(app["mounts"]["destination"].as_str(), agg["data_dir"].as_str(), "the data directory is the volume");
    assert_eq!(agg["local_agent"]["dc"].as_str(), Some("dc3"));

    // The Dockerfile copies files that are in the context.
    let dockerfile = std::fs::read_to_string(fly.join("Dockerfile")).unwrap();
    let copies: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("COPY ")).collect();
    assert_eq!(copies.len(), 2, "{dockerfile}");
    for line in copies {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(fly.join(source).exists(), "the Dockerfile copies {source}, which is not in the context");
        }
    }
}

#[test]
fn the_fly_entrypoint_creates_its_ca_and_runs_the_dc3_vantage() {
    let tmp = TempDir::new("fly");
    let fly = tmp.path().join("context");
    run_ok(std::process::Command::new("cp").arg("-r").arg(dist::dir().join("fly")).arg(&fly));
    let web = Web::start(&tmp.path().join("web"));

    // The shipped configuration, on loopback ports of its own choosing and a scratch volume.
    let data = tmp.path().join("volume");
    let shipped = std::fs::read_to_string(fly.join("aggregator.toml")).unwrap();
    let config = shipped
        .replace("data_dir = \"/data\"", &format!("data_dir = \"{}\"", data.display()))
        .replace("\"fly-global-services:4433\"", "\"127.0.0.1:0\"")
        .replace("\"0.0.0.0:8080\"", "\"127.0.0.1:0\"");
    assert_ne!(config, shipped);
    std::fs::write(fly.join("test.toml"), &config).unwrap();
    let agent = std::fs::read_to_string(fly.join("agent.toml")).unwrap();
    let probe = format!(
        "\n[probes]\ninterval = \"1s\"\n[[probe]]\nname = \"web.health\"\nurl = \"http://127.0.0.1:{}/health\"\n",
        web.http_port
    );
    std::fs::write(fly.join("agent.toml"), agent.replace("interval = \"5s\"", "interval = \"1s\"") + &probe).unwrap();

    let boot = || {
        let entrypoint = fly.join("entrypoint.sh");
        let mut cmd = std::process::Command::new("sh");
        cmd.arg(&entrypoint)
            .env("TWINWATCH_CONFIG", fly.join("test.toml"))
            .env("FLY_APP_NAME", "twinwatch-test")
            .env("TWINWATCH_LOG", "info")
            .stderr(std::fs::File::create(tmp.path().join("boot.log")).unwrap());
        let child = cmd.spawn().expect("entrypoint");
        let mut proc = Proc { child, log: tmp.path().join("boot.log") };
        let http = proc.wait_logged_addr("aggregator listening", "http").port();
        wait_for("the aggregator ready", Duration::from_secs(30), || {
            matches!(http_get(http, "/health/ready", None), Ok((200, _))).then_some(())
        });
        (proc, http)
    };
    let (mut aggregator, http) = boot();

    // First boot: a CA and a server certificate for the app's name.
    let server = std::fs::read(data.join("certs/server.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&server).expect("PEM");
    let cert = pem.parse_x509().expect("server certificate");
    let names: Vec<String> = cert
        .subject_alternative_name()
        .expect("SAN")
        .map(|san| san.value.general_names.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    assert!(names.iter().any(|n| n.contains("twinwatch-test.fly.dev")), "{names:?}");
    let ca = std::fs::read(data.join("certs/ca.crt")).unwrap();

    let cli = fly.join("twinwatch-aggregator");
    let token =
        run_ok(std::process::Command::new(&cli).arg("--config").arg(fly.join("test.toml")).args(["tokens", "create"]))
            .0;
    let token = token.trim();

    // The local agent is the DC3 vantage: its host, and its view of the endpoint.
    let host = wait_for("the local agent's host", Duration::from_secs(30), || {
        get_json(http, "/api/v1/hosts/fly", token).filter(|h| h["memory"].is_object())
    });
    assert_eq!(host["dc"], "dc3");
    let vantage = wait_for("the endpoint seen from dc3", Duration::from_secs(30), || {
        let detail: Value = get_json(http, "/api/v1/endpoints/web.health", token)?;
        let v = detail["vantages"].as_array()?.iter().find(|v| v["dc"] == "dc3")?.clone();
        (v["status"] == "up").then_some(v)
    });
    assert_eq!(vantage["host"], "fly", "{vantage}");
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"certs.issue\"") && l.contains("\"fly\"") && l.contains("\"aggregator\"")),
        "{audit}"
    );

    // A local agent that dies is started again.
    let first = children(aggregator.pid());
    assert_eq!(first.len(), 1, "one local agent: {first:?}");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(first[0]), nix::sys::signal::Signal::SIGKILL);
    let second = wait_for("the local agent restarted", Duration::from_secs(10), || {
        let now = children(aggregator.pid());
        (now.len() == 1 && now != first).then_some(now)
    });
    assert_ne!(second, first);

    // A clean stop takes the local agent with it; a second boot keeps the CA.
    aggregator.terminate().expect("the aggregator stops on SIGTERM");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(second[0]), None).is_err(),
        "the local agent outlived it"
    );
    let (mut aggregator, _) = boot();
    assert_eq!(std::fs::read(data.join("certs/ca.crt")).unwrap(), ca, "the second boot replaced the CA");
    aggregator.terminate();
}
