//! A username and password, from RFC 1929 or HTTP Basic.

use crate::error::ParseError;
use crate::limits::{MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES};
use core::fmt;

/// Credentials a client presented. At most [`MAX_USERNAME_BYTES`] and
/// [`MAX_PASSWORD_BYTES`] of UTF-8 each, checked on construction, so they
/// always fit RFC 1929's length octets. Either may be empty: RFC 1929 asks
/// for at least one byte, but some clients send an empty password, and an
/// empty one simply fails the check. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    pub fn new(
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<Credentials, ParseError> {
        let (username, password) = (username.into(), password.into());
        check_len("username", username.len(), MAX_USERNAME_BYTES)?;
        check_len("password", password.len(), MAX_PASSWORD_BYTES)?;
        Ok(Credentials { username, password })
    }

    /// From raw bytes as received; both must be UTF-8 (a configured
    /// credential is a TOML string, so no other bytes could match).
    pub(crate) fn from_bytes(username: &[u8], password: &[u8]) -> Result<Credentials, ParseError> {
        let text = |field, bytes: &[u8]| {
            String::from_utf8(bytes.to_vec()).map_err(|_| ParseError::CredentialsNotUtf8 { field })
        };
        check_len("username", username.len(), MAX_USERNAME_BYTES)?;
        check_len("password", password.len(), MAX_PASSWORD_BYTES)?;
        Credentials::new(text("username", username)?, text("password", password)?)
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Whether these are the given credentials. The comparison does not
    /// stop at the first differing byte, so its time does not tell a
    /// guesser how much of a secret was right (only whether the lengths
    /// match).
    pub fn matches(&self, username: &str, password: &str) -> bool {
        let user_ok = constant_time_eq(self.username.as_bytes(), username.as_bytes());
        let password_ok = constant_time_eq(self.password.as_bytes(), password.as_bytes());
        user_ok & password_ok
    }
}

fn check_len(field: &'static str, len: usize, limit: usize) -> Result<(), ParseError> {
    if len > limit {
        return Err(ParseError::CredentialsTooLong { field, len, limit });
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    core::hint::black_box(diff) == 0
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_hold_to_their_limits_and_hide_the_password() {
        let max = "u".repeat(MAX_USERNAME_BYTES);
        assert!(Credentials::new(max.clone(), max.clone()).is_ok());
        assert_eq!(
            Credentials::new(format!("{max}u"), ""),
            Err(ParseError::CredentialsTooLong {
                field: "username",
                len: 256,
                limit: 255
            })
        );
        assert_eq!(
            Credentials::new("", format!("{max}p")),
            Err(ParseError::CredentialsTooLong {
                field: "password",
                len: 256,
                limit: 255
            })
        );
        assert_eq!(
            Credentials::from_bytes(b"al\xffce", b"pw"),
            Err(ParseError::CredentialsNotUtf8 { field: "username" })
        );
        assert_eq!(
            Credentials::from_bytes(b"alice", b"\xc3"),
            Err(ParseError::CredentialsNotUtf8 { field: "password" })
        );
        let c = Credentials::new("alice", "s3cret").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            format!("{c:?}"),
            r#"Credentials { username: "alice", password: "<redacted>" }"#
        );
        assert!(c.matches("alice", "s3cret"));
        assert!(!c.matches("alice", "s3creT"));
        assert!(!c.matches("alice", "s3cret "));
        assert!(!c.matches("alicE", "s3cret"));
        assert!(!c.matches("", ""));
    }
}
