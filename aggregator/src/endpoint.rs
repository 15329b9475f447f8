//! The QUIC endpoint, with a stateless-reset key that survives restarts.
//!
//! When the aggregator restarts (a deploy, a crash), agents still hold connections the new process
//! knows nothing about. With the same secret, the new process recognises their connection ids as
//! its own (the CID generator's key) and answers with a valid stateless reset (the reset key), so
//! they reconnect at once instead of waiting out the idle timeout.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("reset key {}: {source}", path.display())]
    Key { path: std::path::PathBuf, source: std::io::Error },
    #[error("listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Reads the 32-byte secret at `path`, creating it on first start.
pub fn secret(path: &Path) -> Result<Vec<u8>, EndpointError> {
    let err = |source| EndpointError::Key { path: path.to_owned(), source };
    let secret = match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        Ok(_) => return Err(err(std::io::Error::other("expected 32 bytes; delete the file to make a new key"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use ring::rand::SecureRandom;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut bytes = vec![0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| err(std::io::Error::other("no randomness")))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(err)?;
            f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(err)?;
            bytes
        }
        Err(e) => return Err(err(e)),
    };
    Ok(secret)
}

pub fn bind(addr: SocketAddr, server: quinn::ServerConfig, key_path: &Path) -> Result<quinn::Endpoint, EndpointError> {
    let secret = secret(key_path)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let tag = ring::hmac::sign(&key, b"connection id generator");
    let cid_key = u64::from_le_bytes(tag.as_ref()[..8].try_into().expect("HMAC-SHA256 is 32 bytes"));
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let socket = std::net::UdpSocket::bind(addr).map_err(|source| EndpointError::Bind { addr, source })?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| EndpointError::Bind { addr, source: std::io::Error::other("no async runtime") })?;
    quinn::Endpoint::new(config, Some(server), socket, runtime).map_err(|source| EndpointError::Bind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_kept_across_restarts() {
        let path = std::env::temp_dir().join(format!("twinwatch-reset-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let first = secret(&path).unwrap();
        assert_eq!(secret(&path).unwrap(), first);
        assert_eq!(std::fs::read(&path).unwrap(), first);
        assert_eq!(first.len(), 32);
        std::fs::write(&path, b"short").unwrap();
        assert!(secret(&path).is_err(), "a damaged key is reported, not silently replaced");
        let _ = std::fs::remove_file(&path);
    }
}
