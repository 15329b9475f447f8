//! Who an agent is: its id and DC, as plain data. They are read from its verified client
//! certificate (`access/cert_identity.rs`), never from anything it says.

use std::fmt;

/// An agent's identity as its certificate states it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentIdentity {
    pub id: String,
    pub dc: String,
}

impl fmt::Display for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.dc)
    }
}

/// Agent ids and DC names: 1–64 letters, digits, `.`, `_` or `-`.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_restricted() {
        assert!(valid_name("udm-pro.dc1_a"));
        assert!(!valid_name("") && !valid_name("a b") && !valid_name("a/b") && !valid_name(&"x".repeat(65)));
    }
}
