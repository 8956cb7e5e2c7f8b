//! The registry of node types and runtime selection.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{AsyncNode, NodeFactory, ParamError, Runtime};
use crate::graph::RuntimeHint;

/// Node implementations that live outside Rust: the embedded Python interpreter.
#[async_trait]
pub trait ForeignNodes: Send + Sync + 'static {
    /// Every node type this runtime implements.
    fn node_types(&self) -> Vec<String>;

    /// Builds an instance; parameter problems come back as [`ParamError`]s.
    async fn create(
        &self,
        node_type: &str,
        node_id: &str,
        params: &Map<String, Value>,
    ) -> Result<Arc<dyn AsyncNode>, Vec<ParamError>>;
}

/// Why a node type could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No runtime implements the type. The list of available types is given once per error by
    /// the caller, not here: a manifest with many unknown nodes would repeat it per node.
    #[error("unknown node type `{}`{}", crate::text::quoted(.name), .suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownType { name: String, suggestion: Option<String> },
    /// The type exists but not for the requested runtime hint.
    #[error("{0}")]
    Runtime(String),
}

/// Which implementation a node will use.
#[derive(Clone)]
pub enum RuntimeChoice {
    Native(Arc<dyn NodeFactory>),
    Python,
}

/// A node type resolved against the registry.
#[derive(Clone)]
pub struct Resolved {
    /// The canonical type name (aliases resolved).
    pub node_type: String,
    pub choice: RuntimeChoice,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved").field("node_type", &self.node_type).field("runtime", &self.runtime()).finish()
    }
}

impl Resolved {
    pub fn runtime(&self) -> Runtime {
        match self.choice {
            RuntimeChoice::Native(_) => Runtime::Rust,
            RuntimeChoice::Python => Runtime::Python,
        }
    }
}

/// Node types by name: native factories, their aliases, and the Python runtime's types.
#[derive(Clone, Default)]
pub struct Registry {
    native: BTreeMap<String, Arc<dyn NodeFactory>>,
    aliases: BTreeMap<String, String>,
    foreign: Option<Arc<dyn ForeignNodes>>,
    /// Snapshot of `foreign.node_types()`, taken when the runtime is attached.
    foreign_types: Vec<String>,
}

impl Registry {
    /// An empty registry (tests add their own node types).
    pub fn new() -> Self {
        Self::default()
    }

    /// The native node types that ship with the server.
    pub fn builtin() -> Self {
        let mut r = Self::new();
        r.register(super::passthrough::PassThroughFactory);
        r.register(super::gain::GainFactory);
        r.register(super::resample::ResampleFactory);
        r.register(super::vad::VadFactory);
        r.register(super::format::FormatConverterFactory);
        r.register(super::mixer::ChannelMixerFactory);
        r.register(super::chunker::AudioChunkerFactory);
        r
    }

    pub fn register(&mut self, factory: impl NodeFactory) {
        let factory: Arc<dyn NodeFactory> = Arc::new(factory);
        for alias in factory.aliases() {
            self.aliases.insert((*alias).to_owned(), factory.node_type().to_owned());
        }
        self.native.insert(factory.node_type().to_owned(), factory);
    }

    /// Attaches the Python runtime; its node types become available.
    pub fn attach_foreign(&mut self, foreign: Arc<dyn ForeignNodes>) {
        self.foreign_types = foreign.node_types();
        self.foreign = Some(foreign);
    }

    pub fn foreign(&self) -> Option<&Arc<dyn ForeignNodes>> {
        self.foreign.as_ref()
    }

    /// The canonical name for `name` (itself, or the type an alias stands for).
    pub fn canonical<'a>(&'a self, name: &'a str) -> &'a str {
        self.aliases.get(name).map(String::as_str).unwrap_or(name)
    }

    pub fn native_factory(&self, name: &str) -> Option<&Arc<dyn NodeFactory>> {
        self.native.get(self.canonical(name))
    }

    /// Whether `name` (a type or an alias) is implemented by any runtime.
    pub fn knows(&self, name: &str) -> bool {
        let canonical = self.canonical(name);
        self.native.contains_key(canonical) || self.has_python(canonical)
    }

