//! Counters kept beside the twin (the QUIC edge's refusals, the remote write queues) that
//! `/metrics` shows after the twins' series: the API renders them without knowing their owners,
//! so it needs no import of the QUIC edge or of remote write.

/// Something with counters to show on `/metrics`.
pub trait Counters: Send + Sync {
    /// Appends the counters in Prometheus text format.
    fn render_metrics(&self, out: &mut String);
}
