//! Manifest → validated [`Plan`]: every rule checked, every violation collected.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde_json::{Map, Value};

use super::error::{ValidationError, Violation};
use super::manifest::{MANIFEST_VERSION, Manifest, ManifestNode, PipelineConfig};
use crate::nodes::{
    DATA, INPUT, OUTPUT, ParamError, Params, PortKind, PortName, Registry, ResolveError, Resolved, port_name,
};
use crate::text::quoted;

/// Longest node id, in bytes. Ids appear in every message about their node, in logs and in
/// metrics-free places such as `data_outputs` keys; a bound keeps all of those bounded.
pub const MAX_NAME_BYTES: usize = 256;

/// What the request feeds into the pipeline, for the checks that depend on it.
#[derive(Debug, Clone, Default)]
pub struct RequestShape {
    /// Node ids with `audio_inputs`; `None` for streams, which feed nodes chunk by chunk.
    pub audio_inputs: Option<BTreeSet<String>>,
    /// Node ids with `data_inputs`.
    pub data_inputs: BTreeSet<String>,
    /// Extra nodes whose outputs are returned.
    pub output_nodes: Vec<String>,
}

impl RequestShape {
    /// The shape of a stream: inputs arrive as chunks, so sources need none up front.
    pub fn stream() -> Self {
        Self::default()
    }
}

/// A connection between validated nodes, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub from: usize,
    pub output_key: PortName,
    pub input_key: PortName,
}

/// A node that passed validation, its parameters checked, before it is instantiated.
#[derive(Clone)]
pub struct PlannedNode {
    pub id: String,
    pub resolved: Resolved,
    pub params: Params,
}

/// A validated pipeline: nodes, links and a topological order (Kahn's algorithm, ties broken by
/// manifest order).
#[derive(Clone)]
pub struct Plan {
    pub name: String,
    pub nodes: Vec<PlannedNode>,
    pub incoming: Vec<Vec<Link>>,
    pub outgoing: Vec<Vec<usize>>,
    pub order: Vec<usize>,
    pub output_nodes: BTreeSet<usize>,
    pub config: PipelineConfig,
}

impl Plan {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    pub fn is_sink(&self, idx: usize) -> bool {
        self.outgoing[idx].is_empty()
    }
}

/// What [`validate`] found when the manifest has violations: each manifest node that passed its
/// own checks (its type, runtime and parameters), by manifest index, `None` for the others. Their
/// construction can still be tried, so that what it checks joins the report.
pub type Checked = Vec<Option<PlannedNode>>;

/// Checks everything that can be checked without building nodes, node parameters included,
/// collecting every violation. Returns the plan when there is none (else the nodes that passed
/// their own checks), and the violations (with the available node types when one was unknown).
pub fn validate(
    manifest: &Manifest,
    registry: &Registry,
    shape: &RequestShape,
) -> (Result<Plan, Checked>, ValidationError) {
    let mut check = Check { manifest, registry, violations: Vec::new(), first_index: HashMap::new() };
    check.header();
    let nodes = check.nodes();
    let (incoming, outgoing) = check.connections(&nodes);
    let order = check.cycles(&incoming, &outgoing);
    check.inputs(shape, &incoming, &nodes);
    let output_nodes = check.output_nodes(shape);

    let mut error = ValidationError::new(check.violations);
    if manifest.nodes.iter().any(|n| !n.node_type.is_empty() && !registry.knows(&n.node_type)) {
        error.available_node_types = registry.node_types();
    }
    if !error.violations.is_empty() || nodes.iter().any(Option::is_none) {
        return (Err(nodes), error);
    }
    let plan = Plan {
        name: manifest.name.clone(),
        nodes: nodes.into_iter().map(|n| n.expect("checked: every node resolved")).collect(),
        incoming,
        outgoing,
        order,
        output_nodes,
        config: manifest.config.clone(),
    };
    (Ok(plan), error)
}

/// One validation of a manifest, phase by phase: the header, the nodes, the connections, the
/// cycles, then the inputs and outputs the request names.
struct Check<'a> {
    manifest: &'a Manifest,
    registry: &'a Registry,
    violations: Vec<Violation>,
    /// The manifest index of each node id, first occurrence.
    first_index: HashMap<&'a str, usize>,
}

