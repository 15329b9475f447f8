//! README's first command: `twinwatch-aggregator quickstart` brings up an aggregator and an agent
//! for this machine, writes the two tokens, and the host answers in the API within seconds; the
//! read token reads, and cannot administer.

use std::time::Duration;

use twinwatch_tests::{bin, get_json, http_get, wait_for, Proc, TempDir};

#[test]
fn the_quickstart_shows_this_host() {
    let tmp = TempDir::new("quickstart");
    let data = tmp.path().join("data");
    let mut quickstart = Proc::spawn(
        &bin("twinwatch-aggregator"),
        &["quickstart", "--data-dir", data.to_str().unwrap(), "--http-port", "0", "--quic-port", "0"],
        tmp.path().join("quickstart.log"),
    );
    let http = quickstart.wait_logged_addr("aggregator listening", "http").port();
    let token = wait_for("the read token", Duration::from_secs(30), || {
        std::fs::read_to_string(data.join("read-token")).ok().filter(|t| !t.trim().is_empty())
    });
    let token = token.trim();
    let hosts = wait_for("this host in the API", Duration::from_secs(30), || {
        get_json(http, "/api/v1/hosts", token).filter(|h| h.as_array().is_some_and(|a| !a.is_empty()))
    });
    let host = &hosts[0];
    assert_eq!(host["dc"], "local", "{hosts}");
    let id = host["id"].as_str().unwrap().to_owned();
    let detail = wait_for("its twin", Duration::from_secs(30), || {
        get_json(http, &format!("/api/v1/hosts/{id}"), token).filter(|h| h["memory"].is_object())
    });
    assert!(detail["cpu"].is_object(), "{detail}");
    assert_eq!(http_get(http, "/api/v1/tokens", Some(token)).unwrap().0, 403, "a read token cannot administer");
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap();
    assert_eq!(http_get(http, "/api/v1/tokens", Some(admin.trim())).unwrap().0, 200);
    // Ctrl-C (SIGTERM here) stops both.
    let status = quickstart.terminate().expect("the quickstart stops on SIGTERM");
    assert!(status.success(), "{status:?}: {}", quickstart.log_text());
}
