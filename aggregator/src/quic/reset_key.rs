//! The QUIC endpoint, with a stateless-reset key that survives restarts.
//!
//! When the aggregator restarts (a deploy, a crash), agents still hold connections the new process
//! knows nothing about. With the same secret, the new process recognises their connection ids as
//! its own (the CID generator's key) and answers with a valid stateless reset (the reset key), so
//! they reconnect at once instead of waiting out the idle timeout.
//!
//! The socket under quinn is watched ([`Watched`]): quinn drops datagrams that cannot be QUIC
//! for this endpoint without a word, so [`classify`] names them and they are counted and logged
//! as [`Refusal::Malformed`]. Watching only reads; every datagram still goes to quinn.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use quinn_proto::{ConnectionId, ConnectionIdGenerator, HashedConnectionIdGenerator};

use crate::quic::refusals::{Refusal, Refusals};

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

pub fn bind(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    key_path: &Path,
    refusals: Arc<Refusals>,
) -> Result<quinn::Endpoint, EndpointError> {
    let secret = secret(key_path)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let tag = ring::hmac::sign(&key, b"connection id generator");
    let cid_key = u64::from_le_bytes(tag.as_ref()[..8].try_into().expect("HMAC-SHA256 is 32 bytes"));
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    config.cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(cid_key)));
    let socket = std::net::UdpSocket::bind(addr).map_err(|source| EndpointError::Bind { addr, source })?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| EndpointError::Bind { addr, source: io::Error::other("no async runtime") })?;
    let inner = runtime.wrap_udp_socket(socket).map_err(|source| EndpointError::Bind { addr, source })?;
    let socket = Arc::new(Watched { inner, cids: HashedConnectionIdGenerator::from_key(cid_key), refusals });
    quinn::Endpoint::new_with_abstract_socket(config, Some(server), socket, runtime)
        .map_err(|source| EndpointError::Bind { addr, source })
}

/// Why `datagram` cannot be QUIC for an endpoint whose connection ids `cids` made, if it cannot.
///
/// Only what quinn would certainly drop unanswered: a datagram too short for any packet, a QUIC
/// v1 long header cut short or with over-long connection ids, an Initial in a datagram under
/// the 1,200 bytes RFC 9000 requires, a short header naming a connection id we never issued.
/// Other versions are left to quinn, which answers them with version negotiation.
pub fn classify(datagram: &[u8], cids: &dyn ConnectionIdGenerator) -> Option<&'static str> {
    const TAG: usize = 16;
    let first = *datagram.first()?;
    if first & 0x80 != 0 {
        let Some(version) = datagram.get(1..5) else { return Some("truncated long header") };
        if version != [0, 0, 0, 1] {
            return None;
        }
        let Some(dcid) = datagram.get(5).map(|n| usize::from(*n)) else { return Some("truncated long header") };
        let scid = datagram.get(6 + dcid).map(|n| usize::from(*n));
        match scid {
            _ if dcid > 20 => Some("connection id over 20 bytes"),
            None => Some("truncated long header"),
            Some(scid) if scid > 20 => Some("connection id over 20 bytes"),
            Some(scid) if datagram.len() < 7 + dcid + scid + 1 + TAG => Some("truncated long header"),
            _ if (first >> 4) & 0x3 == 0 && datagram.len() < 1200 => Some("Initial in a datagram under 1200 bytes"),
            _ => None,
        }
    } else {
        let len = cids.cid_len();
        // A header, the connection id, a packet number, the AEAD tag.
        match datagram.get(1..1 + len) {
            Some(cid) if datagram.len() >= 1 + len + 1 + TAG => {
                cids.validate(&ConnectionId::new(cid)).is_err().then_some("connection id we never issued")
            }
            _ => Some("truncated short header"),
        }
    }
}

/// The runtime's UDP socket, with what arrives [`classify`]d before quinn reads it.
struct Watched {
    inner: Arc<dyn AsyncUdpSocket>,
    cids: HashedConnectionIdGenerator,
    refusals: Arc<Refusals>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("inner", &self.inner).finish()
    }
}

impl AsyncUdpSocket for Watched {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let received = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = received {
            for (buf, meta) in bufs.iter().zip(meta.iter()).take(n) {
                let Some(bytes) = buf.get(..meta.len) else { continue };
                // With GRO, one buffer holds several datagrams, `stride` bytes apart.
                for datagram in bytes.chunks(meta.stride.max(1)) {
                    if let Some(why) = classify(datagram, &self.cids) {
                        self.refusals.refused(
                            Refusal::Malformed,
                            Some(meta.addr),
                            format_args!("datagram dropped: {why}"),
                        );
                    }
                }
            }
        }
        received
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
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

    #[test]
    fn datagrams_quinn_would_drop_unanswered_are_named() {
        let mut cids = HashedConnectionIdGenerator::from_key(7);
        let ours = cids.generate_cid();
        let mut short = vec![0x40];
        short.extend_from_slice(&ours);
        short.resize(1 + ours.len() + 1 + 16, 0xab);
        assert_eq!(classify(&short, &cids), None, "a short header to a connection id we issued");
        let mut forged = short.clone();
        forged[1] ^= 0xff;
        assert_eq!(classify(&forged, &cids), Some("connection id we never issued"));
        assert_eq!(classify(&short[..short.len() - 1], &cids), Some("truncated short header"));
        assert_eq!(classify(b"", &cids), None, "nothing to read is nothing to count");
        assert_eq!(classify(b"GET / HTTP/1.1", &cids), Some("truncated short header"));

        // A QUIC v1 Initial: header, 8-byte ids, padded to 1,200 bytes.
        let mut initial = vec![0xc0, 0, 0, 0, 1, 8];
        initial.extend_from_slice(&[1; 8]);
        initial.push(8);
        initial.extend_from_slice(&[2; 8]);
        initial.resize(1200, 0x55);
        assert_eq!(classify(&initial, &cids), None);
        assert_eq!(classify(&initial[..1199], &cids), Some("Initial in a datagram under 1200 bytes"));
        assert_eq!(classify(&initial[..10], &cids), Some("truncated long header"));
        let mut long_cid = initial.clone();
        long_cid[5] = 21;
        assert_eq!(classify(&long_cid, &cids), Some("connection id over 20 bytes"));
        // A Handshake packet may be short; another version is quinn's to answer.
        let mut handshake = initial[..100].to_vec();
        handshake[0] = 0xe0;
        assert_eq!(classify(&handshake, &cids), None);
        let mut other = initial[..100].to_vec();
        other[4] = 2;
        assert_eq!(classify(&other, &cids), None);
    }
}
