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

/// Short-lived TURN credentials in the TURN REST API scheme coturn implements
/// (`use-auth-secret`): the username is `EXPIRY:ID` (Unix seconds), the password
/// base64(HMAC-SHA1(secret, username)). The TURN server checks both without asking us, and
/// refuses them once `EXPIRY` has passed; the secret itself never leaves the gateway.
pub fn turn_credentials(secret: &Secret, id: &str, expires_unix: u64) -> (String, String) {
    use base64::Engine as _;
    use hmac::Mac;
    let username = format!("{expires_unix}:{id}");
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_follow_the_turn_rest_scheme() {
        // Computed independently: python3 -c "import hmac,hashlib,base64;
        // print(base64.b64encode(hmac.new(b'north', b'1800000000:s1', hashlib.sha1).digest()))"
        let (user, pass) = turn_credentials(&Secret::new("north".into()), "s1", 1_800_000_000);
        assert_eq!(user, "1800000000:s1");
        assert_eq!(pass, "OocqsECCiYJgFPT3a3M6TFB2/mQ=");
    }

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
