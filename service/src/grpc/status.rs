//! The one place where internal errors become wire errors: an in-band [`ErrorResponse`] for
//! pipeline errors, or a [`tonic::Status`] with `google.rpc` details (`ErrorInfo` whose `reason`
//! is the `ErrorType` name, `RetryInfo`, `BadRequest`) for rejections.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::observe::outcome;
use crate::graph::{ExecError, ValidationError, Violation};
use crate::nodes::NodeErrorKind;
use crate::proto::{ErrorResponse, ErrorType};
use crate::text;

/// `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "remotemedia.v1";

/// Longest `grpc-message`, in bytes before percent-encoding (which can triple non-ASCII text).
/// With the details below, a status stays under 7 KiB of response metadata whatever the client
/// sent, within the 8 KiB the strictest gRPC clients accept.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 768;
/// Most `BadRequest` violations in a status, and the longest description of each; the in-band
/// error (in the response body) lists every violation in full.
const MAX_STATUS_VIOLATIONS: usize = 8;
const MAX_STATUS_VIOLATION_BYTES: usize = 160;
const MAX_STATUS_FIELD_BYTES: usize = 80;
/// Longest in-band error message.
const MAX_IN_BAND_MESSAGE_BYTES: usize = 8 * 1_024;

/// Which call an error happened in, for [`ServiceError::delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// An `ExecutePipeline` call.
    Execute,
    /// A stream session, outside the processing of a chunk (the manifest, a protocol error,
    /// a limit, the close).
    Stream,
    /// The processing of one stream chunk.
    StreamChunk,
}

/// How an error reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// As `ExecuteResponse.error`; the call ends with OK.
    InBand,
    /// As a `StreamResponse.error` naming the chunk; the stream goes on.
    InBandAndContinue,
    /// As a `StreamResponse.error`, then the status that ends the stream.
    InBandThenStatus,
    /// As the status that ends the call.
    Status,
}

/// Everything the gRPC layer can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// The pipeline could not be built or run.
    #[error(transparent)]
    Exec(#[from] ExecError),

    /// A request asked for more than a server cap allows, or an input is over its limit.
    #[error("{message}")]
    Limit { message: String, limit: &'static str },

    /// Missing or wrong bearer token.
    #[error("{0}")]
    Unauthenticated(String),

    /// A browser call from an `Origin` outside `cors_allowed_origins`.
    #[error("{0}")]
    Forbidden(String),

    /// The client's protocol version is not supported.
    #[error("protocol version `{}` is not supported; supported versions: {}", text::quoted(requested), supported.join(", "))]
    VersionMismatch { requested: String, supported: Vec<String> },

    /// Too many concurrent executions or streams.
    #[error("{message}")]
    Overloaded { message: String, limit: &'static str, retry_after: Duration },

    /// The server is shutting down.
    #[error("the server is shutting down; retry on another instance")]
    Draining,

    /// The grace period of a shutdown ran out while the call ran: its work was cancelled.
    #[error(
        "the server shut down before this call finished (its grace period ran out); the work was cancelled: retry on another instance"
    )]
    ShutDown,

    /// A stream message arrived in the wrong state (chunk before manifest, second manifest).
    /// The violation names the message's field (`manifest`, `audio_chunk`).
    #[error("{}", .0.message)]
    OutOfOrder(Violation),

    /// A request message names something that does not exist or cannot be used; the violation
    /// names its field (`audio_chunk.node_id`).
    #[error("{}", .0.message)]
    InvalidArgument(Violation),

    /// The request is in a wire format the service does not speak: a message codec other than
    /// protobuf, or a compression other than gzip. The violation names the header
    /// (`content-type`, `grpc-encoding`; see [`wire`](super::interceptors::wire)).
    #[error("{}", .0.message)]
    Unsupported(Violation),

    /// The client cancelled.
    #[error("{0}")]
    Cancelled(String),
}

