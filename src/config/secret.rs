//! Secrets given in the file, in another file, or in the environment.

use std::path::Path;

use super::ConfigError;

/// A secret given one of three ways: `<key>` in the file, `<key>_file` (a path whose content
/// is the secret, one trailing newline dropped) or `<key>_env` (an environment variable).
pub struct Secret<'a> {
    pub plain: Option<String>,
    pub file: Option<&'a Path>,
    pub env: Option<&'a str>,
}

impl Secret<'_> {
    /// The secret, or None when none of the three is given; an error names `key` when more
    /// than one is, or when the file or variable cannot be read (never the secret itself).
    pub fn resolve(self, key: &str) -> Result<Option<String>, ConfigError> {
        let given = [
            self.plain.is_some(),
            self.file.is_some(),
            self.env.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ConfigError::new(format!(
                "{key}: give one of {key}, {key}_file and {key}_env"
            )));
        }
        if let Some(path) = self.file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::caused(format!("{key}_file: cannot read {}", path.display()), e)
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            return Ok(Some(text.to_string()));
        }
        if let Some(var) = self.env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(ConfigError::new(format!(
                    "{key}_env: environment variable {var:?} is not set (or not UTF-8)"
                ))),
            };
        }
        Ok(self.plain)
    }
}