impl<'a> Check<'a> {
    fn push(&mut self, v: Violation) {
        self.violations.push(v);
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.first_index.get(id).copied()
    }

    fn header(&mut self) {
        if self.manifest.version != MANIFEST_VERSION {
            self.push(Violation::new(
                "version",
                format!("manifest version must be \"{MANIFEST_VERSION}\", got \"{}\"", quoted(&self.manifest.version)),
            ));
        }
        if self.manifest.nodes.is_empty() {
            self.push(Violation::new("nodes", "manifest has no nodes; a pipeline needs at least one"));
        }
    }

    /// Ids, types, runtimes and parameters; `None` for each node that failed one of them.
    fn nodes(&mut self) -> Vec<Option<PlannedNode>> {
        let manifest = self.manifest;
        manifest.nodes.iter().enumerate().map(|(i, spec)| self.node(i, spec)).collect()
    }

    fn node(&mut self, i: usize, spec: &'a ManifestNode) -> Option<PlannedNode> {
        let field = |f: &str| format!("nodes[{i}].{f}");
        if spec.id.is_empty() {
            self.push(Violation::new(field("id"), format!("nodes[{i}] has an empty id")));
        } else if let Some(prev) = self.index(&spec.id) {
            self.push(
                Violation::new(
                    field("id"),
                    format!(
                        "node id `{}` is used by nodes[{prev}] and nodes[{i}]; ids must be unique",
                        quoted(&spec.id)
                    ),
                )
                .on_node(&spec.id),
            );
        } else {
            if spec.id.len() > MAX_NAME_BYTES {
                self.push(
                    Violation::new(
                        field("id"),
                        format!(
                            "node id `{}` is {} bytes long; ids may have at most {MAX_NAME_BYTES}",
                            quoted(&spec.id),
                            spec.id.len()
                        ),
                    )
                    .on_node(&spec.id),
                );
            }
            self.first_index.insert(&spec.id, i);
        }
        let who = if spec.id.is_empty() { format!("nodes[{i}]") } else { format!("node `{}`", quoted(&spec.id)) };

        let resolved = if spec.node_type.is_empty() {
            self.push(Violation::new(field("node_type"), format!("{who} has an empty node_type")).on_node(&spec.id));
            None
        } else {
            match self.registry.resolve(&spec.node_type, spec.runtime) {
                Ok(r) => Some(r),
                Err(e) => {
                    let f = match e {
                        ResolveError::UnknownType { .. } => field("node_type"),
                        ResolveError::Runtime(_) => field("runtime_hint"),
                    };
                    self.push(Violation::new(f, format!("{who}: {e}")).on_node(&spec.id));
                    None
                }
            }
        };
        let raw = match parse_params(&spec.params) {
            Ok(p) => Some(p),
            Err(msg) => {
                self.push(Violation::new(field("params"), format!("{who}: {msg}")).on_node(&spec.id));
                None
            }
        };
        let (resolved, raw) = (resolved?, raw?);
        match self.registry.prepare(&resolved, &raw) {
            Ok(params) => Some(PlannedNode { id: spec.id.clone(), resolved, params }),
            Err(errors) => {
                for e in errors {
                    self.push(param_violation(i, &spec.id, &resolved.node_type, &e));
                }
                None
            }
        }
    }

