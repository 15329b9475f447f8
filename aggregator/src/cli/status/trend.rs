//! Trends for `status`: percent changes read from the history API's `trend=true` answers (each
//! series' mean over the window and over the window before). Pure functions of the JSON.

use serde_json::Value;

/// `(now - before) / |before|` in percent, as the history API computes it.
pub fn change_pct(before: f64, now: f64) -> Option<f64> {
    (before != 0.0 && before.is_finite() && now.is_finite()).then(|| (now - before) / before.abs() * 100.0)
}

/// The change of a single series (the first that has one).
pub fn series_change(history: &Value) -> Option<f64> {
    history["series"].as_array()?.iter().find_map(|s| s["trend"]["change_pct"].as_f64())
}

/// `(mean, previous mean)` summed over every series `keep` accepts (by its labels), or `None`
/// when any of them lacks either.
fn sums(history: &Value, keep: impl Fn(&Value) -> bool) -> Option<(f64, f64)> {
    let mut out = (0.0, 0.0);
    let mut any = false;
    for s in history["series"].as_array()?.iter().filter(|s| keep(&s["labels"])) {
        out.0 += s["trend"]["mean"].as_f64()?;
        out.1 += s["trend"]["previous_mean"].as_f64()?;
        any = true;
    }
    any.then_some(out)
}

/// The change in CPU busy share from `node_cpu_seconds_total` asked with `rate=true&trend=true`:
/// busy (every mode but idle and iowait) over all, now against before.
pub fn cpu_change(history: &Value) -> Option<f64> {
    let idle = |l: &Value| matches!(l["mode"].as_str(), Some("idle" | "iowait"));
    let all = sums(history, |_| true)?;
    let busy = sums(history, |l| !idle(l)).unwrap_or((0.0, 0.0));
    if all.0 <= 0.0 || all.1 <= 0.0 {
        return None;
    }
    change_pct(busy.1 / all.1, busy.0 / all.0)
}

/// The change in used memory from `node_memory_MemAvailable_bytes` and the host's total.
pub fn used_memory_change(history: &Value, total_bytes: f64) -> Option<f64> {
    let (now, before) = sums(history, |_| true)?;
    change_pct(total_bytes - before, total_bytes - now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn series(mode: &str, mean: f64, previous: f64) -> Value {
        json!({ "labels": { "cpu": "0", "mode": mode }, "trend": { "mean": mean, "previous_mean": previous } })
    }

    #[test]
    fn cpu_busy_share_change() {
        // Busy 0.2 of 1.0 before, 0.3 of 1.0 now: +50 %.
        let h = json!({ "series": [series("user", 0.2, 0.1), series("system", 0.1, 0.1), series("idle", 0.7, 0.8)] });
        assert!((cpu_change(&h).unwrap() - 50.0).abs() < 1e-9);
        let fresh =
            json!({ "series": [{ "labels": { "mode": "user" }, "trend": { "mean": 0.2, "previous_mean": null } }] });
        assert_eq!(cpu_change(&fresh), None, "no history before the window: no trend");
        assert_eq!(cpu_change(&json!({})), None);
        assert_eq!(cpu_change(&json!({ "series": "x" })), None);
    }

    #[test]
    fn memory_and_single_series() {
        let h = json!({ "series": [{ "labels": {}, "trend": { "mean": 6.0, "previous_mean": 8.0 } }] });
        // Used 2 of 10 before, 4 now.
        assert_eq!(used_memory_change(&h, 10.0), Some(100.0));
        let one = json!({ "series": [{ "trend": { "change_pct": null } }, { "trend": { "change_pct": -3.5 } }] });
        assert_eq!(series_change(&one), Some(-3.5));
        assert_eq!(change_pct(0.0, 1.0), None);
    }
}
