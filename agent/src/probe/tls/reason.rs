//! Why a TLS handshake or a certificate was refused, in words an operator reads on a dashboard.
//!
//! rustls and webpki name their errors as enum variants (`UnknownIssuer`,
//! `Other(OtherError(CaUsedAsEndEntity))`); these functions turn them into sentences, with the
//! dates and names that make them actionable. Pure: the error and the presented leaf go in.

use rustls::{CertificateError, Error};
use rustls_pki_types::UnixTime;

/// Why the presented chain did not verify for `host`. `leaf` is the certificate the server
/// presented first (DER), which tells a self-signed or CA certificate from the rest.
pub(crate) fn certificate(error: &Error, host: &str, leaf: &[u8]) -> String {
    let Error::InvalidCertificate(error) = error else { return handshake(error) };
    let leaf = Leaf::parse(leaf);
    match error {
        CertificateError::Expired => match &leaf {
            Some(leaf) => format!("certificate expired on {}", date(leaf.not_after)),
            None => "certificate expired".into(),
        },
        CertificateError::ExpiredContext { not_after, .. } => {
            let whose = match &leaf {
                Some(leaf) if leaf.not_after != seconds(not_after) => "a certificate in the chain",
                _ => "certificate",
            };
            format!("{whose} expired on {}", date(seconds(not_after)))
        }
        CertificateError::NotValidYet => "certificate is not valid yet".into(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("certificate is not valid before {}", date(seconds(not_before)))
        }
        CertificateError::NotValidForName => format!("certificate is not valid for host {host}"),
        CertificateError::NotValidForNameContext { expected, .. } => {
            // The names as the certificate has them (the error's own list is Debug text).
            let names = match leaf.as_ref().map(|l| l.sans.as_slice()) {
                None => String::new(),
                Some([]) => " (it names no host)".to_owned(),
                Some(names) => format!(" (it is for {})", names.join(", ")),
            };
            format!("certificate is not valid for host {}{names}", expected.to_str())
        }
        CertificateError::UnknownIssuer => match &leaf {
            Some(leaf) if leaf.self_signed => not_in_ca_file(leaf),
            Some(leaf) => format!("issuer not trusted (unknown CA): issued by {}", leaf.issuer),
            None => "issuer not trusted (unknown CA)".into(),
        },
        CertificateError::BadSignature => "a certificate's signature does not verify".into(),
        CertificateError::Revoked => "certificate revoked".into(),
        CertificateError::BadEncoding => "certificate is malformed".into(),
        CertificateError::UnhandledCriticalExtension => "certificate has a critical extension not understood".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate is not for server authentication (extended key usage)".into()
        }
        CertificateError::Other(other) => match (other.to_string().as_str(), &leaf) {
            ("CaUsedAsEndEntity", Some(leaf)) if leaf.self_signed => not_in_ca_file(leaf),
            ("CaUsedAsEndEntity", _) => "a CA certificate (CA:TRUE) is presented as the server certificate".into(),
            ("EndEntityUsedAsCa", _) => "an intermediate certificate is not a CA (CA:FALSE)".into(),
            ("CertDistrusted", _) => "certificate distrusted by its root".into(),
            ("PathLenConstraintViolated", _) => "the chain is longer than a CA's path length allows".into(),
            ("NameConstraintViolation", _) => "certificate names a host its CA may not certify".into(),
            ("MaximumPathDepthExceeded" | "MaximumPathBuildCallsExceeded" | "MaximumSignatureChecksExceeded", _) => {
                "the chain is too long or too tangled to verify".into()
            }
            (name, _) => format!("certificate refused: {}", words(name)),
        },
        other => format!("certificate refused: {}", words(&format!("{other:?}"))),
    }
}

/// Why a handshake failed, other than its certificate.
pub(crate) fn handshake(error: &Error) -> String {
    match error {
        Error::AlertReceived(alert) => format!("the server ended the handshake: {}", words(&format!("{alert:?}"))),
        Error::InvalidCertificate(_) => certificate(error, "", &[]),
        Error::NoCertificatesPresented => "the server presented no certificate".into(),
        Error::PeerIncompatible(why) => format!("the server is incompatible: {}", words(&format!("{why:?}"))),
        Error::PeerMisbehaved(why) => format!("the server broke the protocol: {}", words(&format!("{why:?}"))),
        Error::InvalidMessage(why) => format!("the server sent a malformed message: {}", words(&format!("{why:?}"))),
        Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            "the server sent an unexpected message (is it speaking TLS?)".into()
        }
        other => other.to_string(),
    }
}

/// A handshake's I/O error: the rustls error inside it in words, else the error as it reads.
pub(crate) fn io(error: &std::io::Error) -> String {
    match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(tls) => handshake(tls),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => "the server closed the connection".into(),
        None => error.to_string(),
    }
}

fn not_in_ca_file(leaf: &Leaf) -> String {
    format!("self-signed certificate used as a server certificate is not in ca_file: {}", leaf.subject)
}

/// What the reasons need of the presented leaf.
struct Leaf {
    not_after: i64,
    issuer: String,
    subject: String,
    /// DNS names and IP addresses.
    sans: Vec<String>,
    self_signed: bool,
}

impl Leaf {
    fn parse(der: &[u8]) -> Option<Leaf> {
        let info = super::CertInfo::parse(der)?;
        Some(Leaf {
            not_after: info.not_after,
            issuer: info.issuer,
            subject: info.subject,
            sans: info.sans,
            self_signed: super::self_signed(der),
        })
    }
}