impl ServiceError {
    /// The `ErrorType` for this error.
    pub fn error_type(&self) -> ErrorType {
        match self {
            ServiceError::Exec(e) => exec_error_type(e),
            ServiceError::Limit { .. } | ServiceError::Overloaded { .. } => ErrorType::ResourceLimit,
            ServiceError::Unauthenticated(_) | ServiceError::Forbidden(_) => ErrorType::Authentication,
            ServiceError::VersionMismatch { .. } => ErrorType::VersionMismatch,
            ServiceError::OutOfOrder(_) | ServiceError::InvalidArgument(_) | ServiceError::Unsupported(_) => {
                ErrorType::Validation
            }
            ServiceError::Draining | ServiceError::ShutDown | ServiceError::Cancelled(_) => ErrorType::Internal,
        }
    }

    /// How this error reaches the client in `call`: the one decision of in-band against status.
    /// Pipeline errors are in-band (the pipeline ran, or was checked, and failed); a stream
    /// chunk that a node failed on is reported and the stream goes on (unless the failure lost
    /// the chunk's audio, see [`ExecError::ends_stream`]); cancellation, shutdown
    /// and refusals before any work (token, version, overload) are statuses.
    pub fn delivery(&self, call: Call) -> Delivery {
        use ServiceError as E;
        match (call, self) {
            (_, E::Exec(ExecError::Cancelled) | E::Cancelled(_) | E::Draining | E::ShutDown) => Delivery::Status,
            (Call::Execute, E::Exec(_) | E::Limit { .. }) => Delivery::InBand,
            (Call::Execute, _) => Delivery::Status,
            (Call::StreamChunk, E::Exec(e @ (ExecError::Node { .. } | ExecError::CircuitOpen { .. })))
                if !e.ends_stream() =>
            {
                Delivery::InBandAndContinue
            }
            (Call::Stream | Call::StreamChunk, _) => Delivery::InBandThenStatus,
        }
    }

