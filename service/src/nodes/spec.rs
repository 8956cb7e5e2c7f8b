//! Node declarations: what a node type is, declared once, in the node's own file.
//!
//! A [`NodeSpec`] names the type and its aliases, says in one line what the node does, and
//! declares each parameter ([`ParamSpec`]: kind, range or choices, default, unit, description)
//! and each port ([`PortSpec`]: audio or data, and what it carries). Everything else is derived
//! from it: parameters are validated by [`NodeSpec::check`] for every node and runtime alike,
//! `GetVersion` serves the declarations (parameters as JSON Schema, [`NodeSpec::params_schema`]),
//! and the clients' node builders and `docs/nodes.md` are generated from the catalogue the
//! server writes (`remotemedia-server catalogue`).
//!
//! Native nodes build their declaration with the constructors here; Python nodes declare
//! theirs on the class (signature, annotations and `Param(...)`), and the embedded interpreter
//! hands it over as JSON in the same shape.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::ParamError;

/// The declaration of a node type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Canonical type name, e.g. `"AudioResampleNode"`.
    pub node_type: String,
    /// Other accepted names, e.g. `"AudioResample"`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// One line: what the node does.
    pub description: String,
    /// More about its behaviour, in Markdown (for `docs/nodes.md`).
    #[serde(default)]
    pub details: String,
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    #[serde(default)]
    pub inputs: Vec<PortSpec>,
    #[serde(default)]
    pub outputs: Vec<PortSpec>,
    /// Groups of parameters that exclude each other (`chunk_samples` or `chunk_ms`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusive: Vec<Exclusive>,
    /// Parameters whose value must exceed another's (a band's `high_hz` above its `low_hz`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub above: Vec<Above>,
    /// A valid parameter object, for nodes whose rules a schema cannot say (one of two
    /// parameters): the catalogue shows it as the schema's `examples`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Map<String, Value>>,
}

/// Parameters of which at most one may be given; with `required`, exactly one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exclusive {
    pub params: Vec<String>,
    #[serde(default)]
    pub required: bool,
}

/// Number parameter `param` must be greater than number parameter `than`, when both have a
/// value (given or default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Above {
    pub param: String,
    pub than: String,
}

/// One parameter of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(flatten)]
    pub kind: ParamKind,
    /// The value used when the parameter is not given. `None` with `required == false`: the
    /// parameter is optional and has no default (the node behaves differently without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default)]
    pub required: bool,
    /// Unit of the value: `Hz`, `ms`, `dB`, `dBFS`, `samples`, `channels`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub description: String,
}

/// The kind of value a parameter takes, with its range or choices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    /// A whole number, bounds inclusive. `16000.0` counts as `16000`.
    Integer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        minimum: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        maximum: Option<i64>,
    },
    /// A finite number, bounds inclusive.
    Number {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        minimum: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        maximum: Option<f64>,
    },
    /// One of a few whole numbers (`frame_ms`: 10, 20 or 30).
    IntegerChoice {
        choices: Vec<i64>,
    },
    /// One of a few names, matched without regard to case.
    Choice {
        choices: Vec<String>,
    },
    /// Free text of at most `max_length` characters.
    Text {
        max_length: usize,
    },
    Boolean,
    /// Any JSON value (a plug-in parameter without a type annotation); only its presence is
    /// checked.
    Any,
}

/// Whether a port carries audio or JSON data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    Audio,
    Data,
}

/// One input or output port of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortSpec {
    pub name: String,
    pub kind: PortKind,
    /// What the port carries (for data: the shape of the JSON).
    pub description: String,
}

impl NodeSpec {
    /// Why node `id` of this type cannot take a connection or input on `port`, which it does not
    /// declare: names the node and lists the ports it has on that side. `id` and `port` come
    /// from the client and are quoted bounded.
    pub fn missing_port(&self, id: &str, port: &str, is_output: bool) -> String {
        let (dir, ports) = if is_output { ("output", &self.outputs) } else { ("input", &self.inputs) };
        let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
        format!(
            "node `{}` ({}) has no {dir} port `{}`; its {dir} ports are: {}",
            crate::text::quoted(id),
            self.node_type,
            crate::text::quoted(port),
            names.join(", ")
        )
    }

