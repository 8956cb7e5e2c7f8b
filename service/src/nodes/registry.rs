//! The registry of node types: their declarations, their implementations, and runtime
//! selection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{AsyncNode, NodeFactory, NodeSpec, ParamError, Params, Runtime};

/// When a node should run natively or in Python.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeHint {
    /// Native if available, else Python.
    Auto,
    /// Native only.
    Rust,
    /// Python only.
    CPython,
    /// A hint the service knows but does not support; carries its wire name.
    Unsupported(&'static str),
}

/// Node implementations that live outside Rust: the embedded Python interpreter.
#[async_trait]
pub trait ForeignNodes: Send + Sync + 'static {
    /// The declaration of every node type this runtime implements.
    fn declarations(&self) -> Vec<NodeSpec>;

    /// Builds an instance from parameters already checked against the type's declaration;
    /// the node's own checks come back as [`ParamError`]s.
    async fn create(
        &self,
        node_type: &str,
        node_id: &str,
        params: &Params,
    ) -> Result<Arc<dyn AsyncNode>, Vec<ParamError>>;

    /// Readies what the nodes need before the server reports SERVING (preloaded models); the
    /// error says what failed and stops start-up.
    async fn warm_up(&self) -> Result<(), String> {
        Ok(())
    }
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
    pub spec: Arc<NodeSpec>,
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

/// One entry of the node catalogue: a declaration and the runtimes that implement it.
#[derive(Debug, Clone)]
pub struct CatalogueEntry {
    pub spec: Arc<NodeSpec>,
    pub runtimes: Vec<Runtime>,
}

impl CatalogueEntry {
    /// The entry as the catalogue snapshot and `GetVersion` give it: parameters as JSON Schema.
    pub fn to_json(&self) -> Value {
        let s = &self.spec;
        json!({
            "name": s.node_type,
            "aliases": s.aliases,
            "description": s.description,
            "details": s.details,
            "params_schema": s.params_schema(),
            "inputs": s.inputs,
            "outputs": s.outputs,
            "runtimes": self.runtimes.iter().map(|r| r.name()).collect::<Vec<_>>(),
        })
    }
}

/// The catalogue as one JSON document, `{"node_types": [...]}` sorted by name: what
/// `remotemedia-server catalogue` writes and the clients and docs are generated from.
pub fn catalogue_json(entries: &[CatalogueEntry]) -> Value {
    json!({ "node_types": entries.iter().map(CatalogueEntry::to_json).collect::<Vec<_>>() })
}

/// Why a foreign runtime's nodes could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RegistrationError(pub String);