    /// The call's outcome, as the `outcome` metric label (see [`observe::outcome`]).
    pub fn outcome(&self) -> &'static str {
        match self {
            ServiceError::Exec(ExecError::Cancelled) | ServiceError::Cancelled(_) => outcome::CANCELLED,
            ServiceError::Draining | ServiceError::ShutDown => outcome::UNAVAILABLE,
            _ => outcome_of(self.error_type()),
        }
    }

    /// The in-band form, for `ExecuteResponse.error` and `StreamResponse.error`.
    pub fn to_error_response(&self) -> ErrorResponse {
        let mut resp = ErrorResponse {
            error_type: self.error_type() as i32,
            message: text::clip(&self.to_string(), MAX_IN_BAND_MESSAGE_BYTES).into_owned(),
            failing_node_id: String::new(),
            context: String::new(),
            stack_trace: String::new(),
        };
        let context = match self {
            ServiceError::Exec(e) => {
                resp.failing_node_id = e.node_id().unwrap_or_default().to_owned();
                if let ExecError::Node { source, .. } = e {
                    resp.stack_trace = source.stack_trace.clone().unwrap_or_default();
                }
                exec_context(e)
            }
            ServiceError::OutOfOrder(v) | ServiceError::InvalidArgument(v) | ServiceError::Unsupported(v) => {
                validation_context(&ValidationError::new(vec![v.clone()]))
            }
            ServiceError::Limit { limit, .. } => json!({ "limit": limit }),
            ServiceError::VersionMismatch { requested, supported } => {
                json!({ "requested": requested, "supported_versions": supported })
            }
            ServiceError::Overloaded { limit, retry_after, .. } => {
                json!({ "limit": limit, "retry_after_ms": retry_after.as_millis() as u64 })
            }
            _ => Value::Null,
        };
        if !context.is_null() {
            resp.context = context.to_string();
        }
        resp
    }

    /// The status form, with `ErrorInfo` and the details that fit the error.
    pub fn to_status(&self) -> Status {
        let error_type = self.error_type();
        let code = match self {
            ServiceError::Exec(ExecError::Validation(_)) => Code::InvalidArgument,
            ServiceError::Exec(ExecError::Timeout { .. } | ExecError::MemoryLimit { .. }) => Code::ResourceExhausted,
            ServiceError::Exec(ExecError::Cancelled) | ServiceError::Cancelled(_) => Code::Cancelled,
            ServiceError::Exec(ExecError::Node { source, .. }) if source.kind == NodeErrorKind::Validation => {
                Code::InvalidArgument
            }
            ServiceError::Exec(ExecError::Node { source, .. }) if source.kind == NodeErrorKind::ResourceLimit => {
                Code::ResourceExhausted
            }
            ServiceError::Exec(ExecError::Node { .. } | ExecError::CircuitOpen { .. }) => Code::Aborted,
            ServiceError::Exec(ExecError::Internal(_)) => Code::Internal,
            ServiceError::Limit { .. } | ServiceError::Overloaded { .. } => Code::ResourceExhausted,
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::Forbidden(_) => Code::PermissionDenied,
            ServiceError::VersionMismatch { .. } | ServiceError::OutOfOrder(_) => Code::FailedPrecondition,
            ServiceError::InvalidArgument(_) => Code::InvalidArgument,
            // What gRPC answers for a compression it does not implement (and tonic for ours).
            ServiceError::Unsupported(_) => Code::Unimplemented,
            ServiceError::Draining | ServiceError::ShutDown => Code::Unavailable,
        };
        let mut info = HashMap::new();
        let mut details = ErrorDetails::new();
        let mut metadata = MetadataMap::new();
        match self {
            ServiceError::Exec(ExecError::Validation(v)) => bad_request(&mut details, &mut info, &v.violations),
            ServiceError::OutOfOrder(v) | ServiceError::InvalidArgument(v) => {
                bad_request(&mut details, &mut info, std::slice::from_ref(v));
            }
            ServiceError::Unsupported(v) => {
                bad_request(&mut details, &mut info, std::slice::from_ref(v));
                if v.field == super::interceptors::wire::GRPC_ENCODING.as_str() {
                    // The gRPC protocol's answer to an unsupported compression lists the ones
                    // the server takes.
                    metadata.insert(
                        "grpc-accept-encoding",
                        MetadataValue::from_static(super::interceptors::wire::ACCEPTED_ENCODINGS),
                    );
                }
            }
            ServiceError::Exec(e) => {
                if let Some(node) = e.node_id() {
                    info.insert("failing_node_id".to_owned(), text::quoted(node).into_owned());
                }
                match e {
                    ExecError::CircuitOpen { retry_after, .. } => {
                        details.set_retry_info(Some(*retry_after));
                    }
                    ExecError::Node { source, .. } if source.retry_after_ms.is_some() => {
                        details.set_retry_info(source.retry_after());
                    }
                    _ => {}
                }
            }
            ServiceError::Limit { limit, .. } => {
                info.insert("limit".to_owned(), (*limit).to_owned());
            }
            ServiceError::VersionMismatch { requested, supported } => {
                let list = supported.join(",");
                info.insert("requested".to_owned(), text::quoted(requested).into_owned());
                info.insert("supported_versions".to_owned(), list.clone());
                if let Ok(v) = list.parse() {
                    metadata.insert("remotemedia-supported-versions", v);
                }
            }
            ServiceError::Overloaded { limit, retry_after, .. } => {
                info.insert("limit".to_owned(), (*limit).to_owned());
                details.set_retry_info(Some(*retry_after));
            }
            _ => {}
        }
        // A cancelled call is no error of the service's: ErrorType has no name for it, and
        // INTERNAL ("a bug in the service") would count client cancels as server faults.
        let reason = if code == Code::Cancelled {
            "CANCELLED"
        } else {
            error_type.as_str_name().trim_start_matches("ERROR_TYPE_")
        };
        details.set_error_info(reason, ERROR_DOMAIN, info);
        let message = text::clip(&self.to_string(), MAX_STATUS_MESSAGE_BYTES).into_owned();
        Status::with_error_details_and_metadata(code, message, details, metadata)
    }
}

