//! Finding the API token: `--token-file`, then `PASSAGE_TOKEN`, then the token file in the
//! user's configuration directory. A token file others can read is refused, as ssh refuses
//! such a key.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::client::Failure;

/// The environment variable that can hold the token.
const TOKEN_VARIABLE: &str = "PASSAGE_TOKEN";

/// An API token and where it came from. Its secret is shown nowhere, debug output included.
pub struct Token {
    secret: String,
    source: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// The secret, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Where it came from, for messages: a file's path or the variable's name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A token given in a unit test.
    #[cfg(test)]
    pub fn for_tests(secret: &str) -> Token {
        Token {
            secret: secret.into(),
            source: "a test".into(),
        }
    }
}

/// The token: from `file` when given, else `PASSAGE_TOKEN`, else the default token file.
pub fn find(file: Option<&Path>) -> Result<Token, Failure> {
    if let Some(file) = file {
        return read(file);
    }
    if let Ok(secret) = std::env::var(TOKEN_VARIABLE)
        && !secret.trim().is_empty()
    {
        return Ok(Token {
            secret: secret.trim().to_string(),
            source: TOKEN_VARIABLE.into(),
        });
    }
    let default = default_file();
    match &default {
        Some(path) if path.exists() => read(path),
        _ => Err(Failure::Setup(format!(
            "no API token found: looked for --token-file, {TOKEN_VARIABLE} and {}; \
             make one with `passage token create NAME --user YOU` (or POST /api/v1/tokens) \
             and put it in one of them",
            default.map_or_else(
                || "$XDG_CONFIG_HOME/passage/token (HOME is not set)".into(),
                |p| p.display().to_string()
            )
        ))),
    }
}

/// `$XDG_CONFIG_HOME/passage/token`, or `~/.config/passage/token`.
fn default_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        // The XDG rules ignore a relative or empty value.
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(config.join("passage").join("token"))
}

/// Reads a token file, refusing it when its group or others may read or change it.
fn read(path: &Path) -> Result<Token, Failure> {
    let shown = path.display();
    let unreadable =
        |e: std::io::Error| Failure::Setup(format!("cannot read the token file {shown}: {e}"));
    let mode = std::fs::metadata(path)
        .map_err(unreadable)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(Failure::Setup(format!(
            "permissions {mode:04o} for the token file {shown} are too open: it must not be \
             accessible by group or others; run `chmod 600 {shown}`"
        )));
    }
    let secret = std::fs::read_to_string(path).map_err(unreadable)?;
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(Failure::Setup(format!("the token file {shown} is empty")));
    }
    Ok(Token {
        secret: secret.to_string(),
        source: shown.to_string(),
    })
}
