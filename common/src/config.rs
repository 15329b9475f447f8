//! Loading TOML configuration with errors that name the file, the line and the key.
//!
//! Also the small value types config files share: durations such as `"1s"` or `"500ms"`, byte
//! sizes such as `"64MiB"`, and the log format (`"text"` or `"json"`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}{}: key `{key}`: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid { path: PathBuf, line: Option<usize>, key: String, message: String },
    /// A setting an environment variable overrides, with a value that cannot be used.
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
}

/// Parses `text` (read from `path`) as `T`.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let missing = quoted_key(e.message()).filter(|_| e.message().starts_with("missing field"));
        let (line, key) = match e.span() {
            _ if missing.is_some() => (None, missing.unwrap_or_default()),
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                let line_text = text.lines().nth(line - 1).unwrap_or("");
                let key = line_text.split_once('=').map(|(k, _)| k.trim()).unwrap_or("").to_owned();
                (Some(line), key)
            }
            None => (None, String::new()),
        };
        let key = if key.is_empty() { quoted_key(e.message()).unwrap_or_else(|| "?".into()) } else { key };
        ConfigError::Invalid { path: path.to_owned(), line, key, message: e.message().trim().to_owned() }
    })
}

/// The first `` `name` `` in a message such as "missing field `cert`".
fn quoted_key(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// Reads and parses a TOML file.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse_toml(path, &text)
}

/// A duration written as a number and a unit: `ms`, `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as \"1s\" or \"500ms\""))?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            other => return Err(format!("unknown duration unit {other:?} in {s:?} (use ms, s, m, h or d)")),
        };
        // `try_from`: a duration past `Duration::MAX` ("1e300d") is an error, not a panic.
        Duration::try_from_secs_f64(secs).map(Span).map_err(|_| format!("{s:?} is not a usable duration"))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

/// A byte count written as a number with an optional `KiB`, `MiB` or `GiB` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl std::str::FromStr for Bytes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a size such as \"64MiB\""))?;
        let mul = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => return Err(format!("unknown size unit {other:?} in {s:?} (use KiB, MiB or GiB)")),
        };
        n.checked_mul(mul).map(Bytes).ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The variable whose value, when set, wins over the configuration file's `log_format`.
pub const LOG_FORMAT_VAR: &str = "TWINWATCH_LOG_FORMAT";

/// How a binary writes its log lines to stderr: `log_format` in its configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One line per event for people: time, level, target, message, fields.
    #[default]
    Text,
    /// One JSON object per line for machines: `timestamp`, `level`, `target`, `message`, the
    /// event's fields, and the spans it happened in.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    /// The format in force: `env` (the value of [`LOG_FORMAT_VAR`], if set) wins over `file`.
    /// The caller reads the variable, so this stays a pure function.
    pub fn overridden(file: LogFormat, env: Option<&std::ffi::OsStr>) -> Result<LogFormat, ConfigError> {
        let Some(value) = env else { return Ok(file) };
        let message = |shown: &str| format!("{shown:?} is not a log format (use \"text\" or \"json\")");
        let text = value
            .to_str()
            .ok_or_else(|| ConfigError::Env { name: LOG_FORMAT_VAR, message: message(&value.to_string_lossy()) })?;
        text.parse().map_err(|_| ConfigError::Env { name: LOG_FORMAT_VAR, message: message(text) })
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?} is not a log format (use \"text\" or \"json\")")),
        }
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Example {
        name: String,
        interval: Option<Span>,
        size: Option<Bytes>,
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let path = Path::new("/etc/twinwatch/agent.toml");
        let text = "name = \"x\"\n\ninterval = \"5 parsecs\"\n";
        let err = parse_toml::<Example>(path, text).unwrap_err().to_string();
        assert!(err.starts_with("/etc/twinwatch/agent.toml:3: key `interval`:"), "{err}");
        assert!(err.contains("parsecs"), "{err}");

        let err = parse_toml::<Example>(path, "name = \"x\"\nintervall = \"1s\"\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/twinwatch/agent.toml:2: key `intervall`:"), "{err}");

        let err = parse_toml::<Example>(path, "interval = \"1s\"\n").unwrap_err().to_string();
        assert!(err.contains("key `name`") && err.contains("missing field"), "{err}");
    }

    #[test]
    fn log_format_from_the_file_and_the_environment() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Logs {
            name: Option<String>,
            log_format: Option<LogFormat>,
        }
        let path = Path::new("/etc/twinwatch/agent.toml");
        let logs = parse_toml::<Logs>(path, "log_format = \"json\"\n").unwrap();
        assert_eq!(logs.log_format, Some(LogFormat::Json));
        let err = parse_toml::<Logs>(path, "name = \"x\"\nlog_format = \"yaml\"\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/twinwatch/agent.toml:2: key `log_format`:"), "{err}");
        assert!(err.contains("\"yaml\" is not a log format"), "{err}");

        let env = |v: &str| LogFormat::overridden(LogFormat::Json, Some(std::ffi::OsStr::new(v)));
        assert_eq!(LogFormat::overridden(LogFormat::Json, None).unwrap(), LogFormat::Json);
        assert_eq!(env("text").unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::overridden(LogFormat::Text, Some("json".as_ref())).unwrap(), LogFormat::Json);
        let err = env("JSON").unwrap_err().to_string();
        assert_eq!(
            err,
            "environment variable TWINWATCH_LOG_FORMAT: \"JSON\" is not a log format (use \"text\" or \"json\")"
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!("500ms".parse::<Span>().unwrap().0, Duration::from_millis(500));
        assert_eq!("1.5s".parse::<Span>().unwrap().0, Duration::from_millis(1500));
        assert_eq!("2h".parse::<Span>().unwrap().0, Duration::from_secs(7200));
        assert!("-1s".parse::<Span>().is_err() && "1y".parse::<Span>().is_err());
        assert!("99999999999999999999999d".parse::<Span>().is_err() && "NaNs".parse::<Span>().is_err());
        assert_eq!("64MiB".parse::<Bytes>().unwrap().0, 64 << 20);
        assert_eq!("100".parse::<Bytes>().unwrap().0, 100);
        assert!("99999999999GiB".parse::<Bytes>().is_err());
    }
}