/// `violations` as the status's `BadRequest` (all of them when they fit, else all but one and a
/// line counting the rest), their number in `ErrorInfo`.
fn bad_request(details: &mut ErrorDetails, info: &mut HashMap<String, String>, violations: &[Violation]) {
    let listed = if violations.len() <= MAX_STATUS_VIOLATIONS { violations.len() } else { MAX_STATUS_VIOLATIONS - 1 };
    for violation in &violations[..listed] {
        details.add_bad_request_violation(
            text::clip(&violation.field, MAX_STATUS_FIELD_BYTES),
            text::clip(&violation.message, MAX_STATUS_VIOLATION_BYTES),
        );
    }
    if listed < violations.len() {
        details.add_bad_request_violation(
            "violations",
            format!(
                "{} more violations are not listed here; the in-band error lists every one",
                violations.len() - listed
            ),
        );
    }
    info.insert("violations".to_owned(), violations.len().to_string());
}

/// Rewrites the statuses tonic's codec produces for bad request messages into this service's
/// errors: an oversized message is RESOURCE_EXHAUSTED (`RESOURCE_LIMIT`, naming
/// `max_message_bytes`) and a message that does not decode is INVALID_ARGUMENT (`VALIDATION`).
/// Other statuses are left alone (`None`).
pub fn from_codec(status: &Status) -> Option<ServiceError> {
    let msg = status.message();
    match status.code() {
        Code::OutOfRange if msg.contains("decoded message length too large") => Some(ServiceError::Limit {
            message: format!(
                "the request message is larger than the server accepts (max_message_bytes): {}",
                msg.trim_start_matches("Error, ")
            ),
            limit: "max_message_bytes",
        }),
        // Compressed within the size cap, but over it once decompressed.
        Code::ResourceExhausted if msg.starts_with("Error decompressing: size limit") => Some(ServiceError::Limit {
            message: format!(
                "the request message is larger than the server accepts (max_message_bytes) once decompressed: {}",
                msg.trim_start_matches("Error decompressing: ")
            ),
            limit: "max_message_bytes",
        }),
        Code::Internal
            if msg.contains("failed to decode Protobuf message")
                || msg.contains("Unexpected EOF decoding stream")
                || msg.starts_with("Error decompressing")
                || msg.starts_with("protocol error") =>
        {
            Some(ServiceError::InvalidArgument(Violation::new(
                "request",
                format!("the request message is malformed: {msg}"),
            )))
        }
        _ => None,
    }
}

/// What a transport that decodes its own messages (WebSocket frames) reports for a message over
/// `max` bytes: the status tonic's codec reports, so [`from_codec`] maps both alike.
pub fn oversized_message(size: usize, max: usize) -> Status {
    // `size` is what had arrived when the limit was passed (a message may come in several
    // frames), so a lower bound, not the message's length.
    Status::out_of_range(format!(
        "Error, decoded message length too large: more than the limit of {max} bytes ({size} bytes had arrived when it \
         passed it)"
    ))
}

/// What a transport that decodes its own messages reports for one that is not a valid
/// message: `detail` says what was wrong. Mapped by [`from_codec`] like the codec's own.
pub fn malformed_message(detail: impl std::fmt::Display) -> Status {
    Status::internal(format!("protocol error: {detail}"))
}

/// The `outcome` metric label of a failure of `error_type`.
pub fn outcome_of(error_type: ErrorType) -> &'static str {
    match error_type {
        ErrorType::Validation => outcome::VALIDATION,
        ErrorType::NodeExecution => outcome::NODE_EXECUTION,
        ErrorType::ResourceLimit => outcome::RESOURCE_LIMIT,
        ErrorType::Authentication => outcome::AUTHENTICATION,
        ErrorType::VersionMismatch => outcome::VERSION_MISMATCH,
        ErrorType::Internal | ErrorType::Unspecified => outcome::INTERNAL,
    }
}

