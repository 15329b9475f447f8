//! An error with its causes on one line, which is where an HTTP client says "connection refused"
//! or "timed out".

/// `e` and each of its sources, joined by `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
