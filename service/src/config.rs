//! Server configuration: one typed [`Config`] built from layered key/value sources.
//!
//! Every setting has one key (`max_timeout_ms`), spelled the same in the TOML file, as an
//! environment variable (`REMOTEMEDIA_MAX_TIMEOUT_MS`) and as a flag (`--max-timeout-ms`).
//! Precedence: flag > environment > file > default. [`Config::from_sources`] takes plain maps, so
//! tests never touch the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

/// The environment variable prefix.
pub const ENV_PREFIX: &str = "REMOTEMEDIA_";

/// Every configuration key with its default and a one-line description (the reference in
/// `docs/configuration.md` is generated from the same facts).
pub const KEYS: &[(&str, &str, &str)] = &[
    ("listen", "127.0.0.1:50051", "gRPC listen address (port 0 picks a free port)"),
    ("metrics_listen", "127.0.0.1:9464", "Prometheus /metrics address, or `off`"),
    ("log_format", "json", "`json` (one JSON object per line) or `pretty`"),
    (
        "log_level",
        "info",
        "tracing filter, e.g. `info` or `remotemedia=debug` (start-up and shutdown lines pass unless it names `remotemedia::lifecycle`)",
    ),
    ("auth_tokens", "", "comma-separated bearer tokens (prefer the tokens file)"),
    ("auth_tokens_file", "", "file with one bearer token per line (# comments allowed)"),
    ("allow_unauthenticated", "false", "allow a non-loopback listen address without tokens"),
    ("python_nodes_path", "", "comma-separated directories of Python node plug-ins; each must exist"),
    ("python", "true", "start the embedded Python interpreter and its nodes"),
    ("python_home", "", "Python environment the interpreter uses (a venv or prefix; default: the build's)"),
    ("python_workers", "2", "threads that run Python nodes (1 to 256)"),
    (
        "model_pools",
        "",
        "comma-separated `model=instances` pairs: pool sizes of pooled models (default: each model's own)",
    ),
    ("model_wait_ms", "2000", "how long a call waits for a free pooled model instance before RESOURCE_LIMIT"),
    ("preload_models", "", "comma-separated models loaded before health reports SERVING"),
    ("grace_period_ms", "10000", "how long in-flight work may finish after SIGTERM"),
    ("default_timeout_ms", "5000", "execution time limit when a request sets none"),
    ("max_timeout_ms", "30000", "highest time limit a request may ask for"),
    ("default_memory_bytes", "104857600", "pipeline memory limit when a request sets none"),
    ("max_memory_bytes", "1073741824", "highest memory limit a request may ask for"),
    ("default_audio_samples", "10000000", "samples per input buffer when a request sets none"),
    ("max_audio_samples", "50000000", "highest samples-per-buffer limit a request may ask for"),
    ("max_message_bytes", "67108864", "largest request message accepted"),
    ("max_pipeline_nodes", "4096", "most nodes in one manifest (connections: four times as many)"),
    ("max_concurrent_executions", "64", "ExecutePipeline calls running at once"),
    ("max_concurrent_streams", "2000", "StreamPipeline sessions open at once"),
    (
        "stream_idle_timeout_ms",
        "60000",
        "a stream with no message, or whose client reads no response, for this long is closed",
    ),
    ("stream_max_duration_ms", "3600000", "longest a stream may stay open"),
    ("stream_metrics_interval_ms", "1000", "how often a stream reports StreamMetrics"),
    ("breaker_cooldown_ms", "30000", "how long an open circuit breaker waits before a trial call"),
    ("keepalive_interval_ms", "30000", "HTTP/2 and WebSocket keepalive ping interval"),
    ("keepalive_timeout_ms", "10000", "close a connection whose keepalive ping is not answered"),
    ("max_connection_age_ms", "0", "close connections older than this (0 = never)"),
    (
        "cors_allowed_origins",
        "",
        "comma-separated browser origins allowed to call over gRPC-Web and WebSocket (none by default)",
    ),
    (
        "response_compression",
        "mirror",
        "gzip responses: `mirror` (when the request was gzip), `accepted` (whenever the client accepts gzip) or `off`",
    ),
];

/// When responses are gzip-compressed.
///
/// Audio samples barely compress, and gzip costs more CPU than the rest of a typical call, so by
/// default a response is compressed only when the client compressed its request. Most gRPC
/// libraries (grpcio, grpc-go) advertise gzip in `grpc-accept-encoding` on every call whether or
/// not the application wants it, which is why `accepted` is not the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseCompression {
    Mirror,
    Accepted,
    Off,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A bearer token. Its `Debug` output never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Server-wide resource limits and caps (CONTRACT §7).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub default_memory_bytes: u64,
    pub max_memory_bytes: u64,
    pub default_audio_samples: u64,
    pub max_audio_samples: u64,
    pub max_message_bytes: usize,
    pub max_pipeline_nodes: usize,
    pub max_concurrent_executions: usize,
    pub max_concurrent_streams: usize,
    pub stream_idle_timeout: Duration,
    pub stream_max_duration: Duration,
}

/// The whole server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub auth_tokens: Vec<Secret>,
    pub allow_unauthenticated: bool,
    pub python_enabled: bool,
    pub python_nodes_paths: Vec<PathBuf>,
    /// `None`: the Python environment the server was built against.
    pub python_home: Option<PathBuf>,
    pub python_workers: usize,
    /// Model hosting: pool sizes, the wait for a free instance, models preloaded.
    pub models: crate::python::ModelSettings,
    pub grace_period: Duration,
    pub limits: Limits,
    pub stream_metrics_interval: Duration,
    pub breaker_cooldown: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub max_connection_age: Option<Duration>,
    /// Origins (`scheme://host[:port]`) whose pages may call the service over gRPC-Web.
    pub cors_allowed_origins: Vec<String>,
    pub response_compression: ResponseCompression,
}

/// A configuration problem, naming the key, where its value came from and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown configuration key `{key}` in {origin}; known keys: {known}")]
    UnknownKey { key: String, origin: String, known: String },
    #[error("invalid value for `{key}` (from {origin}): {message}")]
    Invalid { key: String, origin: String, message: String },
    #[error("cannot read {what} {path}: {message}")]
    Read { what: &'static str, path: String, message: String },
    #[error("{0}")]
    Conflict(String),
    /// More than one of the above, all reported together.
    #[error("{} configuration problems: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<ConfigError>),
}

