//! `remotemedia-server`: parse the configuration, start logging, run until SIGTERM/SIGINT.

use std::process::ExitCode;
use std::time::Duration;

use remotemedia::{config, probe, shutdown, telemetry};

/// How long the exit waits for blocking tasks still running after shutdown.
const EXIT_WAIT: Duration = Duration::from_millis(200);

/// The most of a refused configuration's message that is shown.
const REFUSAL_BYTES: usize = 4096;

/// Blocks at least this large get mappings of their own from glibc's malloc (see
/// [`keep_large_blocks_mapped`]).
const MMAP_THRESHOLD_BYTES: libc::c_int = 1 << 20;
/// Free memory at the top of a malloc heap that is kept rather than given back. A fixed mmap
/// threshold also fixes this one, at 128 KiB by default: a unary call's buffers of a few hundred
/// KiB were then given back and faulted in again on every call (+27 % server CPU per call in
/// `bench/ab_cost.py --mode unary`).
const TRIM_THRESHOLD_BYTES: libc::c_int = 32 << 20;

/// glibc's malloc raises its mmap threshold to the size of each large block freed (up to 32
/// MiB), so after the first large request the next ones' buffers come from the heap, and the
/// freed heap stays in the process's RSS: four 50 s four-channel requests left the server at
/// 194 MiB against 107 MiB idle, and with a fixed threshold at 108 MiB, as fast
/// (`tests/test_operations.py`, `large_requests_give_their_memory_back`). Blocks under 1 MiB,
/// every stream chunk and a 1 s unary call among them, are served as before.
/// `MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` in the environment still set them.
fn keep_large_blocks_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, env, bytes) in [
        (libc::M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD_BYTES),
        (libc::M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD_BYTES),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only sets a malloc parameter; no other thread has started yet.
            unsafe { libc::mallopt(param, bytes) };
        }
    }
}

fn main() -> ExitCode {
    keep_large_blocks_mapped();
    let matches = match config::cli().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            // A command line that does not parse (an unknown flag, a value missing) is refused
            // as a configuration is, in the log too; `--help` and `--version` just print, and
            // `probe`, a health check and no server, only says why on stderr.
            let probing = std::env::args_os().nth(1).is_some_and(|a| a == "probe");
            if e.use_stderr() && !probing && telemetry::init(config::LogFormat::Json, "info").is_ok() {
                let shown = remotemedia::text::clip(e.kind().as_str().unwrap_or("invalid arguments"), REFUSAL_BYTES);
                tracing::error!(target: telemetry::LIFECYCLE, error = %shown, "configuration refused; the server did not start");
            }
            e.exit();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("remotemedia-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    if let Some(("probe", args)) = matches.subcommand() {
        let addr = match args.get_one::<String>("addr") {
            Some(a) => a.clone(),
            None => match config::environment().and_then(|env| config::load(&matches, env)) {
                Ok(c) => config::probe_address(c.listen),
                Err(e) => {
                    eprintln!("remotemedia-server probe: {e}");
                    return ExitCode::from(2);
                }
            },
        };
        let service = args.get_one::<String>("service").cloned().unwrap_or_default();
        let raw = args.get_one::<String>("timeout-ms").map_or("3000", String::as_str);
        let timeout = match raw.parse::<u64>() {
            Ok(ms) if ms > 0 => ms,
            _ => {
                let shown = remotemedia::text::quoted(raw);
                eprintln!(
                    "remotemedia-server probe: invalid value for `--timeout-ms`: expected a whole number of milliseconds above 0, got `{shown}`"
                );
                return ExitCode::from(2);
            }
        };
        return match runtime.block_on(probe::probe(&addr, &service, Duration::from_millis(timeout))) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("remotemedia-server probe: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let config = match config::environment().and_then(|env| config::load(&matches, env)) {
        Ok(c) => c,
        Err(e) => {
            // Bounded: a refused value is quoted whole in places, and may be megabytes.
            let e = remotemedia::text::clip(&e.to_string(), REFUSAL_BYTES).into_owned();
            // A log pipeline reading standard output sees why the server did not start too;
            // `catalogue` keeps its standard output for the catalogue.
            let asked = config::log_format_asked(&matches, config::environment().unwrap_or_default());
            if matches.subcommand_name() != Some("catalogue") && telemetry::init(asked, "info").is_ok() {
                tracing::error!(target: telemetry::LIFECYCLE, error = %e, "configuration refused; the server did not start");
            }
            eprintln!("remotemedia-server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(("catalogue", _)) = matches.subcommand() {
        return match runtime.block_on(remotemedia::grpc::server::registry(&config)) {
            Ok(registry) => {
                let json = remotemedia::nodes::catalogue_json(&registry.catalogue());
                println!("{}", serde_json::to_string_pretty(&json).expect("JSON values always serialise"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("remotemedia-server catalogue: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = telemetry::init(config.log_format, &config.log_level) {
        eprintln!("remotemedia-server: {e}");
        return ExitCode::from(2);
    }
    // A misspelt variable is ignored, unlike a misspelt key in the file: said at start-up.
    for (name, meant) in
        config::unknown_env(&config::environment().unwrap_or_default()).iter().take(remotemedia::text::MAX_LISTED)
    {
        let name = remotemedia::text::quoted(name);
        match meant {
            Some(meant) => {
                tracing::warn!(target: telemetry::LIFECYCLE, variable = %name, meant = %meant, "environment variable names no setting and is ignored; did you mean {meant}?")
            }
            None => {
                tracing::warn!(target: telemetry::LIFECYCLE, variable = %name, "environment variable names no setting and is ignored")
            }
        }
    }
    let signal = match runtime.block_on(async { shutdown::signal() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("remotemedia-server: cannot install the SIGTERM/SIGINT handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(remotemedia::run(config, signal));
    // Shutdown has ended every call by now. A blocking task may still wait for the GIL held by
    // a node's native call that cannot be interrupted (`sum(range(10**10))`); dropping the
    // runtime would wait for it, so the process leaves it behind.
    runtime.shutdown_timeout(EXIT_WAIT);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remotemedia-server: {e}");
            match e {
                // Settings refused at start-up, as those refused while reading the configuration
                // (and in the same words).
                remotemedia::grpc::server::ServerError::Config(_)
                | remotemedia::grpc::server::ServerError::Unauthenticated(_) => {
                    tracing::error!(target: telemetry::LIFECYCLE, error = %e, "configuration refused; the server did not start");
                    ExitCode::from(2)
                }
                _ => {
                    tracing::error!(error = %e, "server stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