/// Node types by name: their declarations, native factories, aliases, and the Python runtime.
#[derive(Clone, Default)]
pub struct Registry {
    /// Every node type's declaration: the native one where there is a native implementation.
    specs: BTreeMap<String, Arc<NodeSpec>>,
    native: BTreeMap<String, Arc<dyn NodeFactory>>,
    /// Types the Python runtime implements.
    python: BTreeSet<String>,
    aliases: BTreeMap<String, String>,
    foreign: Option<Arc<dyn ForeignNodes>>,
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
        let spec = Arc::new(factory.spec());
        for alias in &spec.aliases {
            self.aliases.insert(alias.clone(), spec.node_type.clone());
        }
        self.native.insert(spec.node_type.clone(), Arc::new(factory));
        self.specs.insert(spec.node_type.clone(), spec);
    }

    /// Attaches the Python runtime and registers its node types. A Python twin of a native
    /// type must take the same parameters (names, required ones and defaults); the native
    /// declaration then governs both.
    pub fn attach_foreign(&mut self, foreign: Arc<dyn ForeignNodes>) -> Result<(), RegistrationError> {
        for decl in foreign.declarations() {
            let name = decl.node_type.clone();
            match self.specs.get(&name) {
                Some(native) if self.native.contains_key(&name) => {
                    native.agrees_with(&decl).map_err(|why| {
                        RegistrationError(format!("the Python node {name} does not match the native {name}: {why}"))
                    })?;
                }
                Some(_) => {
                    return Err(RegistrationError(format!("node type {name} is declared twice by the Python runtime")));
                }
                None => {
                    // A name or alias taken by another type would make one of the two
                    // unreachable: requests resolve aliases first.
                    for taken in std::iter::once(&name).chain(&decl.aliases) {
                        let owner = self.aliases.get(taken).or_else(|| self.specs.contains_key(taken).then_some(taken));
                        if let Some(owner) = owner {
                            let what = if taken == &name { "its name" } else { "its alias" };
                            return Err(RegistrationError(format!(
                                "the Python node type {name} cannot have {what} {taken}: {taken} already names {owner}; \
                                 choose another name"
                            )));
                        }
                    }
                    for alias in &decl.aliases {
                        self.aliases.insert(alias.clone(), name.clone());
                    }
                    self.specs.insert(name.clone(), Arc::new(decl));
                }
            }
            self.python.insert(name);
        }
        self.foreign = Some(foreign);
        Ok(())
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

    /// The declaration of `name` (a type or an alias).
    pub fn spec(&self, name: &str) -> Option<&Arc<NodeSpec>> {
        self.specs.get(self.canonical(name))
    }

    /// Whether `name` (a type or an alias) is implemented by any runtime.
    pub fn knows(&self, name: &str) -> bool {
        self.specs.contains_key(self.canonical(name))
    }

    /// Every registered node type, sorted.
    pub fn node_types(&self) -> Vec<String> {
        self.specs.keys().cloned().collect()
    }

    /// Every node type's declaration with the runtimes that implement it, sorted by name.
    pub fn catalogue(&self) -> Vec<CatalogueEntry> {
        self.specs
            .iter()
            .map(|(name, spec)| {
                let mut runtimes = Vec::new();
                if self.native.contains_key(name) {
                    runtimes.push(Runtime::Rust);
                }
                if self.python.contains(name) {
                    runtimes.push(Runtime::Python);
                }
                CatalogueEntry { spec: spec.clone(), runtimes }
            })
            .collect()
    }

    /// Every (node type, runtime) pair that can run.
    pub fn implementations(&self) -> Vec<(String, Runtime)> {
        let native = self.native.keys().map(|t| (t.clone(), Runtime::Rust));
        let python = self.python.iter().map(|t| (t.clone(), Runtime::Python));
        let mut all: Vec<(String, Runtime)> = native.chain(python).collect();
        all.sort_by(|a, b| (&a.0, a.1.name()).cmp(&(&b.0, b.1.name())));
        all
    }

    /// The known type or alias closest to `name`, if one is close enough to be a typo of it.
    ///
    /// The edit distance costs the product of the two lengths; a type whose length alone rules
    /// it out (the distance is at least the difference of the lengths) is skipped, so a request
    /// of a thousand unknown 20 000-character types costs milliseconds, not the 40 s it took.
    fn closest(&self, name: &str) -> Option<String> {
        const MIN_SIMILARITY: f64 = 0.75;
        let length = name.chars().count();
        let could_match = |t: &&String| {
            let known = t.chars().count();
            length.abs_diff(known) as f64 <= (1.0 - MIN_SIMILARITY) * length.max(known) as f64
        };
        let lower = name.to_ascii_lowercase();
        self.specs
            .keys()
            .chain(self.aliases.keys())
            .filter(could_match)
            .map(|t| (strsim::normalized_damerau_levenshtein(&lower, &t.to_ascii_lowercase()), t))
            .filter(|(score, _)| *score >= MIN_SIMILARITY)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, t)| self.canonical(t).to_owned())
    }

    /// Chooses the implementation for `node_type` under `hint`, or explains why none fits.
    pub fn resolve(&self, node_type: &str, hint: RuntimeHint) -> Result<Resolved, ResolveError> {
        let canonical = self.canonical(node_type).to_owned();
        let Some(spec) = self.specs.get(&canonical).cloned() else {
            return Err(ResolveError::UnknownType { name: node_type.to_owned(), suggestion: self.closest(node_type) });
        };
        let native = self.native.get(&canonical).cloned();
        let python = self.python.contains(&canonical);
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
        Ok(Resolved { node_type: canonical, spec, choice })
    }

    /// Checks a node's parameters against its type's declaration, whichever runtime will run
    /// it: a Python twin is held to the native node's rules.
    pub fn prepare(
        &self,
        resolved: &Resolved,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Params, Vec<ParamError>> {
        resolved.spec.check(params)
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
        // A length within a quarter of a known type's can still be a typo of it; one further off
        // cannot, and is not compared.
        let err = r.resolve("GainNodeXX", RuntimeHint::Auto).unwrap_err().to_string();
        assert!(err.ends_with("did you mean `GainNode`?"), "{err}");
        let err = r.resolve("GainNodeGainNode", RuntimeHint::Auto).unwrap_err().to_string();
        assert!(!err.contains("did you mean"), "{err}");
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

    #[test]
    fn every_builtin_declaration_is_complete() {
        for entry in Registry::builtin().catalogue() {
            let s = &entry.spec;
            assert!(!s.description.is_empty() && !s.inputs.is_empty() && !s.outputs.is_empty(), "{}", s.node_type);
            for p in &s.params {
                assert!(!p.description.is_empty(), "{}.{} has no description", s.node_type, p.name);
                if let Some(d) = &p.default {
                    assert_eq!(p.kind.accept(d).as_ref(), Ok(d), "{}.{}: the default must pass", s.node_type, p.name);
                }
            }
            // The defaults, and the example where a node has one, make a valid parameter object.
            let valid = s.example.clone().unwrap_or_default();
            assert!(s.check(&valid).is_ok() || s.params.iter().any(|p| p.required), "{}", s.node_type);
            if let Some(example) = &s.example {
                assert!(s.check(example).is_ok(), "{}: the example is valid", s.node_type);
            }
            assert_eq!(entry.runtimes, [Runtime::Rust]);
        }
    }

    #[test]
    fn an_out_of_range_member_of_an_exclusive_group_is_reported_once() {
        // chunk_samples 0 is out of range; the "one of chunk_samples or chunk_ms" rule must not
        // then also report it missing.
        let r = Registry::builtin();
        let resolved = r.resolve("AudioChunkerNode", RuntimeHint::Auto).unwrap();
        let params = serde_json::json!({"chunk_samples": 0});
        let errors = r.prepare(&resolved, params.as_object().unwrap()).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("between 1 and 10000000"), "{errors:?}");
        let errors = r.prepare(&resolved, &serde_json::Map::new()).unwrap_err();
        assert!(errors[0].to_string().contains("or `chunk_ms` is required"), "{errors:?}");
    }

    struct Twins(Vec<NodeSpec>);

    #[async_trait]
    impl ForeignNodes for Twins {
        fn declarations(&self) -> Vec<NodeSpec> {
            self.0.clone()
        }

        async fn create(&self, _: &str, _: &str, _: &Params) -> Result<Arc<dyn AsyncNode>, Vec<ParamError>> {
            Err(Vec::new())
        }
    }

    #[test]
    fn a_python_twin_must_take_the_native_parameters() {
        let gain = Registry::builtin().spec("GainNode").unwrap().as_ref().clone();
        let mut r = Registry::builtin();
        r.attach_foreign(Arc::new(Twins(vec![gain.clone(), NodeSpec::new("EchoNode", "a Python-only node")]))).unwrap();
        let entry = r.catalogue().into_iter().find(|e| e.spec.node_type == "GainNode").unwrap();
        assert_eq!(entry.runtimes, [Runtime::Rust, Runtime::Python]);
        assert!(r.resolve("EchoNode", RuntimeHint::Auto).is_ok());

        let mut wrong = gain;
        wrong.params.pop();
        let err = Registry::builtin().attach_foreign(Arc::new(Twins(vec![wrong]))).unwrap_err().to_string();
        assert!(err.contains("the Python node GainNode does not match the native GainNode"), "{err}");
    }

    #[test]
    fn a_python_node_cannot_take_a_name_or_alias_another_type_has() {
        let attach = |spec: NodeSpec| Registry::builtin().attach_foreign(Arc::new(Twins(vec![spec])));
        let err = attach(NodeSpec::new("VAD", "a plug-in")).unwrap_err().to_string();
        assert_eq!(
            err,
            "the Python node type VAD cannot have its name VAD: VAD already names VADNode; choose another name"
        );
        let err = attach(NodeSpec::new("MyVad", "a plug-in").alias("VADNode")).unwrap_err().to_string();
        assert!(err.contains("cannot have its alias VADNode: VADNode already names VADNode"), "{err}");
        let err = attach(NodeSpec::new("MyGain", "a plug-in").alias("AudioResample")).unwrap_err().to_string();
        assert!(err.contains("AudioResample already names AudioResampleNode"), "{err}");
        attach(NodeSpec::new("MyVad", "a plug-in").alias("MyVAD")).expect("names of its own");
    }
}
