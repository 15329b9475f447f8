//! Protocol counters (TCP opens, segments, retransmits, UDP datagrams and errors) from
//! /proc/net/snmp, /proc/net/netstat and /proc/net/snmp6, filtered as node_exporter filters them.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::procfile::ProcFile;
use super::{CollectError, Collector, Roots};

/// node_exporter's default `--collector.netstat.fields`.
pub fn wanted(proto: &str, field: &str) -> bool {
    if field == "InErrors" || field == "InErrs" {
        return true;
    }
    match proto {
        "Ip" => field == "Forwarding",
        "Ip6" | "IpExt" => matches!(field, "InOctets" | "OutOctets"),
        "Icmp" | "Icmp6" => matches!(field, "InMsgs" | "OutMsgs"),
        "TcpExt" => {
            field.starts_with("Listen")
                || field.starts_with("Syncookies")
                || matches!(field, "TCPSynRetrans" | "TCPTimeouts" | "TCPOFOQueue" | "TCPRcvQDrop")
        }
        "Tcp" => {
            matches!(
                field,
                "ActiveOpens" | "InSegs" | "OutSegs" | "OutRsts" | "PassiveOpens" | "RetransSegs" | "CurrEstab"
            )
        }
        "Udp" | "Udp6" => matches!(field, "InDatagrams" | "OutDatagrams" | "NoPorts" | "RcvbufErrors" | "SndbufErrors"),
        _ => false,
    }
}

fn push(proto: &str, field: &str, value: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    if !wanted(proto, field) {
        return Ok(());
    }
    let value: i64 = value
        .parse()
        .map_err(|_| CollectError::Parse { what: "/proc/net/snmp", detail: format!("{proto} {field}: {value:?}") })?;
    let key = SeriesKey::new(format!("node_netstat_{proto}_{field}"));
    // Two of them are levels; the rest only grow.
    out.push(if matches!(field, "CurrEstab" | "Forwarding") {
        Metric::gauge(key, Value::Int(value))
    } else {
        Metric::counter(key, Value::Int(value))
    });
    Ok(())
}

/// Parses the two-line-per-protocol format of /proc/net/snmp and /proc/net/netstat: a line of
/// field names, then a line of values, both starting `Proto:`.
pub fn parse_pairs(text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((proto, names)), Some((proto2, values))) = (names.split_once(':'), values.split_once(':')) else {
            return Err(CollectError::Parse { what: "/proc/net/snmp", detail: "line without a protocol".into() });
        };
        if proto != proto2 {
            return Err(CollectError::Parse { what: "/proc/net/snmp", detail: format!("{proto} then {proto2}") });
        }
        let (names, values) = (names.split_ascii_whitespace(), values.split_ascii_whitespace());
        if names.clone().count() != values.clone().count() {
            return Err(CollectError::Parse { what: "/proc/net/snmp", detail: format!("{proto}: truncated") });
        }
        for (field, value) in names.zip(values) {
            push(proto, field, value, out)?;
        }
    }
    Ok(())
}

/// Parses /proc/net/snmp6's `Udp6InDatagrams 123` lines.
pub fn parse_snmp6(text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(name), Some(value)) = (f.next(), f.next()) else { continue };
        let split =
            ["Ip6", "Icmp6", "Udp6", "UdpLite6"].iter().find_map(|p| name.strip_prefix(p).map(|rest| (*p, rest)));
        if let Some((proto, field)) = split {
            push(proto, field, value, out)?;
        }
    }
    Ok(())
}

pub struct Netstat {
    snmp: ProcFile,
    netstat: ProcFile,
    snmp6: ProcFile,
    buf: String,
}

impl Netstat {
    pub fn new(roots: &Roots) -> Self {
        let net = roots.proc.join("net");
        let file = |name: &str| ProcFile::new(net.join(name));
        Netstat { snmp: file("snmp"), netstat: file("netstat"), snmp6: file("snmp6"), buf: String::new() }
    }
}

impl Collector for Netstat {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        self.snmp.read(&mut self.buf)?;
        parse_pairs(&self.buf, out)?;
        self.netstat.read(&mut self.buf)?;
        parse_pairs(&self.buf, out)?;
        // No snmp6 without IPv6.
        if self.snmp6.read(&mut self.buf).is_ok() {
            parse_snmp6(&self.buf, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(out: &[Metric]) -> Vec<(&str, i64)> {
        out.iter().map(|m| (m.key.name.as_str(), m.value.as_f64() as i64)).collect()
    }

    #[test]
    fn snmp_pairs_are_filtered_like_node_exporter() {
        let text = "Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 1 64 1000 2
Tcp: RtoAlgorithm MaxConn ActiveOpens PassiveOpens CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts
Tcp: 1 -1 30 40 5 1000 900 7 1 3
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors
Udp: 50 1 0 60 0 0 0
";
        let mut out = Vec::new();
        parse_pairs(text, &mut out).unwrap();
        assert_eq!(
            names(&out),
            [
                ("node_netstat_Ip_Forwarding", 1),
                ("node_netstat_Tcp_ActiveOpens", 30),
                ("node_netstat_Tcp_PassiveOpens", 40),
                ("node_netstat_Tcp_CurrEstab", 5),
                ("node_netstat_Tcp_InSegs", 1000),
                ("node_netstat_Tcp_OutSegs", 900),
                ("node_netstat_Tcp_RetransSegs", 7),
                ("node_netstat_Tcp_InErrs", 1),
                ("node_netstat_Tcp_OutRsts", 3),
                ("node_netstat_Udp_InDatagrams", 50),
                ("node_netstat_Udp_NoPorts", 1),
                ("node_netstat_Udp_InErrors", 0),
                ("node_netstat_Udp_OutDatagrams", 60),
                ("node_netstat_Udp_RcvbufErrors", 0),
                ("node_netstat_Udp_SndbufErrors", 0),
            ]
        );
        assert!(parse_pairs("Tcp: A B C\nTcp: 1 2\n", &mut out).is_err(), "truncated values");
    }

    #[test]
    fn snmp6_names_split_at_the_protocol() {
        let mut out = Vec::new();
        parse_snmp6("Ip6InReceives 5\nIp6InOctets 900\nUdp6InDatagrams 12\nUdpLite6InDatagrams 0\n", &mut out).unwrap();
        assert_eq!(names(&out), [("node_netstat_Ip6_InOctets", 900), ("node_netstat_Udp6_InDatagrams", 12)]);
    }
}
