//! The `status` tree: DCs, their hosts, and the endpoints each host probes, with current values
//! and trends, drawn with box-drawing characters. Sans-IO: [`render`] takes what the API said
//! ([`Snapshot`]) and returns text; colour only when asked.

use std::collections::BTreeMap;

use serde_json::Value;
use twinwatch_common::redact;
use twinwatch_common::time::{parse_rfc3339, rfc3339};

/// What one trend is of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TrendKey {
    Cpu(String),
    Memory(String),
    Load(String),
    /// (vantage host, endpoint)
    Latency(String, String),
    Success(String, String),
}

/// The API's answers `status` draws from.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub url: String,
    pub now_ms: i64,
    /// The trend window as given, e.g. `24h`.
    pub window: String,
    /// `/api/v1/hosts/{id}` of every host.
    pub hosts: Vec<Value>,
    /// `/api/v1/endpoints/{id}` of every endpoint.
    pub endpoints: Vec<Value>,
    /// Percent changes over the window against the window before, where history has them.
    pub trends: BTreeMap<TrendKey, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
    Dim,
    Bold,
}

struct Cell {
    text: String,
    tone: Tone,
}

fn cell(text: impl Into<String>, tone: Tone) -> Cell {
    Cell { text: text.into(), tone }
}

fn paint(text: &str, tone: Tone, color: bool) -> String {
    let code = match tone {
        Tone::Plain => return text.to_owned(),
        _ if !color => return text.to_owned(),
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "31",
        Tone::Dim => "2",
        Tone::Bold => "1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Rows of cells with each column padded to its widest cell, two spaces apart.
fn table(rows: &[Vec<Cell>], color: bool) -> Vec<String> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            let w = c.text.chars().count();
            match widths.get_mut(i) {
                Some(x) => *x = (*x).max(w),
                None => widths.push(w),
            }
        }
    }
    rows.iter()
        .map(|row| {
            let last = row.iter().rposition(|c| !c.text.is_empty()).map_or(0, |i| i + 1);
            let mut line = String::new();
            for (i, c) in row[..last].iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(&paint(&c.text, c.tone, color));
                if i + 1 < last {
                    line.push_str(&" ".repeat(widths[i] - c.text.chars().count()));
                }
            }
            line
        })
        .collect()
}

fn status_tone(status: &str) -> Tone {
    match status {
        "online" | "up" => Tone::Good,
        "stale" | "partial" => Tone::Warn,
        "offline" | "down" => Tone::Bad,
        _ => Tone::Dim,
    }
}

