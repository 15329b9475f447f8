//! The aggregator's certificate authority: `certs init` and `certs issue`.
//!
//! An agent is known by its client certificate. Its subject carries the agent id as the common
//! name and its data centre as the organisational unit, signed by this CA, so an agent cannot
//! claim another identity or DC by editing its configuration.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::twin::identity::valid_name;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";
/// How far before its issue time a certificate starts being valid, for hosts whose clocks run a
/// little behind. The revocation list reads a certificate's issue time back from it.
pub const BACKDATE: Duration = Duration::hours(1);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{} already exists; pass --force to replace the CA (every issued certificate stops working)", .0.display())]
    Exists(PathBuf),
    #[error("{what} {value:?} must be 1-64 characters of letters, digits, '.', '_' or '-'")]
    BadName { what: &'static str, value: String },
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertError::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).and_then(|_| file.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io { path: path.to_owned(), source })
}

fn serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

fn params(common_name: &str, days: i64) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "twinwatch");
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(days);
    p.serial_number = Some(serial());
    p
}

/// Creates the CA and the server certificate in `dir`. `names` are the DNS names or IP
/// addresses agents use to reach the aggregator.
pub fn init(dir: &Path, names: &[String], force: bool) -> Result<(), CertError> {
    let ca_path = dir.join(CA_CERT);
    if ca_path.exists() && !force {
        return Err(CertError::Exists(ca_path));
    }
    let ca_key = KeyPair::generate()?;
    let mut ca = params("twinwatch CA", 3650);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    write(&dir.join(CA_KEY), &ca_key.serialize_pem(), true)?;
    write(&ca_path, &ca_cert.pem(), false)?;
    let issuer = Issuer::new(ca, ca_key);
    server(dir, names, &issuer)?;
    // Run with sudo on a packaged install, the files go to the data directory's owner: the
    // aggregator runs as its own user and reads its key and the CA's.
    crate::access::watched::own_like_parent(dir);
    for name in [CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT] {
        crate::access::watched::own_like_parent(&dir.join(name));
    }
    Ok(())
}

fn server(dir: &Path, names: &[String], issuer: &Issuer<'_, KeyPair>) -> Result<(), CertError> {
    let key = KeyPair::generate()?;
    let mut p = params("twinwatch aggregator", 825);
    let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    all.extend(names.iter().cloned());
    all.dedup();
    for name in all {
        p.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.as_str().try_into()?),
        });
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = p.signed_by(&key, issuer)?;
    write(&dir.join(SERVER_KEY), &key.serialize_pem(), true)?;
    write(&dir.join(SERVER_CERT), &cert.pem(), false)
}

/// Loads the CA in `dir` for signing.
pub fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let key = KeyPair::from_pem(&read(&dir.join(CA_KEY))?)?;
    Ok(Issuer::from_ca_cert_pem(&read(&dir.join(CA_CERT))?, key)?)
}

/// Paths written by [`issue`].
pub struct Issued {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate's serial number, lowercase hex (what `certs revoke --serial` takes).
    pub serial: String,
}

/// Issues a client certificate for agent `agent` in data centre `dc`, valid for `days`, and writes
/// `agent.crt`, `agent.key` and a copy of `ca.crt` into `out`.
pub fn issue(ca_dir: &Path, agent: &str, dc: &str, days: i64, out: &Path) -> Result<Issued, CertError> {
    if !valid_name(agent) {
        return Err(CertError::BadName { what: "agent id", value: agent.into() });
    }
    if !valid_name(dc) {
        return Err(CertError::BadName { what: "DC", value: dc.into() });
    }
    let issuer = load_issuer(ca_dir)?;
    let key = KeyPair::generate()?;
    let mut p = params(agent, days);
    p.distinguished_name.push(DnType::OrganizationalUnitName, dc);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let serial = p.serial_number.as_ref().map(|s| twinwatch_common::hex::encode(s.as_ref())).unwrap_or_default();
    let serial = serial.trim_start_matches('0').to_owned();
    let cert = p.signed_by(&key, &issuer)?;
    let issued = Issued { ca: out.join("ca.crt"), cert: out.join("agent.crt"), key: out.join("agent.key"), serial };
    write(&issued.key, &key.serialize_pem(), true)?;
    write(&issued.cert, &cert.pem(), false)?;
    write(&issued.ca, &read(&ca_dir.join(CA_CERT))?, false)?;
    Ok(issued)
}