    /// Connections between known nodes and ports they have; the links and successors by node.
    fn connections(&mut self, nodes: &[Option<PlannedNode>]) -> (Vec<Vec<Link>>, Vec<Vec<usize>>) {
        let n = self.manifest.nodes.len();
        let mut incoming: Vec<Vec<Link>> = vec![Vec::new(); n];
        let mut outgoing: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        let mut seen_edges = BTreeMap::new();
        for (j, e) in self.manifest.connections.iter().enumerate() {
            let label = format!("connections[{j}] ({} → {})", quoted(or_empty(&e.from)), quoted(or_empty(&e.to)));
            let mut ok = true;
            for (end, id) in [("from", &e.from), ("to", &e.to)] {
                if id.is_empty() {
                    self.push(Violation::new(format!("connections[{j}].{end}"), format!("{label}: `{end}` is empty")));
                    ok = false;
                } else if self.index(id).is_none() {
                    self.push(Violation::new(
                        format!("connections[{j}].{end}"),
                        format!("{label}: `{end}` names unknown node `{}`", quoted(id)),
                    ));
                    ok = false;
                }
            }
            if !ok {
                continue;
            }
            if e.from == e.to {
                self.push(
                    Violation::new(
                        format!("connections[{j}]"),
                        format!("{label}: node `{}` is connected to itself", quoted(&e.from)),
                    )
                    .on_node(&e.from),
                );
                continue;
            }
            let output_key = if e.output_key.is_empty() { OUTPUT } else { &e.output_key };
            let input_key = if e.input_key.is_empty() { INPUT } else { &e.input_key };
            let (from, to) = (self.index(&e.from).unwrap_or_default(), self.index(&e.to).unwrap_or_default());
            if let Some(prev) = seen_edges.insert((from, output_key.to_owned(), to, input_key.to_owned()), j) {
                self.push(Violation::new(
                    format!("connections[{j}]"),
                    format!(
                        "{label}: duplicates connections[{prev}] ({} `{}` → {} `{}`)",
                        quoted(&e.from),
                        quoted(output_key),
                        quoted(&e.to),
                        quoted(input_key)
                    ),
                ));
                continue;
            }
            let produced =
                self.port(&nodes[from], output_key, true, &e.from, &format!("connections[{j}].output_key"), &label);
            let taken = self.port(&nodes[to], input_key, false, &e.to, &format!("connections[{j}].input_key"), &label);
            if let (Some(produced), Some(taken)) = (produced, taken)
                && produced != taken
            {
                self.push(
                    Violation::new(
                        format!("connections[{j}]"),
                        format!(
                            "{label}: output port `{}` carries {}, but input port `{}` of node `{}` takes {}; connect ports of the same kind",
                            quoted(output_key),
                            kind_name(produced),
                            quoted(input_key),
                            quoted(&e.to),
                            kind_name(taken)
                        ),
                    )
                    .on_node(&e.to),
                );
            }
            incoming[to].push(Link { from, output_key: port_name(output_key), input_key: port_name(input_key) });
            outgoing[from].insert(to);
        }
        (incoming, outgoing.into_iter().map(|s| s.into_iter().collect()).collect())
    }

    /// Checks that a node declares the port a connection names; returns the port's kind.
    fn port(
        &mut self,
        node: &Option<PlannedNode>,
        port: &str,
        is_output: bool,
        id: &str,
        field: &str,
        label: &str,
    ) -> Option<PortKind> {
        let Some(PlannedNode { resolved, .. }) = node else { return None };
        let spec = &resolved.spec;
        let ports = if is_output { &spec.outputs } else { &spec.inputs };
        let found = ports.iter().find(|p| p.name == port).map(|p| p.kind);
        if found.is_none() {
            self.push(
                Violation::new(field, format!("{label}: {}", spec.missing_port(id, port, is_output))).on_node(id),
            );
        }
        found
    }

    /// Kahn's order, and a violation naming the path of each cycle.
    fn cycles(&mut self, incoming: &[Vec<Link>], outgoing: &[Vec<usize>]) -> Vec<usize> {
        let (order, cycles) = topological_order(incoming, outgoing);
        for cycle in cycles {
            let path: Vec<String> = cycle.iter().map(|&i| quoted(&self.manifest.nodes[i].id).into_owned()).collect();
            self.push(
                Violation::new("connections", format!("connections form a cycle: {}", path.join(" → ")))
                    .on_node(&self.manifest.nodes[cycle[0]].id),
            );
        }
        order
    }

