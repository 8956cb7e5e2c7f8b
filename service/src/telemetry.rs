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

/// The target of the lines that mark the process's life (`remotemedia-server listening on
/// ADDR`, preloading, signals, shutdown): shown at every level filter that does not name this
/// target itself, so `--log-level warn` still tells an operator the bound address.
pub const LIFECYCLE: &str = "remotemedia::lifecycle";

/// Installs the global subscriber. `level` is a tracing filter (`info`, `remotemedia=debug`);
/// [`LIFECYCLE`] lines pass unless it names that target or is `off`.
///
/// The log keeps standard output to itself: it writes to its own handle on it, and file
/// descriptor 1 is pointed at standard error, so whatever else in the process writes to
/// standard output (a Python node's `print()`, a C library's `printf`) lands on standard error
/// instead of breaking the JSON lines.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("invalid log_level `{level}`: {e}"))?;
    let filter = if level.contains(LIFECYCLE) || level.trim().eq_ignore_ascii_case("off") {
        filter
    } else {
        filter.add_directive(format!("{LIFECYCLE}=info").parse().expect("a valid directive"))
    };
    let out: &'static std::fs::File =
        Box::leak(Box::new(claim_stdout().map_err(|e| format!("cannot set up standard output: {e}"))?));
    let stdout = move || out;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        // Every JSON line has a `message`: events without one (bare structured events some
        // libraries emit at debug level) are left out, as their callsite declares no such field.
        LogFormat::Json => registry
            .with(tracing_flat_json::FlatJsonLayer::new(stdout).with_filter(filter_fn(|meta| {
                carries_no_payload(meta) && (!meta.is_event() || meta.fields().field("message").is_some())
            })))
            .try_init(),
        LogFormat::Pretty => {
            // Colour only on a terminal (and not under NO_COLOR): escape codes in a pipe or a
            // file are noise for whatever reads it.
            let ansi = out.is_terminal() && std::env::var_os("NO_COLOR").is_none();
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(stdout)
                        .with_ansi(ansi)
                        .with_filter(filter_fn(carries_no_payload)),
                )
                .try_init()
        }
    }
    .map_err(|e| e.to_string())?;
    log_panics();
    Ok(())
}

/// A panic (a bug: a library's or the server's) is logged as an ERROR line too, with where it
/// happened, so that log collectors see it; the default hook still writes it, and any
/// backtrace, to standard error.
fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let what = info.payload_as_str().unwrap_or_default();
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(
            panic = %crate::text::clip(what, crate::text::MAX_MESSAGE_BYTES),
            location = %location,
            thread = std::thread::current().name().unwrap_or("unnamed"),
            "a thread panicked"
        );
        default(info);
    }));
}

/// Whether an event cannot carry message bytes: the WebSocket library logs every frame's
/// payload (the samples of a stream) at trace level, which no filter setting may let through.
fn carries_no_payload(meta: &tracing::Metadata<'_>) -> bool {
    !(*meta.level() == tracing::Level::TRACE && meta.target().contains("tungstenite"))
}

/// A handle of the log's own on standard output; file descriptor 1 then points at standard
/// error.
fn claim_stdout() -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    std::io::Write::flush(&mut std::io::stdout())?;
    // SAFETY: `dup` of the process's standard output; the new descriptor is owned by the file.
    let fd = unsafe { libc::dup(libc::STDOUT_FILENO) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let own = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: replaces descriptor 1 with a copy of 2; both stay open for the process's life.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(own)
}