/// Most Python worker threads: each is an OS thread with its own stack, and more threads than
/// this only contend for the GIL.
pub const MAX_PYTHON_WORKERS: usize = 256;

/// Raw values from one source.
pub type Layer = BTreeMap<String, String>;

/// Key/value layers in increasing precedence: file, environment, flags.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Layer,
    pub env: Layer,
    pub flags: Layer,
}

impl Sources {
    /// Reads `REMOTEMEDIA_*` variables from an environment map. Variables that are not
    /// configuration keys (`REMOTEMEDIA_CONFIG` names the file) are left out.
    pub fn env_layer(vars: impl IntoIterator<Item = (String, String)>) -> Layer {
        vars.into_iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
                KEYS.iter().any(|(name, _, _)| *name == key).then_some((key, v))
            })
            .collect()
    }

    /// Parses a TOML document of top-level `key = value` pairs.
    pub fn file_layer(text: &str, path: &str) -> Result<Layer, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // The parser's own text quotes the offending line, which may hold a token: only
            // its message and the position are shown.
            let at = e.span().map_or(String::new(), |span| {
                let before = &text.as_bytes()[..span.start.min(text.len())];
                let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
                format!(" at line {line}, column {column}")
            });
            ConfigError::Read {
                what: "config file",
                path: path.to_owned(),
                message: format!(
                    "not valid TOML{at}: {}",
                    crate::text::clip(e.message().trim(), crate::text::MAX_MESSAGE_BYTES)
                ),
            }
        })?;
        let mut layer = Layer::new();
        for (key, value) in table {
            if !KEYS.iter().any(|(name, _, _)| *name == key) {
                return Err(ConfigError::UnknownKey {
                    key,
                    origin: format!("config file {path}"),
                    known: known_keys(),
                });
            }
            // A token is text; any other value given for it is refused by its TOML type
            // alone, since the value (`auth_tokens = 12345`) is meant to be secret.
            let secret = key == "auth_tokens";
            let shown = |v: &toml::Value| if secret { format!("{} (not shown)", v.type_str()) } else { v.to_string() };
            let text = match value {
                toml::Value::String(s) => s,
                // Every list key holds text (paths, tokens, origins, model names).
                toml::Value::Array(items) => match items.iter().find(|v| !v.is_str()) {
                    Some(bad) => {
                        return Err(ConfigError::Invalid {
                            key,
                            origin: format!("config file {path}"),
                            message: format!("expected a list of strings, got the item {}", shown(bad)),
                        });
                    }
                    None => items.iter().filter_map(toml::Value::as_str).collect::<Vec<_>>().join(","),
                },
                other if secret => {
                    return Err(ConfigError::Invalid {
                        key,
                        origin: format!("config file {path}"),
                        message: format!(
                            "expected a string or a list of strings (quote each token), got {}",
                            shown(&other)
                        ),
                    });
                }
                other => other.to_string(),
            };
            layer.insert(key, text);
        }
        Ok(layer)
    }

    fn lookup(&self, key: &str) -> (String, Source) {
        if let Some(v) = self.flags.get(key) {
            return (v.clone(), Source::Flag);
        }
        if let Some(v) = self.env.get(key) {
            return (v.clone(), Source::Env);
        }
        if let Some(v) = self.file.get(key) {
            return (v.clone(), Source::File);
        }
        let default = KEYS.iter().find(|(k, _, _)| *k == key).map(|(_, d, _)| *d).unwrap_or_default();
        (default.to_owned(), Source::Default)
    }
}

/// The default of `key`, as text.
fn default_of(key: &str) -> &'static str {
    KEYS.iter().find(|(k, _, _)| *k == key).map(|(_, d, _)| *d).unwrap_or_default()
}

fn known_keys() -> String {
    KEYS.iter().map(|(k, _, _)| *k).collect::<Vec<_>>().join(", ")
}

fn describe(key: &str, source: Source) -> String {
    match source {
        Source::Default => "the default".to_owned(),
        Source::File => "the config file".to_owned(),
        Source::Env => format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
        Source::Flag => format!("--{}", key.replace('_', "-")),
    }
}

/// Typed reads over [`Sources`] that collect every problem: a bad value is recorded and read
/// as the key's default, so the whole configuration is checked before [`Reader::finish`]
/// reports every problem at once.
struct Reader<'a> {
    sources: &'a Sources,
    errors: std::cell::RefCell<Vec<ConfigError>>,
}

impl<'a> Reader<'a> {
    fn new(sources: &'a Sources) -> Self {
        Self { sources, errors: Default::default() }
    }

    fn error(&self, e: ConfigError) {
        self.errors.borrow_mut().push(e);
    }