    /// The request's inputs name nodes of the pipeline, and every source has one.
    /// A node fed audio must take it on `input`, one fed data on `data`.
    fn inputs(&mut self, shape: &RequestShape, incoming: &[Vec<Link>], nodes: &[Option<PlannedNode>]) {
        let Some(audio) = &shape.audio_inputs else { return };
        for (map, keys, port, kind) in
            [("audio_inputs", audio, INPUT, PortKind::Audio), ("data_inputs", &shape.data_inputs, DATA, PortKind::Data)]
        {
            for id in keys {
                let field = format!("{map}[{}]", quoted(id));
                if id.is_empty() {
                    // A node with an empty id is reported as such; its input is no second problem.
                    if !self.manifest.nodes.iter().any(|n| n.id.is_empty()) {
                        self.push(Violation::new(field, format!("{map} has an entry for an empty node id")));
                    }
                    continue;
                }
                let Some(i) = self.index(id) else {
                    self.push(Violation::new(field, format!("{map} names unknown node `{}`", quoted(id))));
                    continue;
                };
                match self.port(&nodes[i], port, false, id, &field, map) {
                    Some(taken) if taken != kind => self.push(
                        Violation::new(
                            field,
                            format!(
                                "{map}: input port `{port}` of node `{}` takes {}, not {}",
                                quoted(id),
                                kind_name(taken),
                                kind_name(kind)
                            ),
                        )
                        .on_node(id),
                    ),
                    _ => {}
                }
            }
        }
        let manifest = self.manifest;
        for (i, spec) in manifest.nodes.iter().enumerate() {
            let fed = audio.contains(&spec.id) || shape.data_inputs.contains(&spec.id);
            let first_of_its_id = self.index(&spec.id) == Some(i);
            if incoming[i].is_empty() && !fed && first_of_its_id {
                self.push(
                    Violation::new(
                        format!("audio_inputs[{}]", quoted(&spec.id)),
                        format!(
                            "node `{}` is a source (nothing connects into it) but the request has no audio_inputs or data_inputs for it",
                            quoted(&spec.id)
                        ),
                    )
                    .on_node(&spec.id),
                );
            }
        }
    }

    /// The nodes named in `output_nodes`, by index.
    fn output_nodes(&mut self, shape: &RequestShape) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        for (k, id) in shape.output_nodes.iter().enumerate() {
            match self.index(id) {
                Some(i) => {
                    out.insert(i);
                }
                None => self.push(Violation::new(
                    format!("output_nodes[{k}]"),
                    format!("output_nodes names unknown node `{}`", quoted(id)),
                )),
            }
        }
        out
    }
}

/// A parameter problem of node `i` as a violation of `nodes[i].params.<param>`.
pub fn param_violation(i: usize, id: &str, node_type: &str, e: &ParamError) -> Violation {
    let field =
        if e.param.is_empty() { format!("nodes[{i}].params") } else { format!("nodes[{i}].params.{}", e.param) };
    Violation::new(field, format!("node `{}` ({node_type}): {e}", quoted(id))).on_node(id)
}

fn kind_name(kind: PortKind) -> &'static str {
    match kind {
        PortKind::Audio => "audio",
        PortKind::Data => "data",
    }
}

fn or_empty(s: &str) -> &str {
    if s.is_empty() { "?" } else { s }
}

fn parse_params(text: &str) -> Result<Map<String, Value>, String> {
    // Unset (proto3's empty string) means no parameters; anything else must be a JSON object,
    // so blank text is an error like any other text that is not JSON.
    if text.is_empty() {
        return Ok(Map::new());
    }
    match crate::json::parse(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "params must be a JSON object, got {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )),
        Err(e) if e.is_data() => Err(format!("params have a {e}")),
        Err(e) => Err(format!("params are not valid JSON: {e}")),
    }
}