fn exec_error_type(e: &ExecError) -> ErrorType {
    match e {
        ExecError::Validation(_) => ErrorType::Validation,
        ExecError::Node { source, .. } if source.kind == NodeErrorKind::Cancelled => ErrorType::Internal,
        ExecError::Node { source, .. } if source.kind == NodeErrorKind::Validation => ErrorType::Validation,
        ExecError::Node { source, .. } if source.kind == NodeErrorKind::ResourceLimit => ErrorType::ResourceLimit,
        ExecError::Node { .. } | ExecError::CircuitOpen { .. } => ErrorType::NodeExecution,
        ExecError::Timeout { .. } | ExecError::MemoryLimit { .. } => ErrorType::ResourceLimit,
        ExecError::Cancelled | ExecError::Internal(_) => ErrorType::Internal,
    }
}

/// JSON context for an execution error.
fn exec_context(e: &ExecError) -> Value {
    match e {
        ExecError::Validation(v) => validation_context(v),
        ExecError::Node { node_type, attempts, source, .. } => {
            let mut ctx = json!({
                "node_type": node_type,
                "attempts": attempts,
                // The same request may pass when made again: a transient failure at once, one
                // that names a delay (a model pool that stayed busy) after it.
                "retryable": source.is_retryable() || source.retry_after_ms.is_some(),
            });
            if let Some(field) = &source.field {
                ctx["field"] = json!(field);
            }
            if let Some(ms) = source.retry_after_ms {
                ctx["retry_after_ms"] = json!(ms);
            }
            if let Some(Value::Object(extra)) = source.context.as_deref() {
                for (k, v) in extra {
                    ctx[k] = v.clone();
                }
            }
            ctx
        }
        ExecError::CircuitOpen { node_type, failures, retry_after, .. } => json!({
            "node_type": node_type,
            "circuit_breaker": "open",
            "consecutive_failures": failures,
            "retry_after_ms": retry_after.as_millis() as u64,
        }),
        ExecError::Timeout { limit, running } => json!({
            "limit": "max_timeout_ms",
            "limit_ms": limit.as_millis() as u64,
            "running_nodes": running,
        }),
        ExecError::MemoryLimit { limit, needed, .. } => json!({
            "limit": "max_memory_bytes",
            "limit_bytes": limit,
            "needed_bytes": needed,
        }),
        ExecError::Cancelled | ExecError::Internal(_) => Value::Null,
    }
}

