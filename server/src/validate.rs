//! Validators for what clients send: adapter names, model ids, token names and versions. A leaf
//! module (it names only the registry's error type), so the registry, the handlers and the token
//! store all use it without a cycle.

use crate::registry::{Error, Result};

/// Adapter names, model ids and token names: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn check_name(s: &str, what: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && (s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0].is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid {what} {:?}: expected [a-z0-9][a-z0-9._-]{{0,63}}", truncate(s))))
    }
}

pub fn check_version(s: &str) -> Result<()> {
    if s.len() > 64 {
        return Err(Error::Invalid(format!("invalid version {:?}: too long", truncate(s))));
    }
    semver::Version::parse(s)
        .map(|_| ())
        .map_err(|e| Error::Invalid(format!("invalid version {:?}: not semver ({e})", truncate(s))))
}

pub fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        for ok in ["a", "chat-zh", "medical.v2", "0", &"a".repeat(64)] {
            assert!(check_name(ok, "name").is_ok(), "{ok}");
        }
        for bad in ["", "A", "-a", ".a", "_a", "a/b", "a b", "..", "a\\b", "中文", &"a".repeat(65)] {
            assert!(check_name(bad, "name").is_err(), "{bad}");
        }
        for ok in ["1.0.0", "0.1.0-rc.1", "2.0.0+build.5"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["1.0", "v1.0.0", "1.0.0/../x", ""] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
