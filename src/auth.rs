//! Secrets and tokens: the agents' SIP passwords, kept out of logs, and the REST/WebSocket
//! bearer token, compared in constant time.

use std::fmt;

/// A password that never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The password itself, for digest computation only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Compares a presented token with the configured one in time independent of where they
/// differ, so the token cannot be guessed byte by byte.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (g, e) = (given.as_bytes(), expected.as_bytes());
    if g.len() != e.len() {
        return false;
    }
    g.iter().zip(e).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        assert_eq!(
            format!("{:?}", Secret::new("pass5001".into())),
            "Secret(***)"
        );
    }
}
