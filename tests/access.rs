//! Access control with the real binaries on loopback: tokens and roles, the audit log, agent
//! revocation, the API over TLS, and the `status` tree.

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::json;
use twinwatch_tests::http::{request, request_tls, Answer};
use twinwatch_tests::web::Web;
use twinwatch_tests::{bin, start_agent, strip_ansi, wait_for, Aggregator, Proc, ReservedPort, TempDir};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a CLI command that must succeed and returns its stdout.
fn cli_ok(agg: &Aggregator, args: &[&str]) -> String {
    let out = agg.cli(args);
    assert!(out.status.success(), "{args:?} failed:\n{}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

fn admin_token(agg: &Aggregator, name: &str) -> String {
    cli_ok(agg, &["tokens", "create", "--role", "admin", "--name", name]).trim().to_owned()
}

fn api(agg: &Aggregator, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    request(agg.http_addr(), method, path, token, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The unix user the CLI runs as, as the audit log names it (`uid<N>` when it has no name).
fn cli_user() -> String {
    let uid = nix::unistd::getuid().to_string();
    let name = std::fs::read_to_string("/etc/passwd").unwrap_or_default().lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2) == Some(&uid.as_str())).then(|| f[0].to_owned())
    });
    format!("cli:{}", name.unwrap_or_else(|| format!("uid{uid}")))
}

