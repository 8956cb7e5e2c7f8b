//! The process's shutdown signal: SIGTERM or SIGINT. The first starts the drain (the grace
//! period); a SIGINT while it runs (Ctrl-C pressed again) ends the process at once, with exit
//! status 1, for an operator who will not wait. A repeated SIGTERM changes nothing: supervisors
//! and scripts resend it while they wait, and it must not cut the drain short.
//!
//! The handlers are installed when [`signal`] is called, not when its future is first polled,
//! and the server watches the future from the start: a signal that arrives while it is still
//! starting (the embedded Python interpreter can take seconds to import its nodes, preloaded
//! models minutes to load) stops it there, before it serves, and a second SIGINT then exits at
//! once. A process started with SIGINT ignored (a background job of a non-interactive shell)
//! would otherwise drop a SIGINT sent right after the "listening" log line.

use std::future::Future;

use crate::telemetry::LIFECYCLE;

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on the first of them and
/// leaves a task that exits the process on the next SIGINT.
///
/// Must be called inside a Tokio runtime.
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => tracing::info!(target: LIFECYCLE, signal = "SIGINT", "signal received"),
                _ = term.recv() => tracing::info!(target: LIFECYCLE, signal = "SIGTERM", "signal received"),
            }
            // The handler stays installed after `term` is gone: later SIGTERMs are caught and
            // ignored, not left to their default action (ending the process).
            drop(term);
            tokio::spawn(async move {
                int.recv().await;
                tracing::warn!(
                    signal = "SIGINT",
                    "second signal received: exiting without waiting for the grace period"
                );
                std::process::exit(1);
            });
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
