//! How the end of a WebSocket session travels: a close code and a reason carrying the gRPC
//! status (docs/websocket.md lists them).
//!
//! - `1000`, reason `OK`: the session ended with OK (after `COMMAND_CLOSE`: results, final
//!   metrics).
//! - `4000 + code` (4001 CANCELLED … 4016 UNAUTHENTICATED): the session ended with that gRPC
//!   status code; the reason is `CODE_NAME: message`, cut to the 123 bytes a close frame holds.

use tonic::{Code, Status};

use super::super::observe::code_label;
use crate::text;

/// Close code of a session that ended with OK.
pub const NORMAL: u16 = 1000;
/// Close codes of sessions that ended with an error status: this plus the gRPC code.
pub const STATUS_BASE: u16 = 4000;
/// The longest close reason a close frame holds (125 bytes of payload less the code).
pub const MAX_REASON_BYTES: usize = 123;

/// A close frame's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

impl Close {
    /// The close of a session that ended with OK.
    pub fn ok() -> Self {
        Self { code: NORMAL, reason: "OK".to_owned() }
    }

    /// The close of a session that ended with `status`.
    pub fn for_status(status: &Status) -> Self {
        if status.code() == Code::Ok {
            return Self::ok();
        }
        Self { code: STATUS_BASE + status.code() as u16, reason: reason(status.code(), status.message()) }
    }
}

/// `CODE_NAME: message`, at most [`MAX_REASON_BYTES`] bytes.
fn reason(code: Code, message: &str) -> String {
    let prefix = format!("{}: ", code_label(code));
    let room = MAX_REASON_BYTES - prefix.len();
    let message = text::clip(message, room);
    let mut reason = prefix + &message;
    reason.truncate(reason.floor_char_boundary(MAX_REASON_BYTES));
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_is_a_normal_closure_and_errors_are_4000_plus_their_code() {
        assert_eq!(Close::for_status(&Status::ok("")), Close { code: 1000, reason: "OK".into() });
        let c = Close::for_status(&Status::unauthenticated("the bearer token is not valid"));
        assert_eq!(c, Close { code: 4016, reason: "UNAUTHENTICATED: the bearer token is not valid".into() });
        assert_eq!(Close::for_status(&Status::cancelled("gone")).code, 4001);
        assert_eq!(Close::for_status(&Status::resource_exhausted("big")).code, 4008);
    }

    #[test]
    fn reasons_fit_a_close_frame_whatever_the_message() {
        for message in ["x".repeat(200), "é→".repeat(100), format!("{}{}", "a".repeat(104), "→→→→")] {
            let c = Close::for_status(&Status::invalid_argument(message.clone()));
            assert!(c.reason.len() <= MAX_REASON_BYTES, "{} bytes: {}", c.reason.len(), c.reason);
            assert!(c.reason.starts_with("INVALID_ARGUMENT: "), "{}", c.reason);
            assert!(c.reason.contains("more bytes)"), "{}", c.reason);
        }
        let exact = "m".repeat(MAX_REASON_BYTES - "ABORTED: ".len());
        assert_eq!(Close::for_status(&Status::aborted(exact.clone())).reason, format!("ABORTED: {exact}"));
    }
}
