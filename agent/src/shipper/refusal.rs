//! Why a connection to the aggregator was refused, told from the connection's error, and the log
//! line that says what happened and what the operator can do about it.
//!
//! A refusal is a verdict on this agent's credentials or identity, not on the path: trying again
//! soon gets the same answer, so the shipper backs off longer than for an unreachable peer (see
//! [`super::backoff`]). Sans-IO: a pure function of the error and the agent's settings.

use std::path::PathBuf;

use twinwatch_common::message::close;

/// TLS alerts (RFC 8446 §6.2) a QUIC peer reports as crypto error `0x100 + alert`.
mod alert {
    pub const BAD_CERTIFICATE: u8 = 42;
    pub const UNSUPPORTED_CERTIFICATE: u8 = 43;
    pub const CERTIFICATE_REVOKED: u8 = 44;
    pub const CERTIFICATE_EXPIRED: u8 = 45;
    pub const CERTIFICATE_UNKNOWN: u8 = 46;
    pub const UNKNOWN_CA: u8 = 48;
    pub const ACCESS_DENIED: u8 = 49;
    pub const DECRYPT_ERROR: u8 = 51;
}

/// What the agent knows of its own credentials, to name them in advice.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub ca: PathBuf,
    pub cert: PathBuf,
    /// The agent id and DC its certificate names, when it can be read.
    pub agent: Option<String>,
    pub dc: Option<String>,
}

impl Credentials {
    /// Reads the agent id (CN) and DC (OU) from the certificate file, if it parses; advice
    /// without them is still given.
    pub fn load(ca: PathBuf, cert: PathBuf) -> Credentials {
        let names = std::fs::read(&cert).ok().and_then(|pem| {
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).ok()?;
            let (_, parsed) = x509_parser::parse_x509_certificate(&der).ok()?;
            let subject = parsed.subject();
            let cn = subject.iter_common_name().next().and_then(|a| a.as_str().ok()).map(str::to_owned);
            let ou = subject.iter_organizational_unit().next().and_then(|a| a.as_str().ok()).map(str::to_owned);
            Some((cn, ou))
        });
        let (agent, dc) = names.unwrap_or_default();
        Credentials { ca, cert, agent, dc }
    }

    fn issue_command(&self) -> String {
        let agent = self.agent.as_deref().unwrap_or("AGENT_ID");
        let dc = self.dc.as_deref().unwrap_or("DC");
        format!("`twinwatch-aggregator certs issue --agent {agent} --dc {dc} --out DIR`")
    }

    fn install(&self) -> String {
        format!(
            "install DIR/agent.crt, DIR/agent.key and DIR/ca.crt as this agent's `cert` ({}), `key` and `ca`, \
             then restart the agent",
            self.cert.display()
        )
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The aggregator's revocation list refuses this certificate.
    Revoked { detail: String },
    /// The certificate is not signed by the aggregator's CA.
    UnknownCa { detail: String },
    /// The certificate has expired, or is not valid yet.
    Expired { detail: String },
    /// The aggregator rejected the certificate for another reason (its use, encoding, signature).
    BadCertificate { detail: String },
    /// This agent could not verify the aggregator's certificate: not from the CA in `ca`, or not
    /// for the configured `server_name`.
    AggregatorUntrusted { detail: String },
    /// Another connection holds this agent's identity.
    IdentityInUse { detail: String },
    /// A newer connection with this agent's certificate took over.
    Superseded,
}

