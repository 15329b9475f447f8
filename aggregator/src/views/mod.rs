//! The answers the API serves, built from the twin: pure functions of a twin and the time passed
//! in, with no state, no I/O and no clock of their own.
//!
//! - [`hosts`]: host twins in sections with units and rates; what was stored of their batches.
//! - [`endpoints`]: endpoints across vantages, one endpoint in detail.
//! - [`services`]: services, over their endpoints and the hosts that report them.
//! - [`exposition`]: every twin's latest values as Prometheus text.

pub(crate) mod endpoints;
pub mod exposition;
pub(crate) mod hosts;
pub(crate) mod services;
