//! Who may do what: the CA and its certificates, the revocation list, API tokens, the audit log
//! of admin actions, and the state files the aggregator and its CLI share.
//!
//! - [`certs`]: the CA (`certs init`, `certs issue`); `pem`: certificates and keys from files.
//! - `cert_identity`: an agent's id and DC read from its certificate.
//! - [`revocation`]: revoked agent certificates, by agent id up to a time or by serial.
//! - [`tokens`]: hashed API tokens with read and admin roles.
//! - [`audit`]: the log of admin actions.
//! - `watched`: state files re-read when they change and replaced whole when written.

pub mod audit;
pub(crate) mod cert_identity;
pub mod certs;
pub(crate) mod pem;
pub mod revocation;
pub mod tokens;
pub(crate) mod watched;
