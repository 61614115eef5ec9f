//! Secrets: zeroized on drop, never shown by `Debug` or `Display`.

use std::fmt;

use zeroize::Zeroizing;

/// A secret string (token secret, password, ticket, CSRF token). Its memory is zeroized when
/// dropped; `Debug` prints `Secret(***)`. Read it only with [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// Reads a secret from a file (e.g. a token secret file, mode 0600), trimming the
    /// trailing newline.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let raw = Zeroizing::new(std::fs::read_to_string(path)?);
        Ok(Secret::new(raw.trim_end_matches(['\n', '\r']).to_string()))
    }

    /// The secret text. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}
