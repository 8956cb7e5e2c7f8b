//! Protocol version negotiation: the `remotemedia-protocol-version` header and the in-band
//! `client_version` fields. `v1`, `1` and `1.2.3` all mean major version 1; missing means v1.

use super::super::status::ServiceError;

/// Header carrying the client's protocol version.
pub const HEADER: &str = "remotemedia-protocol-version";
/// The protocol this server speaks.
pub const CURRENT: &str = "v1";
/// Every protocol version this server accepts.
pub const SUPPORTED: &[&str] = &["v1"];

/// The major version a version string names, if it is well formed.
pub fn major(version: &str) -> Option<u64> {
    let v = version.trim();
    if v.is_empty() {
        return Some(1);
    }
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let major = v.split('.').next()?;
    if major.is_empty() || !v.split('.').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    major.parse().ok()
}

/// Accepts any version whose major is one this server supports.
pub fn check(version: &str) -> Result<(), ServiceError> {
    let supported = major(version).is_some_and(|m| SUPPORTED.iter().any(|s| major(s) == Some(m)));
    if supported {
        Ok(())
    } else {
        Err(ServiceError::VersionMismatch {
            requested: version.chars().take(64).collect(),
            supported: SUPPORTED.iter().map(|s| (*s).to_owned()).collect(),
        })
    }
}

/// Checks the version header, if the request has one.
pub fn check_header(headers: &http::HeaderMap) -> Result<(), ServiceError> {
    match headers.get(HEADER) {
        None => Ok(()),
        Some(v) => check(v.to_str().unwrap_or("(not text)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_major_one_is_accepted() {
        for v in ["", "v1", "V1", "1", "1.4.0", "v1.2.3", " 1 "] {
            assert!(check(v).is_ok(), "{v:?}");
        }
    }

    #[test]
    fn other_majors_and_garbage_are_rejected_with_the_supported_list() {
        for v in ["v2", "2.0.0", "0.9", "banana", "v", "1..2", "-1"] {
            let err = check(v).unwrap_err();
            assert!(err.to_string().ends_with("supported versions: v1"), "{v:?}: {err}");
        }
    }

    #[test]
    fn a_missing_header_means_v1() {
        assert!(check_header(&http::HeaderMap::new()).is_ok());
        let mut h = http::HeaderMap::new();
        h.insert(HEADER, "v2".parse().unwrap());
        assert!(matches!(check_header(&h), Err(ServiceError::VersionMismatch { .. })));
    }
}
