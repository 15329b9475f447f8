//! The answers the API serves, built from the twin: pure functions of a twin and the time passed
//! in, with no state, no I/O and no clock of their own.
//!
//! - [`endpoints`]: endpoints across vantages, one endpoint in detail, services.
//! - [`exposition`]: every twin's latest values as Prometheus text.

pub mod endpoints;
pub mod exposition;
