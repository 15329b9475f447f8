//! The probe series: how an agent reports endpoint probes inside its ordinary samples.
//!
//! Probe results travel through the same sample → delta → batch pipeline as host metrics. Every
//! series of one probe carries the label [`ENDPOINT`], the endpoint's id, which is the same on
//! every agent that probes it, so the aggregator can line up vantage points. Names follow
//! blackbox_exporter where it has one; the rest are `twinwatch_probe_*`.
//!
//! A new result is recognised by a change of [`TIMESTAMP`] (the probe's start, in ms): a keyframe
//! that resends the same value is not a new result.
//!
//! Strings (certificate subjects, schema violations, error details) travel as labels of `*_info`
//! series whose value is 1. Label values are cut to [`MAX_LABEL_LEN`] bytes by the agent.

/// The label naming the endpoint on every probe series.
pub const ENDPOINT: &str = "endpoint";

/// Longest label value an agent sends; longer text is cut at a character boundary.
pub const MAX_LABEL_LEN: usize = 256;
/// Most schema violations reported per probe result.
pub const MAX_VIOLATIONS: usize = 16;
/// Most operations a service reports as not probed, with their reason.
pub const MAX_UNPROBED: usize = 64;

// Every probe kind.
/// 1 if the probe succeeded, else 0 (blackbox_exporter).
pub const SUCCESS: &str = "probe_success";
/// Whole probe, seconds (blackbox_exporter).
pub const DURATION: &str = "probe_duration_seconds";
/// When the probe started: ms since the epoch, scale 1e-3 (so the value reads in seconds).
pub const TIMESTAMP: &str = "twinwatch_probe_timestamp_seconds";
/// 1, labels `kind` (http, tcp, dns, tls), `target`, and for generated probes `service`,
/// `operation`, `method`, `path`.
pub const INFO: &str = "twinwatch_probe_info";
/// 1, labels `outcome` (see [`Outcome`]), `detail` (the error, empty on success), `address` (the
/// remote socket address, if one was reached).
pub const RESULT_INFO: &str = "twinwatch_probe_result_info";
/// Counter: beats skipped because the previous run was still going or the concurrency cap was full.
pub const SKIPPED: &str = "twinwatch_probe_skipped_total";
/// Counter: runs completed.
pub const RUNS: &str = "twinwatch_probe_runs_total";
/// 4 or 6 (blackbox_exporter).
pub const IP_PROTOCOL: &str = "probe_ip_protocol";
/// Name resolution time, seconds (blackbox_exporter).
pub const DNS_LOOKUP: &str = "probe_dns_lookup_time_seconds";
/// Addresses in the answer (blackbox_exporter's DNS prober name).
pub const DNS_ANSWERS: &str = "probe_dns_answer_rrs";
/// 1 per answer address, label `address` (at most 16).
pub const DNS_ANSWER_INFO: &str = "twinwatch_probe_dns_answer_info";

// HTTP.
/// Seconds per phase, label `phase`, summed over redirects (blackbox_exporter).
pub const HTTP_DURATION: &str = "probe_http_duration_seconds";
/// The phases, in the order they happen. `processing` ends at the first response byte, so time
/// to first byte is the sum of the first four.
pub const PHASES: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];
pub const HTTP_STATUS: &str = "probe_http_status_code";
/// Body bytes received (blackbox_exporter's `probe_http_uncompressed_body_length`).
pub const HTTP_BODY_BYTES: &str = "probe_http_uncompressed_body_length";
/// HTTP version as a number: 1.0, 1.1, 2 (blackbox_exporter).
pub const HTTP_VERSION: &str = "probe_http_version";
pub const HTTP_REDIRECTS: &str = "probe_http_redirects";
/// 1 if the final request used TLS (blackbox_exporter).
pub const HTTP_SSL: &str = "probe_http_ssl";
/// 1 if a body regex or JSON-path assertion failed (blackbox_exporter's name for the regex case).
pub const HTTP_ASSERTION_FAILED: &str = "probe_failed_due_to_regex";

// TLS (HTTPS and TLS probes).
/// Earliest `notAfter` in the presented chain, unix seconds (blackbox_exporter).
pub const TLS_EARLIEST_EXPIRY: &str = "probe_ssl_earliest_cert_expiry";
/// The leaf's `notAfter`, unix seconds.
pub const TLS_LEAF_EXPIRY: &str = "twinwatch_probe_tls_leaf_expiry_timestamp_seconds";
/// 1 if the chain verified against the trusted roots, else 0.
pub const TLS_VERIFIED: &str = "twinwatch_probe_tls_verified";
/// 1, label `version` ("TLS 1.2", "TLS 1.3"; blackbox_exporter).
pub const TLS_VERSION_INFO: &str = "probe_tls_version_info";
/// 1, labels `fingerprint_sha256`, `issuer`, `serialnumber`, `subject`, `subjectalternative`
/// (comma-separated SANs) of the leaf (blackbox_exporter).
pub const TLS_CHAIN_INFO: &str = "probe_ssl_last_chain_info";