    /// Every problem found, or `Ok` if there was none.
    fn finish(self) -> Result<(), ConfigError> {
        let mut errors = self.errors.into_inner();
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Several(errors)),
        }
    }

    /// Reads `key` through `check`, which says what is wrong with a value. A value a higher
    /// layer overrides is checked too, or a typo in the file stays hidden until the flag or
    /// variable that overrides it is removed. A bad value is recorded and read as `None`.
    fn checked<T>(&self, key: &str, check: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let (raw, source) = self.sources.lookup(key);
        let layers = [(&self.sources.env, Source::Env), (&self.sources.file, Source::File)];
        for (layer, shadowed) in layers {
            if let Some(value) = layer.get(key).filter(|_| shadowed != source)
                && let Err(message) = check(value.trim())
            {
                self.error(ConfigError::Invalid {
                    key: key.to_owned(),
                    origin: describe(key, shadowed),
                    message: format!("{message} (overridden, but it must be valid too)"),
                });
            }
        }
        check(raw.trim())
            .map_err(|message| {
                self.error(ConfigError::Invalid { key: key.to_owned(), origin: describe(key, source), message });
            })
            .ok()
    }

    fn parse<T>(&self, key: &str, expected: &str, f: impl Fn(&str) -> Option<T>) -> T {
        self.checked(key, |value| f(value).ok_or_else(|| format!("expected {expected}, got `{value}`")))
            .unwrap_or_else(|| f(default_of(key)).expect("every default parses (a test reads them all)"))
    }

    fn string(&self, key: &str) -> String {
        self.sources.lookup(key).0.trim().to_owned()
    }

    /// A list of browser origins, each `http(s)://host[:port]` with nothing after the authority.
    /// `*` is refused: the service takes bearer tokens, so every origin is named.
    fn origins(&self, key: &str) -> Vec<String> {
        self.checked(key, |value| {
            let origins = split_list(value);
            match origins.iter().find(|o| !is_origin(o)) {
                None => Ok(origins),
                Some(bad) => Err(format!(
                    "`{bad}` is not an origin; expected scheme://host[:port] such as https://app.example.com \
                     (no path, no wildcard)"
                )),
            }
        })
        .unwrap_or_default()
    }

    /// `model=instances` pairs, each model at most once; every bad pair is named (and the whole
    /// list read as empty).
    fn model_pools(&self, key: &str) -> Vec<(String, usize)> {
        self.checked(key, |value| {
            let mut pools: Vec<(String, usize)> = Vec::new();
            let mut bad = Vec::new();
            for item in split_list(value) {
                match item.split_once('=').map(|(m, n)| (m.trim(), n.trim().parse::<usize>())) {
                    Some((model, Ok(size))) if !model.is_empty() && size > 0 => {
                        if pools.iter().any(|(m, _)| m == model) {
                            return Err(format!("names `{model}` twice; give each model one pool size"));
                        }
                        pools.push((model.to_owned(), size));
                    }
                    _ => bad.push(format!("`{item}`")),
                }
            }
            if bad.is_empty() {
                return Ok(pools);
            }
            Err(format!(
                "{} not `model=instances` with instances at least 1 (e.g. pocketsphinx-en-us=2)",
                if bad.len() == 1 { format!("{} is", bad[0]) } else { format!("{} are", bad.join(", ")) }
            ))
        })
        .unwrap_or_default()
    }

    /// Bearer tokens: given at all (an empty value is not "authentication off"), and each one
    /// a client can send in an `authorization` header (visible ASCII).
    fn tokens(&self, key: &str) -> Vec<Secret> {
        if self.sources.lookup(key).1 == Source::Default {
            return Vec::new();
        }
        self.checked(key, |value| {
            let tokens = split_list(value);
            if tokens.is_empty() {
                return Err("holds no token (it is empty, or only separators or spaces); give at least one token, \
                            or leave it unset"
                    .into());
            }
            check_tokens(tokens.iter().map(String::as_str), |n| format!("token {n}"))?;
            Ok(tokens.into_iter().map(Secret).collect())
        })
        .unwrap_or_default()
    }

    /// A list of directories, each of which must exist (a plug-in directory that is not there
    /// is a typo, not an empty set of plug-ins).
    fn directories(&self, key: &str) -> Vec<PathBuf> {
        let dirs: Vec<PathBuf> = self.list(key).into_iter().map(PathBuf::from).collect();
        let missing: Vec<String> = dirs.iter().filter(|d| !d.is_dir()).map(|d| format!("`{}`", d.display())).collect();
        if !missing.is_empty() {
            self.error(ConfigError::Invalid {
                key: key.to_owned(),
                origin: describe(key, self.sources.lookup(key).1),
                message: if missing.len() == 1 {
                    format!("{} is not a directory", missing[0])
                } else {
                    format!("{} are not directories", missing.join(", "))
                },
            });
        }
        dirs
    }

    fn list(&self, key: &str) -> Vec<String> {
        split_list(&self.string(key))
    }

    fn u64(&self, key: &str) -> u64 {
        self.parse(key, "a non-negative integer", |s| s.replace('_', "").parse().ok())
    }

    fn positive(&self, key: &str) -> u64 {
        self.parse(key, "a positive integer", |s| s.replace('_', "").parse().ok().filter(|n| *n > 0))
    }

    /// A count of permits of a semaphore (tokio's hold at most `Semaphore::MAX_PERMITS`).
    fn permits(&self, key: &str) -> usize {
        let max = tokio::sync::Semaphore::MAX_PERMITS;
        self.parse(key, &format!("an integer from 1 to {max}"), |s| {
            s.replace('_', "").parse().ok().filter(|n| (1..=max).contains(n))
        })
    }

    fn millis(&self, key: &str) -> Duration {
        Duration::from_millis(self.positive(key))
    }

    fn bool(&self, key: &str) -> bool {
        self.parse(key, "true or false (or 1/0, yes/no, on/off)", |s| match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" | "" => Some(false),
            _ => None,
        })
    }

    fn addr(&self, key: &str) -> SocketAddr {
        self.parse(key, "an address like 127.0.0.1:50051 or [::]:50051", |s| s.parse().ok())
    }
}

/// Whether `s` is a tracing filter of levels and `target=level` directives. A bare word parses
/// as a target (`verbose` would log only a target of that name: nothing), so only level names
/// stand alone.
fn is_log_filter(s: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    !s.is_empty()
        && tracing_subscriber::EnvFilter::try_new(s).is_ok()
        && s.split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .all(|d| d.contains('=') || LEVELS.contains(&d.to_ascii_lowercase().as_str()))
}