impl Refusal {
    /// The refusal a connection's error carries, if it is one. A reset, a timeout, or a close for
    /// an ordinary reason (shutdown, a protocol error) is not.
    pub fn of(e: &quinn::ConnectionError) -> Option<Refusal> {
        match e {
            // The aggregator refused our certificate in the handshake.
            quinn::ConnectionError::ConnectionClosed(c) => {
                let detail = String::from_utf8_lossy(&c.reason).into_owned();
                Self::from_alert(crypto_alert(u64::from(c.error_code))?, detail, false)
            }
            // We refused the aggregator's.
            quinn::ConnectionError::TransportError(t) => {
                Self::from_alert(crypto_alert(u64::from(t.code))?, t.reason.clone(), true)
            }
            quinn::ConnectionError::ApplicationClosed(c) => {
                let detail = String::from_utf8_lossy(&c.reason).into_owned();
                match c.error_code.into_inner() {
                    code if code == u64::from(close::REVOKED) => Some(Refusal::Revoked { detail }),
                    code if code == u64::from(close::IDENTITY_IN_USE) => Some(Refusal::IdentityInUse { detail }),
                    code if code == u64::from(close::SUPERSEDED) => Some(Refusal::Superseded),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn from_alert(alert: u8, detail: String, local: bool) -> Option<Refusal> {
        if local {
            // Our own verifier failed: whatever the alert, the aggregator's certificate is at fault.
            return matches!(
                alert,
                alert::BAD_CERTIFICATE
                    | alert::UNSUPPORTED_CERTIFICATE
                    | alert::CERTIFICATE_REVOKED
                    | alert::CERTIFICATE_EXPIRED
                    | alert::CERTIFICATE_UNKNOWN
                    | alert::UNKNOWN_CA
                    | alert::DECRYPT_ERROR
            )
            .then_some(Refusal::AggregatorUntrusted { detail });
        }
        Some(match alert {
            alert::CERTIFICATE_REVOKED => Refusal::Revoked { detail },
            alert::UNKNOWN_CA => Refusal::UnknownCa { detail },
            alert::CERTIFICATE_EXPIRED => Refusal::Expired { detail },
            alert::BAD_CERTIFICATE
            | alert::UNSUPPORTED_CERTIFICATE
            | alert::CERTIFICATE_UNKNOWN
            | alert::ACCESS_DENIED
            | alert::DECRYPT_ERROR => Refusal::BadCertificate { detail },
            _ => return None,
        })
    }

    /// The log line: what happened, then what to do.
    pub fn advice(&self, creds: &Credentials) -> String {
        let cert = creds.cert.display();
        let issue = creds.issue_command();
        let install = creds.install();
        let said = |detail: &str| if detail.is_empty() { String::new() } else { format!(" (aggregator: {detail})") };
        match self {
            Refusal::Revoked { detail } => format!(
                "the aggregator refused this agent: its certificate {cert} is revoked{}; if this agent \
                 should still report, issue it a new certificate with {issue} and {install}",
                said(detail)
            ),
            Refusal::UnknownCa { detail } => format!(
                "the aggregator refused this agent: it does not know the CA that signed its certificate \
                 {cert}{}; issue one from the aggregator's CA with {issue} and {install}",
                said(detail)
            ),
            Refusal::Expired { detail } => format!(
                "the aggregator refused this agent: its certificate {cert} has expired or is not valid \
                 yet{} (check this host's clock too); issue a new one with {issue} and {install}",
                said(detail)
            ),
            Refusal::BadCertificate { detail } => format!(
                "the aggregator refused this agent: it rejected its certificate {cert}{}; issue a new one \
                 with {issue} and {install}",
                said(detail)
            ),
            Refusal::AggregatorUntrusted { detail } => format!(
                "this agent refused the aggregator: its certificate does not verify ({detail}); `ca` ({}) \
                 must be the aggregator's ca.crt and `server_name` a name its certificate carries",
                creds.ca.display()
            ),
            Refusal::IdentityInUse { detail } => format!(
                "the aggregator refused this agent: another connection holds its identity{}; each host \
                 needs its own certificate: stop the other agent using {cert}, or give this host its own \
                 with {issue}",
                said(detail)
            ),
            Refusal::Superseded => format!(
                "the aggregator closed this agent's connection: another connection with its certificate \
                 took over; each host needs its own certificate: stop the other agent using {cert}, or \
                 give this host its own with {issue}"
            ),
        }
    }
}

/// The TLS alert a crypto error code carries.
fn crypto_alert(code: u64) -> Option<u8> {
    (0x100..0x200).contains(&code).then_some((code & 0xff) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_by_peer(alert: u8, reason: &str) -> quinn::ConnectionError {
        quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(alert),
            frame_type: None,
            reason: reason.as_bytes().to_vec().into(),
        })
    }

    fn app_closed(code: u32, reason: &str) -> quinn::ConnectionError {
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: code.into(),
            reason: reason.as_bytes().to_vec().into(),
        })
    }

    fn creds() -> Credentials {
        Credentials {
            ca: "/etc/twinwatch/ca.crt".into(),
            cert: "/etc/twinwatch/agent.crt".into(),
            agent: Some("udm-pro".into()),
            dc: Some("dc1".into()),
        }
    }

    #[test]
    fn handshake_alerts_name_the_reason() {
        let revoked = Refusal::of(&closed_by_peer(44, "invalid peer certificate: Revoked")).unwrap();
        assert!(matches!(revoked, Refusal::Revoked { .. }));
        let line = revoked.advice(&creds());
        assert!(line.contains("revoked"), "{line}");
        assert!(line.contains("certs issue --agent udm-pro --dc dc1"), "{line}");
        assert!(line.contains("/etc/twinwatch/agent.crt"), "{line}");
        assert!(matches!(Refusal::of(&closed_by_peer(48, "")), Some(Refusal::UnknownCa { .. })));
        assert!(matches!(Refusal::of(&closed_by_peer(45, "")), Some(Refusal::Expired { .. })));
        assert!(matches!(Refusal::of(&closed_by_peer(42, "")), Some(Refusal::BadCertificate { .. })));
        // A handshake failure unrelated to certificates is no verdict on them.
        assert_eq!(Refusal::of(&closed_by_peer(40, "")), None);
    }

    #[test]
    fn our_own_verifier_blames_the_aggregators_certificate() {
        let e = quinn::ConnectionError::TransportError(quinn_proto::TransportError {
            code: quinn::TransportErrorCode::crypto(48),
            frame: None,
            reason: "invalid peer certificate: UnknownIssuer".into(),
        });
        let r = Refusal::of(&e).unwrap();
        assert!(matches!(r, Refusal::AggregatorUntrusted { .. }));
        assert!(r.advice(&creds()).contains("/etc/twinwatch/ca.crt"));
    }

    #[test]
    fn application_closes_for_identity_and_revocation() {
        assert!(matches!(
            Refusal::of(&app_closed(close::REVOKED, "certificate revoked by admin")),
            Some(Refusal::Revoked { detail }) if detail == "certificate revoked by admin"
        ));
        let in_use = Refusal::of(&app_closed(close::IDENTITY_IN_USE, "held by another host")).unwrap();
        assert!(in_use.advice(&creds()).contains("own certificate"));
        assert_eq!(Refusal::of(&app_closed(close::SUPERSEDED, "")), Some(Refusal::Superseded));
        // A shutdown or a protocol error is not a refusal.
        assert_eq!(Refusal::of(&app_closed(close::DONE, "aggregator shutting down")), None);
        assert_eq!(Refusal::of(&app_closed(close::ERROR, "bad frame")), None);
        assert_eq!(Refusal::of(&quinn::ConnectionError::Reset), None);
        assert_eq!(Refusal::of(&quinn::ConnectionError::TimedOut), None);
    }

    #[test]
    fn advice_without_a_readable_certificate_still_says_what_to_run() {
        let creds = Credentials::load("/nonexistent/ca.crt".into(), "/nonexistent/agent.crt".into());
        assert_eq!((creds.agent.as_deref(), creds.dc.as_deref()), (None, None));
        let line = Refusal::UnknownCa { detail: String::new() }.advice(&creds);
        assert!(line.contains("certs issue --agent AGENT_ID --dc DC"), "{line}");
    }
}