fn seconds(t: &UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

/// `2026-01-01`.
fn date(unix: i64) -> String {
    let stamp = twinwatch_common::time::rfc3339(unix.saturating_mul(1000));
    stamp.get(..10).unwrap_or(&stamp).to_owned()
}

/// `CaUsedAsEndEntity` as `ca used as end entity`, `UnknownCA` as `unknown ca`: a variant name
/// that has no sentence of its own.
fn words(name: &str) -> String {
    let name = name.split(['(', '{', ' ']).next().unwrap_or(name);
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        let after_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
        let ends_acronym =
            i > 0 && chars[i - 1].is_ascii_uppercase() && chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
        if c.is_ascii_uppercase() && (after_lower || ends_acronym) {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::{AlertDescription, RootCertStore};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    /// 2026-01-01T00:00:00Z.
    const NEW_YEAR: i64 = 1_767_225_600;

    fn params(cn: &str, ca: bool, not_after: i64) -> CertificateParams {
        let mut p = CertificateParams::new(if ca { vec![] } else { vec![cn.to_owned()] }).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let at = |t: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(t as u64);
        p.not_before = at(1_700_000_000);
        p.not_after = at(not_after);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        p
    }

    /// A root named `root` and a leaf for `app.test` it signed, valid until `not_after`.
    fn chain(root: &str, not_after: i64) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let root_key = KeyPair::generate().unwrap();
        let root_params = || params(root, true, NEW_YEAR + 10 * 365 * 86_400);
        let root = root_params().self_signed(&root_key).unwrap();
        let issuer = Issuer::new(root_params(), root_key);
        let leaf = params("app.test", false, not_after).signed_by(&KeyPair::generate().unwrap(), &issuer).unwrap();
        (root.der().clone(), leaf.der().clone())
    }

    /// The real WebPKI verdict on `leaf` for `host` at `now`, trusting `roots`, in words.
    fn verdict(roots: &[&CertificateDer<'static>], leaf: &CertificateDer<'static>, host: &str, now: i64) -> String {
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add((*root).clone()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider).build().unwrap();
        let name = ServerName::try_from(host.to_owned()).unwrap();
        let at = UnixTime::since_unix_epoch(Duration::from_secs(now as u64));
        let error = verifier.verify_server_cert(leaf, &[], &name, &[], at).expect_err("refused");
        let text = certificate(&error, host, leaf);
        for debug in ["Other", "Error(", "Context", "UnknownIssuer", "CaUsedAsEndEntity"] {
            assert!(!text.contains(debug), "{text:?} reads like a Debug string");
        }
        text
    }

    #[test]
    fn an_expired_certificate_says_when() {
        let (root, leaf) = chain("Reason Root", NEW_YEAR);
        assert_eq!(verdict(&[&root], &leaf, "app.test", NEW_YEAR + 86_400), "certificate expired on 2026-01-01");
        assert_eq!(verdict(&[&root], &leaf, "app.test", 1_600_000_000), "certificate is not valid before 2023-11-14");
    }

    #[test]
    fn a_certificate_for_another_host_names_both() {
        let (root, leaf) = chain("Reason Root", NEW_YEAR);
        assert_eq!(
            verdict(&[&root], &leaf, "x.test", NEW_YEAR - 86_400),
            "certificate is not valid for host x.test (it is for app.test)"
        );
    }

    #[test]
    fn an_unknown_issuer_is_named() {
        let (_, leaf) = chain("Reason Root", NEW_YEAR);
        let (other_root, _) = chain("Other Root", NEW_YEAR);
        assert_eq!(
            verdict(&[&other_root], &leaf, "app.test", NEW_YEAR - 86_400),
            "issuer not trusted (unknown CA): issued by CN=Reason Root"
        );
    }

    #[test]
    fn a_self_signed_certificate_outside_ca_file_says_so() {
        let (root, _) = chain("Reason Root", NEW_YEAR);
        let plain = params("app.test", false, NEW_YEAR).self_signed(&KeyPair::generate().unwrap()).unwrap();
        let mut ca = params("app.test", true, NEW_YEAR);
        ca.subject_alt_names = vec![rcgen::SanType::DnsName("app.test".try_into().unwrap())];
        let ca = ca.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let expected = "self-signed certificate used as a server certificate is not in ca_file: CN=app.test";
        assert_eq!(verdict(&[&root], plain.der(), "app.test", NEW_YEAR - 86_400), expected);
        // CA:TRUE: WebPKI refuses it before it looks for an issuer.
        assert_eq!(verdict(&[&root], ca.der(), "app.test", NEW_YEAR - 86_400), expected);
    }

    #[test]
    fn handshake_failures_read_as_sentences() {
        assert_eq!(
            handshake(&Error::AlertReceived(AlertDescription::HandshakeFailure)),
            "the server ended the handshake: handshake failure"
        );
        assert_eq!(handshake(&Error::NoCertificatesPresented), "the server presented no certificate");
        let io =
            std::io::Error::new(std::io::ErrorKind::InvalidData, Error::AlertReceived(AlertDescription::UnknownCA));
        assert_eq!(super::io(&io), "the server ended the handshake: unknown ca");
        assert_eq!(words("CaUsedAsEndEntity"), "ca used as end entity");
        assert_eq!(words("TLSRecordTooBig(3)"), "tls record too big");
        assert_eq!(date(NEW_YEAR), "2026-01-01");
    }
}
