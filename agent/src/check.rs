//! What `twinwatch-agent check` prints: the settings in force, one per line, with every value
//! that may be a secret redacted (probe and service header values, request bodies, passwords
//! and credential parameters in URLs). Key files are named, never read here.

use std::fmt::Write as _;
use std::time::Duration;

use twinwatch_common::redact;

use crate::config::Config;
use crate::probe::definition::Check;

/// The settings of `config` as `name  value` lines, secrets redacted.
pub fn report(config: &Config) -> String {
    let mut out = String::new();
    let out = &mut out;
    line(out, "aggregator", format!("{} (server name {})", redact::url(&config.aggregator), config.server_name));
    line(out, "state_dir", config.state_dir.display().to_string());
    line(
        out,
        "certificates",
        format!("ca {}, cert {}, key {}", config.ca.display(), config.cert.display(), config.key.display()),
    );
    line(out, "interval", format!("{} (a keyframe every {} ticks)", span(config.interval), config.keyframe_every));
    line(
        out,
        "buffer",
        format!(
            "max {} bytes, flush after {}, replay {}",
            config.buffer_max_bytes,
            span(config.flush_interval),
            if config.replay_rate == 0 { "unlimited".into() } else { format!("{} bytes/s", config.replay_rate) }
        ),
    );
    let collectors = &config.collectors;
    let mut sources: Vec<String> = collectors
        .intervals
        .iter()
        .map(|(name, every)| format!("{name} {}", every.map_or("off".into(), span)))
        .collect();
    sources.push(format!("top {} processes", collectors.top_processes));
    line(out, "collectors", sources.join(", "));
    line(out, "log_format", config.log_format.as_str().into());
    let probes = &config.probes;
    line(
        out,
        "probes",
        format!("{} probes, {} services, {} at once", probes.probes.len(), probes.services.len(), probes.concurrency),
    );
    for p in &probes.probes {
        let every = format!("every {}, timeout {}", span(p.interval), span(p.timeout));
        match &p.check {
            Check::Http(h) => {
                line(out, "probe", format!("{} http {} {} ({every})", p.id, h.method, redact::url(&h.url)));
                headers(out, &h.headers);
                if let Some(body) = &h.body {
                    let _ = writeln!(out, "  body: {}", redact::value(body));
                }
            }
            _ => line(out, "probe", format!("{} {} {} ({every})", p.id, p.kind(), redact::url(p.target()))),
        }
    }
    for s in &probes.services {
        let shown = format!(
            "{} {} spec {} (every {}, spec refreshed every {})",
            s.name,
            redact::url(&s.base_url),
            redact::url(&s.spec_url),
            span(s.interval),
            span(s.refresh)
        );
        line(out, "service", shown);
        headers(out, &s.headers);
    }
    std::mem::take(out)
}

fn line(out: &mut String, name: &str, value: String) {
    let _ = writeln!(out, "{name:<15}{value}");
}

/// Each header's name, with its value redacted: any header may carry a credential.
fn headers(out: &mut String, headers: &[(String, String)]) {
    for (name, value) in headers {
        let _ = writeln!(out, "  {name}: {}", redact::value(value));
    }
}

fn span(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn secrets_stay_out_and_header_names_stay_in() {
        let text = r#"
aggregator = "agg.example:4433"
[[probe]]
name = "app"
url = "https://ops:hunter2-password@app.example.com/health?api_key=k3y-secret"
method = "POST"
body = '{"password": "body-secret"}'
headers = { Authorization = "Bearer probe-token-123", Cookie = "session=cookie-secret" }

[[probe]]
name = "db"
kind = "tcp"
target = "10.0.0.5:5432"

[[service]]
name = "pets"
base_url = "https://pets.example.com"
headers = { X-Api-Key = "service-secret" }
"#;
        let config = Config::parse(Path::new("/etc/twinwatch/agent.toml"), text).unwrap();
        let report = super::report(&config);
        for secret in
            ["hunter2-password", "k3y-secret", "body-secret", "probe-token-123", "cookie-secret", "service-secret"]
        {
            assert!(!report.contains(secret), "{secret} in:\n{report}");
        }
        for shown in [
            "Authorization: <redacted, 22 bytes>",
            "Cookie: <redacted",
            "X-Api-Key: <redacted",
            "https://ops:<redacted, 16 bytes>@app.example.com/health",
            "db tcp 10.0.0.5:5432",
            "log_format     text",
        ] {
            assert!(report.contains(shown), "{shown} not in:\n{report}");
        }
    }
}