impl Config {
    /// Builds the configuration from the layered sources, then reads the tokens file if one is
    /// named (its tokens are added to any given directly).
    pub fn from_sources(sources: &Sources) -> Result<Self, ConfigError> {
        let r = Reader::new(sources);
        let metrics_listen = r.parse("metrics_listen", "an address like 127.0.0.1:9464, or `off`", |s| {
            if s.eq_ignore_ascii_case("off") || s.is_empty() { Some(None) } else { s.parse().ok().map(Some) }
        });
        let log_format = r.parse("log_format", "`json` or `pretty`", |s| match s {
            "json" => Some(LogFormat::Json),
            "pretty" => Some(LogFormat::Pretty),
            _ => None,
        });

        // A token source that is configured but holds no token is an error, not "auth off":
        // behind a proxy, a silently open service is the worst outcome of a typo (or of an
        // unset variable that a compose file turns into an empty one).
        let mut auth_tokens = r.tokens("auth_tokens");
        let tokens_file = r.string("auth_tokens_file");
        let tokens_file_source = sources.lookup("auth_tokens_file").1;
        match read_tokens_file(&tokens_file) {
            _ if tokens_file.is_empty() && tokens_file_source != Source::Default => r.error(ConfigError::Invalid {
                key: "auth_tokens_file".into(),
                origin: describe("auth_tokens_file", tokens_file_source),
                message: "is empty; name the tokens file, or leave it unset to run without authentication".into(),
            }),
            _ if tokens_file.is_empty() => {}
            Err(ConfigError::Read { path, message, .. }) => r.error(ConfigError::Invalid {
                key: "auth_tokens_file".into(),
                origin: describe("auth_tokens_file", sources.lookup("auth_tokens_file").1),
                message: format!("cannot read {path}: {message}"),
            }),
            Err(e) => r.error(e),
            Ok(from_file) if from_file.is_empty() => {
                r.error(ConfigError::Invalid {
                    key: "auth_tokens_file".into(),
                    origin: describe("auth_tokens_file", sources.lookup("auth_tokens_file").1),
                    message: format!(
                        "{tokens_file} holds no token (only comments or blank lines); add one token per line, \
                         or leave auth_tokens_file unset to run without authentication"
                    ),
                });
            }
            Ok(from_file) => auth_tokens.extend(from_file),
        }

        let limits = Limits {
            default_timeout: r.millis("default_timeout_ms"),
            max_timeout: r.millis("max_timeout_ms"),
            default_memory_bytes: r.positive("default_memory_bytes"),
            max_memory_bytes: r.positive("max_memory_bytes"),
            default_audio_samples: r.positive("default_audio_samples"),
            max_audio_samples: r.positive("max_audio_samples"),
            max_message_bytes: usize::try_from(r.positive("max_message_bytes")).unwrap_or(usize::MAX),
            max_pipeline_nodes: usize::try_from(r.positive("max_pipeline_nodes")).unwrap_or(usize::MAX),
            max_concurrent_executions: r.permits("max_concurrent_executions"),
            max_concurrent_streams: r.permits("max_concurrent_streams"),
            stream_idle_timeout: r.millis("stream_idle_timeout_ms"),
            stream_max_duration: r.millis("stream_max_duration_ms"),
        };
        for (default, cap, default_key, cap_key) in [
            (
                limits.default_timeout.as_millis() as u64,
                limits.max_timeout.as_millis() as u64,
                "default_timeout_ms",
                "max_timeout_ms",
            ),
            (limits.default_memory_bytes, limits.max_memory_bytes, "default_memory_bytes", "max_memory_bytes"),
            (limits.default_audio_samples, limits.max_audio_samples, "default_audio_samples", "max_audio_samples"),
        ] {
            if default > cap {
                let from = |key: &str| describe(key, sources.lookup(key).1);
                r.error(ConfigError::Conflict(format!(
                    "`{default_key}` = {default} (from {}) exceeds `{cap_key}` = {cap} (from {}); \
                     lower the first or raise the second",
                    from(default_key),
                    from(cap_key)
                )));
            }
        }

        let response_compression = r.parse("response_compression", "`mirror`, `accepted` or `off`", |s| match s {
            "mirror" => Some(ResponseCompression::Mirror),
            "accepted" => Some(ResponseCompression::Accepted),
            "off" => Some(ResponseCompression::Off),
            _ => None,
        });
        let max_age = r.u64("max_connection_age_ms");
        let cors_allowed_origins = r.origins("cors_allowed_origins");
        let config = Self {
            listen: r.addr("listen"),
            metrics_listen,
            log_format,
            log_level: r.parse(
                "log_level",
                "a level (trace, debug, info, warn, error, off) or directives such as `remotemedia=debug,info`",
                |s| is_log_filter(s).then(|| s.to_owned()),
            ),
            auth_tokens,
            allow_unauthenticated: r.bool("allow_unauthenticated"),
            python_enabled: r.bool("python"),
            python_nodes_paths: r.directories("python_nodes_path"),
            python_home: Some(r.string("python_home")).filter(|h| !h.is_empty()).map(PathBuf::from),
            python_workers: r.parse("python_workers", &format!("an integer from 1 to {MAX_PYTHON_WORKERS}"), |s| {
                s.replace('_', "").parse().ok().filter(|n| (1..=MAX_PYTHON_WORKERS).contains(n))
            }),
            models: crate::python::ModelSettings {
                pools: r.model_pools("model_pools"),
                wait: r.millis("model_wait_ms"),
                preload: r.list("preload_models"),
            },
            grace_period: r.millis("grace_period_ms"),
            limits,
            stream_metrics_interval: r.millis("stream_metrics_interval_ms"),
            breaker_cooldown: r.millis("breaker_cooldown_ms"),
            keepalive_interval: r.millis("keepalive_interval_ms"),
            keepalive_timeout: r.millis("keepalive_timeout_ms"),
            max_connection_age: (max_age > 0).then(|| Duration::from_millis(max_age)),
            cors_allowed_origins,
            response_compression,
        };
        // The models run in the embedded interpreter: naming them with it off is a mistake to
        // point out, not a setting to ignore.
        if !config.python_enabled {
            for key in ["model_pools", "preload_models"] {
                let (raw, source) = sources.lookup(key);
                if source != Source::Default && !raw.trim().is_empty() {
                    r.error(ConfigError::Invalid {
                        key: key.to_owned(),
                        origin: describe(key, source),
                        message: "names models, but `python` is false and the models run in the embedded Python \
                                  interpreter; leave it unset or set python = true"
                            .into(),
                    });
                }
            }
        }
        r.finish()?;
        Ok(config)
    }

    /// The defaults, with overrides: handy for tests (`Config::with(&[("listen", "127.0.0.1:0")])`).
    pub fn with(overrides: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let flags = overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Self::from_sources(&Sources { flags, ..Sources::default() })
    }
}