/// ` ▲12.0%` or ` ▼3.1%` for a trend, empty without one.
fn trend(t: Option<&f64>) -> String {
    match t {
        Some(p) if p.abs() < 0.05 => " ±0.0%".into(),
        Some(p) if *p > 0.0 => format!(" ▲{p:.1}%"),
        Some(p) => format!(" ▼{:.1}%", p.abs()),
        None => String::new(),
    }
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn host_row(h: &Value, s: &Snapshot) -> Vec<Cell> {
    let id = h["id"].as_str().unwrap_or("?").to_owned();
    let status = h["status"].as_str().unwrap_or("unknown");
    let t = |k: TrendKey| s.trends.get(&k);
    let cpu = h["cpu"]["usage_percent"].as_f64();
    let mem = h["memory"]["used_percent"].as_f64();
    let load = h["load"]["load1"].as_f64();
    let seen = h["last_seen"].as_str().and_then(parse_rfc3339).map(|t| ago(s.now_ms - t));
    let name = match h["hostname"].as_str() {
        Some(n) if !n.is_empty() && n != id => format!("{id} ({n})"),
        _ => id.clone(),
    };
    vec![
        cell(name, Tone::Bold),
        cell(status, status_tone(status)),
        cell(
            cpu.map_or("cpu -".into(), |c| format!("cpu {c:.1}%{}", trend(t(TrendKey::Cpu(id.clone()))))),
            Tone::Plain,
        ),
        cell(
            mem.map_or("mem -".into(), |m| format!("mem {m:.1}%{}", trend(t(TrendKey::Memory(id.clone()))))),
            Tone::Plain,
        ),
        cell(
            load.map_or("load -".into(), |l| format!("load {l:.2}{}", trend(t(TrendKey::Load(id.clone()))))),
            Tone::Plain,
        ),
        cell(seen.map_or("never seen".into(), |a| format!("seen {a}")), Tone::Dim),
    ]
}

fn endpoint_row(e: &Value, v: &Value, s: &Snapshot) -> Vec<Cell> {
    let id = e["id"].as_str().unwrap_or("?").to_owned();
    let host = v["host"].as_str().unwrap_or_default().to_owned();
    let status = v["status"].as_str().unwrap_or("unknown");
    let lat = |q: &str| v["latency"][q].as_f64().map_or("-".into(), seconds);
    let ok = v["success_rate"].as_f64();
    let ok_tone = match ok {
        Some(r) if r >= 0.99 => Tone::Plain,
        Some(r) if r >= 0.9 => Tone::Warn,
        Some(_) => Tone::Bad,
        None => Tone::Dim,
    };
    let tls_days = v["tls"]["seconds_left"].as_i64().map(|s| s.div_euclid(86_400));
    let tls_tone = match tls_days {
        Some(d) if d < 7 => Tone::Bad,
        Some(d) if d < 21 => Tone::Warn,
        _ => Tone::Plain,
    };
    let latency_trend = s.trends.get(&TrendKey::Latency(host.clone(), id.clone()));
    let success_trend = s.trends.get(&TrendKey::Success(host, id.clone()));
    let mut trends = Vec::new();
    if latency_trend.is_some() {
        trends.push(format!("latency{}", trend(latency_trend)));
    }
    if success_trend.is_some() {
        trends.push(format!("ok{}", trend(success_trend)));
    }
    vec![
        cell(id, Tone::Plain),
        cell(status, status_tone(status)),
        cell(format!("p50 {}", lat("p50")), Tone::Plain),
        cell(format!("p95 {}", lat("p95")), Tone::Plain),
        cell(ok.map_or("ok -".into(), |r| format!("ok {:.1}%", 100.0 * r)), ok_tone),
        cell(tls_days.map_or(String::new(), |d| format!("tls {d} d")), tls_tone),
        cell(trends.join(" "), Tone::Dim),
    ]
}

/// The whole tree, one line each, newline-terminated.
pub fn render(s: &Snapshot, color: bool) -> String {
    let mut by_dc: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for h in &s.hosts {
        by_dc.entry(h["dc"].as_str().unwrap_or("?")).or_default().push(h);
    }
    let count = |status: &str| s.hosts.iter().filter(|h| h["status"] == status).count();
    let vantages = |status: &str| {
        s.endpoints
            .iter()
            .flat_map(|e| e["vantages"].as_array().into_iter().flatten())
            .filter(|v| v["status"] == status)
            .count()
    };
    let mut out =
        format!("{}  {}  {}\n", paint("twinwatch", Tone::Bold, color), redact::url(&s.url), rfc3339(s.now_ms));
    let n = |count: usize, one: &str| format!("{count} {one}{}", if count == 1 { "" } else { "s" });
    out.push_str(&format!(
        "{} · {} ({} online, {} stale, {} offline) · {} ({} up, {} down) · trends: last {} against the {} before\n",
        n(by_dc.len(), "DC"),
        n(s.hosts.len(), "host"),
        count("online"),
        count("stale"),
        count("offline"),
        n(s.endpoints.len(), "endpoint"),
        n(vantages("up"), "vantage"),
        vantages("down"),
        s.window,
        s.window,
    ));
    let dcs = by_dc.len();
    for (i, (dc, mut hosts)) in by_dc.into_iter().enumerate() {
        let last_dc = i + 1 == dcs;
        hosts.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        let online = hosts.iter().filter(|h| h["status"] == "online").count();
        let dc_line = format!("{dc}  {online} of {} online", n(hosts.len(), "host"));
        out.push_str(&format!("{}{}\n", if last_dc { "└─ " } else { "├─ " }, paint(&dc_line, Tone::Bold, color)));
        let dc_pad = if last_dc { "   " } else { "│  " };
        let rows: Vec<Vec<Cell>> = hosts.iter().map(|h| host_row(h, s)).collect();
        let lines = table(&rows, color);
        for (j, (h, line)) in hosts.iter().zip(lines).enumerate() {
            let last_host = j + 1 == hosts.len();
            out.push_str(&format!("{dc_pad}{}{line}\n", if last_host { "└─ " } else { "├─ " }));
            let host_pad = format!("{dc_pad}{}", if last_host { "   " } else { "│  " });
            let id = h["id"].as_str().unwrap_or_default();
            let mut probed: Vec<(&Value, &Value)> = s
                .endpoints
                .iter()
                .flat_map(|e| e["vantages"].as_array().into_iter().flatten().map(move |v| (e, v)))
                .filter(|(_, v)| v["host"] == id)
                .collect();
            probed.sort_by(|a, b| a.0["id"].as_str().cmp(&b.0["id"].as_str()));
            let rows: Vec<Vec<Cell>> = probed.iter().map(|(e, v)| endpoint_row(e, v, s)).collect();
            let n = rows.len();
            for (k, line) in table(&rows, color).into_iter().enumerate() {
                out.push_str(&format!("{host_pad}{}{line}\n", if k + 1 == n { "└─ " } else { "├─ " }));
            }
        }
    }
    if s.hosts.is_empty() {
        out.push_str("└─ no hosts yet: issue an agent certificate (certs issue) and start an agent\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn host(id: &str, dc: &str, status: &str, seen_ago_ms: i64) -> Value {
        json!({
            "id": id, "dc": dc, "hostname": id, "status": status, "last_seen": rfc3339(NOW - seen_ago_ms),
            "cpu": { "usage_percent": 3.1234 }, "memory": { "used_percent": 41.23 }, "load": { "load1": 0.52 },
        })
    }

    fn snapshot() -> Snapshot {
        let shop = json!({
            "id": "shop.health", "target": "https://shop.example/",
            "vantages": [
                { "host": "udm-pro", "dc": "dc1", "status": "up", "success_rate": 1.0,
                  "latency": { "p50": 0.152, "p95": 0.2014 }, "tls": { "seconds_left": 67 * 86_400 + 5 } },
                { "host": "fly-1", "dc": "dc3", "status": "down", "success_rate": 0.5,
                  "latency": { "p50": 1.5, "p95": null }, "tls": { "seconds_left": 3 * 86_400 } },
            ],
        });
        let api = json!({ "id": "api", "vantages": [{ "host": "udm-pro", "dc": "dc1", "status": "unknown", "success_rate": null, "latency": {} }] });
        let mut trends = BTreeMap::new();
        trends.insert(TrendKey::Cpu("udm-pro".into()), 12.04);
        trends.insert(TrendKey::Memory("udm-pro".into()), -1.0);
        trends.insert(TrendKey::Latency("udm-pro".into(), "shop.health".into()), 3.1);
        trends.insert(TrendKey::Success("udm-pro".into(), "shop.health".into()), 0.0);
        Snapshot {
            url: "http://127.0.0.1:8080".into(),
            now_ms: NOW,
            window: "24h".into(),
            hosts: vec![
                host("udm-pro", "dc1", "online", 1_500),
                host("nas", "dc1", "offline", 3 * 3_600_000),
                host("fly-1", "dc3", "stale", 90_000),
            ],
            endpoints: vec![shop, api],
            trends,
        }
    }

    #[test]
    fn the_tree_groups_hosts_by_dc_and_endpoints_by_vantage() {
        let text = render(&snapshot(), false);
        let expected = "\
twinwatch  http://127.0.0.1:8080  2027-01-15T08:00:00.000Z
2 DCs · 3 hosts (1 online, 1 stale, 1 offline) · 2 endpoints (1 vantage up, 1 down) · trends: last 24h against the 24h before
├─ dc1  1 of 2 hosts online
│  ├─ nas      offline  cpu 3.1%         mem 41.2%        load 0.52  seen 3h ago
│  └─ udm-pro  online   cpu 3.1% ▲12.0%  mem 41.2% ▼1.0%  load 0.52  seen 1s ago
│     ├─ api          unknown  p50 -       p95 -       ok -
│     └─ shop.health  up       p50 152 ms  p95 201 ms  ok 100.0%  tls 67 d  latency ▲3.1% ok ±0.0%
└─ dc3  0 of 1 host online
   └─ fly-1  stale  cpu 3.1%  mem 41.2%  load 0.52  seen 1m ago
      └─ shop.health  down  p50 1.50 s  p95 -  ok 50.0%  tls 3 d
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn vantages_are_counted_in_the_singular_and_the_plural() {
        let summary = |up: usize| {
            let vantage = json!({ "host": "udm-pro", "dc": "dc1", "status": "up", "latency": {} });
            let endpoint = json!({ "id": "e", "vantages": vec![vantage; up] });
            let s = Snapshot { endpoints: vec![endpoint], ..Snapshot::default() };
            render(&s, false).lines().nth(1).unwrap().to_owned()
        };
        assert!(summary(1).contains("1 endpoint (1 vantage up, 0 down)"), "{}", summary(1));
        assert!(summary(2).contains("1 endpoint (2 vantages up, 0 down)"), "{}", summary(2));
        assert!(summary(0).contains("1 endpoint (0 vantages up, 0 down)"), "{}", summary(0));
    }

    #[test]
    fn colour_only_when_asked_and_odd_json_never_panics() {
        let s = snapshot();
        assert!(!render(&s, false).contains('\x1b'));
        let coloured = render(&s, true);
        assert!(
            coloured.contains("\x1b[32monline\x1b[0m") && coloured.contains("\x1b[31mtls 3 d\x1b[0m"),
            "{coloured}"
        );
        let odd = Snapshot {
            hosts: vec![json!(null), json!({ "id": 5, "dc": ["x"], "cpu": "hot" }), json!({})],
            endpoints: vec![json!({ "vantages": [null, { "host": null }] }), json!("x")],
            ..Snapshot::default()
        };
        let text = render(&odd, false);
        assert!(text.contains("└─ ?"), "{text}");
        let empty = render(&Snapshot::default(), false);
        assert!(empty.ends_with("└─ no hosts yet: issue an agent certificate (certs issue) and start an agent\n"));
    }
}