    /// The known type or alias closest to `name`, if one is close enough to be a typo of it.
    fn closest(&self, name: &str) -> Option<String> {
        const MIN_SIMILARITY: f64 = 0.75;
        let lower = name.to_ascii_lowercase();
        self.node_types()
            .into_iter()
            .chain(self.aliases.keys().cloned())
            .map(|t| (strsim::normalized_damerau_levenshtein(&lower, &t.to_ascii_lowercase()), t))
            .filter(|(score, _)| *score >= MIN_SIMILARITY)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, t)| self.canonical(&t).to_owned())
    }

    fn has_python(&self, canonical: &str) -> bool {
        self.foreign_types.iter().any(|t| t == canonical)
    }

    /// Every registered node type, native and Python, sorted and without duplicates.
    pub fn node_types(&self) -> Vec<String> {
        let mut all: Vec<String> = self.native.keys().cloned().chain(self.foreign_types.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Every (node type, runtime) pair that can run.
    pub fn implementations(&self) -> Vec<(String, Runtime)> {
        let native = self.native.keys().map(|t| (t.clone(), Runtime::Rust));
        let python = self.foreign_types.iter().map(|t| (t.clone(), Runtime::Python));
        let mut all: Vec<(String, Runtime)> = native.chain(python).collect();
        all.sort_by(|a, b| (&a.0, a.1.name()).cmp(&(&b.0, b.1.name())));
        all
    }

    /// Chooses the implementation for `node_type` under `hint`, or explains why none fits.
    pub fn resolve(&self, node_type: &str, hint: RuntimeHint) -> Result<Resolved, ResolveError> {
        let canonical = self.canonical(node_type).to_owned();
        let native = self.native.get(&canonical).cloned();
        let python = self.has_python(&canonical);
        if native.is_none() && !python {
            return Err(ResolveError::UnknownType { name: node_type.to_owned(), suggestion: self.closest(node_type) });
        }
        let choice = match hint {
            RuntimeHint::Auto => match native {
                Some(f) => RuntimeChoice::Native(f),
                None => RuntimeChoice::Python,
            },
            RuntimeHint::Rust => match native {
                Some(f) => RuntimeChoice::Native(f),
                None => {
                    return Err(ResolveError::Runtime(format!(
                        "node type `{canonical}` has no native Rust implementation; use RUNTIME_HINT_AUTO or RUNTIME_HINT_CPYTHON"
                    )));
                }
            },
            RuntimeHint::CPython if python => RuntimeChoice::Python,
            RuntimeHint::CPython => {
                let why = if self.foreign.is_none() {
                    "the Python runtime is not enabled on this server"
                } else {
                    "it has no Python implementation"
                };
                return Err(ResolveError::Runtime(format!(
                    "node type `{canonical}` cannot run with RUNTIME_HINT_CPYTHON: {why}; use RUNTIME_HINT_AUTO or RUNTIME_HINT_RUST"
                )));
            }
            RuntimeHint::Unsupported(name) => {
                return Err(ResolveError::Runtime(format!(
                    "runtime hint {name} is unsupported; use RUNTIME_HINT_AUTO, RUNTIME_HINT_RUST or RUNTIME_HINT_CPYTHON"
                )));
            }
        };
        Ok(Resolved { node_type: canonical, choice })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_native_and_aliases_resolve() {
        let r = Registry::builtin();
        let res = r.resolve("PassThrough", RuntimeHint::Auto).unwrap();
        assert_eq!(res.node_type, "PassThroughNode");
        assert_eq!(res.runtime(), Runtime::Rust);
    }

    #[test]
    fn unknown_types_suggest_the_closest_known_one() {
        let r = Registry::builtin();
        assert_eq!(r.resolve("Nope", RuntimeHint::Auto).unwrap_err().to_string(), "unknown node type `Nope`");
        let err = r.resolve("GainNod", RuntimeHint::Auto).unwrap_err().to_string();
        assert_eq!(err, "unknown node type `GainNod`; did you mean `GainNode`?");
        let err = r.resolve("vad", RuntimeHint::Auto).unwrap_err().to_string();
        assert!(err.ends_with("did you mean `VADNode`?"), "{err}");
    }

    #[test]
    fn an_unknown_type_is_quoted_within_bounds() {
        let long = "N".repeat(100_000);
        let err = Registry::builtin().resolve(&long, RuntimeHint::Auto).unwrap_err().to_string();
        assert!(err.len() < 300, "{}", err.len());
    }

    #[test]
    fn cpython_without_a_python_runtime_says_so() {
        let err = Registry::builtin().resolve("GainNode", RuntimeHint::CPython).unwrap_err().to_string();
        assert!(err.contains("Python runtime is not enabled"), "{err}");
    }

    #[test]
    fn unsupported_hints_are_named() {
        let err = Registry::builtin()
            .resolve("GainNode", RuntimeHint::Unsupported("RUNTIME_HINT_RUSTPYTHON"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RUNTIME_HINT_RUSTPYTHON is unsupported"), "{err}");
    }
}