/// The command line: one flag per configuration key, `--config FILE`, `probe` and `catalogue`.
pub fn cli() -> clap::Command {
    use clap::{Arg, ArgAction, Command};
    let mut cmd = Command::new("remotemedia-server")
        .version(env!("CARGO_PKG_VERSION"))
        .about("gRPC service that runs audio and ML pipelines")
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .help("TOML file of `key = value` settings [env: REMOTEMEDIA_CONFIG]"),
        );
    for (key, default, help) in KEYS {
        let env = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
        let shown = if default.is_empty() { String::new() } else { format!(" [default: {default}]") };
        let arg = Arg::new(*key).long(key.replace('_', "-")).help(format!("{help} [env: {env}]{shown}"));
        let arg = match *key {
            "allow_unauthenticated" => arg.action(ArgAction::SetTrue),
            "python_nodes_path" => arg.action(ArgAction::Append).value_name("DIR"),
            _ => arg.value_name("VALUE"),
        };
        cmd = cmd.arg(arg);
    }
    cmd.subcommand(
        Command::new("probe")
            .about("Exit 0 when the server's health service reports SERVING (for container health checks)")
            .arg(
                Arg::new("addr")
                    .long("addr")
                    .value_name("HOST:PORT")
                    .help("server address [default: the listen address]"),
            )
            .arg(Arg::new("service").long("service").value_name("NAME").default_value("").help("health service name"))
            .arg(Arg::new("timeout-ms").long("timeout-ms").value_name("MS").default_value("3000")),
    )
    .subcommand(Command::new("catalogue").about(
        "Print the node catalogue as JSON: every node type's declaration (parameters as JSON Schema, ports, \
         runtimes), Python nodes and plug-ins included. `make catalogue` writes clients/catalogue.json with it",
    ))
}

/// The flags given on the command line, as a layer.
pub fn flags_layer(matches: &clap::ArgMatches) -> Layer {
    let mut layer = Layer::new();
    for (key, _, _) in KEYS {
        match *key {
            "allow_unauthenticated" => {
                if matches.get_flag(key) {
                    layer.insert((*key).to_owned(), "true".to_owned());
                }
            }
            _ => {
                if let Some(values) = matches.get_many::<String>(key) {
                    layer.insert((*key).to_owned(), values.cloned().collect::<Vec<_>>().join(","));
                }
            }
        }
    }
    layer
}

/// Loads the configuration for a command line and an environment: the file named by `--config`
/// or `REMOTEMEDIA_CONFIG`, then the environment, then the flags.
pub fn load(
    matches: &clap::ArgMatches,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let path = matches
        .get_one::<String>("config")
        .cloned()
        .or_else(|| env.iter().find(|(k, _)| k == "REMOTEMEDIA_CONFIG").map(|(_, v)| v.clone()))
        .filter(|p| !p.is_empty());
    let file = match path {
        Some(p) => {
            let text = std::fs::read_to_string(&p).map_err(|e| ConfigError::Read {
                what: "config file",
                path: p.clone(),
                message: e.to_string(),
            })?;
            Sources::file_layer(&text, &p)?
        }
        None => Layer::new(),
    };
    Config::from_sources(&Sources { file, env: Sources::env_layer(env), flags: flags_layer(matches) })
}

/// The process's environment, for [`load`]: a `REMOTEMEDIA_*` variable that is not UTF-8 is
/// refused by name (its value, perhaps a token, is not shown); other such variables are none
/// of the server's business and are left out.
pub fn environment() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        match value.into_string() {
            Ok(value) => vars.push((key.to_owned(), value)),
            Err(_) if key.starts_with("REMOTEMEDIA_") => {
                return Err(ConfigError::Invalid {
                    key: key.trim_start_matches("REMOTEMEDIA_").to_ascii_lowercase(),
                    origin: format!("environment variable {key}"),
                    message: "the value is not valid UTF-8".to_owned(),
                });
            }
            Err(_) => {}
        }
    }
    Ok(vars)
}

/// The `REMOTEMEDIA_*` variables of `vars` that name no setting (a misspelt
/// `REMOTEMEDIA_MAX_TIMEOT_MS`), each with the variable it most likely meant, if one is close.
/// A server ignores them, so [`warn`](crate::telemetry) says so at start-up.
pub fn unknown_env(vars: &[(String, String)]) -> Vec<(String, Option<String>)> {
    vars.iter()
        .filter_map(|(name, _)| {
            let key = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            if key == "config" || KEYS.iter().any(|(k, _, _)| *k == key) {
                return None;
            }
            let meant = KEYS
                .iter()
                .map(|(k, _, _)| (strsim::normalized_damerau_levenshtein(&key, k), *k))
                .filter(|(score, _)| *score >= 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| format!("{ENV_PREFIX}{}", k.to_ascii_uppercase()));
            Some((name.clone(), meant))
        })
        .collect()
}

/// The log format asked for by flag or environment, read on its own: the one a configuration
/// that cannot be loaded is refused in. A file's setting, or a value that is not a format, is
/// not looked at: JSON, the default.
pub fn log_format_asked(matches: &clap::ArgMatches, env: impl IntoIterator<Item = (String, String)>) -> LogFormat {
    let asked = matches
        .get_one::<String>("log_format")
        .cloned()
        .or_else(|| env.into_iter().find(|(k, _)| k == "REMOTEMEDIA_LOG_FORMAT").map(|(_, v)| v));
    if asked.is_some_and(|v| v.trim() == "pretty") { LogFormat::Pretty } else { LogFormat::Json }
}

/// Where a probe on this machine reaches a server listening on `listen`: wildcard addresses
/// become the matching loopback address.
pub fn probe_address(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

/// Reads one token per line; blank lines and `#` comments are skipped.
fn is_origin(s: &str) -> bool {
    let Ok(uri) = s.parse::<http::Uri>() else { return false };
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme @ ("http" | "https")), Some(authority)) => {
            !authority.as_str().contains('@') && s == format!("{scheme}://{authority}")
        }
        _ => false,
    }
}

fn read_tokens_file(path: &str) -> Result<Vec<Secret>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        what: "auth tokens file",
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    // Editors on Windows may save the file with a byte-order mark; it is not part of a token.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let lines: Vec<(usize, &str)> =
        text.lines().map(str::trim).enumerate().filter(|(_, l)| !l.is_empty() && !l.starts_with('#')).collect();
    check_tokens(lines.iter().map(|(_, l)| *l), |n| format!("the token on line {}", lines[n - 1].0 + 1))
        .map_err(|message| ConfigError::Read { what: "auth tokens file", path: path.to_owned(), message })?;
    Ok(lines.into_iter().map(|(_, l)| Secret(l.to_owned())).collect())
}