// OpenAPI-generated probes and their service.
/// Violations in the last response, gauge.
pub const SCHEMA_VIOLATIONS: &str = "twinwatch_probe_schema_violations";
/// 1 per violation, labels `pointer` (JSON pointer into the response body) and `message`.
pub const SCHEMA_VIOLATION_INFO: &str = "twinwatch_probe_schema_violation_info";
/// The label naming a service on service series.
pub const SERVICE: &str = "service";
/// Operations in the spec, gauge, label `service`.
pub const SERVICE_OPERATIONS: &str = "twinwatch_service_operations";
/// Operations with a generated probe, gauge, label `service`.
pub const SERVICE_PROBED: &str = "twinwatch_service_operations_probed";
/// GET operations in the spec, gauge, label `service`.
pub const SERVICE_GETS: &str = "twinwatch_service_operations_get";
/// GET operations the agent may call (no credentials needed, or the service has them), gauge,
/// label `service`: what coverage is measured against.
pub const SERVICE_CALLABLE: &str = "twinwatch_service_operations_callable";
/// Coverage: probed over callable GET operations, 0 to 1; absent when none is callable.
pub const SERVICE_COVERAGE: &str = "twinwatch_service_coverage_ratio";
/// 1 if the last spec fetch and parse succeeded.
pub const SERVICE_SPEC_OK: &str = "twinwatch_service_spec_ok";
/// 1, labels `service`, `base_url`, `spec_url`, `title`, `version`, `error` (last fetch error).
pub const SERVICE_INFO: &str = "twinwatch_service_info";
/// 1 per operation not probed, labels `service`, `operation`, `method`, `path`, `reason`.
pub const SERVICE_UNPROBED_INFO: &str = "twinwatch_service_unprobed_info";

/// How a probe ended. Its name is the `outcome` label of [`RESULT_INFO`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    /// The name did not resolve (or resolved to no address of the wanted family).
    DnsFailed,
    /// The connection was refused, reset or unreachable.
    ConnectFailed,
    /// No answer within the probe's timeout.
    Timeout,
    /// The TLS handshake failed for a reason other than the certificate.
    TlsFailed,
    /// The certificate chain did not verify (expired, unknown issuer, wrong name).
    CertInvalid,
    /// The server answered with a status the probe does not expect.
    StatusMismatch,
    /// A body regex or JSON-path assertion failed.
    AssertionFailed,
    /// The body does not match the operation's response schema.
    SchemaViolation,
    /// The server's answer was not valid HTTP, or too many redirects.
    HttpError,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Outcome::Success,
        Outcome::DnsFailed,
        Outcome::ConnectFailed,
        Outcome::Timeout,
        Outcome::TlsFailed,
        Outcome::CertInvalid,
        Outcome::StatusMismatch,
        Outcome::AssertionFailed,
        Outcome::SchemaViolation,
        Outcome::HttpError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::DnsFailed => "dns_failed",
            Outcome::ConnectFailed => "connect_failed",
            Outcome::Timeout => "timeout",
            Outcome::TlsFailed => "tls_failed",
            Outcome::CertInvalid => "cert_invalid",
            Outcome::StatusMismatch => "status_mismatch",
            Outcome::AssertionFailed => "assertion_failed",
            Outcome::SchemaViolation => "schema_violation",
            Outcome::HttpError => "http_error",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// `text` cut to at most [`MAX_LABEL_LEN`] bytes at a character boundary.
pub fn label_value(text: &str) -> String {
    if text.len() <= MAX_LABEL_LEN {
        return text.to_owned();
    }
    let mut end = MAX_LABEL_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Whether `id` may name an endpoint or a service: 1 to 128 of `A-Z a-z 0-9 . _ : -`, so it
/// fits a URL path segment as it is.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_by_name() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("nope"), None);
    }

    #[test]
    fn labels_are_cut_at_a_character_boundary() {
        let long = "é".repeat(200);
        let cut = label_value(&long);
        assert!(cut.len() <= MAX_LABEL_LEN && cut.len() >= MAX_LABEL_LEN - 1);
        assert_eq!(label_value("short"), "short");
    }

    #[test]
    fn ids_fit_a_path_segment() {
        assert!(valid_id("app.listPets") && valid_id("dc1:web-01_x"));
        assert!(!valid_id("") && !valid_id("a/b") && !valid_id("a b") && !valid_id(&"a".repeat(129)));
    }
}
