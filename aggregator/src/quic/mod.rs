//! The QUIC edge: the endpoint agents connect to, its TLS, and the sessions that feed the twin.
//!
//! - [`ingest`]: accepts connections and runs each agent's hello/batch/ack loop, deciding each
//!   round of messages with the sans-IO [`round`]: what to store, and what to answer once durable.
//! - [`admission`]: the handshake slots that turn a reconnect storm into waves.
//! - [`peer_identity`]: a connection's verified client certificate.
//! - [`tls`]: the server's TLS, whose client certificate verifier consults the revocation list.
//! - [`reset_key`]: the endpoint, with a stateless-reset key that survives restarts.
//! - [`refusals`]: what the edge turns away, counted and logged at a bounded rate
//!   ([`log_limit`]).

pub mod admission;
pub mod ingest;
pub(crate) mod log_limit;
pub mod peer_identity;
pub mod refusals;
pub mod reset_key;
pub(crate) mod round;
pub mod tls;
