//! Reading Prometheus text exposition in tests, strictly: every line is a comment, a `# HELP`, a
//! `# TYPE` or a sample, and any other line is an error that names it. A test that compares
//! series must not compare fewer than were sent because some lines were skipped.

use std::collections::BTreeMap;

/// One line of an exposition that is not blank and not a plain comment.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    Help {
        name: &'a str,
        text: &'a str,
    },
    Type {
        name: &'a str,
        kind: &'a str,
    },
    /// `key` is `name{labels}` as written, or `name` alone when there are no labels.
    Sample {
        name: &'a str,
        key: String,
        value: f64,
    },
}

/// The lines of `text`, in order, or the first line that is none of them.
pub fn lines(text: &str) -> Result<Vec<Line<'_>>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("exposition line {}: {why}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            metric_name(name).filter(|l| *l == name.len()).ok_or_else(|| bad("a HELP for no metric name"))?;
            out.push(Line::Help { name, text });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut fields = rest.split(' ');
            let (Some(name), Some(kind), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(bad("a TYPE is a name and a type"));
            };
            metric_name(name).filter(|l| *l == name.len()).ok_or_else(|| bad("a TYPE for no metric name"))?;
            let kinds = ["counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset"];
            if !kinds.contains(&kind) {
                return Err(bad("an unknown type"));
            }
            out.push(Line::Type { name, kind });
        } else if line.starts_with('#') {
            continue;
        } else {
            out.push(sample(line).map_err(|why| bad(&why))?);
        }
    }
    Ok(out)
}

/// `name{labels}` -> value of every sample, or the first line that is not valid exposition
/// (or repeats a series).
pub fn parse(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for line in lines(text)? {
        if let Line::Sample { key, value, .. } = line {
            if out.insert(key.clone(), value).is_some() {
                return Err(format!("exposition repeats the series {key}"));
            }
        }
    }
    Ok(out)
}

/// The length of the metric name `s` starts with, if it starts with one.
fn metric_name(s: &str) -> Option<usize> {
    let first = s.chars().next().filter(|c| c.is_ascii_alphabetic() || *c == '_' || *c == ':')?;
    Some(
        first.len_utf8()
            + s[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(s.len() - 1),
    )
}

/// `name{labels} value [timestamp]`.
fn sample(line: &str) -> Result<Line<'_>, String> {
    let name_len = metric_name(line).ok_or("no metric name")?;
    let name = &line[..name_len];
    let mut rest = &line[name_len..];
    let key_len = if let Some(labels) = rest.strip_prefix('{') { name_len + 1 + label_set(labels)? } else { name_len };
    rest = &line[key_len..];
    let key = line[..key_len].replace("{}", "");
    if !rest.starts_with([' ', '\t']) {
        return Err("no space before the value".into());
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next().ok_or("no value")? {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v if v.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => {
            v.parse().map_err(|_| format!("the value {v:?} is not a number"))?
        }
        v => return Err(format!("the value {v:?} is not a number")),
    };
    if let Some(ts) = fields.next() {
        ts.parse::<f64>().map_err(|_| format!("the timestamp {ts:?} is not a number"))?;
    }
    if fields.next().is_some() {
        return Err("more than a value and a timestamp".into());
    }
    Ok(Line::Sample { name, key, value })
}

/// The length of `labels` up to and including its closing `}`: `name="value"` pairs separated
/// by commas (one may trail), values with `\\`, `\"` and `\n` escapes.
fn label_set(labels: &str) -> Result<usize, String> {
    let bytes = labels.as_bytes();
    let mut i = 0;
    loop {
        match bytes.get(i) {
            Some(b'}') => return Ok(i + 1),
            None => return Err("labels without their closing brace".into()),
            _ => {}
        }
        let rest = &labels[i..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|l| *l > 0 && !rest.starts_with(|c: char| c.is_ascii_digit()))
            .ok_or("a label without a name")?;
        i += len;
        if bytes[i..].get(..2) != Some(b"=\"") {
            return Err("a label name without =\"".into());
        }
        i += 2;
        loop {
            match bytes.get(i) {
                None => return Err("a label value without its closing quote".into()),
                Some(b'"') => break,
                Some(b'\\') => match bytes.get(i + 1) {
                    Some(b'\\' | b'"' | b'n') => i += 2,
                    _ => return Err("a label value with an unknown escape".into()),
                },
                Some(_) => i += 1,
            }
        }
        i += 1;
        match bytes.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return Err("labels not separated by commas".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_labels_escapes_timestamps_and_special_values() {
        let text = "# HELP up Whether it is up.\n# TYPE up gauge\nup 1\n\n# a comment\n\
                    node_uname_info{release=\"6.1\",version=\"#1 SMP \\\"x\\\" \\\\ y\"} 1\n\
                    m{a=\"1\",} 2.5e+06 1700000000000\nn{} NaN\no -Inf\n";
        let got = parse(text).unwrap();
        assert_eq!(got["up"], 1.0);
        assert_eq!(got["node_uname_info{release=\"6.1\",version=\"#1 SMP \\\"x\\\" \\\\ y\"}"], 1.0);
        assert_eq!(got["m{a=\"1\",}"], 2.5e6);
        assert!(got["n"].is_nan());
        assert_eq!(got["o"], f64::NEG_INFINITY);
        assert_eq!(
            lines(text).unwrap()[..2],
            [Line::Help { name: "up", text: "Whether it is up." }, Line::Type { name: "up", kind: "gauge" }]
        );
    }

    #[test]
    fn a_line_it_cannot_read_is_an_error_naming_it() {
        for bad in [
            "up",
            "up one",
            "up 1 2 3",
            "up{a=\"1\" 1",
            "up{a=1} 1",
            "up{a=\"1\"b=\"2\"} 1",
            "up{=\"1\"} 1",
            "up{a=\"\\x\"} 1",
            "9up 1",
            "up{a=\"1\"}1",
            "# TYPE up",
            "# TYPE up sometimes",
            "up inf",
        ] {
            let err = parse(&format!("ok 1\n{bad}\n")).unwrap_err();
            assert!(err.contains("line 2: ") && err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        assert!(parse("a 1\na 2\n").unwrap_err().contains("repeats the series a"));
    }
}