/// `{"violations": [{"field", "node_id", "description"}, ...]}`, plus `available_node_types`
/// when a violation names an unknown type.
pub fn validation_context(v: &ValidationError) -> Value {
    let mut ctx = json!({
        "violations": v.violations.iter().map(|x| json!({
            "field": x.field,
            "node_id": x.node_id,
            "description": x.message,
        })).collect::<Vec<_>>()
    });
    if !v.available_node_types.is_empty() {
        ctx["available_node_types"] = json!(v.available_node_types);
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Violation;
    use crate::nodes::NodeError;

    #[test]
    fn validation_errors_carry_every_violation_in_band_and_as_bad_request() {
        let err = ServiceError::Exec(ExecError::Validation(ValidationError::new(vec![
            Violation::new("version", "manifest version must be \"v1\", got \"2\""),
            Violation::new("nodes[0].node_type", "node `a`: unknown node type `X`").on_node("a"),
        ])));
        let resp = err.to_error_response();
        assert_eq!(resp.error_type, ErrorType::Validation as i32);
        let ctx: Value = serde_json::from_str(&resp.context).unwrap();
        assert_eq!(ctx["violations"][1]["node_id"], json!("a"));
        assert_eq!(ctx["violations"][0]["field"], json!("version"));

        let status = err.to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "VALIDATION");
        assert_eq!(details.bad_request().unwrap().field_violations.len(), 2);
    }

    #[test]
    fn node_errors_name_the_node_and_keep_the_traceback() {
        let err = ServiceError::Exec(ExecError::Node {
            node_id: "py".into(),
            node_type: "LoudnessNode".into(),
            attempts: 1,
            source: Box::new(NodeError::internal("ValueError: bad").with_stack_trace("Traceback ...")),
        });
        let resp = err.to_error_response();
        assert_eq!(resp.error_type, ErrorType::NodeExecution as i32);
        assert_eq!(resp.failing_node_id, "py");
        assert_eq!(resp.stack_trace, "Traceback ...");
        assert!(resp.message.contains("node `py` (LoudnessNode) failed: ValueError: bad"), "{}", resp.message);
    }

    #[test]
    fn overload_has_retry_info_and_version_mismatch_lists_versions() {
        let s = ServiceError::Overloaded {
            message: "busy".into(),
            limit: "max_concurrent_streams",
            retry_after: Duration::from_millis(250),
        }
        .to_status();
        assert_eq!(s.code(), Code::ResourceExhausted);
        let d = s.get_error_details();
        assert_eq!(d.error_info().unwrap().reason, "RESOURCE_LIMIT");
        assert_eq!(d.error_info().unwrap().metadata["limit"], "max_concurrent_streams", "the cap is named");
        assert_eq!(d.retry_info().unwrap().retry_delay, Some(Duration::from_millis(250)));

        let s = ServiceError::VersionMismatch { requested: "v2".into(), supported: vec!["v1".into()] }.to_status();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("supported versions: v1"));
        assert_eq!(s.metadata().get("remotemedia-supported-versions").unwrap(), "v1");
        assert_eq!(s.get_error_details().error_info().unwrap().reason, "VERSION_MISMATCH");
    }

    #[test]
    fn codec_errors_become_service_errors() {
        let big = Status::out_of_range(
            "Error, decoded message length too large: found 2000000 bytes, the limit is: 1048576 bytes",
        );
        let s = from_codec(&big).unwrap().to_status();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(
            s.message().contains("max_message_bytes") && s.message().contains("found 2000000 bytes"),
            "{}",
            s.message()
        );
        assert_eq!(s.get_error_details().error_info().unwrap().reason, "RESOURCE_LIMIT");

        let garbage = Status::internal("failed to decode Protobuf message: invalid varint");
        let s = from_codec(&garbage).unwrap().to_status();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.get_error_details().error_info().unwrap().reason, "VALIDATION");

        assert!(from_codec(&Status::internal("something else")).is_none());

        let unpacked = Status::resource_exhausted(
            "Error decompressing: size limit, of 1000000 bytes, exceeded while decompressing message",
        );
        let s = from_codec(&unpacked).unwrap().to_status();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(
            s.message().contains("max_message_bytes) once decompressed: size limit, of 1000000 bytes"),
            "{}",
            s.message()
        );
        assert_eq!(s.get_error_details().error_info().unwrap().reason, "RESOURCE_LIMIT");

        // Told apart from a reset by the layer that sees the request body (lifetime.rs).
        assert!(from_codec(&Status::internal("Missing request message.")).is_none());
    }

    #[test]
    fn messages_a_transport_refuses_itself_map_like_the_codecs() {
        let big = from_codec(&oversized_message(2_000, 1_000)).unwrap();
        assert!(matches!(big, ServiceError::Limit { limit: "max_message_bytes", .. }), "{big:?}");
        assert!(big.to_string().contains("more than the limit of 1000 bytes (2000 bytes had arrived"), "{big}");
        let text = from_codec(&malformed_message("text frame")).unwrap();
        assert!(matches!(text, ServiceError::InvalidArgument(_)), "{text:?}");
        assert_eq!(text.to_string(), "the request message is malformed: protocol error: text frame");
    }

    /// Everything a status carries in response metadata, in bytes.
    fn metadata_size(status: Status) -> usize {
        let response = status.into_http::<()>();
        response.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum()
    }

    #[test]
    fn statuses_stay_under_8_kib_whatever_the_client_sent() {
        let huge = "n→".repeat(50_000);
        let violations: Vec<Violation> = (0..4_096)
            .map(|i| {
                Violation::new(format!("nodes[{i}].{huge}"), format!("node `{huge}`: unknown node type `{huge}`"))
                    .on_node(&huge)
            })
            .collect();
        let mut invalid = ValidationError::new(violations);
        invalid.available_node_types = (0..5_000).map(|i| format!("Plugin{i}{huge}")).collect();
        let errors = [
            ServiceError::Exec(ExecError::Validation(invalid)),
            ServiceError::VersionMismatch { requested: huge.clone(), supported: vec!["v1".into()] },
            ServiceError::OutOfOrder(Violation::new(huge.clone(), huge.clone())),
            ServiceError::InvalidArgument(Violation::new(huge.clone(), huge.clone())),
            ServiceError::Exec(ExecError::Node {
                node_id: huge.clone(),
                node_type: "GainNode".into(),
                attempts: 1,
                source: Box::new(NodeError::internal(huge.clone()).with_stack_trace(huge.clone())),
            }),
        ];
        for e in errors {
            let code = e.to_status().code();
            let size = metadata_size(e.to_status());
            assert!(size < 7 * 1_024, "{code:?}: {size} bytes of metadata");
            let in_band = e.to_error_response();
            assert!(in_band.message.len() <= MAX_IN_BAND_MESSAGE_BYTES + 64, "{}", in_band.message.len());
        }
    }

    #[test]
    fn the_available_types_are_named_once_per_error() {
        let violations = (0..20)
            .map(|i| Violation::new(format!("nodes[{i}].node_type"), format!("node `n{i}`: unknown node type `X`")))
            .collect();
        let mut invalid = ValidationError::new(violations);
        invalid.available_node_types = vec!["GainNode".into(), "VADNode".into()];
        let status = ServiceError::Exec(ExecError::Validation(invalid)).to_status();
        assert_eq!(status.message().matches("GainNode").count(), 1, "{}", status.message());
        assert!(status.message().contains("and 12 more"), "{}", status.message());
        let details = status.get_error_details();
        let listed = &details.bad_request().unwrap().field_violations;
        assert_eq!(listed.len(), MAX_STATUS_VIOLATIONS);
        assert!(listed.iter().all(|v| !v.description.contains("GainNode")));
    }

    #[test]
    fn a_status_lists_at_most_eight_violations_counting_the_line_for_the_rest() {
        let listed = |n: usize| {
            let violations = (0..n).map(|i| Violation::new(format!("nodes[{i}].params"), "bad")).collect();
            let status = ServiceError::Exec(ExecError::Validation(ValidationError::new(violations))).to_status();
            let details = status.get_error_details();
            details.bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect::<Vec<_>>()
        };
        let eight = listed(8);
        assert_eq!(eight.len(), 8);
        assert_eq!(eight.last().unwrap(), "nodes[7].params", "all eight, none summarised");
        let nine = listed(9);
        assert_eq!(nine.len(), 8);
        assert_eq!(nine[6], "nodes[6].params");
        assert_eq!(nine[7], "violations", "seven listed and a line for the other two");
        let status = ServiceError::Exec(ExecError::Validation(ValidationError::new(
            (0..9).map(|i| Violation::new(format!("n{i}"), "bad")).collect(),
        )))
        .to_status();
        let details = status.get_error_details();
        let rest = &details.bad_request().unwrap().field_violations[7];
        assert!(rest.description.starts_with("2 more violations are not listed here"), "{}", rest.description);
    }

    #[test]
    fn node_errors_of_the_request_and_of_busy_models_keep_their_types() {
        let node = |source: NodeError| {
            ServiceError::Exec(ExecError::Node {
                node_id: "asr".into(),
                node_type: "SpeechRecognitionNode".into(),
                attempts: 1,
                source: Box::new(source),
            })
        };
        let wrong_rate = node(NodeError::new(NodeErrorKind::Validation, "needs 16000 Hz audio, got 44100 Hz"));
        assert_eq!(wrong_rate.to_error_response().error_type, ErrorType::Validation as i32);
        assert_eq!(wrong_rate.to_status().code(), Code::InvalidArgument);

        let busy = node(
            NodeError::new(NodeErrorKind::ResourceLimit, "all 1 instances in use")
                .with_retry_after(Duration::from_millis(750)),
        );
        let resp = busy.to_error_response();
        assert_eq!(resp.error_type, ErrorType::ResourceLimit as i32);
        let ctx: Value = serde_json::from_str(&resp.context).unwrap();
        assert_eq!(ctx["retry_after_ms"], json!(750));
        let status = busy.to_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "RESOURCE_LIMIT");
        assert_eq!(details.retry_info().unwrap().retry_delay, Some(Duration::from_millis(750)));
    }

    #[test]
    fn one_place_decides_in_band_or_status() {
        let node = ServiceError::Exec(ExecError::Node {
            node_id: "n".into(),
            node_type: "T".into(),
            attempts: 1,
            source: Box::new(NodeError::internal("x")),
        });
        let invalid = ServiceError::Exec(ExecError::Validation(ValidationError::single(Violation::new("f", "m"))));
        let cancelled = ServiceError::Cancelled("gone".into());
        let overloaded = ServiceError::Overloaded {
            message: "busy".into(),
            limit: "max_concurrent_executions",
            retry_after: Duration::from_millis(1),
        };
        assert_eq!(node.delivery(Call::Execute), Delivery::InBand);
        assert_eq!(node.delivery(Call::StreamChunk), Delivery::InBandAndContinue);
        assert_eq!(node.delivery(Call::Stream), Delivery::InBandThenStatus);
        // A chunk whose node could not get a model instance lost its audio: the stream ends.
        let busy = ServiceError::Exec(ExecError::Node {
            node_id: "asr".into(),
            node_type: "SpeechRecognitionNode".into(),
            attempts: 1,
            source: Box::new(NodeError::new(NodeErrorKind::ResourceLimit, "all 1 instances in use")),
        });
        assert_eq!(busy.delivery(Call::StreamChunk), Delivery::InBandThenStatus);
        assert_eq!(invalid.delivery(Call::Execute), Delivery::InBand);
        assert_eq!(invalid.delivery(Call::StreamChunk), Delivery::InBandThenStatus);
        assert_eq!(overloaded.delivery(Call::Execute), Delivery::Status);
        for call in [Call::Execute, Call::Stream, Call::StreamChunk] {
            assert_eq!(cancelled.delivery(call), Delivery::Status);
            assert_eq!(ServiceError::Draining.delivery(call), Delivery::Status);
            assert_eq!(ServiceError::ShutDown.delivery(call), Delivery::Status);
        }
    }

    #[test]
    fn draining_is_unavailable_with_reason_internal() {
        for error in [ServiceError::Draining, ServiceError::ShutDown] {
            let s = error.to_status();
            assert_eq!(s.code(), Code::Unavailable);
            assert_eq!(s.get_error_details().error_info().unwrap().reason, "INTERNAL");
            assert_eq!(error.outcome(), outcome::UNAVAILABLE);
        }
    }

    #[test]
    fn a_cancelled_call_has_reason_cancelled_not_internal() {
        for error in
            [ServiceError::Cancelled("the stream was cancelled by the client".into()), ExecError::Cancelled.into()]
        {
            let s = error.to_status();
            assert_eq!(s.code(), Code::Cancelled);
            assert_eq!(s.get_error_details().error_info().unwrap().reason, "CANCELLED");
        }
    }
}