    /// A declaration with no parameters and no ports yet.
    pub fn new(node_type: &str, description: &str) -> Self {
        Self {
            node_type: node_type.to_owned(),
            aliases: Vec::new(),
            description: description.to_owned(),
            details: String::new(),
            params: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            exclusive: Vec::new(),
            above: Vec::new(),
            example: None,
        }
    }

    /// Exactly one of `params` must be given.
    pub fn one_of(mut self, params: &[&str]) -> Self {
        self.exclusive.push(Exclusive { params: params.iter().map(|p| (*p).to_owned()).collect(), required: true });
        self
    }

    /// At most one of `params` may be given.
    pub fn at_most_one_of(mut self, params: &[&str]) -> Self {
        self.exclusive.push(Exclusive { params: params.iter().map(|p| (*p).to_owned()).collect(), required: false });
        self
    }

    /// Number parameter `param` must be greater than `than` (see [`Above`]).
    pub fn above(mut self, param: &str, than: &str) -> Self {
        self.above.push(Above { param: param.to_owned(), than: than.to_owned() });
        self
    }

    /// A valid parameter object (see [`NodeSpec::example`]).
    pub fn example(mut self, params: Value) -> Self {
        self.example = params.as_object().cloned();
        self
    }

    pub fn alias(mut self, alias: &str) -> Self {
        self.aliases.push(alias.to_owned());
        self
    }

    pub fn details(mut self, markdown: &str) -> Self {
        self.details = markdown.trim().to_owned();
        self
    }

    pub fn param(mut self, param: ParamSpec) -> Self {
        self.params.push(param);
        self
    }

    pub fn input(mut self, port: PortSpec) -> Self {
        self.inputs.push(port);
        self
    }

    pub fn output(mut self, port: PortSpec) -> Self {
        self.outputs.push(port);
        self
    }

    pub fn has_input(&self, port: &str) -> bool {
        self.inputs.iter().any(|p| p.name == port)
    }

    pub fn has_output(&self, port: &str) -> bool {
        self.outputs.iter().any(|p| p.name == port)
    }

    /// Checks `params` against the declaration and reports every problem at once: unknown,
    /// missing, mistyped and out-of-range parameters, each naming the parameter, what is
    /// expected and what was given. On success returns the parameters with defaults filled in,
    /// integral numbers as integers and choices in their declared spelling. A `null` value
    /// counts as not given.
    pub fn check(&self, params: &Map<String, Value>) -> Result<Params, Vec<ParamError>> {
        let (checked, errors) = self.check_all(params);
        if errors.is_empty() { Ok(checked) } else { Err(errors) }
    }

    /// [`Self::check`] that also returns the parameters that passed when others did not, so a
    /// node's own rules can report their problems in the same answer.
    pub fn check_all(&self, params: &Map<String, Value>) -> (Params, Vec<ParamError>) {
        let mut errors = Vec::new();
        let mut out = Map::new();
        for p in &self.params {
            match params.get(&p.name).filter(|v| !v.is_null()) {
                Some(v) => match p.kind.accept(v) {
                    Ok(value) => {
                        out.insert(p.name.clone(), value);
                    }
                    Err(expected) => errors.push(ParamError::new(
                        &p.name,
                        format!("must be {expected}, got {} ({})", shown(v), type_name(v)),
                    )),
                },
                None if p.required => {
                    errors.push(ParamError::new(&p.name, format!("is required ({})", p.kind.expected())));
                }
                None => {
                    if let Some(d) = &p.default {
                        out.insert(p.name.clone(), d.clone());
                    }
                }
            }
        }
        for key in params.keys() {
            if !self.params.iter().any(|p| &p.name == key) {
                let hint = if self.params.is_empty() {
                    "is not accepted (this node takes no parameters)".to_owned()
                } else {
                    let mut names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                    names.sort_unstable();
                    format!("is not accepted (accepted: {})", names.join(", "))
                };
                errors.push(ParamError::new(key.clone(), hint));
            }
        }
        for group in &self.exclusive {
            errors.extend(group.check(params));
        }
        for rule in &self.above {
            // Only between values that passed their own checks: a bad one is reported once.
            if let (Some(v), Some(than)) = (out.get(&rule.param), out.get(&rule.than))
                && let (Some(x), Some(y)) = (v.as_f64(), than.as_f64())
                && x <= y
            {
                errors.push(ParamError::new(
                    &rule.param,
                    format!("must be above `{}` ({}), got {}", rule.than, shown(than), shown(v)),
                ));
            }
        }
        (Params(out), errors)
    }