#[test]
fn tokens_roles_and_the_audit_log() {
    let tmp = TempDir::new("access-roles");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let admin = admin_token(&agg, "ops");

    // No token, an unknown token: 401 with a Bearer challenge, on read and admin routes alike.
    for path in ["/api/v1/hosts", "/api/v1/tokens", "/api/v1/audit"] {
        for token in [None, Some("tw_0000")] {
            let a = api(&agg, "GET", path, token, None);
            assert_eq!(a.status, 401, "{path} {token:?}: {}", a.body);
            assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{path}");
            assert_eq!(a.json()["error"], "unauthorized");
        }
    }
    // A read token reads, and is refused (403) on every admin route.
    assert_eq!(api(&agg, "GET", "/api/v1/hosts", Some(&agg.token), None).status, 200);
    let first_denied = Instant::now();
    for (method, path) in [
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/tokens"),
        ("DELETE", "/api/v1/tokens/ops"),
        ("POST", "/api/v1/agents/box-1/revoke"),
        ("GET", "/api/v1/revocations"),
        ("GET", "/api/v1/audit"),
    ] {
        let a = api(&agg, method, path, Some(&agg.token), Some(r#"{"role":"admin","name":"mine"}"#));
        assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
        assert_eq!(a.json()["error"], "forbidden");
    }
    assert_eq!(api(&agg, "GET", "/api/v1/tokens", Some(&agg.token), None).status, 403, "nothing was created");

    // An admin token makes a token, which works at once, is listed without its secret, and
    // stops working once revoked.
    let made = api(&agg, "POST", "/api/v1/tokens", Some(&admin), Some(r#"{"role":"read","name":"grafana"}"#));
    assert_eq!(made.status, 201, "{}", made.body);
    let secret = made.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(made.json()["name"], "grafana");
    assert_eq!(api(&agg, "GET", "/api/v1/hosts", Some(&secret), None).status, 200);
    let again = api(&agg, "POST", "/api/v1/tokens", Some(&admin), Some(r#"{"role":"read","name":"grafana"}"#));
    assert_eq!(again.status, 409, "{}", again.body);
    let list = api(&agg, "GET", "/api/v1/tokens", Some(&admin), None);
    assert_eq!(list.status, 200);
    let listed = list.json();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"ops") && names.contains(&"grafana"), "{names:?}");
    assert!(!list.body.contains("tw_"), "secrets listed: {}", list.body);
    assert_eq!(api(&agg, "DELETE", "/api/v1/tokens/grafana", Some(&admin), None).status, 200);
    let revoked = api(&agg, "GET", "/api/v1/hosts", Some(&secret), None);
    assert_eq!((revoked.status, revoked.json()["error"].as_str()), (401, Some("unauthorized")));
    assert_eq!(api(&agg, "DELETE", "/api/v1/tokens/grafana", Some(&admin), None).status, 404);

    // The audit log, newest first: who, what, target, outcome, when, from where.
    let audit = api(&agg, "GET", "/api/v1/audit?limit=5", Some(&admin), None);
    assert_eq!(audit.status, 200, "{}", audit.body);
    let records = audit.json();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 5);
    let seen: Vec<(&str, &str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["who"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                r["target"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ops", "token.revoke", "grafana", "failed"),
            ("ops", "token.revoke", "grafana", "ok"),
            ("ops", "token.create", "grafana", "failed"),
            ("ops", "token.create", "grafana", "ok"),
            (agg.token_name().as_str(), "GET /api/v1/tokens", "", "denied"),
        ]
    );
    for r in records {
        let t = twinwatch_common::time::parse_rfc3339(r["time"].as_str().unwrap()).unwrap();
        let age = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - t;
        assert!((0..60_000).contains(&age), "{r}");
        let from: SocketAddr = r["from"].as_str().unwrap().parse().unwrap();
        assert!(from.ip().is_loopback(), "{r}");
    }
    assert_eq!(records[0]["detail"], "no token named \"grafana\"");
    // Refused attempts by one token are recorded once per ten seconds, not once per request.
    let all = api(&agg, "GET", "/api/v1/audit?limit=1000", Some(&admin), None).json();
    let denied = all.as_array().unwrap().iter().filter(|r| r["outcome"] == "denied").count();
    if first_denied.elapsed() < Duration::from_secs(10) {
        assert_eq!(denied, 1, "refused attempts within 10 s are recorded once");
    }
    // The CLI's own actions are there too, oldest last.
    let oldest = &all.as_array().unwrap().last().unwrap();
    assert_eq!(
        (&oldest["who"], &oldest["action"], &oldest["from"]),
        (&json!(cli_user()), &json!("certs.init"), &json!("local"))
    );
    assert_eq!(api(&agg, "GET", "/api/v1/audit?limit=0", Some(&admin), None).status, 400);
    assert_eq!(agg.metric("twinwatch_aggregator_api_denied_total{status=\"403\"}"), Some(7.0));
    assert_eq!(agg.metric("twinwatch_aggregator_api_denied_total{status=\"401\"}"), Some(7.0));
}

trait TokenName {
    fn token_name(&self) -> String;
}

impl TokenName for Aggregator {
    /// The name `tokens create` gave the helper's read token (made without `--name`).
    fn token_name(&self) -> String {
        let listed = cli_ok(self, &["tokens", "list"]);
        listed.lines().find(|l| l.starts_with("read-")).and_then(|l| l.split_whitespace().next()).unwrap().to_owned()
    }
}

#[test]
fn tokens_cli_on_a_data_dir() {
    let tmp = TempDir::new("access-cli");
    let dir = tmp.path();
    let config = dir.join("aggregator.toml");
    std::fs::write(&config, format!("data_dir = \"{}\"\n", dir.join("data").display())).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin("twinwatch-aggregator"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let made = run(&["tokens", "create", "--role", "admin", "--name", "ci"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let secret = stdout(&made).trim().to_owned();
    assert!(secret.starts_with("tw_") && !secret.contains(char::is_whitespace), "{secret:?}");
    assert!(stderr(&made).contains("admin token \"ci\" created"), "{}", stderr(&made));
    let read = stdout(&run(&["tokens", "create", "--role", "read", "--name", "grafana"])).trim().to_owned();
    let dup = run(&["tokens", "create", "--name", "ci"]);
    assert!(!dup.status.success() && stderr(&dup).contains("a token named \"ci\" exists already"), "{}", stderr(&dup));

    let list = stdout(&run(&["tokens", "list"]));
    let rows: Vec<Vec<&str>> = list.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "ROLE", "CREATED"]);
    assert_eq!((rows[1][0], rows[1][1], rows[2][0], rows[2][1]), ("ci", "admin", "grafana", "read"));
    assert!(twinwatch_common::time::parse_rfc3339(rows[1][2]).is_some(), "{list}");
    let file = std::fs::read_to_string(dir.join("data/tokens")).unwrap();
    for s in [&secret, &read] {
        assert!(!list.contains(s.as_str()) && !file.contains(s.as_str()), "a secret is stored or listed");
    }

    let revoked = run(&["tokens", "revoke", "grafana"]);
    assert!(
        revoked.status.success() && stdout(&revoked).contains("\"grafana\" (read) revoked"),
        "{}",
        stderr(&revoked)
    );
    assert!(!stdout(&run(&["tokens", "list"])).contains("grafana"));
    let missing = run(&["tokens", "revoke", "grafana"]);
    assert!(!missing.status.success() && stderr(&missing).contains("no token named \"grafana\""));

    // Every change, and the failures, in the audit log, newest first.
    let audit = stdout(&run(&["audit"]));
    let lines: Vec<&str> = audit.lines().collect();
    let who = cli_user();
    let expect = [
        ("token.revoke grafana", "failed"),
        ("token.revoke grafana", "ok"),
        ("token.create ci", "failed"),
        ("token.create grafana", "ok"),
        ("token.create ci", "ok"),
    ];
    assert_eq!(lines.len(), expect.len(), "{audit}");
    for (line, (what, outcome)) in lines.iter().zip(expect) {
        assert!(line.contains(&format!("  {who}  local  {what}  {outcome}")), "{line:?} is not {what} {outcome}");
    }
}

fn last_seen(agg: &Aggregator, id: &str) -> Option<String> {
    agg.get(&format!("/api/v1/hosts/{id}"))?["last_seen"].as_str().map(str::to_owned)
}

/// Waits until `id`'s last_seen moves past `after`.
fn wait_seen_after(agg: &Aggregator, id: &str, after: &str, within: Duration) -> String {
    wait_for(&format!("{id} to send again"), within, || last_seen(agg, id).filter(|s| s.as_str() > after))
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Log lines of `proc` with `needle` about `agent`, colour codes or not.
fn log_lines(proc: &Proc, needle: &str, agent: &str) -> usize {
    strip_ansi(&proc.log_text()).lines().filter(|l| l.contains(needle) && l.contains(&format!("agent={agent}"))).count()
}

#[test]
fn a_revoked_agent_is_disconnected_and_refused_while_others_go_on() {
    let tmp = TempDir::new("access-revoke");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let admin = admin_token(&agg, "ops");
    let mut agents = Vec::new();
    for id in ["box-1", "box-2", "box-3"] {
        let dir = tmp.path().join(id);
        agg.issue(id, "dc1", &dir.join("certs"));
        agents.push(start_agent(&dir, agg.quic_port, "200ms"));
    }
    for id in ["box-1", "box-2", "box-3"] {
        wait_for(&format!("{id} online"), Duration::from_secs(20), || last_seen(&agg, id));
    }

    // Revoked with the CLI: box-1 is closed when the aggregator next reads the list (it does
    // once a second), and refused after. The bounds on how soon are not the promise but a guard
    // a loaded machine cannot trip: they tell "closed by the revocation" from "left connected
    // until the connection dies by itself" (the agents' QUIC idle timeout is 60 s). The figures
    // are printed.
    let out = cli_ok(&agg, &["certs", "revoke", "--agent", "box-1", "--reason", "laptop stolen"]);
    assert!(out.contains("revoked: certificates of agent box-1 issued at or before"), "{out}");
    let revoked_second = unix_seconds();
    let log = agg.proc.as_ref().unwrap();
    let revoked_at = Instant::now();
    wait_for("box-1 disconnected", Duration::from_secs(20), || {
        (log_lines(log, "certificate revoked: disconnecting the agent", "box-1") == 1).then_some(())
    });
    println!("revoked with the CLI: disconnected {:?} after", revoked_at.elapsed());
    wait_for("box-1 refused when it reconnects", Duration::from_secs(10), || {
        agg.metric("twinwatch_aggregator_revoked_refused_total").filter(|n| *n >= 1.0)
    });
    // While box-2 sends three more times, box-1's host does not move.
    let frozen = last_seen(&agg, "box-1").unwrap();
    let mut box2 = last_seen(&agg, "box-2").unwrap();
    for _ in 0..3 {
        box2 = wait_seen_after(&agg, "box-2", &box2, Duration::from_secs(15));
    }
    assert_eq!(last_seen(&agg, "box-1").unwrap(), frozen, "a revoked agent's host stopped updating");
    assert!(agents[0].log_text().contains("certificate revoked by cli:"), "{}", agents[0].log_text());

    // Revoked through the API: box-2 goes at once; box-3 keeps working.
    let a = api(&agg, "POST", "/api/v1/agents/box-2/revoke", Some(&admin), Some(r#"{"reason":"decommissioned"}"#));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (&a.json()["kind"], &a.json()["target"], &a.json()["by"]),
        (&json!("agent"), &json!("box-2"), &json!("ops"))
    );
    let api_revoked_at = Instant::now();
    wait_for("box-2 disconnected", Duration::from_secs(20), || {
        (log_lines(log, "certificate revoked: disconnecting the agent", "box-2") == 1).then_some(())
    });
    println!("revoked through the API: disconnected {:?} after", api_revoked_at.elapsed());
    let box3 = last_seen(&agg, "box-3").unwrap();
    wait_seen_after(&agg, "box-3", &box3, Duration::from_secs(15));
    assert_eq!(agg.metric("twinwatch_aggregator_revoked_disconnected_total"), Some(2.0));
    let bad = api(&agg, "POST", "/api/v1/agents/no%20such/revoke", Some(&admin), None);
    assert_eq!(bad.status, 400, "{}", bad.body);

    let list = api(&agg, "GET", "/api/v1/revocations", Some(&admin), None).json();
    let list = list["revocations"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(
        (&list[0]["target"], &list[0]["by"], &list[0]["reason"]),
        (&json!("box-1"), &json!(cli_user()), &json!("laptop stolen"))
    );
    assert_eq!(
        (&list[1]["target"], &list[1]["by"], &list[1]["reason"]),
        (&json!("box-2"), &json!("ops"), &json!("decommissioned"))
    );
    let audit = api(&agg, "GET", "/api/v1/audit?limit=2", Some(&admin), None).json();
    assert_eq!(
        (&audit[0]["action"], &audit[0]["target"], &audit[0]["outcome"]),
        (&json!("agent.revoke"), &json!("no such"), &json!("failed"))
    );
    assert_eq!((&audit[1]["action"], &audit[1]["who"]), (&json!("agent.revoke"), &json!("ops")));

    // Restarted, box-1 cannot resume its TLS session: the handshake itself refuses it.
    let dir = tmp.path().join("box-1");
    agents[0].kill9();
    agents[0] = start_agent(&dir, agg.quic_port, "200ms");
    wait_for("box-1 refused in the handshake", Duration::from_secs(10), || {
        (log_lines(log, "agent refused at the handshake: certificate revoked", "box-1") >= 1).then_some(())
    });

    // A certificate issued to box-1 after its revocation works: the operator's way to replace
    // a leaked key. (Revocation covers certificates issued up to its second, so the new one is
    // issued in a later second.)
    wait_for("a second after the revocation's", Duration::from_secs(5), || {
        (unix_seconds() > revoked_second).then_some(())
    });
    agents[0].kill9();
    agg.issue("box-1", "dc1", &dir.join("certs"));
    agents[0] = start_agent(&dir, agg.quic_port, "200ms");
    wait_seen_after(&agg, "box-1", &frozen, Duration::from_secs(15));
    let listed = cli_ok(&agg, &["certs", "revocations"]);
    assert!(listed.contains("agent box-1") && listed.contains("agent box-2"), "{listed}");
}

#[test]
fn the_api_over_tls() {
    let tmp = TempDir::new("access-tls");
    let mut agg = Aggregator::start(&tmp.path().join("agg"));
    agg.restart_with_tls();
    let ca = agg.certs_dir().join("ca.crt");
    let addr = agg.http_addr();
    for name in ["localhost", "127.0.0.1"] {
        let a = request_tls(addr, name, &ca, "GET", "/api/v1/hosts", Some(&agg.token)).unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "[]"));
    }
    let a = request_tls(addr, "localhost", &ca, "GET", "/api/v1/hosts", None).unwrap();
    assert_eq!(a.status, 401);
    // A client that does not trust the certificate fails its handshake.
    let web = Web::start(&tmp.path().join("web"));
    let err = request_tls(addr, "localhost", &web.ca_file, "GET", "/health", None).unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = request(addr, "GET", "/health", None, None);
    assert!(plain.as_ref().map_or(true, |a| a.status == 0), "{plain:?}");
    // `status`, a real HTTPS client, with the CA and without it.
    let url = format!("https://localhost:{}", agg.http_port);
    let ok = agg.cli(&["status", "--url", &url, "--token", &agg.token, "--ca", ca.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).starts_with(&format!("twinwatch  {url}  ")), "{}", stdout(&ok));
    let refused = agg.cli(&["status", "--url", &url, "--token", &agg.token]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("no answer") && stderr(&refused).contains("certificate"), "{}", stderr(&refused));
    // Without --url, the local configuration says https and which CA to trust.
    let local = agg.cli(&["status", "--token", &agg.token]);
    assert!(local.status.success(), "{}", stderr(&local));
    assert!(
        stdout(&local).starts_with(&format!("twinwatch  https://127.0.0.1:{}", agg.http_port)),
        "{}",
        stdout(&local)
    );
}

#[test]
fn status_prints_the_tree() {
    let tmp = TempDir::new("access-status");
    let web = Web::start(&tmp.path().join("web"));
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let dir = tmp.path().join("agent");
    agg.issue("box-1", "dc1", &dir.join("certs"));
    let config = format!(
        "aggregator = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"200ms\"\n\
         [probes]\ninterval = \"1s\"\n[[probe]]\nname = \"web.health\"\nurl = \"https://127.0.0.1:{}/health\"\nca_file = \"{}\"\n",
        agg.quic_port,
        dir.display(),
        web.https_port,
        web.ca_file.display()
    );
    std::fs::write(dir.join("agent.toml"), config).unwrap();
    let cfg = dir.join("agent.toml");
    let _agent =
        Proc::spawn(&bin("twinwatch-agent"), &["--config", cfg.to_str().unwrap(), "run"], dir.join("agent.log"));
    wait_for("the endpoint up with a few results", Duration::from_secs(30), || {
        let e = agg.get("/api/v1/endpoints/web.health")?;
        let v = &e["vantages"][0];
        (v["status"] == "up" && v["results"].as_u64()? >= 3).then_some(())
    });
    // Trends over 2 s against the 2 s before: enough history by now.
    let url = format!("http://127.0.0.1:{}", agg.http_port);
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, format!("{}\n", agg.token)).unwrap();
    let out = agg.cli(&["status", "--url", &url, "--token-file", token_file.to_str().unwrap(), "--window", "2s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    println!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with(&format!("twinwatch  {url}  20")), "{text}");
    assert!(
        lines[1].starts_with(
            "1 DC · 1 host (1 online, 0 stale, 0 offline) · 1 endpoint (1 vantage up, 0 down) · trends: last 2s"
        ),
        "{text}"
    );
    assert_eq!(lines[2], "└─ dc1  1 of 1 host online");
    let host = lines[3];
    assert!(host.starts_with("   └─ box-1 (") && host.contains("  online  cpu ") && host.contains("  mem "), "{host}");
    assert!(host.contains("  load ") && host.ends_with("ago"), "{host}");
    let mem = host.split("  mem ").nth(1).unwrap();
    assert!(mem.contains('▲') || mem.contains('▼') || mem.contains('±'), "no memory trend: {host}");
    let endpoint = lines[4];
    assert!(endpoint.starts_with("      └─ web.health  up  p50 ") && endpoint.contains(" ms  p95 "), "{endpoint}");
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = (twinwatch_tests::web::LEAF_EXPIRY - now_s) / 86_400;
    assert!(endpoint.contains("ok 100.0%") && endpoint.contains(&format!("tls {days} d")), "{endpoint}");
    assert!(endpoint.contains("latency "), "no latency trend: {endpoint}");
    assert!(!text.contains('\x1b'), "colour only on a terminal");

    // The default token: <data_dir>/read-token; the default URL: http_listen.
    std::fs::write(agg.dir.join("read-token"), &agg.token).unwrap();
    let local = agg.cli(&["status"]);
    assert!(local.status.success() && stdout(&local).contains("web.health  up"), "{}", stderr(&local));
    // A wrong token, and nobody listening, are errors that say so.
    let wrong = agg.cli(&["status", "--url", &url, "--token", "tw_wrong"]);
    assert!(
        !wrong.status.success() && stderr(&wrong).contains("401 unauthorized: unknown token"),
        "{}",
        stderr(&wrong)
    );
    let closed = ReservedPort::new();
    let nobody = format!("http://127.0.0.1:{}", closed.port());
    let gone = agg.cli(&["status", "--url", &nobody, "--token", "x"]);
    assert!(
        !gone.status.success() && stderr(&gone).contains(&format!("{nobody}/api/v1/hosts: no answer")),
        "{}",
        stderr(&gone)
    );
}