/// Kahn's algorithm over the links. Returns the order of the nodes it could place and, if some
/// remain, the cycles among them (one path per cycle, first node repeated at the end).
fn topological_order(incoming: &[Vec<Link>], outgoing: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n = incoming.len();
    let mut indegree: Vec<usize> = (0..n).map(|i| distinct_preds(&incoming[i]).len()).collect();
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &s in &outgoing[i] {
            indegree[s] -= 1;
            if indegree[s] == 0 {
                ready.push_back(s);
            }
        }
    }
    let mut cycles = Vec::new();
    let mut remaining: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] > 0).collect();
    while let Some(&start) = remaining.iter().next() {
        // Every remaining node has a remaining predecessor, so walking predecessors must revisit.
        let mut path = vec![start];
        let mut pos: HashMap<usize, usize> = HashMap::from([(start, 0)]);
        let mut cur = start;
        let cycle = loop {
            let Some(pred) = distinct_preds(&incoming[cur]).into_iter().find(|p| remaining.contains(p)) else {
                break None;
            };
            if let Some(&at) = pos.get(&pred) {
                let mut c: Vec<usize> = path[at..].to_vec();
                c.reverse();
                // Start the path at the node the manifest lists first, as a reader would.
                let first = c.iter().enumerate().min_by_key(|(_, n)| **n).map_or(0, |(k, _)| k);
                c.rotate_left(first);
                c.push(c[0]);
                break Some(c);
            }
            pos.insert(pred, path.len());
            path.push(pred);
            cur = pred;
        };
        match cycle {
            Some(c) => {
                for i in &c {
                    remaining.remove(i);
                }
                // Nodes only downstream of this cycle are not on a cycle themselves.
                prune_acyclic(&mut remaining, incoming);
                cycles.push(c);
            }
            None => {
                remaining.remove(&start);
            }
        }
    }
    (order, cycles)
}

fn distinct_preds(links: &[Link]) -> Vec<usize> {
    let set: BTreeSet<usize> = links.iter().map(|l| l.from).collect();
    set.into_iter().collect()
}