    /// Whether `other` (a second implementation of this type) takes the same parameters: the
    /// same names, the same required ones and the same defaults. Says what differs if not.
    pub fn agrees_with(&self, other: &NodeSpec) -> Result<(), String> {
        let names = |s: &NodeSpec| s.params.iter().map(|p| p.name.clone()).collect::<std::collections::BTreeSet<_>>();
        let (mine, theirs) = (names(self), names(other));
        if mine != theirs {
            let list = |s: &std::collections::BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
            return Err(format!("it takes parameters ({}) where the declaration has ({})", list(&theirs), list(&mine)));
        }
        for p in &self.params {
            let q = other.params.iter().find(|q| q.name == p.name).expect("the same names");
            if p.required != q.required {
                return Err(format!("parameter `{}` is required in one and optional in the other", p.name));
            }
            let same = match (&p.default, &q.default) {
                (Some(a), Some(b)) => a == b || a.as_f64().is_some_and(|x| b.as_f64() == Some(x)),
                (a, b) => a == b,
            };
            if !same {
                return Err(format!(
                    "parameter `{}` defaults to {} in the declaration and to {} in the other",
                    p.name,
                    p.default.as_ref().map_or("nothing".to_owned(), ToString::to_string),
                    q.default.as_ref().map_or("nothing".to_owned(), ToString::to_string)
                ));
            }
        }
        if self.above != other.above {
            return Err(format!(
                "its ordered parameters are {} where the declaration has {}",
                json!(other.above),
                json!(self.above)
            ));
        }
        if self.exclusive != other.exclusive {
            return Err(format!(
                "its exclusive parameters are {} where the declaration has {}",
                json!(other.exclusive),
                json!(self.exclusive)
            ));
        }
        Ok(())
    }

    /// The parameters as a JSON Schema (draft 2020-12) object schema: each parameter's type,
    /// range or `enum`, `default` and `description`, its unit as `x-unit`; `required` and
    /// `additionalProperties: false`; groups of parameters that exclude each other as
    /// `x-exclusive` (`[{"params": [...], "required": bool}]`); a parameter that must exceed
    /// another as `x-above` (`[{"param": "high_hz", "than": "low_hz"}]`).
    pub fn params_schema(&self) -> Value {
        let mut properties = Map::new();
        for p in &self.params {
            let mut s = p.kind.schema();
            if let Some(d) = &p.default {
                s["default"] = d.clone();
            }
            if let Some(u) = &p.unit {
                s["x-unit"] = json!(u);
            }
            s["description"] = json!(p.description);
            properties.insert(p.name.clone(), s);
        }
        let required: Vec<&str> = self.params.iter().filter(|p| p.required).map(|p| p.name.as_str()).collect();
        let mut schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        });
        if !self.exclusive.is_empty() {
            schema["x-exclusive"] = json!(self.exclusive);
        }
        if !self.above.is_empty() {
            schema["x-above"] = json!(self.above);
        }
        if let Some(example) = &self.example {
            schema["examples"] = json!([example]);
        }
        schema
    }
}

