//! Reading Prometheus text exposition in tests.

use std::collections::BTreeMap;

/// `name{labels}` -> value, from Prometheus text exposition (`name` alone when it has no labels).
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.replace("{}", ""), value.parse().ok()?))
        })
        .collect()
}