/// Refuses a token no client can send: an `authorization` header value holds visible ASCII
/// only (gRPC metadata), so a token with a space, a control or a non-ASCII character could
/// never match. `name(n)` names the n-th token (from 1) without showing it.
fn check_tokens<'a>(tokens: impl Iterator<Item = &'a str>, name: impl Fn(usize) -> String) -> Result<(), String> {
    for (n, token) in tokens.enumerate() {
        if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
            // Named by its kind: even one character of a token is not shown.
            let what = match c {
                ' ' => "a space",
                c if c.is_ascii() => "a control character",
                _ => "a non-ASCII character",
            };
            return Err(format!(
                "{} holds {what}; a token is sent in an `authorization` header, which carries visible ASCII only",
                name(n + 1)
            ));
        }
    }
    Ok(())
}

/// The items of a comma-separated list, trimmed, without empty ones.
fn split_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> Layer {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::from_sources(&Sources::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.metrics_listen.unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(c.limits.default_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.max_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.default_memory_bytes, 100 * 1024 * 1024);
        assert_eq!(c.limits.max_memory_bytes, 1024 * 1024 * 1024);
        assert_eq!(c.limits.default_audio_samples, 10_000_000);
        assert_eq!(c.limits.max_message_bytes, 64 * 1024 * 1024);
        assert_eq!(c.grace_period, Duration::from_secs(10));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let mut s = Sources {
            file: layer(&[("listen", "127.0.0.1:1001"), ("grace_period_ms", "111"), ("log_level", "warn")]),
            env: layer(&[("listen", "127.0.0.1:1002"), ("grace_period_ms", "222")]),
            flags: layer(&[("listen", "127.0.0.1:1003")]),
        };
        let c = Config::from_sources(&s).unwrap();
        assert_eq!(c.listen.port(), 1003);
        assert_eq!(c.grace_period, Duration::from_millis(222));
        assert_eq!(c.log_level, "warn");
        s.flags.clear();
        assert_eq!(Config::from_sources(&s).unwrap().listen.port(), 1002);
        s.env.clear();
        assert_eq!(Config::from_sources(&s).unwrap().listen.port(), 1001);
    }

    #[test]
    fn env_layer_keeps_only_known_keys() {
        let l = Sources::env_layer([
            ("REMOTEMEDIA_LISTEN".to_owned(), "0.0.0.0:1".to_owned()),
            ("REMOTEMEDIA_CONFIG".to_owned(), "/x.toml".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ]);
        assert_eq!(l, layer(&[("listen", "0.0.0.0:1")]));
    }

    #[test]
    fn unknown_environment_variables_are_found_with_the_one_meant() {
        let vars = [
            ("REMOTEMEDIA_MAX_TIMEOT_MS", "5"),
            ("REMOTEMEDIA_MAX_TIMEOUT_MS", "5"),
            ("REMOTEMEDIA_CONFIG", "/c.toml"),
            ("REMOTEMEDIA_SOMETHING_ELSE", "x"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(
            unknown_env(&vars),
            [
                ("REMOTEMEDIA_MAX_TIMEOT_MS".to_owned(), Some("REMOTEMEDIA_MAX_TIMEOUT_MS".to_owned())),
                ("REMOTEMEDIA_SOMETHING_ELSE".to_owned(), None),
            ]
        );
    }

    #[test]
    fn file_layer_reads_toml_and_rejects_unknown_keys() {
        let l = Sources::file_layer(
            "listen = \"127.0.0.1:7\"\ngrace_period_ms = 5\npython_nodes_path = [\"/a\", \"/b\"]\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(l["grace_period_ms"], "5");
        assert_eq!(l["python_nodes_path"], "/a,/b");
        let err = Sources::file_layer("preload_models = [\"silero-vad\", 5]", "c.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for `preload_models` (from config file c.toml): expected a list of strings, got the item 5"
        );
        // A token given as a number is refused by its type, never shown.
        for doc in ["auth_tokens = 12345", "auth_tokens = [\"ok\", 67890]", "auth_tokens = 1.5e3"] {
            let err = Sources::file_layer(doc, "c.toml").unwrap_err().to_string();
            assert!(err.starts_with("invalid value for `auth_tokens` (from config file c.toml): expected"), "{err}");
            assert!(err.contains("(not shown)") && !err.contains("12345") && !err.contains("67890"), "{err}");
            assert!(!err.contains("1500") && !err.contains("1.5"), "{err}");
        }
        let err = Sources::file_layer("lisen = 1", "c.toml").unwrap_err();
        assert!(err.to_string().starts_with("unknown configuration key `lisen` in config file c.toml"), "{err}");
    }

    #[test]
    fn cors_origins_are_named_exactly() {
        let c = Config::with(&[("cors_allowed_origins", "https://app.example.com, http://localhost:5173")]).unwrap();
        assert_eq!(c.cors_allowed_origins, ["https://app.example.com", "http://localhost:5173"]);
        assert!(Config::from_sources(&Sources::default()).unwrap().cors_allowed_origins.is_empty());
        for bad in
            ["*", "app.example.com", "https://app.example.com/", "https://a.com/path", "ftp://a.com", "https://u@a.com"]
        {
            let err = Config::with(&[("cors_allowed_origins", bad)]).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}` is not an origin")), "{bad}: {err}");
        }
    }

    #[test]
    fn plug_in_directories_must_exist() {
        let here = env!("CARGO_MANIFEST_DIR");
        let ok = Config::with(&[("python_nodes_path", here)]).unwrap();
        assert_eq!(ok.python_nodes_paths, vec![PathBuf::from(here)]);
        let err = Config::with(&[("python_nodes_path", &format!("{here},/no/such/plugins"))]).unwrap_err().to_string();
        assert!(err.contains("python_nodes_path") && err.contains("`/no/such/plugins` is not a directory"), "{err}");
        assert!(!err.contains(here), "only the missing directory is named: {err}");
    }

    #[test]
    fn python_workers_are_bounded() {
        assert_eq!(Config::with(&[("python_workers", "256")]).unwrap().python_workers, 256);
        for bad in ["0", "257", "100000"] {
            let err = Config::with(&[("python_workers", bad)]).unwrap_err().to_string();
            assert!(
                err.starts_with(
                    "invalid value for `python_workers` (from --python-workers): expected an integer from 1 to 256"
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_log_level_must_name_levels() {
        for good in ["info", "WARN", "off", "remotemedia=debug,info", "remotemedia=trace,tower=off"] {
            assert_eq!(Config::with(&[("log_level", good)]).unwrap().log_level, good, "{good}");
        }
        // A bare word parses as a target, which would silence every other log line.
        for bad in ["verbose", "remotemedia=loud", "info,verbose", ""] {
            let err = Config::with(&[("log_level", bad)]).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid value for `log_level` (from --log-level): expected a level"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn errors_name_the_key_the_source_and_the_value() {
        let s = Sources { env: layer(&[("max_timeout_ms", "soon")]), ..Sources::default() };
        let err = Config::from_sources(&s).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for `max_timeout_ms` (from REMOTEMEDIA_MAX_TIMEOUT_MS): expected a positive integer, got `soon`"
        );
        let err = Config::with(&[("listen", "localhost")]).unwrap_err();
        assert!(err.to_string().contains("(from --listen)"), "{err}");
    }

    #[test]
    fn model_settings_need_the_python_runtime() {
        let err = Config::with(&[("python", "false"), ("preload_models", "silero-vad")]).unwrap_err().to_string();
        assert!(err.contains("`preload_models` (from --preload-models)") && err.contains("`python` is false"), "{err}");
        let err = Config::with(&[("python", "false"), ("model_pools", "silero-vad=2")]).unwrap_err().to_string();
        assert!(err.contains("`model_pools`"), "{err}");
        assert!(Config::with(&[("python", "false")]).is_ok(), "the defaults name no model");
    }

    #[test]
    fn an_overridden_value_must_be_valid_too() {
        let s = Sources {
            file: layer(&[("max_timeout_ms", "abc"), ("python", "banana")]),
            env: layer(&[("max_timeout_ms", "20000")]),
            flags: layer(&[("python", "false")]),
        };
        let err = Config::from_sources(&s).unwrap_err().to_string();
        assert!(err.contains("`max_timeout_ms` (from the config file)"), "{err}");
        assert!(err.contains("got `abc` (overridden, but it must be valid too)"), "{err}");
        assert!(err.contains("`python` (from the config file)") && err.contains("got `banana`"), "{err}");
        let s = Sources {
            env: layer(&[("max_timeout_ms", "soon")]),
            flags: layer(&[("max_timeout_ms", "20000")]),
            ..Sources::default()
        };
        let err = Config::from_sources(&s).unwrap_err().to_string();
        assert!(err.contains("(from REMOTEMEDIA_MAX_TIMEOUT_MS)") && err.contains("got `soon`"), "{err}");
    }

    #[test]
    fn flags_map_to_keys_and_lists_repeat() {
        let m = cli()
            .try_get_matches_from([
                "remotemedia-server",
                "--listen",
                "127.0.0.1:0",
                "--python-nodes-path",
                "/a",
                "--python-nodes-path",
                "/b",
                "--allow-unauthenticated",
            ])
            .unwrap();
        let l = flags_layer(&m);
        assert_eq!(
            l,
            layer(&[("allow_unauthenticated", "true"), ("listen", "127.0.0.1:0"), ("python_nodes_path", "/a,/b")])
        );
    }

    #[test]
    fn load_reads_the_file_named_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:7001\"\nlog_format = \"pretty\"\n").unwrap();
        let m = cli().try_get_matches_from(["remotemedia-server", "--log-format", "json"]).unwrap();
        let env = [("REMOTEMEDIA_CONFIG".to_owned(), path.to_str().unwrap().to_owned())];
        let c = load(&m, env).unwrap();
        assert_eq!(c.listen.port(), 7001);
        assert_eq!(c.log_format, LogFormat::Json, "the flag wins over the file");
    }

    #[test]
    fn the_configuration_reference_lists_every_key_with_its_default() {
        let doc = include_str!("../../docs/configuration.md");
        for (key, default, _) in KEYS {
            let shown = if default.is_empty() { "(none)".to_owned() } else { format!("`{default}`") };
            let row = format!(
                "| `{key}` | `--{}` | `{ENV_PREFIX}{}` | {shown} |",
                key.replace('_', "-"),
                key.to_ascii_uppercase()
            );
            assert!(doc.contains(&row), "docs/configuration.md lacks the row for {key}: {row}");
        }
    }

    #[test]
    fn model_pools_name_models_and_sizes() {
        let c = Config::with(&[
            ("model_pools", "pocketsphinx-en-us=3, silero-vad = 8"),
            ("model_wait_ms", "500"),
            ("preload_models", "pocketsphinx-en-us"),
        ])
        .unwrap();
        assert_eq!(c.models.pools, [("pocketsphinx-en-us".to_owned(), 3), ("silero-vad".to_owned(), 8)]);
        assert_eq!(c.models.wait, Duration::from_millis(500));
        assert_eq!(c.models.preload, ["pocketsphinx-en-us"]);
        let defaults = Config::with(&[]).unwrap().models;
        assert!(defaults.pools.is_empty() && defaults.preload.is_empty());
        assert_eq!(defaults.wait, Duration::from_secs(2));
        let err = Config::with(&[("model_pools", "a=0,b,c=2")]).unwrap_err().to_string();
        assert!(err.contains("`model_pools`") && err.contains("`a=0`, `b` are not `model=instances`"), "{err}");
        let err = Config::with(&[("model_pools", "silero-vad=1, silero-vad=3")]).unwrap_err().to_string();
        assert!(err.contains("`model_pools`") && err.contains("names `silero-vad` twice"), "{err}");
    }

    #[test]
    fn metrics_can_be_turned_off() {
        assert_eq!(Config::with(&[("metrics_listen", "off")]).unwrap().metrics_listen, None);
    }

    #[test]
    fn defaults_above_caps_are_refused() {
        let err = Config::with(&[("default_timeout_ms", "40000")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`default_timeout_ms` = 40000 (from --default-timeout-ms) exceeds `max_timeout_ms` = 30000 (from the default); \
             lower the first or raise the second"
        );
    }

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let err = Config::with(&[
            ("max_timeout_ms", "soon"),
            ("listen", "nowhere"),
            ("cors_allowed_origins", "*"),
            ("default_memory_bytes", "9000000000"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("4 configuration problems: "), "{text}");
        for key in ["`max_timeout_ms`", "`listen`", "`cors_allowed_origins`", "`default_memory_bytes` = 9000000000"] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
        // One problem reads as itself.
        let one = Config::with(&[("listen", "nowhere")]).unwrap_err().to_string();
        assert!(one.starts_with("invalid value for `listen` (from --listen)"), "{one}");
    }

    #[test]
    fn every_default_is_valid() {
        Config::with(&[]).expect("the defaults make a valid configuration");
    }

    #[test]
    fn a_token_source_without_tokens_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# tokens go here\n\n   \n# none yet\n").unwrap();
        let err = Config::with(&[("auth_tokens_file", path.to_str().unwrap())]).unwrap_err().to_string();
        assert!(err.contains("`auth_tokens_file`") && err.contains("holds no token"), "{err}");
        let err = Config::with(&[("auth_tokens", " , ,")]).unwrap_err().to_string();
        assert!(err.contains("`auth_tokens`") && err.contains("holds no token"), "{err}");
        // A templated secret that came out blank is not "auth off" either.
        let err = Config::with(&[("auth_tokens", " ")]).unwrap_err().to_string();
        assert!(err.contains("`auth_tokens`") && err.contains("holds no token"), "{err}");
        assert!(Config::with(&[]).unwrap().auth_tokens.is_empty(), "unset is not an error");
        // Nor is an empty value, however it is given: `REMOTEMEDIA_AUTH_TOKENS: ${TOKENS}` with
        // TOKENS unset must not override the file's tokens with none.
        let s = Sources {
            file: layer(&[("auth_tokens", "filesecret")]),
            env: layer(&[("auth_tokens", "")]),
            ..Sources::default()
        };
        let err = Config::from_sources(&s).unwrap_err().to_string();
        assert!(
            err.contains("`auth_tokens` (from REMOTEMEDIA_AUTH_TOKENS)") && err.contains("holds no token"),
            "{err}"
        );
        for (key, value) in [("auth_tokens", ""), ("auth_tokens_file", "")] {
            let err = Config::with(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}` (from --{})", key.replace('_', "-"))), "{err}");
        }
        let err = Config::from_sources(&Sources { file: layer(&[("auth_tokens", "")]), ..Sources::default() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("(from the config file)") && err.contains("holds no token"), "{err}");
    }

    #[test]
    fn tokens_a_client_cannot_send_are_refused_without_showing_them() {
        let err = Config::with(&[("auth_tokens", "good,s\u{e9}same")]).unwrap_err().to_string();
        assert!(err.contains("token 2 holds a non-ASCII character") && !err.contains("same"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# tokens\nfirst\nopen sesame\n").unwrap();
        let err = Config::with(&[("auth_tokens_file", path.to_str().unwrap())]).unwrap_err().to_string();
        assert!(err.contains("the token on line 3 holds a space") && !err.contains("sesame"), "{err}");
        let err = Config::with(&[("auth_tokens", "good,abc\u{7}def")]).unwrap_err().to_string();
        assert!(err.contains("token 2 holds a control character") && !err.contains("\\u{7}"), "{err}");
        // A byte-order mark is not part of the first token; CRLF line ends are not either.
        std::fs::write(&path, "\u{feff}bomtoken\r\nsecond\r\n").unwrap();
        let c = Config::with(&[("auth_tokens_file", path.to_str().unwrap())]).unwrap();
        assert_eq!(c.auth_tokens.iter().map(Secret::expose).collect::<Vec<_>>(), ["bomtoken", "second"]);
    }

    #[test]
    fn every_overridden_list_and_address_must_be_valid_too() {
        for (key, bad, good) in [
            ("metrics_listen", "nope", "off"),
            ("cors_allowed_origins", "*", "https://app.example.com"),
            ("auth_tokens", ",", "tok"),
            ("model_pools", "silero-vad", "silero-vad=2"),
        ] {
            for shadowed in ["env", "file"] {
                let bad_layer = layer(&[(key, bad)]);
                let s = if shadowed == "env" {
                    Sources { env: bad_layer, flags: layer(&[(key, good)]), ..Sources::default() }
                } else {
                    Sources { file: bad_layer, env: layer(&[(key, good)]), ..Sources::default() }
                };
                let err = Config::from_sources(&s).unwrap_err().to_string();
                assert!(
                    err.contains(&format!("`{key}`")) && err.contains("(overridden, but it must be valid too)"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn concurrency_caps_are_semaphore_sized() {
        let max = tokio::sync::Semaphore::MAX_PERMITS;
        for key in ["max_concurrent_executions", "max_concurrent_streams"] {
            assert_eq!(
                Config::with(&[(key, &max.to_string())]).map(|c| c.limits.max_concurrent_streams.min(1)).ok(),
                Some(1)
            );
            let err = Config::with(&[(key, &(max + 1).to_string())]).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")) && err.contains(&format!("an integer from 1 to {max}")), "{err}");
        }
    }

    #[test]
    fn tokens_come_from_the_list_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# team tokens\nfile-token-1\n\n  file-token-2  \n").unwrap();
        let c = Config::with(&[("auth_tokens", "a, b"), ("auth_tokens_file", path.to_str().unwrap())]).unwrap();
        let tokens: Vec<&str> = c.auth_tokens.iter().map(Secret::expose).collect();
        assert_eq!(tokens, ["a", "b", "file-token-1", "file-token-2"]);
        assert_eq!(format!("{:?}", c.auth_tokens[0]), "Secret(***)");
        let err = Config::with(&[("auth_tokens_file", "/nonexistent/tokens")]).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "invalid value for `auth_tokens_file` (from --auth-tokens-file): cannot read /nonexistent/tokens"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_refused_configuration_is_logged_in_the_format_the_flag_or_environment_asks_for() {
        let pretty = [("REMOTEMEDIA_LOG_FORMAT".to_owned(), "pretty".to_owned())];
        let m = cli().try_get_matches_from(["remotemedia-server"]).unwrap();
        assert_eq!(log_format_asked(&m, Vec::new()), LogFormat::Json);
        assert_eq!(log_format_asked(&m, pretty.clone()), LogFormat::Pretty);
        assert_eq!(log_format_asked(&m, [("REMOTEMEDIA_LOG_FORMAT".to_owned(), "fancy".to_owned())]), LogFormat::Json);
        let m = cli().try_get_matches_from(["remotemedia-server", "--log-format", "json"]).unwrap();
        assert_eq!(log_format_asked(&m, pretty), LogFormat::Json, "the flag wins");
        let m = cli().try_get_matches_from(["remotemedia-server", "--log-format", "pretty"]).unwrap();
        assert_eq!(log_format_asked(&m, Vec::new()), LogFormat::Pretty);
    }
}