impl Exclusive {
    /// A problem for each parameter given after the group's first given one, or, when none is
    /// given and one is required, a problem naming the group.
    fn check(&self, params: &Map<String, Value>) -> Vec<ParamError> {
        let given: Vec<&String> =
            self.params.iter().filter(|p| params.get(p.as_str()).is_some_and(|v| !v.is_null())).collect();
        match given.split_first() {
            Some((first, rest)) => rest
                .iter()
                .map(|p| ParamError::new(p.as_str(), format!("cannot be combined with `{first}`; give one of them")))
                .collect(),
            None if self.required => {
                let others: Vec<String> = self.params[1..].iter().map(|p| format!("`{p}`")).collect();
                vec![ParamError::new(
                    self.params[0].as_str(),
                    format!("or {} is required (give one of them)", others.join(" or ")),
                )]
            }
            None => Vec::new(),
        }
    }
}

impl ParamSpec {
    fn new(name: &str, kind: ParamKind) -> Self {
        Self { name: name.to_owned(), kind, default: None, required: false, unit: None, description: String::new() }
    }

    /// A whole number within `minimum..=maximum`.
    pub fn integer(name: &str, minimum: i64, maximum: i64) -> Self {
        Self::new(name, ParamKind::Integer { minimum: Some(minimum), maximum: Some(maximum) })
    }

    /// A finite number within `minimum..=maximum`.
    pub fn number(name: &str, minimum: f64, maximum: f64) -> Self {
        Self::new(name, ParamKind::Number { minimum: Some(minimum), maximum: Some(maximum) })
    }

    /// One of `choices` (whole numbers).
    pub fn integer_choice(name: &str, choices: &[i64]) -> Self {
        Self::new(name, ParamKind::IntegerChoice { choices: choices.to_vec() })
    }

    /// One of `choices` (names).
    pub fn choice(name: &str, choices: &[&str]) -> Self {
        Self::new(name, ParamKind::Choice { choices: choices.iter().map(|c| (*c).to_owned()).collect() })
    }

    /// Free text of at most `max_length` characters.
    pub fn text(name: &str, max_length: usize) -> Self {
        Self::new(name, ParamKind::Text { max_length })
    }

    pub fn boolean(name: &str) -> Self {
        Self::new(name, ParamKind::Boolean)
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    pub fn unit(mut self, unit: &str) -> Self {
        self.unit = Some(unit.to_owned());
        self
    }

    pub fn describe(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }
}

impl PortSpec {
    pub fn audio(name: &str, description: &str) -> Self {
        Self { name: name.to_owned(), kind: PortKind::Audio, description: description.to_owned() }
    }

    pub fn data(name: &str, description: &str) -> Self {
        Self { name: name.to_owned(), kind: PortKind::Data, description: description.to_owned() }
    }
}

impl ParamKind {
    /// The value as this kind takes it (normalised), or what was expected.
    pub(crate) fn accept(&self, v: &Value) -> Result<Value, String> {
        let ok = match self {
            ParamKind::Integer { minimum, maximum } => integer(v)
                .filter(|n| minimum.is_none_or(|m| *n >= m) && maximum.is_none_or(|m| *n <= m))
                .map(Value::from),
            ParamKind::Number { minimum, maximum } => v
                .as_f64()
                .filter(|f| f.is_finite() && minimum.is_none_or(|m| *f >= m) && maximum.is_none_or(|m| *f <= m))
                .map(|_| v.clone()),
            ParamKind::IntegerChoice { choices } => integer(v).filter(|n| choices.contains(n)).map(Value::from),
            ParamKind::Choice { choices } => v
                .as_str()
                .and_then(|s| choices.iter().find(|c| c.eq_ignore_ascii_case(s)))
                .map(|c| Value::from(c.as_str())),
            ParamKind::Text { max_length } => {
                v.as_str().filter(|s| s.chars().count() <= *max_length).map(|_| v.clone())
            }
            ParamKind::Boolean => v.as_bool().map(Value::from),
            ParamKind::Any => Some(v.clone()),
        };
        ok.ok_or_else(|| self.expected())
    }

