//! argon2id password hashes in PHC format.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Why a password could not be hashed.
#[derive(Debug)]
pub enum HashError {
    /// The OS random source failed (no salt).
    NoRandomness(getrandom::Error),
    /// argon2 refused the salt or the password.
    Argon2(argon2::password_hash::Error),
}

impl std::fmt::Display for HashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashError::NoRandomness(e) => write!(f, "no randomness: {e}"),
            HashError::Argon2(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HashError {}

/// Hashes a password with argon2id and a random salt (the crate's default cost, ~20 ms).
pub fn hash(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(HashError::NoRandomness)?;
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Argon2)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(HashError::Argon2)
}

/// Verifies a password against a PHC string. Slow by design: run it off the cores.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_then_verify() {
        let phc = super::hash("s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(super::verify("s3cret", &phc));
        assert!(!super::verify("wrong", &phc));
        assert!(!super::verify("s3cret", "not a hash"));
    }
}
