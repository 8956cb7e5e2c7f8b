//! Bearer-token authentication for the pipeline RPCs.
//!
//! Tokens are compared in constant time (`subtle`), and neither the configured tokens nor the
//! presented one ever appear in a log line or an error message.

use subtle::ConstantTimeEq;

use super::super::observe;
use super::super::status::ServiceError;
use crate::config::Secret;

/// The configured tokens. Empty means authentication is off.
#[derive(Clone, Default)]
pub struct Tokens(Vec<Secret>);

impl Tokens {
    pub fn new(tokens: Vec<Secret>) -> Self {
        Self(tokens)
    }

    pub fn is_enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Checks `authorization: Bearer <token>`.
    pub fn check(&self, headers: &http::HeaderMap) -> Result<(), ServiceError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            observe::auth_rejected("missing");
            return Err(ServiceError::Unauthenticated("missing `authorization: Bearer <token>` metadata".to_owned()));
        };
        // The scheme is case-insensitive (RFC 9110, section 11.1): `Bearer`, `bearer`, `BEARER`.
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(presented) = presented else {
            observe::auth_rejected("malformed");
            return Err(ServiceError::Unauthenticated(
                "the authorization metadata must have the form `Bearer <token>`".to_owned(),
            ));
        };
        self.verify(presented)
    }

    /// Checks a token presented some other way than the `authorization` header (a WebSocket
    /// subprotocol), in constant time; a wrong one is refused and counted as by [`Tokens::check`].
    pub fn verify(&self, presented: &str) -> Result<(), ServiceError> {
        if !self.is_enabled() {
            return Ok(());
        }
        // Compare against every token so the time taken does not reveal which one matched.
        let matched = self
            .0
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.expose().as_bytes().ct_eq(presented.as_bytes()));
        if bool::from(matched) {
            Ok(())
        } else {
            observe::auth_rejected("invalid");
            Err(ServiceError::Unauthenticated("the bearer token is not valid".to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(a) = auth {
            h.insert(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn disabled_without_tokens() {
        assert!(Tokens::default().check(&headers(None)).is_ok());
    }

    #[test]
    fn good_token_passes_and_bad_ones_never_echo_the_token() {
        let t = Tokens::new(vec![Secret::new("s3cret-one"), Secret::new("s3cret-two")]);
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert!(t.check(&headers(Some(&format!("{scheme} s3cret-two")))).is_ok(), "{scheme}");
        }
        for (h, why) in [
            (None, "missing"),
            (Some("Bearer wrong-token"), "not valid"),
            (Some("Basic czNjcmV0LW9uZQ=="), "form `Bearer <token>`"),
            (Some("Bearer s3cret-on"), "not valid"),
        ] {
            let err = t.check(&headers(h)).unwrap_err().to_string();
            assert!(err.contains(why), "{h:?}: {err}");
            assert!(!err.contains("s3cret") && !err.contains("wrong-token"), "{err}");
        }
    }

    #[test]
    fn a_token_presented_outside_the_header_is_checked_alike() {
        let t = Tokens::new(vec![Secret::new("s3cret-one")]);
        assert!(t.verify("s3cret-one").is_ok());
        let err = t.verify("s3cret-on").unwrap_err().to_string();
        assert_eq!(err, "the bearer token is not valid");
        assert!(Tokens::default().verify("anything").is_ok());
    }
}