    /// What a value of this kind is, as a phrase: `an integer between 1 and 10`.
    pub fn expected(&self) -> String {
        match self {
            ParamKind::Integer { minimum, maximum } => format!("an integer{}", range(minimum, maximum)),
            ParamKind::Number { minimum, maximum } => format!("a number{}", range(minimum, maximum)),
            ParamKind::IntegerChoice { choices } => {
                let names: Vec<String> = choices.iter().map(ToString::to_string).collect();
                match names.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                    _ => names.join(""),
                }
            }
            ParamKind::Choice { choices } => {
                format!("one of {}", choices.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", "))
            }
            ParamKind::Text { max_length } => format!("a string of at most {max_length} characters"),
            ParamKind::Boolean => "true or false".to_owned(),
            ParamKind::Any => "any JSON value".to_owned(),
        }
    }

    fn schema(&self) -> Value {
        match self {
            ParamKind::Integer { minimum, maximum } => {
                bounded_schema("integer", minimum.map(Value::from), maximum.map(Value::from))
            }
            ParamKind::Number { minimum, maximum } => {
                bounded_schema("number", minimum.map(Value::from), maximum.map(Value::from))
            }
            ParamKind::IntegerChoice { choices } => json!({"type": "integer", "enum": choices}),
            ParamKind::Choice { choices } => json!({"type": "string", "enum": choices}),
            ParamKind::Text { max_length } => json!({"type": "string", "maxLength": max_length}),
            ParamKind::Boolean => json!({"type": "boolean"}),
            ParamKind::Any => json!({}),
        }
    }
}

fn bounded_schema(kind: &str, minimum: Option<Value>, maximum: Option<Value>) -> Value {
    let mut s = json!({ "type": kind });
    if let Some(m) = minimum {
        s["minimum"] = m;
    }
    if let Some(m) = maximum {
        s["maximum"] = m;
    }
    s
}

/// `v` as a whole number: an integer, or a float with no fractional part within `i64`.
fn integer(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64().filter(|f| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f <= i64::MAX as f64).map(|f| f as i64)
    })
}

