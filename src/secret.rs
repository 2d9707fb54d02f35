//! A value that must never reach a log line or `check-config` output (passwords, keys,
//! URLs with credentials). A leaf: config reads secrets, crypt and the engines take them.

use std::fmt;

/// A value that must never reach a log line or `check-config` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
