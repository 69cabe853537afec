//! `[audit]`: the audit trail of writes and denials (`crate::audit`), a JSON-lines stream to a
//! file rotated by size, or to stderr under the tracing target `origin::audit`.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// A file this large (or larger with the record being written) is rotated first: 100 MiB,
/// about half a million records, readable with ordinary tools.
pub const AUDIT_FILE_BYTES_DEFAULT: u64 = 100 * 1024 * 1024;
/// Rotated files kept (`<file>.1` the newest .. `<file>.<keep_files>`).
pub const AUDIT_KEEP_FILES_DEFAULT: u32 = 5;
/// Smallest `max_file_bytes`: room for a few records, so a file is never rotated per record.
pub const AUDIT_FILE_BYTES_MIN: u64 = 4096;
/// Most `keep_files`: each rotation renames every kept file once.
pub const AUDIT_KEEP_FILES_MAX: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Write the audit trail at all.
    #[serde(default)]
    pub enabled: bool,
    /// The file records are appended to; absent: stderr, under the target `origin::audit`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Rotate the file before it would pass this size.
    #[serde(default = "max_file_bytes")]
    pub max_file_bytes: u64,
    /// Rotated files kept; 0 keeps none (the file starts over).
    #[serde(default = "keep_files")]
    pub keep_files: u32,
}

fn max_file_bytes() -> u64 {
    AUDIT_FILE_BYTES_DEFAULT
}

fn keep_files() -> u32 {
    AUDIT_KEEP_FILES_DEFAULT
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: false,
            file: None,
            max_file_bytes: AUDIT_FILE_BYTES_DEFAULT,
            keep_files: AUDIT_KEEP_FILES_DEFAULT,
        }
    }
}

impl AuditConfig {
    /// The keys' bounds, and a `file` whose directory exists (nothing is created here:
    /// `check-config` calls this too).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| Err(ConfigError::new(format!("audit.{key}: {why}")));
        if self.max_file_bytes < AUDIT_FILE_BYTES_MIN {
            return bad(
                "max_file_bytes",
                format!("must be at least {AUDIT_FILE_BYTES_MIN}"),
            );
        }
        if self.keep_files > AUDIT_KEEP_FILES_MAX {
            return bad("keep_files", format!("at most {AUDIT_KEEP_FILES_MAX}"));
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        if file.as_os_str().is_empty() || file.file_name().is_none() {
            return bad("file", format!("{} names no file", file.display()));
        }
        if file.is_dir() {
            return bad("file", format!("{} is a directory", file.display()));
        }
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        if !dir.is_dir() {
            return bad(
                "file",
                format!("the directory {} does not exist", dir.display()),
            );
        }
        Ok(())
    }
}