fn range<T: fmt::Display>(minimum: &Option<T>, maximum: &Option<T>) -> String {
    match (minimum, maximum) {
        (Some(a), Some(b)) => format!(" between {a} and {b}"),
        (Some(a), None) => format!(" of at least {a}"),
        (None, Some(b)) => format!(" of at most {b}"),
        (None, None) => String::new(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whole numbers up to this size are exact in a double; beyond it, a number read from JSON
/// may not be the one written (18446744073709551621 reads as 18446744073709551616).
const EXACT_WHOLE: f64 = 9_007_199_254_740_992.0;

/// A value as quoted in a message: its JSON text, cut to 40 bytes. A whole number is written
/// without a fraction (`2001`, not `2001.0`), as JavaScript writes it, so that the clients,
/// whose JSON may not tell the two apart, quote it in the same words; one too large to be exact
/// keeps its exponent (`1.8446744073709552e+19`), so that no message quotes digits nobody sent.
fn shown(v: &Value) -> String {
    let s = match v.as_f64() {
        Some(x) if v.is_f64() && x.fract() == 0.0 && x.abs() <= EXACT_WHOLE => format!("{x:.0}"),
        _ => v.to_string(),
    };
    if s.len() > 40 { format!("{}…", &s[..s.floor_char_boundary(40)]) } else { s }
}

/// Parameters that passed [`NodeSpec::check`]: every declared parameter that was given or has
/// a default, with the declared kind. The getters panic only if a node asks for a parameter its
/// own declaration does not have (a bug caught by its unit tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Map<String, Value>);

impl Params {
    /// The checked parameters as a JSON object (what a Python node's `__init__` receives).
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn opt_u32(&self, name: &str) -> Option<u32> {
        self.0.get(name).map(|v| {
            let n = v.as_u64().unwrap_or_else(|| panic!("parameter `{name}` is declared as an integer"));
            u32::try_from(n).unwrap_or_else(|_| panic!("parameter `{name}` is declared within u32"))
        })
    }

    pub fn u32(&self, name: &str) -> u32 {
        self.opt_u32(name).unwrap_or_else(|| panic!("parameter `{name}` is required or has a default"))
    }

    pub fn opt_f64(&self, name: &str) -> Option<f64> {
        self.0.get(name).map(|v| v.as_f64().unwrap_or_else(|| panic!("parameter `{name}` is declared as a number")))
    }

    pub fn f64(&self, name: &str) -> f64 {
        self.opt_f64(name).unwrap_or_else(|| panic!("parameter `{name}` is required or has a default"))
    }

    pub fn opt_str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.as_str().unwrap_or_else(|| panic!("parameter `{name}` is declared as text")))
    }

    pub fn str(&self, name: &str) -> &str {
        self.opt_str(name).unwrap_or_else(|| panic!("parameter `{name}` is required or has a default"))
    }

    pub fn bool(&self, name: &str) -> bool {
        self.0
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or_else(|| panic!("parameter `{name}` is a boolean with a default"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec::new("T", "a test node")
            .param(ParamSpec::integer("rate", 1, 10).required().unit("Hz").describe("the rate"))
            .param(ParamSpec::choice("mode", &["soft", "hard"]).default("soft").describe("how"))
            .param(ParamSpec::integer_choice("frame_ms", &[10, 20, 30]).default(30).describe("frame"))
            .param(ParamSpec::number("gain_db", -12.0, 12.0).describe("optional, no default"))
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_problem_is_reported_with_what_was_expected_and_given() {
        let errs = spec().check(&map(json!({"rate": "fast", "mode": "loud", "frame_ms": 25, "typo": 1}))).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "parameter `rate` must be an integer between 1 and 10, got \"fast\" (a string)",
                "parameter `mode` must be one of \"soft\", \"hard\", got \"loud\" (a string)",
                "parameter `frame_ms` must be 10, 20 or 30, got 25 (a number)",
                "parameter `typo` is not accepted (accepted: frame_ms, gain_db, mode, rate)",
            ]
        );
        // Beyond 2^64 serde reads a double: its digits are not the ones sent, so it is not
        // written out in full.
        let huge: Map<String, Value> =
            serde_json::from_str(r#"{"rate": 18446744073709551621, "gain_db": 4e15}"#).unwrap();
        let text: Vec<String> = spec().check(&huge).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            text[0],
            "parameter `rate` must be an integer between 1 and 10, got 1.8446744073709552e+19 (a number)"
        );
        assert!(text[1].ends_with("got 4000000000000000 (a number)"), "{}", text[1]);
        let missing = spec().check(&Map::new()).unwrap_err();
        assert_eq!(missing[0].to_string(), "parameter `rate` is required (an integer between 1 and 10)");
    }

    #[test]
    fn exclusive_groups_are_checked_and_served() {
        let one = spec().one_of(&["rate", "gain_db"]);
        let errs = one.check(&map(json!({"rate": 4, "gain_db": 1.0}))).unwrap_err();
        assert_eq!(errs[0].to_string(), "parameter `gain_db` cannot be combined with `rate`; give one of them");
        let at_most = NodeSpec::new("T", "t").param(ParamSpec::boolean("a")).param(ParamSpec::boolean("b"));
        let at_most = at_most.at_most_one_of(&["a", "b"]);
        assert!(at_most.check(&Map::new()).is_ok());
        assert!(at_most.check(&map(json!({"a": true, "b": null}))).is_ok(), "null counts as not given");
        let exactly = at_most.clone();
        let exactly =
            NodeSpec { exclusive: vec![Exclusive { required: true, ..exactly.exclusive[0].clone() }], ..exactly };
        let errs = exactly.check(&Map::new()).unwrap_err();
        assert_eq!(errs[0].to_string(), "parameter `a` or `b` is required (give one of them)");
        assert_eq!(exactly.params_schema()["x-exclusive"], json!([{"params": ["a", "b"], "required": true}]));
        assert!(at_most.agrees_with(&exactly).unwrap_err().contains("exclusive"));
    }

    #[test]
    fn a_parameter_that_must_exceed_another_is_checked_and_served() {
        let band = NodeSpec::new("T", "t")
            .param(ParamSpec::number("low_hz", 0.001, 1000.0).required())
            .param(ParamSpec::number("high_hz", 0.001, 1000.0).default(json!(500.0)))
            .above("high_hz", "low_hz");
        let errs = band.check(&map(json!({"low_hz": 300, "high_hz": 0.001}))).unwrap_err();
        assert_eq!(errs[0].to_string(), "parameter `high_hz` must be above `low_hz` (300), got 0.001");
        // Against the default too; and a value that fails its own range is reported once.
        assert_eq!(band.check(&map(json!({"low_hz": 600}))).unwrap_err()[0].param, "high_hz");
        assert_eq!(band.check(&map(json!({"low_hz": 5000, "high_hz": 1}))).unwrap_err().len(), 1);
        assert!(band.check(&map(json!({"low_hz": 300, "high_hz": 3400.0 / 4.0}))).is_ok());
        assert_eq!(band.params_schema()["x-above"], json!([{"param": "high_hz", "than": "low_hz"}]));
        let plain = NodeSpec { above: Vec::new(), ..band.clone() };
        assert!(plain.agrees_with(&band).unwrap_err().contains("ordered"));
    }

    #[test]
    fn a_whole_number_is_quoted_as_the_clients_quote_it() {
        let errs = spec().check(&map(json!({"rate": 2001.0, "gain_db": 13.5}))).unwrap_err();
        assert!(errs[0].to_string().ends_with("got 2001 (a number)"), "{}", errs[0]);
        assert!(errs[1].to_string().ends_with("got 13.5 (a number)"), "{}", errs[1]);
    }

    #[test]
    fn defaults_are_filled_and_values_normalised() {
        let p = spec().check(&map(json!({"rate": 4.0, "mode": "HARD", "gain_db": null}))).unwrap();
        assert_eq!(p.as_map(), &map(json!({"rate": 4, "mode": "hard", "frame_ms": 30})));
        assert_eq!((p.u32("rate"), p.str("mode"), p.opt_f64("gain_db")), (4, "hard", None));
    }

    #[test]
    fn a_number_just_past_a_bound_is_read_exactly_and_refused() {
        // The f64 next to -120 below it; serde_json's fast float parsing (without
        // `float_roundtrip`) rounded this text to -120 and let it through.
        let gain = NodeSpec::new("T", "t").param(ParamSpec::number("gain_db", -120.0, 60.0));
        let params: Map<String, Value> = serde_json::from_str(r#"{"gain_db": -120.00000000000001}"#).unwrap();
        let errs = gain.check(&params).unwrap_err();
        assert_eq!(errs[0].param, "gain_db");
        assert!(gain.check(&serde_json::from_str(r#"{"gain_db": -120.0}"#).unwrap()).is_ok());
    }

    #[test]
    fn huge_and_fractional_numbers_are_refused_not_wrapped() {
        for bad in [json!(18446744073709551776u128 as f64), json!(0), json!(4.5), json!(-1), json!(true)] {
            let errs = spec().check(&map(json!({"rate": bad}))).unwrap_err();
            assert_eq!(errs[0].param, "rate", "{bad}");
        }
    }

    #[test]
    fn the_schema_says_what_check_enforces() {
        let s = spec().params_schema();
        assert_eq!(s["required"], json!(["rate"]));
        assert_eq!(s["additionalProperties"], json!(false));
        assert_eq!(
            s["properties"]["rate"],
            json!({"type": "integer", "minimum": 1, "maximum": 10, "x-unit": "Hz", "description": "the rate"})
        );
        assert_eq!(s["properties"]["mode"]["enum"], json!(["soft", "hard"]));
        assert_eq!(s["properties"]["mode"]["default"], json!("soft"));
        assert_eq!(s["properties"]["frame_ms"]["enum"], json!([10, 20, 30]));
    }

    #[test]
    fn a_declaration_round_trips_through_json() {
        let s = spec().input(PortSpec::audio("input", "audio")).output(PortSpec::data("segments", "[...]"));
        let back: NodeSpec = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
