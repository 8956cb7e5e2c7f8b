//! Log output: JSON lines on stdout (`timestamp`, `level`, `message`, the request's
//! `request_id` and `rpc`, and event fields), or human-readable lines, coloured only on a
//! terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is a tracing filter (`info`, `remotemedia=debug`).
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("invalid log_level `{level}`: {e}"))?;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        // Every JSON line has a `message`: events without one (bare structured events some
        // libraries emit at debug level) are left out, as their callsite declares no such field.
        LogFormat::Json => registry
            .with(tracing_flat_json::FlatJsonLayer::new(std::io::stdout).with_filter(filter_fn(|meta| {
                carries_no_payload(meta) && (!meta.is_event() || meta.fields().field("message").is_some())
            })))
            .try_init(),
        LogFormat::Pretty => {
            // Colour only on a terminal (and not under NO_COLOR): escape codes in a pipe or a
            // file are noise for whatever reads it.
            let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stdout)
                        .with_ansi(ansi)
                        .with_filter(filter_fn(carries_no_payload)),
                )
                .try_init()
        }
    }
    .map_err(|e| e.to_string())
}

/// Whether an event cannot carry message bytes: the WebSocket library logs every frame's
/// payload (the samples of a stream) at trace level, which no filter setting may let through.
fn carries_no_payload(meta: &tracing::Metadata<'_>) -> bool {
    !(*meta.level() == tracing::Level::TRACE && meta.target().contains("tungstenite"))
}