/// Drops remaining nodes with no remaining predecessor, repeatedly: what is left are cycles and
/// nodes downstream of further cycles.
fn prune_acyclic(remaining: &mut BTreeSet<usize>, incoming: &[Vec<Link>]) {
    loop {
        let drop: Vec<usize> =
            remaining.iter().copied().filter(|&i| !incoming[i].iter().any(|l| remaining.contains(&l.from))).collect();
        if drop.is_empty() {
            return;
        }
        for i in drop {
            remaining.remove(&i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Edge, RuntimeHint};

    fn shape(audio: &[&str]) -> RequestShape {
        RequestShape { audio_inputs: Some(audio.iter().map(|s| s.to_string()).collect()), ..RequestShape::default() }
    }

    fn messages(m: &Manifest, s: &RequestShape) -> Vec<String> {
        let (_, v) = validate(m, &Registry::builtin(), s);
        v.violations.into_iter().map(|v| v.message).collect()
    }

    #[test]
    fn a_valid_chain_gets_kahn_order() {
        let m = Manifest::new("t")
            .node("c", "GainNode", "")
            .node("a", "PassThroughNode", "")
            .node("b", "GainNode", "{}")
            .connect("a", "b")
            .connect("b", "c");
        let (plan, v) = validate(&m, &Registry::builtin(), &shape(&["a"]));
        assert!(v.violations.is_empty(), "{v:?}");
        let plan = plan.ok().unwrap();
        let ids: Vec<&str> = plan.order.iter().map(|&i| plan.nodes[i].id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(plan.is_sink(0));
    }

    #[test]
    fn version_must_be_v1() {
        let mut m = Manifest::new("t").node("a", "GainNode", "");
        m.version = "1.0".into();
        assert_eq!(messages(&m, &shape(&["a"])), [r#"manifest version must be "v1", got "1.0""#]);
    }

    #[test]
    fn long_ids_are_refused_and_quoted_within_bounds() {
        let id = "a→".repeat(10_000);
        let m = Manifest::new("t").node(&id, "GainNode", "").node("b", "GainNode", "").connect(&id, "b");
        let msgs = messages(&m, &shape(&[&id]));
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(msgs[0].contains("is 40000 bytes long; ids may have at most 256"), "{msgs:?}");
        assert!(msgs[0].len() < 400, "{}", msgs[0].len());
    }

    #[test]
    fn many_unknown_types_name_the_available_types_once() {
        let mut m = Manifest::new("t");
        for i in 0..20 {
            m = m.node(&format!("n{i}"), "NoSuchNode", "");
        }
        let ids: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (_, error) = validate(&m, &Registry::builtin(), &shape(&ids));
        assert_eq!(error.violations.len(), 20);
        assert!(error.violations.iter().all(|v| !v.message.contains("GainNode")), "{error:?}");
        assert_eq!(error.available_node_types, Registry::builtin().node_types());
        let text = error.to_string();
        assert_eq!(text.matches("GainNode").count(), 1, "{text}");
        assert!(text.contains("unknown node type `NoSuchNode`"), "{text}");
    }

    #[test]
    fn empty_manifest_is_rejected() {
        assert_eq!(
            messages(&Manifest::new("t"), &shape(&[])),
            ["manifest has no nodes; a pipeline needs at least one"]
        );
    }

    #[test]
    fn duplicate_ids_name_both_positions() {
        let m = Manifest::new("t").node("a", "GainNode", "").node("a", "GainNode", "");
        let msgs = messages(&m, &shape(&["a"]));
        assert_eq!(msgs, ["node id `a` is used by nodes[0] and nodes[1]; ids must be unique"]);
    }

    #[test]
    fn unknown_type_lists_available_types() {
        let m = Manifest::new("t").node("x", "Reverb", "");
        let (_, error) = validate(&m, &Registry::builtin(), &shape(&["x"]));
        assert_eq!(
            error.to_string(),
            "invalid pipeline: node `x`: unknown node type `Reverb` (available node types: AudioChunkerNode, \
             AudioResampleNode, ChannelMixerNode, FormatConverterNode, GainNode, PassThroughNode, VADNode)"
        );
    }

    #[test]
    fn duplicate_param_keys_are_an_error_naming_the_key() {
        let m = Manifest::new("t").node("r", "AudioResampleNode", r#"{"output_rate": 16000, "output_rate": 8000}"#);
        let msgs = messages(&m, &shape(&["r"]));
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(msgs[0].starts_with("node `r`: params have a duplicate key `output_rate`"), "{msgs:?}");
    }

    #[test]
    fn invalid_json_params_are_an_error_not_empty() {
        let m = Manifest::new("t").node("g", "GainNode", "{gain: 2");
        let msgs = messages(&m, &shape(&["g"]));
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].starts_with("node `g`: params are not valid JSON: "), "{msgs:?}");
        let m = Manifest::new("t").node("g", "GainNode", "[1]");
        assert_eq!(messages(&m, &shape(&["g"])), ["node `g`: params must be a JSON object, got an array"]);
        // Only unset params (the empty string) mean none; blank text is not JSON.
        for blank in ["   ", "\n"] {
            let m = Manifest::new("t").node("g", "GainNode", blank);
            let msgs = messages(&m, &shape(&["g"]));
            assert_eq!(msgs.len(), 1, "{blank:?}: {msgs:?}");
            assert!(msgs[0].starts_with("node `g`: params are not valid JSON: "), "{msgs:?}");
        }
        assert!(messages(&Manifest::new("t").node("g", "GainNode", ""), &shape(&["g"])).is_empty());
    }

    #[test]
    fn connections_to_unknown_nodes_and_self_loops() {
        let m = Manifest::new("t").node("a", "GainNode", "").connect("a", "ghost").connect("a", "a");
        let msgs = messages(&m, &shape(&["a"]));
        assert_eq!(
            msgs,
            [
                "connections[0] (a → ghost): `to` names unknown node `ghost`",
                "connections[1] (a → a): node `a` is connected to itself",
            ]
        );
    }

    #[test]
    fn a_cycle_names_its_path() {
        let m = Manifest::new("t")
            .node("src", "PassThroughNode", "")
            .node("a", "PassThroughNode", "")
            .node("b", "PassThroughNode", "")
            .node("c", "PassThroughNode", "")
            .connect("src", "a")
            .connect("a", "b")
            .connect("b", "c")
            .connect("c", "a");
        let msgs = messages(&m, &shape(&["src"]));
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0], "connections form a cycle: a → b → c → a");
    }

    #[test]
    fn two_node_cycle_and_downstream_node() {
        let m = Manifest::new("t")
            .node("a", "PassThroughNode", "")
            .node("b", "PassThroughNode", "")
            .node("d", "PassThroughNode", "")
            .connect("a", "b")
            .connect("b", "a")
            .connect("b", "d");
        let (_, v) = validate(&m, &Registry::builtin(), &RequestShape::stream());
        let v = v.violations;
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].message, "connections form a cycle: a → b → a");
    }

    #[test]
    fn ports_are_checked_against_native_nodes() {
        let m = Manifest::new("t")
            .node("a", "GainNode", "")
            .node("b", "GainNode", "")
            .edge(Edge::new("a", "b").ports("segments", "sidechain"));
        let msgs = messages(&m, &shape(&["a"]));
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("node `a` (GainNode) has no output port `segments`; its output ports are: output"));
        assert!(msgs[1].contains("node `b` (GainNode) has no input port `sidechain`; its input ports are: input"));
    }

    #[test]
    fn connections_join_ports_of_the_same_kind() {
        // VAD's `segments` is data, the resampler's `input` audio; PassThroughNode's `data`
        // input takes data, its `input` audio.
        let m = Manifest::new("t")
            .node("vad", "VADNode", "")
            .node("rs", "AudioResampleNode", r#"{"output_rate": 8000}"#)
            .node("p", "PassThroughNode", "")
            .edge(Edge::new("vad", "rs").ports("segments", "input"))
            .edge(Edge::new("vad", "p").ports("output", "data"))
            .edge(Edge::new("vad", "p").ports("segments", "data"));
        let msgs = messages(&m, &shape(&["vad"]));
        assert_eq!(
            msgs,
            [
                "connections[0] (vad → rs): output port `segments` carries data, but input port `input` of node `rs` \
                 takes audio; connect ports of the same kind",
                "connections[1] (vad → p): output port `output` carries audio, but input port `data` of node `p` \
                 takes data; connect ports of the same kind",
            ]
        );
    }

    #[test]
    fn sources_need_inputs_and_input_keys_must_exist() {
        let m = Manifest::new("t").node("a", "GainNode", "").node("b", "GainNode", "");
        let mut s = shape(&["a", "nobody"]);
        s.output_nodes = vec!["zz".into()];
        let msgs = messages(&m, &s);
        assert_eq!(
            msgs,
            [
                "audio_inputs names unknown node `nobody`",
                "node `b` is a source (nothing connects into it) but the request has no audio_inputs or data_inputs for it",
                "output_nodes names unknown node `zz`",
            ]
        );
    }

    #[test]
    fn an_input_for_an_empty_id_is_one_problem_with_the_node_and_named_so_without_it() {
        let blank = Manifest::new("t").node("", "GainNode", "");
        assert_eq!(messages(&blank, &shape(&[""])), ["nodes[0] has an empty id"]);
        let m = Manifest::new("t").node("a", "GainNode", "");
        assert_eq!(messages(&m, &shape(&["a", ""])), ["audio_inputs has an entry for an empty node id"]);
    }

    #[test]
    fn unsupported_runtime_hints_are_rejected() {
        let mut m = Manifest::new("t").node("a", "GainNode", "");
        m.nodes[0].runtime = RuntimeHint::Unsupported("RUNTIME_HINT_CPYTHON_WASM");
        let (_, v) = validate(&m, &Registry::builtin(), &shape(&["a"]));
        let v = v.violations;
        assert_eq!(v[0].field, "nodes[0].runtime_hint");
        assert!(v[0].message.contains("RUNTIME_HINT_CPYTHON_WASM is unsupported"), "{}", v[0].message);
    }

    #[test]
    fn many_faults_are_all_reported() {
        let mut m = Manifest::new("t")
            .node("a", "GainNode", "not json")
            .node("a", "Nope", "")
            .node("c", "PassThroughNode", "")
            .connect("c", "missing")
            .connect("c", "c");
        m.version = "v9".into();
        let (_, v) = validate(&m, &Registry::builtin(), &shape(&[]));
        let fields: Vec<&str> = v.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "version",
                "nodes[0].params",
                "nodes[1].id",
                "nodes[1].node_type",
                "connections[0].to",
                "connections[1]",
                "audio_inputs[a]",
                "audio_inputs[c]",
            ]
        );
    }
}
